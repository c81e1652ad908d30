/**
 * The HelloRetryRequest cookie (RFC 8446 §4.2.2) is short-lived: a second ClientHello
 * replaying a cookie older than COOKIE_LIFETIME_MS (or dated too far ahead) is refused,
 * so a captured cookie cannot stand in for the first ClientHello for ever
 * (docs/ARCHITECTURE.md, sendHelloRetryRequest).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { COOKIE_LIFETIME_MS, openCookie, sealCookie, type CookieState } from '../../src/tls/handshake/cookie.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';

const T0 = 1_800_000_000_000;
const state: CookieState = {
  issuedAt: T0,
  cipherSuite: 0x1301,
  group: 0x001d,
  clientHello1Hash: randomBytes(32),
  consistencyDigest: randomBytes(32),
};

function ring(): TicketKeyRing {
  return new TicketKeyRing({ now: () => T0 });
}

test('a cookie past its lifetime, or dated more than 5 s ahead, does not open', () => {
  const r = ring();
  const cookie = sealCookie(r, state);
  assert.equal(openCookie(r, cookie, T0 + COOKIE_LIFETIME_MS + 1), undefined);
  assert.equal(openCookie(r, cookie, T0 - 5_001), undefined);
});

test('positive control: the same cookie opens within its lifetime, with what was sealed', () => {
  const r = ring();
  const cookie = sealCookie(r, state);
  assert.deepEqual(openCookie(r, cookie, T0 + COOKIE_LIFETIME_MS - 1), state);
  assert.deepEqual(openCookie(r, cookie, T0 - 4_999), state);
});

test('a session ticket sealed by the same ring is not a cookie (labels separate the uses)', () => {
  const r = ring();
  assert.equal(openCookie(r, r.seal('tls13 ticket', Buffer.alloc(70)), T0), undefined);
});

// A cookie of another format (another version byte, e.g. from a server of a later release
// sharing the ring) is not read with this layout: it does not open.
test('a cookie whose format version is not 1 does not open; the same bytes with version 1 do', () => {
  const r = ring();
  const plain = (version: number) => {
    const b = Buffer.alloc(1 + 8 + 2 + 2 + 1 + 32 + 1 + 32);
    let o = b.writeUInt8(version, 0);
    o = b.writeUInt32BE(Math.floor(T0 / 2 ** 32), o);
    o = b.writeUInt32BE(T0 >>> 0, o);
    o = b.writeUInt16BE(state.cipherSuite, o);
    o = b.writeUInt16BE(state.group, o);
    o = b.writeUInt8(32, o);
    o += state.clientHello1Hash.copy(b, o);
    o = b.writeUInt8(32, o);
    o += state.consistencyDigest.copy(b, o);
    assert.equal(o, b.length);
    return b;
  };
  assert.equal(openCookie(r, r.seal('tls13 hrr cookie', plain(2)), T0), undefined);
  assert.deepEqual(openCookie(r, r.seal('tls13 hrr cookie', plain(1)), T0), state);
});
