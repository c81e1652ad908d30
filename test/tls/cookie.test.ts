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
