import { checkAlpnNames } from './alpn-names.js';
import { DEFAULT_GROUPS } from './crypto/key-exchange.js';
import { DEFAULT_CIPHER_SUITES } from './crypto/suites.js';
import { DEFAULT_CIPHER_SUITES12, SUITES12 } from './crypto/suites12.js';
import { SessionCache12 } from './handshake/session12.js';
import { ringForTicketLifetime, TicketKeyRing } from './handshake/ticket-keys.js';
import { MAX_PLAINTEXT } from './record/protection.js';
import { MAX_TIMER_MS } from '../lib/timer-range.js';
import type { KeyObject } from 'node:crypto';
import type { ClientIdentity } from './handshake/context.js';
import type { ResolveIdentity } from './signer.js';

/**
 * Client certificate authentication (RFC 8446 §4.3.2, §4.4.2, §4.4.3), per server or per
 * identity (an identity's setting wins). The engine runs the protocol; whether a chain is
 * acceptable is the `verifyChain` callback's decision (src/tls/client-auth/ has one over a
 * CA bundle and a CRL), so the policy stays pluggable.
 */
export interface ClientAuthOptions {
  /**
   * off: never ask. optional: ask, and accept a client that sends no certificate.
   * required: ask, and refuse an empty Certificate with certificate_required (§4.4.2.4).
   */
  readonly mode: 'off' | 'optional' | 'required';
  /**
   * Checks a non-empty client chain (DER, leaf first) and returns who the client is and the
   * key its CertificateVerify must verify with; throws a TlsAlert naming what is wrong
   * (unknown_ca, certificate_expired, bad_certificate, unsupported_certificate, …).
   * Required unless mode is off.
   */
  readonly verifyChain?: (chain: readonly Uint8Array[]) => VerifiedClientCertificate;
  /** DER DistinguishedNames for certificate_authorities in the CertificateRequest (§4.2.4); none = not sent. */
  readonly certificateAuthorities?: readonly Uint8Array[];
  /** signature_algorithms of the TLS 1.3 CertificateRequest; default CLIENT_SIGNATURE_SCHEMES. PKCS#1 v1.5 or ecdsa_sha224 listed here never verify a CertificateVerify (illegal_parameter, RFC 8446 §4.2.3). */
  readonly signatureSchemes?: readonly number[];
  /**
   * Names the policy (mode + trust anchors + CRL) in session tickets: a ticket issued
   * under another policy is not resumed (a full handshake follows). Default: the mode.
   */
  readonly policyId?: string;
}

/** What a ClientAuthOptions.verifyChain accepted. */
export interface VerifiedClientCertificate {
  readonly identity: ClientIdentity;
  /** The leaf's public key, which the client's CertificateVerify must verify with. */
  readonly publicKey: KeyObject;
}

