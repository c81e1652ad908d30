import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import { openTicket, sealTicket, type TicketState } from '../../src/tls/handshake/session-ticket.js';

// The TLS 1.3 ticket plaintext is ours alone (RFC 8446 §4.6.1: the ticket is opaque to the
// client), sealed by the ticket key ring under the label 'tls13 ticket'. These tests unseal a
// real ticket, alter the plaintext and seal it again under the same key, as a ticket written
// by another version of this code (or a bug in this one) would be: openTicket must refuse
// anything but exactly its own layout, so a resumed session never takes fields it misread.

const LABEL = 'tls13 ticket';

function state(overrides: Partial<TicketState> = {}): TicketState {
  return {
    cipherSuite: 0x1301,
    psk: randomBytes(32),
    issuedAt: Date.parse('2030-01-01T00:00:00Z'),
    ageAdd: 0x12345678,
    lifetimeSeconds: 7200,
    serverName: 'a.test',
    alpnProtocol: 'h2',
    clientAuthPolicy: 'off',
    clientIdentity: undefined,
    ...overrides,
  };
}

function plaintextOf(ring: TicketKeyRing, ticket: Buffer): Buffer {
  const plain = ring.open(LABEL, ticket);
  assert.ok(plain, 'the ring opens its own ticket');
  return Buffer.from(plain);
}

test('openTicket: a sealed ticket opens to the same state (control)', () => {
  const ring = new TicketKeyRing();
  const s = state();
  const opened = openTicket(ring, sealTicket(ring, s));
  assert.deepEqual(opened, s);
});

test('openTicket: a ticket of another format version is not resumed', () => {
  const ring = new TicketKeyRing();
  const plain = plaintextOf(ring, sealTicket(ring, state()));
  assert.equal(plain[0], 2, 'the version byte leads the plaintext');
  for (const version of [1, 3, 0xff]) {
    const other = Buffer.from(plain);
    other[0] = version;
    assert.equal(openTicket(ring, ring.seal(LABEL, other)), undefined, `version ${version}`);
  }
  // Control: the untouched plaintext, sealed again, still opens.
  assert.ok(openTicket(ring, ring.seal(LABEL, plain)));
});

test('openTicket: bytes after the last field are refused, not ignored', () => {
  const ring = new TicketKeyRing();
  const plain = plaintextOf(ring, sealTicket(ring, state()));
  assert.equal(openTicket(ring, ring.seal(LABEL, Buffer.concat([plain, Buffer.from([0])]))), undefined);
  assert.equal(openTicket(ring, ring.seal(LABEL, plain.subarray(0, plain.length - 1))), undefined, 'nor one byte short');
});

test('openTicket: a ticket sealed under another label or another ring is not ours', () => {
  const ring = new TicketKeyRing();
  const plain = plaintextOf(ring, sealTicket(ring, state()));
  assert.equal(openTicket(ring, ring.seal('tls12 ticket', plain)), undefined);
  assert.equal(openTicket(new TicketKeyRing(), sealTicket(ring, state())), undefined);
});
