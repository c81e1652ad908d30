import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { generateKeyPairSync, verify as cryptoVerify, constants, type KeyObject } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { DelegationReply, DelegationRequest } from '../keyd/protocol.js';
import { patternCovers } from '../keyd/names.js';
import {
  DELEGATION_USAGE_OID,
  LocalSigner,
  MAX_DELEGATED_CREDENTIAL_SECONDS,
  SCHEMES,
  SignatureScheme,
  decodeDelegatedCredential,
  delegatedCredentialSignedContent,
  type DelegatedCredentialOffer,
} from '../tls/index.js';
import type { EdgeIdentity } from './identity-cache.js';

/**
 * RFC 9345 delegated credentials, held by the edge: per keyd identity whose leaf carries
 * DelegationUsage, a fresh ECDSA P-256 key pair made in this process (never written, never
 * logged, never exported), certified by keyd (opcode 0x06), and handed to the engine on the
 * Identity. The engine signs CertificateVerify with it for clients that offer
 * delegated_credential; every other handshake still signs through keyd.
 *
 * Renewal: once a random point between `renewAfter` and `renewAfter + renewJitter` of the
 * credential's lifetime has passed (so a fleet started together does not renew together),
 * a new key pair is made and certified; the current credential is served until the new one
 * is in place, then dropped. A credential is served only until `expiryMargin` before it
 * expires (clients' clocks run ahead, RFC 9345 §5.1), then dropped. Only identities whose
 * credential was served since it was issued are renewed ahead of time (others get one at
 * their next handshake). keyd's change notice for a name drops
 * the credentials of the identities serving it; a changed leaf replaces them.
 *
 * While keyd is unreachable, `fallback(name)` returns the identity last served with a
 * credential that is still valid, so clients offering delegated credentials keep completing
 * handshakes until it expires; other clients fail as without credentials (keyd signs those).
 */

export interface CredentialIssuer extends EventEmitter {
  issueDelegatedCredential(request: DelegationRequest): Promise<DelegationReply>;
}

export interface DelegatedCredentialOptions {
  /** Lifetime asked of keyd, in seconds (keyd's policy may allow less: it refuses then). Default 14400 (4 h). */
  lifetimeSeconds?: number;
  /** Stop serving a credential this long before it expires. Default 60 s. */
  expiryMarginSeconds?: number;
  /** Renew once this fraction of the lifetime passed… Default 0.5. */
  renewAfter?: number;
  /** …plus up to this fraction, at random. Default 0.25. */
  renewJitter?: number;
  /** After keyd refused or failed: wait this long (±50 %) before asking again. Default 30 s. */
  retryMs?: number;
  /** Identities holding credentials at once. Default 1024. */
  maxIdentities?: number;
  /** How often expiry and renewal are checked. Default 10 s. */
  checkIntervalMs?: number;
  now?: () => number;
  random?: () => number;
  /** Makes the credential's key pair (default: a fresh ECDSA P-256 pair from node:crypto; tests inject one to find it in memory). */
  generateKeyPair?: () => { privateKey: KeyObject; publicKey: KeyObject };
  /** Called when an identity's credential changes: its expiry (ms), or undefined when dropped. */
  onCredential?: (keyRef: string, notAfter: number | undefined) => void;
  /** Called per issuance attempt. */
  onIssue?: (outcome: 'ok' | 'failed', keyRef: string, error?: Error) => void;
}

/** The credential's key signs CertificateVerify with this scheme. */
const CREDENTIAL_SCHEME = SignatureScheme.ecdsa_secp256r1_sha256;

interface HeldCredential {
  readonly offer: DelegatedCredentialOffer;
  /** The chain it is served with (its leaf is the one keyd bound the credential to). */
  readonly chain: readonly Uint8Array[];
  readonly issuedAt: number;
  /** Expiry per the credential: the leaf's notBefore + valid_time. */
  readonly notAfter: number;
  readonly renewAt: number;
}

interface IdentityCredentials {
  readonly keyRef: string;
  /** The identity last served (its names, for change notices; its chain, for the fallback). */
  identity: EdgeIdentity;
  /** A name this identity was served under: keyd grants issuance per name. */
  name: string;
  current: HeldCredential | undefined;
  inFlight: boolean;
  retryAt: number;
  /** Last handshake for this identity (with or without a credential). */
  lastUsed: number;
  /** Last handshake served a credential: renewal happens only for identities clients use with one. */
  lastServed: number;
  dropped: boolean;
}

/** DelegationUsage present (RFC 9345 §4.2) and notBefore (valid_time counts from it), read once per leaf. */
const leafFactsCache = new WeakMap<Uint8Array, { allowed: boolean; notBefore: number }>();

function leafFacts(leaf: Uint8Array): { allowed: boolean; notBefore: number } {
  let facts = leafFactsCache.get(leaf);
  if (!facts) {
    try {
      const cert = new x509.X509Certificate(leaf);
      facts = { allowed: cert.getExtension(DELEGATION_USAGE_OID) !== null, notBefore: cert.notBefore.getTime() };
    } catch {
      facts = { allowed: false, notBefore: 0 };
    }
    leafFactsCache.set(leaf, facts);
  }
  return facts;
}