/** Configuration of the TLS 1.3 / TLS 1.2 server engine. Everything but `resolveIdentity` has a sane default. */
export interface TlsServerOptions {
  /** Speak TLS 1.2 (RFC 5246, the profile of docs/TLS12.md) to clients without TLS 1.3. Default true. */
  tls12?: boolean;
  /** Speak TLS 1.3. Default true. With TLS 1.2 only, ServerHello.random carries no downgrade sentinel (RFC 8446 §4.1.3). */
  tls13?: boolean;
  /** TLS 1.2 cipher suites allowed (ECDHE + AEAD only); the client's order picks among them (Mozilla "intermediate"). Default: all six (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; ECDSA and RSA). */
  cipherSuites12?: readonly number[];
  /** Refuse TLS 1.2 handshakes without the extended master secret (RFC 7627 §5.2) with handshake_failure. Default false. */
  requireExtendedMasterSecret?: boolean;
  /** TLS 1.2 sessions kept for session-id resumption (RFC 5246 §7.4.1.2), oldest dropped first; 0 disables. Default 10 000. */
  sessionCacheSize?: number;
  /** Picks certificate chain + signer by SNI (undefined = no SNI → default identity). */
  resolveIdentity: ResolveIdentity;
  /**
   * ALPN protocols in server preference order (RFC 7301), each sent and matched as its UTF-8
   * bytes. None or empty: ALPN is not negotiated. createServer / setTlsOptions (resolveOptions)
   * throw a RangeError for an empty name, one over 255 UTF-8 bytes (§3.1), a lone UTF-16
   * surrogate (no UTF-8 form) or a name listed twice, and a TypeError for a non-list or a
   * non-string entry; the message names the entry (`alpnProtocols[2]`).
   */
  alpnProtocols?: readonly string[];
  /** Key exchange groups in server preference order. Default: x25519, secp256r1, secp384r1, secp521r1, x448, ffdhe2048, ffdhe3072 (RFC 7919; ffdhe4096, 6144 and 8192 are supported when listed: each exchange costs 3–13 ms of CPU, and a client can choose it for every handshake). */
  groups?: readonly number[];
  /** Cipher suites in server preference order. Default: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305. */
  cipherSuites?: readonly number[];
  /** NewSessionTickets sent after the handshake (RFC 8446 §4.6.1). Default 2; 0 disables resumption (TLS 1.2 too: no ticket, no session id); at most 255 (each ticket's nonce is its one-byte index, unique per connection). */
  ticketCount?: number;
  /**
   * node:net adapter only: NewSessionTickets wait up to this long after the client Finished
   * for our first application data (or KeyUpdate, or close_notify) and go out in the same
   * write. Default 0: they leave in the turn the client Finished arrived (with a close_notify
   * that came with it). Not higher by default: a client that only resumes (gnutls-cli
   * --resume) waits just a few ms for its tickets after the handshake. An integer from 0 to
   * 2^31 - 1 (node's longest timer; resolveOptions refuses more, which would run after 1 ms).
   */
  ticketDelayMs?: number;
  /** Ticket lifetime in whole seconds, 1 to 604 800 (7 days, §4.6.1), TLS 1.2 tickets too; TLS 1.2 session ids live at most 24 h of it (RFC 5246 Appendix F.1.4). Default 7200. */
  ticketLifetimeSeconds?: number;
  /**
   * Ticket encryption keys; by default a rotating in-memory ring private to this server whose
   * keys (a new one each hour) open tickets for max(8 h, 1 h + ticketLifetimeSeconds), so a
   * ticket resumes for all of its advertised lifetime. A ring given here must do the same:
   * its retainMs at least rotationMs + the lifetime (2 × rotationMs + the lifetime when it
   * imports keys), else tickets stop resuming before their advertised lifetime ends.
   */
  ticketKeys?: TicketKeyRing;
  /**
   * node:net adapter: hard handshake deadline in ms, from TCP accept to the client Finished;
   * input does not extend it. When it passes: user_canceled + close_notify (§6.1). Default 10 000;
   * an integer from 1 to 2^31 - 1 (node's longest timer: a longer one would run after 1 ms).
   */
  handshakeTimeoutMs?: number;
  /** Largest handshake message accepted, in bytes. Default: the largest ClientHello the wire format allows (~128 KiB). */
  maxHandshakeMessageSize?: number;
  /** Consecutive records that carry nothing (ignored 0-RTT data, CCS, empty records) before failing. Default 32. */
  maxIgnoredRecords?: number;
  /**
   * node:net adapter only: keep our side open after the peer's close_notify or FIN, so the
   * application can still answer (RFC 8446 §6.1 half-close). Default false: our side ends
   * with the peer's, after what was already written (like node:net).
   */
  allowHalfOpen?: boolean;
  /**
   * Our record_size_limit (RFC 8449), announced in EncryptedExtensions to a client that sent the
   * extension; it then bounds the TLSInnerPlaintext we accept from that client. A client that did
   * not send it is not told, and may send records of 2^14 bytes (RFC 8449 §4). Default 2^14 + 1.
   */
  recordSizeLimit?: number;
  /**
   * KeyUpdates accepted from the peer per `keyUpdateWindowMs` (§4.6.3); one more → fatal
   * unexpected_message. Default 64 (conformance suites send 32 in a row; real peers a few per
   * connection lifetime).
   */
  maxKeyUpdates?: number;
  /** The window of `maxKeyUpdates`, in ms. Default 60 000. */
  keyUpdateWindowMs?: number;
  /**
   * node:net adapter only: after a failure (alert sent), input is read and discarded so the
   * peer sees our alert rather than a reset — at most this long from the failure, whatever
   * the peer sends. Default 120 000 ms (a 2^24-byte message from a slow client); at most 2^31 - 1.
   */
  lingerMs?: number;
  /** node:net adapter only: the linger also ends after this long without input. Default 2 000 ms; at most 2^31 - 1. */
  lingerIdleMs?: number;
  /** node:net adapter only: input bytes discarded while lingering before the socket is destroyed. Default 2^24 + 2^20 (a maximal handshake message and its record overhead). */
  lingerMaxBytes?: number;
  /** node:net adapter only: lingering sockets kept per server; past it the oldest is destroyed. Default 1024. */
  maxLingering?: number;
  /**
   * node:net adapter only: connections handshaking or open at once (lingering ones not
   * counted); more are closed at accept. Default: no limit.
   */
  maxConnections?: number;
  /** Client certificates (default off); an Identity's `clientAuth` overrides it for its name. */
  clientAuth?: ClientAuthOptions;
}

