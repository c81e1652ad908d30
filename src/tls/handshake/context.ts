import type { ResolvedOptions } from '../options.js';
import type { RecordLayer } from '../record/record-layer.js';
import type { TicketKeyRing } from './ticket-keys.js';

/**
 * The client a verified certificate names (RFC 8446 §4.4.2), as far as the upstream needs
 * it. Small on purpose: it travels in session tickets so a resumed connection keeps it.
 */
export interface ClientIdentity {
  /** Subject DN as node:crypto prints it (RFC 2253-like, one attribute per line joined with ", "). */
  readonly subject: string;
  /** The subject's first commonName, when it has one. */
  readonly commonName: string | undefined;
  readonly issuer: string;
  /** Serial number, upper-case hex. */
  readonly serialNumber: string;
  /** SHA-256 of the leaf DER, colon-separated upper-case hex (node:crypto's fingerprint256). */
  readonly fingerprint256: string;
  /** The leaf's notAfter, ms since the epoch. */
  readonly notAfter: number;
}

/** What a connection negotiated, as far as it got. */
export interface ConnectionInfo {
  /** The negotiated protocol version, as node:tls names it ('TLSv1.3'). */
  version?: string;
  serverName?: string;
  alpnProtocol?: string;
  cipherSuite?: string;
  group?: string;
  signatureScheme?: string;
  resumed: boolean;
  /** The server answered the first ClientHello with a HelloRetryRequest (RFC 8446 §4.1.4). */
  helloRetryRequest: boolean;
  /**
   * The client certificate verified in this handshake, or in the full handshake this
   * connection resumed (then `clientCertificateFromSession` is true); undefined when none.
   */
  clientCertificate?: ClientIdentity;
  clientCertificateFromSession?: boolean;
  /** The chain of the identity this connection was served under (full or resumed handshake). */
  serverCertificateChain?: readonly Uint8Array[];
  /** Our flight held a CertificateRequest. */
  clientCertificateRequested?: boolean;
  /** CertificateVerify was signed with a delegated credential's key (RFC 9345), not the certificate's. */
  delegatedCredential?: boolean;
}

/**
 * What the connection lends a version's handshake (server13.ts, server12.ts): the
 * options, the clock, the ticket and cookie keys, the record layer to read and write
 * through, and the info it fills in as choices are made.
 */
export interface HandshakeContext {
  readonly options: ResolvedOptions;
  readonly now: () => number;
  readonly ticketKeys: TicketKeyRing;
  readonly records: RecordLayer;
  readonly info: ConnectionInfo;
  /** True once the connection failed or closed: a step that resumes after an await stops. */
  readonly closed: boolean;
}
