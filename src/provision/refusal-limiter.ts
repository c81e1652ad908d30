/**
 * Refusals of unauthenticated peers, bounded: within a budget of bytes per window each
 * refusal is written (audit and log) individually, with attacker-chosen text truncated;
 * past the budget they are only counted per code, and one summary entry per window says
 * how many were suppressed. A flood of refused handshakes then costs keyd at most
 * `budgetBytes` + one summary per window of audit log, whatever the certificate sizes.
 */
import { truncate as cut } from '../lib/truncate.js';

/** Longest certificate subject or issuer quoted in a refusal (they are attacker-controlled). */
export const MAX_QUOTED_NAME = 256;

/** `text` cut to `max` characters (default: a quoted name), with the cut marked (src/lib/truncate.ts). */
export function truncate(text: string, max = MAX_QUOTED_NAME): string {
  return cut(text, max);
}

export interface SuppressedSummary {
  count: number;
  byCode: Record<string, number>;
  from: number;
  to: number;
}

export class RefusalLimiter {
  private spent = 0;
  private suppressed: Record<string, number> = {};
  private suppressedCount = 0;
  private windowStart: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly budgetBytes: number,
    private readonly windowMs: number,
    private readonly onSummary: (summary: SuppressedSummary) => void,
    private readonly now: () => number = Date.now,
  ) {
    this.windowStart = now();
  }

  start(): void {
    this.timer ??= setInterval(() => this.roll(), this.windowMs);
    this.timer.unref();
  }

  /** True when a refusal of about `bytes` may be written individually; else it is counted under `code`. */
  admit(code: string, bytes: number): boolean {
    if (this.now() - this.windowStart >= this.windowMs) this.roll();
    if (this.spent + bytes <= this.budgetBytes) {
      this.spent += bytes;
      return true;
    }
    this.suppressed[code] = (this.suppressed[code] ?? 0) + 1;
    this.suppressedCount++;
    return false;
  }

  /** Ends the window: a summary if anything was suppressed, then a fresh budget. */
  roll(): void {
    const to = this.now();
    if (this.suppressedCount > 0) this.onSummary({ count: this.suppressedCount, byCode: this.suppressed, from: this.windowStart, to });
    this.spent = 0;
    this.suppressed = {};
    this.suppressedCount = 0;
    this.windowStart = to;
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.roll();
  }
}
