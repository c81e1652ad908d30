import type { Logger } from 'pino';
import type { AuditEntry } from './audit.js';
import type { KeydMetrics } from './metrics.js';

/** The limits keyd enforces (docs/KEYD.md "Limits"); the audit entry's code is KEYD_LIMIT_<NAME>. */
export type LimitName =
  | 'payload'
  | 'listener-connections'
  | 'client-connections'
  | 'idle'
  | 'frame-timeout'
  | 'tls-handshake-timeout'
  | 'signature-rate'
  | 'delegation-rate'
  | 'pending'
  | 'socket-exposed';

/**
 * Distinct (client, limit) pairs audited per window; refusals of further pairs are folded
 * into one "(other clients)" entry per limit, so each entry's code is the limit it counts.
 */
export const MAX_AUDITED_PAIRS = 64;

interface Tally {
  client: string;
  limit: LimitName;
  count: number;
  detail: string;
}

/**
 * Reports limit refusals: a metric at once, a log line for the first of each (client,
 * limit) in a window, and one aggregated audit entry per (client, limit) per window. An
 * attacker who trips limits a million times a minute therefore adds at most
 * MAX_AUDITED_PAIRS + one per LimitName audit lines per window, not a million.
 */
export class LimitReporter {
  private window = new Map<string, Tally>();
  private windowStart: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly audit: (entry: Omit<AuditEntry, 'time'>) => Promise<void>,
    private readonly metrics: KeydMetrics | undefined,
    private readonly logger: Logger | undefined,
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.windowStart = now();
  }

  /** Flushes every `intervalMs` until stop(). */
  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  refused(client: string, limit: LimitName, detail: string): void {
    this.metrics?.limitRefusals.inc({ client, limit });
    let key = `${limit}\0${client}`;
    let tally = this.window.get(key);
    if (!tally && this.window.size >= MAX_AUDITED_PAIRS) {
      // Per limit: one entry for every folded limit would carry the code of whichever came
      // first, and tell an auditor that a rate flood was, say, idle connections.
      // (A pair's key starts with its limit's name, never "(other)": no client collides.)
      key = `(other)\0${limit}`;
      tally = this.window.get(key);
      if (!tally) this.window.set(key, (tally = { client: '(other clients)', limit, count: 0, detail: `clients beyond the ${MAX_AUDITED_PAIRS} (client, limit) pairs audited in this window` }));
    }
    if (!tally) {
      this.window.set(key, (tally = { client, limit, count: 0, detail: detail.slice(0, 300) }));
      this.logger?.warn({ client, limit }, `keyd limit: ${detail} (further refusals for this client and limit are counted until the next audit entry)`);
    }
    tally.count++;
  }

  /** Writes one audit entry per (client, limit) seen since the last flush. */
  async flush(): Promise<void> {
    const tallies = [...this.window.values()];
    const from = new Date(this.windowStart).toISOString();
    this.window = new Map();
    this.windowStart = this.now();
    const to = new Date(this.windowStart).toISOString();
    for (const t of tallies) {
      await this.audit({
        op: 'limit',
        caller: { kind: 'client', id: t.client },
        ok: false,
        code: `KEYD_LIMIT_${t.limit.toUpperCase().replace(/-/g, '_')}`,
        message: `${t.detail}; ${t.count} time(s) from ${from} to ${to}`,
        count: t.count,
      }).catch((err: unknown) => this.logger?.error({ err }, 'audit log write failed'));
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
