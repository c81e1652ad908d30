/**
 * server_name with a trailing dot (RFC 6066 §3: HostName is sent "without a trailing dot").
 * The engine reads `example.test.` as `example.test` (the same host: RFC 1034 §3.1, the
 * absolute form of the name), once, at decoding, so the identity lookup, the session binding
 * of tickets and `info.serverName` all see one form; a name that still has an empty label
 * after that one dot (`.`, `a.test..`, `.a.test`, `a..test`) is no host name and is
 * illegal_parameter, like the other malformed names. Names compare case-insensitively
 * (RFC 4343). docs/ARCHITECTURE.md, "server_name".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeClientHello } from '../../src/tls/messages/client-hello.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import { ExtensionType as X } from '../../src/tls/wire/codepoints.js';
import { memoryTransport, Tls13Client, type ReceivedTicket } from '../helpers/tls13-client.js';
import { assertAlert } from './alerts.js';
import { encodeClientHello, ext } from './client-hello-builder.js';
import { ed25519Identity, makeOptions } from './connection-harness.js';

/** RFC 8446 §6 AlertDescription value. */
const ILLEGAL_PARAMETER = 47;
const EXT_PRE_SHARED_KEY = 41;

/** A ClientHello whose server_name carries `name` as its one host_name, decoded. */
function decodeName(name: string) {
  const sni = ext(X.server_name, (w) => w.vec(2, (l) => l.u8(0).opaque(2, Buffer.from(name, 'latin1'))));
  return decodeClientHello(encodeClientHello({ extensions: [sni] })).serverName;
}

test('decoding: one trailing dot is dropped and the name lower-cased; an IP literal with a dot is still no name', () => {
  assert.equal(decodeName('example.test.'), 'example.test');
  assert.equal(decodeName('Example.TEST.'), 'example.test');
  assert.equal(decodeName('192.0.2.1.'), undefined, 'an IPv4 literal stays no server name (RFC 6066 §3)');
  // Controls: the name without the dot, in any case, is what it was.
  assert.equal(decodeName('example.test'), 'example.test');
  assert.equal(decodeName('EXAMPLE.test'), 'example.test');
  assert.equal(decodeName('a'), 'a');
});

test('decoding: a name with an empty label (also after the one dot) is illegal_parameter', () => {
  for (const name of ['.', '..', 'a.test..', '.a.test', 'a..test']) {
    assert.equal(assertAlert(() => decodeName(name), 'illegal_parameter', JSON.stringify(name)).alert, ILLEGAL_PARAMETER);
  }
});

test('decoding: NUL, non-ASCII and other bytes outside host names stay illegal_parameter, with or without the dot', () => {
  for (const name of ['a\u0000.test', 'a.test\u0000', 'a.test.\u0000', 'caf\u00e9.test.', 'a\u00ff.test', 'a b.test.']) {
    assert.equal(assertAlert(() => decodeName(name), 'illegal_parameter', JSON.stringify(name)).alert, ILLEGAL_PARAMETER);
  }
});

const identity = ed25519Identity();

test('the identity lookup and the connection see the name without the dot, lower-cased', { timeout: 20_000 }, async () => {
  const asked: (string | undefined)[] = [];
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0, resolveIdentity: (name) => (asked.push(name), identity) }));
  const client = new Tls13Client(t, { serverName: 'WWW.Example.Test.' });
  await client.handshake();
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.handshakeComplete, true);
  assert.deepEqual(asked, ['www.example.test']);
  assert.equal(t.server.conn.info.serverName, 'www.example.test');
});

const T0 = 1_800_000_000_000;

/** A full handshake under `serverName` at T0 that yields one ticket. */
async function ticketFor(ring: TicketKeyRing, serverName: string): Promise<ReceivedTicket> {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 1, ticketKeys: ring }), () => T0);
  const client = new Tls13Client(t, { serverName });
  await client.handshake();
  return (await client.readTickets(1))[0]!;
}

/** Offers `ticket` under `serverName` one second later: whether the server resumed. */
async function resumesUnder(ring: TicketKeyRing, ticket: ReceivedTicket, serverName: string): Promise<boolean> {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 1, ticketKeys: ring }), () => T0 + 1000);
  const client = new Tls13Client(t, { serverName, psk: { ticket: ticket.ticket, psk: ticket.psk, obfuscatedAge: (1000 + ticket.ageAdd) >>> 0 } });
  client.sendClientHello();
  const sh = await client.readServerFlight();
  client.sendFinished();
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.handshakeComplete, true);
  assert.equal(sh.extensionTypes.includes(EXT_PRE_SHARED_KEY), t.server.conn.info.resumed);
  return t.server.conn.info.resumed;
}

test('a ticket issued under example.test resumes under "Example.Test." and the other way round (one name)', { timeout: 20_000 }, async () => {
  const ring = new TicketKeyRing();
  assert.equal(await resumesUnder(ring, await ticketFor(ring, 'example.test'), 'Example.Test.'), true);
  assert.equal(await resumesUnder(ring, await ticketFor(ring, 'example.test.'), 'example.test'), true);
});

test('positive control: a ticket does not resume under another name (RFC 6066 §3), with or without a dot', { timeout: 20_000 }, async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFor(ring, 'example.test');
  assert.equal(await resumesUnder(ring, ticket, 'other.test.'), false);
  assert.equal(await resumesUnder(ring, ticket, 'other.test'), false);
  assert.equal(await resumesUnder(ring, ticket, 'example.test'), true);
});
