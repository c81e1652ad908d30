/**
 * Per-client token buckets for signatures: each client (local principal or mTLS subject)
 * gets `burst` tokens, refilled at `perSecond`; a signature takes one. Shared by all of a
 * client's connections, so opening more connections buys no more signatures.
 */
export class SignatureBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get enabled(): boolean {
    return this.perSecond > 0;
  }

  /** Takes one token for `client`; false when its bucket is empty (the request is throttled). */
  take(client: string): boolean {
    if (!this.enabled) return true;
    const now = this.now();
    let bucket = this.buckets.get(client);
    if (!bucket) this.buckets.set(client, (bucket = { tokens: this.burst, at: now }));
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.perSecond);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}
