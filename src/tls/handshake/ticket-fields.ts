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
