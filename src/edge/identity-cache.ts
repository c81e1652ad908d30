import type { EventEmitter } from 'node:events';
import type { Identity, Signer } from '../tls/signer.js';
import type { KeydIdentityLike } from './keyd-pool.js';

/**
 * Identities (certificate chain + remote signer) fetched from keyd, cached by server name.
 *
 * keyd pushes a "changed" notice after every admin change; we then drop the whole cache
 * (a wildcard change can affect many cached names, and changes are rare), so a new key or
 * chain is served on the next handshake. A reconnect drops it too: notices sent while we
 * were away are lost. The TTL is only a safety net. Concurrent misses for one name share
 * one keyd request; a lookup that raced with a change is not stored.
 */

export interface IdentitySource extends EventEmitter {
  identity(serverName: string): Promise<KeydIdentityLike | undefined>;
  signer(identity: KeydIdentityLike, observe?: (seconds: number, ok: boolean) => void): Signer;
}

export interface IdentityCacheOptions {
  /** How long a found identity is served without asking keyd again. Default 5 min. */
  ttlMs?: number;
  /** How long "keyd has no key for this name" is remembered. Default 1 s. */
  negativeTtlMs?: number;
  /** Called with each signature's latency (seconds) and outcome, for metrics. */
  observeSign?: (seconds: number, ok: boolean) => void;
  now?: () => number;
}

/** What the edge hands the engine: an Identity plus the keyd facts useful in logs. */
export interface EdgeIdentity extends Identity {
  readonly keyRef: string;
  readonly keyType: string;
  readonly version: number;
}

interface Entry {
  identity: EdgeIdentity | undefined;
  expires: number;
}

export class IdentityCache {
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<EdgeIdentity | undefined>>();
  private generation = 0;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private readonly now: () => number;

  constructor(
    private readonly source: IdentitySource,
    private readonly opts: IdentityCacheOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? 5 * 60_000;
    this.negativeTtlMs = opts.negativeTtlMs ?? 1000;
    this.now = opts.now ?? Date.now;
    source.on('change', () => this.clear());
    source.on('connected', () => this.clear());
  }

  get size(): number {
    return this.entries.size;
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
    this.pending.clear();
  }

  /** The identity for `serverName` (already normalised), from cache or keyd; rejects when keyd fails. */
  get(serverName: string): Promise<EdgeIdentity | undefined> | EdgeIdentity | undefined {
    const entry = this.entries.get(serverName);
    if (entry && entry.expires > this.now()) return entry.identity;
    const inFlight = this.pending.get(serverName);
    if (inFlight) return inFlight;
    const generation = this.generation;
    const lookup = this.fetch(serverName).then(
      (identity) => {
        if (this.generation === generation) {
          this.pending.delete(serverName);
          const ttl = identity ? this.ttlMs : this.negativeTtlMs;
          this.entries.set(serverName, { identity, expires: this.now() + ttl });
        }
        return identity;
      },
      (err: unknown) => {
        if (this.generation === generation) this.pending.delete(serverName);
        throw err;
      },
    );
    this.pending.set(serverName, lookup);
    return lookup;
  }

  private async fetch(serverName: string): Promise<EdgeIdentity | undefined> {
    const found = await this.source.identity(serverName);
    if (!found) return undefined;
    return {
      certificateChain: found.certificateChain,
      signer: this.source.signer(found, this.opts.observeSign),
      keyRef: found.keyRef,
      keyType: found.keyType,
      version: found.version,
    };
  }
}
