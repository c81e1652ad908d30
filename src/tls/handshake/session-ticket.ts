import { Reader } from '../../lib/reader.js';
import { Writer } from '../../lib/writer.js';
import type { ClientIdentity } from './context.js';
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

function text(w: Writer, value: string): void {
  w.opaque(2, Buffer.from(value, 'utf8'));
}

function readText(r: Reader, field: string): string {
  return Buffer.from(r.vec(2, 0, 0xffff, field)).toString('utf8');
}

export function sealTicket(ring: TicketKeyRing, s: TicketState): Buffer {
  const w = new Writer(128);
  w.u8(VERSION).u16(s.cipherSuite).opaque(1, s.psk);
  w.u32(Math.floor(s.issuedAt / 2 ** 32)).u32(s.issuedAt >>> 0);
  w.u32(s.ageAdd).u32(s.lifetimeSeconds);
  w.opaque(1, Buffer.from(s.serverName, 'latin1')).opaque(1, Buffer.from(s.alpnProtocol, 'latin1'));
  text(w, s.clientAuthPolicy);
  const id = s.clientIdentity;
  w.u8(id ? 1 : 0);
  if (id) {
    text(w, id.subject);
    w.u8(id.commonName === undefined ? 0 : 1);
    if (id.commonName !== undefined) text(w, id.commonName);
    text(w, id.issuer);
    text(w, id.serialNumber);
    text(w, id.fingerprint256);
    w.u32(Math.floor(id.notAfter / 2 ** 32)).u32(id.notAfter >>> 0);
  }
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
    const issuedAt = r.u32() * 2 ** 32 + r.u32();
    const ageAdd = r.u32();
    const lifetimeSeconds = r.u32();
    const serverName = Buffer.from(r.vec(1, 0, 255, 'server_name')).toString('latin1');
    const alpnProtocol = Buffer.from(r.vec(1, 0, 255, 'alpn')).toString('latin1');
    const clientAuthPolicy = readText(r, 'client_auth_policy');
    let clientIdentity: ClientIdentity | undefined;
    if (r.u8() === 1) {
      const subject = readText(r, 'subject');
      const commonName = r.u8() === 1 ? readText(r, 'common_name') : undefined;
      const issuer = readText(r, 'issuer');
      const serialNumber = readText(r, 'serial');
      const fingerprint256 = readText(r, 'fingerprint');
      const notAfter = r.u32() * 2 ** 32 + r.u32();
      clientIdentity = { subject, commonName, issuer, serialNumber, fingerprint256, notAfter };
    }
    r.end();
    return { cipherSuite, psk, issuedAt, ageAdd, lifetimeSeconds, serverName, alpnProtocol, clientAuthPolicy, clientIdentity };
  } catch {
    return undefined;
  }
}
