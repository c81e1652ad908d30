import { ProvisionError } from './errors.js';

/**
 * Refuses sealed payloads that are too old (or from too far in the future) and payloads seen
 * before. A nonce only needs remembering while its payload's time is inside the window: after
 * that the time check refuses it anyway. The remembered set is exported so keyd can keep it in
 * its sealed store and a restart does not reopen the window for replays.
 *
 * Each nonce is kept with its payload's sealing time, not an expiry: the window is config
 * (replayWindowSeconds), and a restart with a wider one must keep refusing a payload whose
 * time the wider window takes. An expiry computed with the old window let it through.
 */
export class ReplayGuard {
  /** base64 nonce → its payload's issuedAt (ms since epoch); forgotten once outside the window. */
  private readonly seen = new Map<string, number>();
  /**
   * Nonces whose payload is being opened (HPKE open is asynchronous): a second request
   * with the same nonce arriving meanwhile, on another connection, is a replay too. At most
   * one per connection (requests on a connection run one at a time), released after opening.
   */
  private readonly opening = new Set<string>();

  constructor(
    readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {
    if (!(windowMs > 0)) throw new RangeError('replay window must be positive');
  }

  /** Throws PROVISION_STALE or PROVISION_REPLAY; does not remember the nonce (see accept). */
  check(nonce: string, issuedAt: number): void {
    const now = this.now();
    this.prune(now);
    if (Math.abs(now - issuedAt) > this.windowMs) {
      throw new ProvisionError(
        'PROVISION_STALE',
        `payload was sealed at ${new Date(issuedAt).toISOString()}, keyd's clock says ${new Date(now).toISOString()}; ` +
          `payloads are accepted for ±${Math.round(this.windowMs / 1000)} s (re-run the command, check both clocks)`,
      );
    }
    if (this.seen.has(nonce) || this.opening.has(nonce)) {
      throw new ProvisionError('PROVISION_REPLAY', `payload with nonce ${nonce} was already used: refusing a replay`);
    }
  }

  /** Holds a checked nonce while its payload is opened; `release` once it is accepted or refused. */
  hold(nonce: string): void {
    this.opening.add(nonce);
  }

  release(nonce: string): void {
    this.opening.delete(nonce);
  }

  /** Remembers a nonce once its payload authenticated. */
  accept(nonce: string, issuedAt: number): void {
    this.seen.set(nonce, issuedAt);
  }

  /** The remembered nonces with their payloads' times, for persistence. */
  snapshot(): Record<string, number> {
    this.prune(this.now());
    return Object.fromEntries(this.seen);
  }

  /**
   * Takes a snapshot back. A record written before nonces were kept with their times holds
   * expiries (time + the window then), which are later than the times: read as times, each
   * nonce is kept longer than needed, never shorter.
   */
  restore(entries: Record<string, number>): void {
    for (const [nonce, issuedAt] of Object.entries(entries)) {
      if (typeof issuedAt === 'number') this.seen.set(nonce, issuedAt);
    }
    this.prune(this.now());
  }

  /** Forgets the nonces whose payloads the time check refuses now (the same bound as check). */
  private prune(now: number): void {
    for (const [nonce, issuedAt] of this.seen) if (now - issuedAt > this.windowMs) this.seen.delete(nonce);
  }
}