export interface ResolvedOptions {
  resolveIdentity: ResolveIdentity;
  tls12: boolean;
  tls13: boolean;
  cipherSuites12: readonly number[];
  requireExtendedMasterSecret: boolean;
  sessionCache12: SessionCache12;
  alpnProtocols: readonly string[];
  groups: readonly number[];
  cipherSuites: readonly number[];
  ticketCount: number;
  ticketLifetimeSeconds: number;
  ticketDelayMs: number;
  ticketKeys: TicketKeyRing | undefined;
  handshakeTimeoutMs: number;
  maxHandshakeMessageSize: number;
  maxIgnoredRecords: number;
  recordSizeLimit: number;
  maxKeyUpdates: number;
  keyUpdateWindowMs: number;
  lingerMs: number;
  lingerIdleMs: number;
  lingerMaxBytes: number;
  maxLingering: number;
  clientAuth: ClientAuthOptions | undefined;
}

/**
 * The largest ClientHello the wire format allows: 2^16-2 bytes of cipher suites plus a
 * 2^16-1 byte extension block plus the fixed fields (§4.1.2). Real ones are far smaller,
 * but conformance suites send maximal lists, and refusing them would be wrong.
 */
const MAX_CLIENT_HELLO_SIZE = 2 + 32 + 33 + 2 + 0xfffe + 256 + 2 + 0xffff;

