/**
 * Certificate expiry warnings, shared by the edge and keyd: a certificate whose notAfter is
 * within `warnDays` (30 by default, as public CAs start renewing then) is reported once per
 * day per certificate, an expired one as an error. The clock is injected, so tests move
 * time instead of waiting for it.
 */

export const DEFAULT_EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface WatchedCertificate {
  /** What the operator knows it by: the server name(s), and the key reference in keyd. */
  readonly names: readonly string[];
  readonly keyRef?: string;
  /** RFC 5280 §4.1.2.5 notAfter; null or undefined: no certificate yet (nothing to warn about). */
  readonly notAfter: string | Date | null | undefined;
}

export interface ExpiryNotice {
  readonly names: readonly string[];
  readonly keyRef?: string;
  readonly notAfter: string;
  /** Whole days left, rounded down; negative once expired. */
  readonly daysLeft: number;
  readonly expired: boolean;
}

/** The notice for one certificate at `nowMs`, or undefined when it is not within `warnDays`. */
export function expiryNotice(certificate: WatchedCertificate, nowMs: number, warnDays: number): ExpiryNotice | undefined {
  if (certificate.notAfter === null || certificate.notAfter === undefined) return undefined;
  const notAfterMs = certificate.notAfter instanceof Date ? certificate.notAfter.getTime() : Date.parse(certificate.notAfter);
  if (!Number.isFinite(notAfterMs)) return undefined;
  const leftMs = notAfterMs - nowMs;
  if (leftMs > warnDays * DAY_MS) return undefined;
  return {
    names: certificate.names,
    ...(certificate.keyRef !== undefined ? { keyRef: certificate.keyRef } : {}),
    notAfter: new Date(notAfterMs).toISOString(),
    daysLeft: Math.floor(leftMs / DAY_MS),
    expired: leftMs <= 0,
  };
}

export interface ExpiryLogger {
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/**
 * Checks certificates against the clock and logs each one within the warning window, at
 * most once per certificate (names + notAfter) per day, so a periodic check and every
 * identity refresh do not flood the log. The set of remembered certificates is bounded.
 */
export class ExpiryWatch {
  constructor(
    private readonly log: ExpiryLogger,
    private readonly warnDays = DEFAULT_EXPIRY_WARNING_DAYS,
    private readonly now: () => number = Date.now,
    private readonly maxRemembered = 10_000,
    /** certificate (names|notAfter) → when it was last logged. */
    private readonly lastWarned = new Map<string, number>(),
  ) {
    if (!Number.isFinite(warnDays) || warnDays < 0) throw new RangeError(`expiry warning days must be ≥ 0, got ${warnDays}`);
  }

  /**
   * The same watch with another window (a reload): it remembers what was logged, so a
   * reload does not log every due certificate again before its day is up.
   */
  withWarnDays(warnDays: number): ExpiryWatch {
    return new ExpiryWatch(this.log, warnDays, this.now, this.maxRemembered, this.lastWarned);
  }

  /** Logs what is due; returns the notices logged now. */
  check(certificates: Iterable<WatchedCertificate>): ExpiryNotice[] {
    const nowMs = this.now();
    const logged: ExpiryNotice[] = [];
    for (const certificate of certificates) {
      const notice = expiryNotice(certificate, nowMs, this.warnDays);
      if (!notice) continue;
      const key = `${notice.names.join(',')}|${notice.notAfter}`;
      const last = this.lastWarned.get(key);
      if (last !== undefined && nowMs - last < DAY_MS) continue;
      if (this.lastWarned.size >= this.maxRemembered) this.lastWarned.delete(this.lastWarned.keys().next().value!);
      this.lastWarned.set(key, nowMs);
      const fields = { names: notice.names, keyRef: notice.keyRef, notAfter: notice.notAfter, daysLeft: notice.daysLeft };
      if (notice.expired) this.log.error(fields, `certificate for ${notice.names.join(', ')} expired on ${notice.notAfter}`);
      else this.log.warn(fields, `certificate for ${notice.names.join(', ')} expires in ${notice.daysLeft} day(s), on ${notice.notAfter}: renew it`);
      logged.push(notice);
    }
    return logged;
  }
}

/** Validates a configured number of warning days (a config value from JSON or a flag). */
export function parseExpiryWarningDays(value: unknown, what: string): number {
  if (value === undefined) return DEFAULT_EXPIRY_WARNING_DAYS;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 3650) {
    throw new RangeError(`${what} must be an integer number of days from 0 to 3650, got ${JSON.stringify(value)}`);
  }
  return value;
}
