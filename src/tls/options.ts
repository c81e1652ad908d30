import { DEFAULT_GROUPS } from './crypto/key-exchange.js';
import { DEFAULT_CIPHER_SUITES } from './crypto/suites.js';
import { TicketKeyRing } from './handshake/ticket-keys.js';
import { MAX_PLAINTEXT } from './record/protection.js';
import type { ResolveIdentity } from './signer.js';

/** Configuration of the TLS 1.3 server engine. Everything but `resolveIdentity` has a sane default. */
export interface TlsServerOptions {
  /** Picks certificate chain + signer by SNI (undefined = no SNI → default identity). */
  resolveIdentity: ResolveIdentity;
  /** ALPN protocols in server preference order (RFC 7301). None: ALPN is not negotiated. */
  alpnProtocols?: readonly string[];
  /** Key exchange groups in server preference order. Default: x25519, secp256r1, secp384r1, secp521r1, x448, ffdhe2048 … ffdhe8192 (RFC 7919). */
  groups?: readonly number[];
  /** Cipher suites in server preference order. Default: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305. */
  cipherSuites?: readonly number[];
  /** NewSessionTickets sent after the handshake (RFC 8446 §4.6.1). Default 2; 0 disables resumption. */
  ticketCount?: number;
  /**
   * node:net adapter only: NewSessionTickets wait up to this long after the client Finished
   * for our first application data (or KeyUpdate, or close_notify) and go out in the same
   * write. Default 0: they leave in the turn the client Finished arrived (with a close_notify
   * that came with it). Not higher by default: a client that only resumes (gnutls-cli
   * --resume) waits just a few ms for its tickets after the handshake.
   */
  ticketDelayMs?: number;
  /** Ticket lifetime in seconds (≤ 7 days, §4.6.1). Default 7200. */
  ticketLifetimeSeconds?: number;
  /** Ticket encryption keys; by default a rotating in-memory ring private to this server. */
  ticketKeys?: TicketKeyRing;
  /**
   * node:net adapter: hard handshake deadline in ms, from TCP accept to the client Finished;
   * input does not extend it. When it passes: user_canceled + close_notify (§6.1). Default 10 000.
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
  /** Largest plaintext record we accept and announce in record_size_limit (RFC 8449). Default 2^14. */
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
   * the peer sends. Default 120 000 ms (a 2^24-byte message from a slow client).
   */
  lingerMs?: number;
  /** node:net adapter only: the linger also ends after this long without input. Default 2 000 ms. */
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
}

export interface ResolvedOptions {
  resolveIdentity: ResolveIdentity;
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
  if (ticketLifetimeSeconds <= 0 || ticketLifetimeSeconds > 604_800) {
    throw new RangeError('ticketLifetimeSeconds must be in (0, 604800] (RFC 8446 §4.6.1)');
  }
  return {
    resolveIdentity: o.resolveIdentity,
    alpnProtocols: o.alpnProtocols ?? [],
    groups: o.groups ?? DEFAULT_GROUPS,
    cipherSuites: o.cipherSuites ?? DEFAULT_CIPHER_SUITES,
    ticketCount: o.ticketCount ?? 2,
    ticketLifetimeSeconds,
    ticketDelayMs: nonNegative(o.ticketDelayMs, 0, 'ticketDelayMs'),
    ticketKeys: o.ticketKeys ?? new TicketKeyRing(),
    handshakeTimeoutMs: o.handshakeTimeoutMs ?? 10_000,
    maxHandshakeMessageSize: o.maxHandshakeMessageSize ?? MAX_CLIENT_HELLO_SIZE,
    maxIgnoredRecords: o.maxIgnoredRecords ?? 32,
    recordSizeLimit,
    maxKeyUpdates: positive(o.maxKeyUpdates, 64, 'maxKeyUpdates'),
    keyUpdateWindowMs: positive(o.keyUpdateWindowMs, 60_000, 'keyUpdateWindowMs'),
    lingerMs: positive(o.lingerMs, 120_000, 'lingerMs'),
    lingerIdleMs: positive(o.lingerIdleMs, 2000, 'lingerIdleMs'),
    lingerMaxBytes: positive(o.lingerMaxBytes, 2 ** 24 + 2 ** 20, 'lingerMaxBytes'),
    maxLingering: positive(o.maxLingering, 1024, 'maxLingering'),
  };
}

function nonNegative(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`${name} must be a non-negative integer`);
  return value;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer`);
  return value;
}