function sameChain(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  if (a === b) return true;
  return a.length === b.length && a.every((cert, i) => Buffer.from(cert).equals(b[i]!));
}

export class DelegatedCredentials {
  private readonly entries = new Map<string, IdentityCredentials>();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly lifetimeSeconds: number;
  private readonly marginMs: number;
  private readonly renewAfter: number;
  private readonly renewJitter: number;
  private readonly retryMs: number;
  private readonly maxIdentities: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly issuer: CredentialIssuer,
    private readonly opts: DelegatedCredentialOptions = {},
  ) {
    this.lifetimeSeconds = opts.lifetimeSeconds ?? 4 * 3600;
    this.marginMs = (opts.expiryMarginSeconds ?? 60) * 1000;
    this.renewAfter = opts.renewAfter ?? 0.5;
    this.renewJitter = opts.renewJitter ?? 0.25;
    this.retryMs = opts.retryMs ?? 30_000;
    this.maxIdentities = opts.maxIdentities ?? 1024;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    issuer.on('change', (change: { names?: string[] } | undefined) => this.dropNames(change?.names ?? []));
    const interval = opts.checkIntervalMs ?? 10_000;
    if (interval > 0) {
      this.timer = setInterval(() => this.check(), interval);
      this.timer.unref();
    }
  }

  /** Identities holding a credential now. */
  get size(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.current) n++;
    return n;
  }

  /**
   * The credential to offer with `identity` (keyd's answer for `name`), or undefined. Starts
   * obtaining one when the leaf allows delegation and none is held, due or being obtained.
   */
  offerFor(name: string, identity: EdgeIdentity): DelegatedCredentialOffer | undefined {
    const leaf = identity.certificateChain[0];
    if (!leaf) return undefined;
    let entry = this.entries.get(identity.keyRef);
    if (entry && entry.current && !sameChain(entry.current.chain, identity.certificateChain)) {
      // keyd now serves another leaf for this key: a credential bound to the old one is useless.
      this.drop(entry);
      entry = undefined;
    }
    const now = this.now();
    if (!entry) {
      if (!leafFacts(leaf).allowed || this.entries.size >= this.maxIdentities) return undefined;
      entry = { keyRef: identity.keyRef, identity, name, current: undefined, inFlight: false, retryAt: 0, lastUsed: now, lastServed: 0, dropped: false };
      this.entries.set(identity.keyRef, entry);
    }
    entry.identity = identity;
    entry.name = name;
    entry.lastUsed = now;
    const current = entry.current;
    if ((!current || now >= current.renewAt) && !entry.inFlight && now >= entry.retryAt) this.obtain(entry);
    if (!current || now >= current.offer.notAfter) return undefined;
    entry.lastServed = now;
    return current.offer;
  }

  /** keyd is unreachable: the identity last served for `name` with a still-valid credential, if any. */
  fallback(name: string): EdgeIdentity | undefined {
    const now = this.now();
    for (const entry of this.entries.values()) {
      const current = entry.current;
      if (!current || now >= current.offer.notAfter) continue;
      if (entry.name === name || entry.identity.names?.some((pattern) => patternCovers(pattern, name))) {
        return {
          ...entry.identity,
          certificateChain: current.chain,
          delegatedCredential: current.offer,
        };
      }
    }
    return undefined;
  }

  /** Resolves once `keyRef`'s identity holds a credential (tests, the demo's first handshake). */
  whenHeld(keyRef: string): Promise<void> {
    if (this.entries.get(keyRef)?.current) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        if (!this.entries.get(keyRef)?.current) return;
        this.waiters.delete(wake);
        resolve();
      };
      this.waiters.add(wake);
    });
  }

  /** Expiry and renewal (the interval timer calls it; tests with an injected clock call it too). */
  check(): void {
    const now = this.now();
    for (const entry of [...this.entries.values()]) {
      const current = entry.current;
      if (current && now >= current.offer.notAfter) {
        entry.current = undefined;
        this.opts.onCredential?.(entry.keyRef, undefined);
      }
      const usedSinceIssue = current !== undefined && entry.lastServed >= current.issuedAt;
      if (entry.current && now >= entry.current.renewAt && usedSinceIssue && !entry.inFlight && now >= entry.retryAt) this.obtain(entry);
      // No credential and no handshake for a whole lifetime: forget the identity.
      if (!entry.current && !entry.inFlight && entry.lastUsed < now - this.lifetimeSeconds * 1000) this.drop(entry);
    }
  }

  /** Drops every credential (keyd's key changed everywhere, or shutdown). */
  clear(): void {
    for (const entry of [...this.entries.values()]) this.drop(entry);
  }

  close(): void {
    clearInterval(this.timer);
    this.clear();
  }

  /** keyd's change notice: names changed (none listed = anything may have). */
  private dropNames(names: readonly string[]): void {
    for (const entry of [...this.entries.values()]) {
      const served = [entry.name, ...(entry.identity.names ?? [])];
      const affected = names.length === 0 || names.some((n) => served.some((s) => s === n || patternCovers(s, n) || patternCovers(n, s)));
      if (affected) this.drop(entry);
    }
  }

  private drop(entry: IdentityCredentials): void {
    entry.dropped = true;
    const had = entry.current !== undefined;
    entry.current = undefined;
    this.entries.delete(entry.keyRef);
    if (had) this.opts.onCredential?.(entry.keyRef, undefined);
  }

  /** A fresh key pair, certified by keyd; the current credential stays until this one is in place. */
  private obtain(entry: IdentityCredentials): void {
    entry.inFlight = true;
    const identity = entry.identity;
    const chain = identity.certificateChain;
    const leaf = chain[0]!;
    const { privateKey, publicKey } = this.opts.generateKeyPair?.() ?? generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const spki = publicKey.export({ format: 'der', type: 'spki' });
    const requestedAt = this.now();
    this.issuer
      .issueDelegatedCredential({
        keyRef: entry.keyRef,
        serverName: entry.name,
        dcCertVerifyAlgorithm: CREDENTIAL_SCHEME,
        lifetimeSeconds: this.lifetimeSeconds,
        subjectPublicKeyInfo: spki,
      })
      .then((reply) => {
        entry.inFlight = false;
        if (entry.dropped || this.entries.get(entry.keyRef) !== entry) return;
        const held = this.accept(reply, chain, leaf, spki, privateKey, requestedAt);
        entry.current = held;
        this.opts.onIssue?.('ok', entry.keyRef);
        this.opts.onCredential?.(entry.keyRef, held.notAfter);
        for (const wake of [...this.waiters]) wake();
      })
      .catch((err: unknown) => {
        entry.inFlight = false;
        entry.retryAt = this.now() + this.retryMs * (0.5 + this.random());
        this.opts.onIssue?.('failed', entry.keyRef, err instanceof Error ? err : new Error(String(err)));
      });
  }

  /**
   * Checks keyd's answer before serving it (a bad credential would fail every delegated
   * handshake): bound to our leaf, for our key and scheme, and signed by the leaf's key
   * over the RFC 9345 §4 content.
   */
  private accept(
    reply: DelegationReply,
    chain: readonly Uint8Array[],
    leaf: Uint8Array,
    spki: Buffer,
    privateKey: KeyObject,
    requestedAt: number,
  ): HeldCredential {
    if (!Buffer.from(reply.certificate).equals(leaf)) throw new Error('keyd bound the credential to another certificate (the key changed meanwhile)');
    const dc = decodeDelegatedCredential(reply.delegatedCredential);
    if (!Buffer.from(dc.credential.subjectPublicKeyInfo).equals(spki) || dc.credential.dcCertVerifyAlgorithm !== CREDENTIAL_SCHEME) {
      throw new Error('keyd certified another key or scheme than the one asked for');
    }
    const info = SCHEMES.get(dc.algorithm);
    const content = delegatedCredentialSignedContent(leaf, dc.credentialBytes, dc.algorithm);
    const verifyKey = { key: Buffer.from(new x509.X509Certificate(leaf).publicKey.rawData), format: 'der' as const, type: 'spki' as const };
    const ok =
      info !== undefined &&
      (info.keyType === 'rsa'
        ? cryptoVerify(info.hash, content, { ...verifyKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, dc.signature)
        : cryptoVerify(info.hash, content, verifyKey, dc.signature));
    if (!ok) throw new Error('the credential keyd issued does not verify under the certificate\'s key');
    const notAfter = leafFacts(leaf).notBefore + dc.credential.validTime * 1000;
    // keyd counts the lifetime on its clock, clients check it on theirs (§4.1.3): an answer
    // that is unusable on ours (keyd's clock far behind or ahead) would be asked again at
    // every handshake, or refused by every client with illegal_parameter. Refused here, it
    // is logged and retried after retryMs.
    const now = this.now();
    if (notAfter - this.marginMs <= now) {
      throw new Error(`keyd issued a credential expiring at ${new Date(notAfter).toISOString()}, already past (less the expiry margin) on this edge's clock: keyd's clock is behind`);
    }
    if (notAfter > now + MAX_DELEGATED_CREDENTIAL_SECONDS * 1000) {
      throw new Error(`keyd issued a credential expiring at ${new Date(notAfter).toISOString()}, more than 7 days from now on this edge's clock (RFC 9345 §4.1.3: clients refuse it): keyd's clock is ahead`);
    }
    const lifetime = Math.max(0, notAfter - requestedAt);
    return {
      offer: { credential: reply.delegatedCredential, signer: new LocalSigner(privateKey), notAfter: notAfter - this.marginMs },
      chain,
      issuedAt: requestedAt,
      notAfter,
      renewAt: requestedAt + lifetime * (this.renewAfter + this.renewJitter * this.random()),
    };
  }
}
