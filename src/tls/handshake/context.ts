import type { ResolvedOptions } from '../options.js';
import type { RecordLayer } from '../record/record-layer.js';
import type { TicketKeyRing } from './ticket-keys.js';

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
}

/**
 * What the connection lends a version's handshake (server13.ts, later server12.ts): the
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
