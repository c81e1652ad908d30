import { createHash } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { Identity, Signer } from '../tls/index.js';
import type { KeydIdentityLike } from './keyd-pool.js';

/**
 * Identities (certificate chain + remote signer) fetched from keyd, in a bounded LRU.
 *
 * Two levels, both least-recently-used and bounded: server name → identity key, and
 * identity key → identity, where the identity key is what keyd answered (key reference,
 * version, SHA-256 of the chain). Every name under one wildcard maps to the same keyd
 * answer, so it is held once (with its encoded Certificate message, which the engine caches
 * per chain), however many names clients send; a name costs only its small map entry and
 * its own signer object, bound to the name (keyd grants signatures per name, not per key).
 *
 * keyd pushes a "changed" notice after every admin change; we then drop the whole cache
 * (a wildcard change can affect many cached names, and changes are rare), so a new key or
 * chain is served on the next handshake. A reconnect drops it too: notices sent while we
 * were away are lost. The TTL is only a safety net. Concurrent misses for one name share
 * one keyd request; a lookup that raced with a change is not stored.
 */

export interface IdentitySource extends EventEmitter {
  identity(serverName: string): Promise<KeydIdentityLike | undefined>;
  signer(identity: KeydIdentityLike, serverName: string, observe?: (seconds: number, ok: boolean) => void): Signer;
}

export interface IdentityCacheOptions {
  /** How long a found identity is served without asking keyd again. Default 5 min. */
  ttlMs?: number;
  /** How long "keyd has no key for this name" is remembered. Default 1 s. */
  negativeTtlMs?: number;
  /** Called with each signature's latency (seconds) and outcome, for metrics. */
  observeSign?: (seconds: number, ok: boolean) => void;
  /** Distinct keyd identities kept (least recently used evicted first). Default 1024. */
  maxIdentities?: number;
  /** Server names remembered (each maps to an identity, or to "no key"). Default 16384. */
  maxNames?: number;
  /** Lookup and eviction counts, for metrics. */
  onLookup?: (result: 'hit' | 'miss') => void;
  onEvict?: (kind: 'identity' | 'name') => void;
  /** Called with every identity keyd answers (each name at most once per TTL): expiry checks. */
  onFetched?: (
    serverName: string,
    identity: { readonly certificateChain: readonly Uint8Array[]; readonly keyRef: string; readonly names?: readonly string[] },
  ) => void;
  now?: () => number;
}

export const DEFAULT_MAX_IDENTITIES = 1024;
export const DEFAULT_MAX_NAMES = 16_384;

/** What the edge hands the engine: an Identity plus the keyd facts useful in logs. */
export interface EdgeIdentity extends Identity {
  readonly keyRef: string;
  /** The names keyd lists for the key (patterns included), for change notices. */
  readonly names?: readonly string[];
  readonly keyType: string;
  readonly version: number;
}

interface NameEntry {
  /** Key into `identities`; undefined = keyd has no key for the name. */
  identityKey: string | undefined;
  expires: number;
  /** This name's view of the identity (shared chain, name-bound signer). */
  identity?: EdgeIdentity;
}

/** One keyd answer, held once however many names it serves. */
interface SharedIdentity {
  readonly found: KeydIdentityLike;
  readonly certificateChain: readonly Uint8Array[];
  readonly keyRef: string;
  readonly keyType: string;
  readonly version: number;
}

/** What makes two keyd answers the same identity: key reference, its version, the chain. */
function identityKeyOf(found: KeydIdentityLike): string {
  const h = createHash('sha256');
  for (const cert of found.certificateChain) {
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(cert.length);
    h.update(len).update(cert);
  }
  return `${found.keyRef}\0${found.version}\0${h.digest('base64')}`;
}

/** Map in insertion order used as an LRU: a hit moves the entry to the end. */
function touch<K, V>(map: Map<K, V>, key: K, value: V): void {
  map.delete(key);
  map.set(key, value);
}

