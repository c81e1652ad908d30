import type { ResolveIdentity } from './signer.js';
import type { TicketKeyRing } from './handshake/ticket-keys.js';

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
