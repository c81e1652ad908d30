import { Reader } from '../../lib/reader.js';
import { Writer } from '../../lib/writer.js';
import type { TicketKeyRing } from './ticket-keys.js';

/**
 * The HelloRetryRequest cookie (RFC 8446 §4.2.2, §4.4.1): everything the server needs
 * to continue with the second ClientHello without keeping state in between — the hash
 * of the first ClientHello (for the message_hash transcript entry), the suite and group
 * chosen, and a digest of the first ClientHello's fields that must not change (§4.1.2).
 * Sealed (authenticated) with the server's rotating key ring, and short-lived.
 */
export interface CookieState {
  readonly issuedAt: number;
  readonly cipherSuite: number;
  /** 0 when the HRR did not ask for a key share. */
  readonly group: number;
  readonly clientHello1Hash: Buffer;
  readonly consistencyDigest: Buffer;
}

const LABEL = 'tls13 hrr cookie';
const VERSION = 1;
export const COOKIE_LIFETIME_MS = 60_000;

export function sealCookie(ring: TicketKeyRing, s: CookieState): Buffer {
  const w = new Writer(128);
  w.u8(VERSION).u32(Math.floor(s.issuedAt / 2 ** 32)).u32(s.issuedAt >>> 0);
  w.u16(s.cipherSuite).u16(s.group).opaque(1, s.clientHello1Hash).opaque(1, s.consistencyDigest);
  return ring.seal(LABEL, w.finish());
}

export function openCookie(ring: TicketKeyRing, cookie: Uint8Array, now: number): CookieState | undefined {
  const plain = ring.open(LABEL, cookie);
  if (!plain) return undefined;
  try {
    const r = new Reader(plain, 'cookie');
    if (r.u8() !== VERSION) return undefined;
    const issuedAt = r.u32() * 2 ** 32 + r.u32();
    const cipherSuite = r.u16();
    const group = r.u16();
    const clientHello1Hash = Buffer.from(r.vec(1, 32, 48, 'hash'));
    const consistencyDigest = Buffer.from(r.vec(1, 32, 32, 'digest'));
    r.end();
    if (now - issuedAt > COOKIE_LIFETIME_MS || issuedAt - now > 5_000) return undefined;
    return { issuedAt, cipherSuite, group, clientHello1Hash, consistencyDigest };
  } catch {
    return undefined;
  }
}