export class IdentityCache {
  private readonly names = new Map<string, NameEntry>();
  private readonly identities = new Map<string, SharedIdentity>();
  private readonly pending = new Map<string, Promise<EdgeIdentity | undefined>>();
  private generation = 0;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private maxIdentities: number;
  private maxNames: number;
  private readonly now: () => number;

  constructor(
    private readonly source: IdentitySource,
    private readonly opts: IdentityCacheOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? 5 * 60_000;
    this.negativeTtlMs = opts.negativeTtlMs ?? 1000;
    this.maxIdentities = opts.maxIdentities ?? DEFAULT_MAX_IDENTITIES;
    this.maxNames = opts.maxNames ?? DEFAULT_MAX_NAMES;
    this.now = opts.now ?? Date.now;
    source.on('change', () => this.clear());
    source.on('connected', () => this.clear());
  }

  /** Server names remembered. */
  get size(): number {
    return this.names.size;
  }

  /** Distinct identities held. */
  get identityCount(): number {
    return this.identities.size;
  }

  /** New size limits (a reload); entries over them go at the next insertion, oldest first. */
  setLimits(maxIdentities: number, maxNames: number): void {
    this.maxIdentities = maxIdentities;
    this.maxNames = maxNames;
  }

  clear(): void {
    this.generation++;
    this.names.clear();
    this.identities.clear();
    this.pending.clear();
  }

  /** The identity for `serverName` (already normalised), from cache or keyd; rejects when keyd fails. */
  get(serverName: string): Promise<EdgeIdentity | undefined> | EdgeIdentity | undefined {
    const entry = this.names.get(serverName);
    if (entry && entry.expires > this.now()) {
      if (entry.identityKey === undefined) {
        touch(this.names, serverName, entry);
        this.opts.onLookup?.('hit');
        return undefined;
      }
      const shared = this.identities.get(entry.identityKey);
      if (shared && entry.identity) {
        touch(this.names, serverName, entry);
        touch(this.identities, entry.identityKey, shared);
        this.opts.onLookup?.('hit');
        return entry.identity;
      }
      // Its identity was evicted: ask keyd again.
    }
    this.opts.onLookup?.('miss');
    const inFlight = this.pending.get(serverName);
    if (inFlight) return inFlight;
    const generation = this.generation;
    const lookup = this.fetch(serverName).then(
      (identity) => {
        if (this.generation === generation) this.pending.delete(serverName);
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
    const generation = this.generation;
    const found = await this.source.identity(serverName);
    const current = this.generation === generation;
    if (!found) {
      if (current) this.remember(serverName, undefined, this.negativeTtlMs);
      return undefined;
    }
    const key = identityKeyOf(found);
    let shared = current ? this.identities.get(key) : undefined;
    if (!shared) {
      shared = { found, certificateChain: found.certificateChain, keyRef: found.keyRef, keyType: found.keyType, version: found.version };
    }
    const identity = this.forName(serverName, shared);
    this.opts.onFetched?.(serverName, identity);
    if (current) {
      touch(this.identities, key, shared);
      while (this.identities.size > this.maxIdentities) {
        this.identities.delete(this.identities.keys().next().value!);
        this.opts.onEvict?.('identity');
      }
      this.remember(serverName, key, this.ttlMs, identity);
    }
    return identity;
  }

  /**
   * This name's view of a shared keyd answer: the same chain (held once), with a signer
   * bound to the name, because keyd grants signatures per server name, not per key
   * (docs/KEYD.md "Grants are by name").
   */
  private forName(serverName: string, shared: SharedIdentity): EdgeIdentity {
    return {
      certificateChain: shared.certificateChain,
      signer: this.source.signer(shared.found, serverName, this.opts.observeSign),
      keyRef: shared.keyRef,
      names: shared.found.names,
      keyType: shared.keyType,
      version: shared.version,
    };
  }

  private remember(serverName: string, identityKey: string | undefined, ttl: number, identity?: EdgeIdentity): void {
    touch(this.names, serverName, { identityKey, expires: this.now() + ttl, ...(identity ? { identity } : {}) });
    while (this.names.size > this.maxNames) {
      this.names.delete(this.names.keys().next().value!);
      this.opts.onEvict?.('name');
    }
  }
}
