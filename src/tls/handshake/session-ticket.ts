import { Reader } from '../../lib/reader.js';
import { Writer } from '../../lib/writer.js';
import type { ClientIdentity } from './context.js';
import { readClientAuth, readTime, writeClientAuth, writeTime } from './ticket-fields.js';
import type { TicketKeyRing } from './ticket-keys.js';

/**
 * What a self-encrypted ticket carries (RFC 8446 §4.6.1): enough to resume without
 * server-side state. Sealed with the ticket key ring; the client sees only ciphertext.
 */
export interface TicketState {
  readonly cipherSuite: number;
  readonly psk: Buffer;
  /** Server clock when the ticket was issued (ms). */
  readonly issuedAt: number;
  readonly ageAdd: number;
  readonly lifetimeSeconds: number;
  readonly serverName: string;
  readonly alpnProtocol: string;
  /** The client-auth policy the ticket was issued under (ClientAuthOptions.policyId, or "off"). */
  readonly clientAuthPolicy: string;
  /** The client certificate verified in the full handshake, carried to resumed connections. */
  readonly clientIdentity: ClientIdentity | undefined;
}

const LABEL = 'tls13 ticket';
/** 2: client-auth policy and identity added; tickets of version 1 are not resumed. */
const VERSION = 2;

/**
 * Tickets (TLS 1.3 and 1.2) hold the server name with a 1-byte length. RFC 6066 §3 lets a
 * host_name run to 2^16-1 bytes (a DNS name has at most 253), so a connection whose name is
 * longer gets no ticket: resumption is optional, a failed handshake is not.
 */
export const MAX_TICKET_SERVER_NAME = 255;

export function serverNameFitsTicket(serverName: string | undefined): boolean {
  return (serverName?.length ?? 0) <= MAX_TICKET_SERVER_NAME;
}

export function sealTicket(ring: TicketKeyRing, s: TicketState): Buffer {
  const w = new Writer(128);
  w.u8(VERSION).u16(s.cipherSuite).opaque(1, s.psk);
  writeTime(w, s.issuedAt);
  w.u32(s.ageAdd).u32(s.lifetimeSeconds);
  w.opaque(1, Buffer.from(s.serverName, 'latin1')).opaque(1, Buffer.from(s.alpnProtocol, 'utf8'));
  writeClientAuth(w, s.clientAuthPolicy, s.clientIdentity);
  return ring.seal(LABEL, w.finish());
}

/** undefined when the ticket is not ours, from a retired key, altered, or of another format version. */
export function openTicket(ring: TicketKeyRing, ticket: Uint8Array): TicketState | undefined {
  const plain = ring.open(LABEL, ticket);
  if (!plain) return undefined;
  try {
    const r = new Reader(plain, 'ticket');
    if (r.u8() !== VERSION) return undefined;
    const cipherSuite = r.u16();
    const psk = Buffer.from(r.vec(1, 32, 48, 'psk'));
    const issuedAt = readTime(r);
    const ageAdd = r.u32();
    const lifetimeSeconds = r.u32();
    const serverName = Buffer.from(r.vec(1, 0, 255, 'server_name')).toString('latin1');
    const alpnProtocol = Buffer.from(r.vec(1, 0, 255, 'alpn')).toString('utf8');
    const { clientAuthPolicy, clientIdentity } = readClientAuth(r);
    r.end();
    return { cipherSuite, psk, issuedAt, ageAdd, lifetimeSeconds, serverName, alpnProtocol, clientAuthPolicy, clientIdentity };
  } catch {
    return undefined;
  }
}