/** Fills in the defaults and checks the ranges (RangeError names the option). */
export function resolveOptions(o: TlsServerOptions): ResolvedOptions {
  const recordSizeLimit = o.recordSizeLimit ?? MAX_PLAINTEXT + 1;
  if (recordSizeLimit < 64 || recordSizeLimit > MAX_PLAINTEXT + 1) {
    throw new RangeError('recordSizeLimit must be between 64 and 2^14 + 1');
  }
  const ticketLifetimeSeconds = o.ticketLifetimeSeconds ?? 7200;
  // NaN passed a range check alone and went out as ticket_lifetime 0 (u32), with tickets and
  // session ids that never resumed; a fraction went out truncated. The field is whole seconds.
  if (!Number.isInteger(ticketLifetimeSeconds) || ticketLifetimeSeconds < 1 || ticketLifetimeSeconds > 604_800) {
    throw new RangeError('ticketLifetimeSeconds must be an integer in [1, 604800] (RFC 8446 §4.6.1)');
  }
  const ticketCount = o.ticketCount ?? 2;
  // §4.6.1: ticket_nonce is unique per ticket on a connection; ours is one byte (the index).
  if (!Number.isInteger(ticketCount) || ticketCount < 0 || ticketCount > 255) {
    throw new RangeError('ticketCount must be an integer in [0, 255] (one-byte ticket_nonce, unique per connection: RFC 8446 §4.6.1)');
  }
  const tls12 = o.tls12 ?? true;
  const tls13 = o.tls13 ?? true;
  if (!tls12 && !tls13) throw new RangeError('tls12 and tls13 cannot both be off');
  const cipherSuites12 = o.cipherSuites12 ?? DEFAULT_CIPHER_SUITES12;
  for (const id of cipherSuites12) {
    if (!SUITES12.has(id)) throw new RangeError(`cipherSuites12: 0x${id.toString(16)} is not a TLS 1.2 ECDHE AEAD suite of this server`);
  }
  const sessionCacheSize = o.sessionCacheSize ?? 10_000;
  if (!Number.isInteger(sessionCacheSize) || sessionCacheSize < 0) throw new RangeError('sessionCacheSize must be a non-negative integer');
  return {
    resolveIdentity: o.resolveIdentity,
    tls12,
    tls13,
    cipherSuites12,
    requireExtendedMasterSecret: o.requireExtendedMasterSecret ?? false,
    sessionCache12: new SessionCache12(sessionCacheSize),
    // RFC 7301 §3.1, checked here so a bad name is refused at creation, not met at a handshake.
    alpnProtocols: o.alpnProtocols === undefined ? [] : checkAlpnNames(o.alpnProtocols, 'alpnProtocols', (i) => `alpnProtocols[${i}]`),
    groups: o.groups ?? DEFAULT_GROUPS,
    cipherSuites: o.cipherSuites ?? DEFAULT_CIPHER_SUITES,
    ticketCount,
    ticketLifetimeSeconds,
    ticketDelayMs: timerMs(o.ticketDelayMs, 0, 'ticketDelayMs', 0),
    // Keys kept for a rotation + the lifetime, so a ticket opens for all of its advertised lifetime.
    ticketKeys: o.ticketKeys ?? ringForTicketLifetime(ticketLifetimeSeconds),
    handshakeTimeoutMs: timerMs(o.handshakeTimeoutMs, 10_000, 'handshakeTimeoutMs', 1),
    maxHandshakeMessageSize: o.maxHandshakeMessageSize ?? MAX_CLIENT_HELLO_SIZE,
    maxIgnoredRecords: o.maxIgnoredRecords ?? 32,
    recordSizeLimit,
    maxKeyUpdates: positive(o.maxKeyUpdates, 64, 'maxKeyUpdates'),
    keyUpdateWindowMs: positive(o.keyUpdateWindowMs, 60_000, 'keyUpdateWindowMs'),
    lingerMs: timerMs(o.lingerMs, 120_000, 'lingerMs', 1),
    lingerIdleMs: timerMs(o.lingerIdleMs, 2000, 'lingerIdleMs', 1),
    lingerMaxBytes: positive(o.lingerMaxBytes, 2 ** 24 + 2 ** 20, 'lingerMaxBytes'),
    maxLingering: positive(o.maxLingering, 1024, 'maxLingering'),
    clientAuth: o.clientAuth === undefined ? undefined : checkClientAuth(o.clientAuth, 'clientAuth'),
  };
}

/**
 * A delay the node:net adapter gives a timer (socket.ts): an integer number of ms from `min` to
 * MAX_TIMER_MS. Node runs a longer delay after 1 ms, so handshakeTimeoutMs 2^31 cut every
 * handshake at once, and a larger lingerMs or ticketDelayMs ended at once too; NaN or a
 * negative handshakeTimeoutMs, never checked before, did the same.
 */
function timerMs(value: number | undefined, fallback: number, name: string, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > MAX_TIMER_MS) {
    throw new RangeError(`${name} must be an integer number of ms from ${min} to ${MAX_TIMER_MS} (node's timers run a longer delay after 1 ms), not ${value}`);
  }
  return value;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer`);
  return value;
}

/** Checks a ClientAuthOptions (RangeError names the option); used for server and identity settings. */
export function checkClientAuth(c: ClientAuthOptions, where: string): ClientAuthOptions {
  if (c.mode !== 'off' && c.mode !== 'optional' && c.mode !== 'required') {
    throw new RangeError(`${where}.mode must be off, optional or required`);
  }
  if (c.mode !== 'off' && typeof c.verifyChain !== 'function') {
    throw new RangeError(`${where}.verifyChain is required when mode is ${c.mode}`);
  }
  if (c.signatureSchemes !== undefined && c.signatureSchemes.length === 0) {
    throw new RangeError(`${where}.signatureSchemes must not be empty (RFC 8446 §4.2.3)`);
  }
  return c;
}
