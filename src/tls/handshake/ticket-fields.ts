import type { Reader } from '../../lib/reader.js';
import type { Writer } from '../../lib/writer.js';
import type { ClientIdentity } from './context.js';

/**
 * Fields both ticket formats (TLS 1.3 session-ticket.ts, TLS 1.2 session12.ts) carry in
 * the same encoding: a millisecond time as two u32, and the client-auth policy with the
 * client identity verified in the full handshake. The plaintext is ours alone (sealed by
 * the ticket key ring), so the layout only has to agree with itself.
 */

export function writeTime(w: Writer, ms: number): void {
  w.u32(Math.floor(ms / 2 ** 32)).u32(ms >>> 0);
}

export function readTime(r: Reader): number {
  return r.u32() * 2 ** 32 + r.u32();
}

function writeText(w: Writer, value: string): void {
  w.opaque(2, Buffer.from(value, 'utf8'));
}

function readText(r: Reader, field: string): string {
  return Buffer.from(r.vec(2, 0, 0xffff, field)).toString('utf8');
}

/**
 * The most bytes of client identity text (subject, commonName, issuer, serial, fingerprint)
 * a ticket carries. Both NewSessionTicket formats hold the ticket in an opaque<1..2^16-1>
 * (RFC 8446 §4.6.1, RFC 5077 §3.3), each text here has a 2-byte length, and the identity
 * comes from a client certificate whose names are whatever its CA signed (certificates of
 * up to 128 KiB are read): one over this gets no ticket, as resumption is optional and a
 * failed handshake is not (as serverNameFitsTicket for names). Real subjects take well
 * under 1 KiB.
 */
export const MAX_TICKET_CLIENT_IDENTITY = 16 * 1024;

export function clientIdentityFitsTicket(id: ClientIdentity | undefined): boolean {
  if (!id) return true;
  const texts = [id.subject, id.commonName ?? '', id.issuer, id.serialNumber, id.fingerprint256];
  return texts.reduce((n, text) => n + Buffer.byteLength(text, 'utf8'), 0) <= MAX_TICKET_CLIENT_IDENTITY;
}

/** The client-auth policy id, then a presence byte and the identity. */
export function writeClientAuth(w: Writer, policy: string, id: ClientIdentity | undefined): void {
  writeText(w, policy);
  w.u8(id ? 1 : 0);
  if (!id) return;
  writeText(w, id.subject);
  w.u8(id.commonName === undefined ? 0 : 1);
  if (id.commonName !== undefined) writeText(w, id.commonName);
  writeText(w, id.issuer);
  writeText(w, id.serialNumber);
  writeText(w, id.fingerprint256);
  writeTime(w, id.notAfter);
}

export function readClientAuth(r: Reader): { clientAuthPolicy: string; clientIdentity: ClientIdentity | undefined } {
  const clientAuthPolicy = readText(r, 'client_auth_policy');
  if (r.u8() !== 1) return { clientAuthPolicy, clientIdentity: undefined };
  const subject = readText(r, 'subject');
  const commonName = r.u8() === 1 ? readText(r, 'common_name') : undefined;
  const issuer = readText(r, 'issuer');
  const serialNumber = readText(r, 'serial');
  const fingerprint256 = readText(r, 'fingerprint');
  const notAfter = readTime(r);
  return { clientAuthPolicy, clientIdentity: { subject, commonName, issuer, serialNumber, fingerprint256, notAfter } };
}
