/**
 * Negative tests with a client that lies (test/helpers/tls13-client.ts): each check the
 * server must make is attacked once, next to a positive control that shows the same
 * script succeeds when nothing is altered. Alert codes are RFC 8446 §6 literals, not the
 * engine's table.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { AddressInfo, Server, Socket } from 'node:net';
import { TlsAlert, TlsPeerAlert } from '../../src/tls/alert.js';
import { createServer, type TlsSocket } from '../../src/tls/socket.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import { flipBit, memoryTransport, socketTransport, Tls13Client, RecordType, type ReceivedTicket } from '../helpers/tls13-client.js';
import { ed25519Identity, makeOptions } from './connection-harness.js';

/** RFC 8446 §6 AlertDescription values. */
const BAD_RECORD_MAC = 20;
const RECORD_OVERFLOW = 22;
const DECRYPT_ERROR = 51;
const EXT_PRE_SHARED_KEY = 41;
const EXT_RECORD_SIZE_LIMIT = 28;

const identity = ed25519Identity();

function assertServerAlert(server: { error: unknown }, alertName: string, code: number): void {
  assert.ok(server.error instanceof TlsAlert, `server should have failed with ${alertName}, got ${String(server.error)}`);
  assert.equal(server.error.alertName, alertName, server.error.message);
  assert.equal(server.error.alert, code);
}

/** A completed handshake in memory, optionally with server options. */
async function established(extra: Parameters<typeof makeOptions>[1] = {}, clientOptions: ConstructorParameters<typeof Tls13Client>[1] = {}) {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0, ...extra }));
  const client = new Tls13Client(t, clientOptions);
  await client.handshake();
  assert.equal(t.server.handshakeComplete, true);
  return { client, server: t.server };
}

// ---- client Finished (§4.4.4) ------------------------------------------------------

test('client Finished with one bit flipped: decrypt_error, and the data sent after it is not delivered', async () => {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0 }));
  const client = new Tls13Client(t);
  client.sendClientHello();
  await client.readServerFlight();
  client.sendFinished({ alter: (m) => flipBit(m, -1, 3), thenData: Buffer.from('GET / HTTP/1.0\r\n\r\n') });
  assert.equal(await client.readAlert(), DECRYPT_ERROR);
  assertServerAlert(t.server, 'decrypt_error', DECRYPT_ERROR);
  assert.equal(t.server.handshakeComplete, false);
  assert.deepEqual(t.server.delivered, []);
});

test('positive control: the correct client Finished completes the handshake and the data is delivered', async () => {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0 }));
  const client = new Tls13Client(t);
  client.sendClientHello();
  await client.readServerFlight();
  client.sendFinished({ thenData: Buffer.from('GET / HTTP/1.0\r\n\r\n') });
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.error, undefined);
  assert.equal(t.server.handshakeComplete, true);
  assert.equal(Buffer.concat(t.server.delivered).toString(), 'GET / HTTP/1.0\r\n\r\n');
});

// ---- PSK binder and ticket lifetime (§4.2.11, §4.6.1) ----------------------------------

const T0 = 1_800_000_000_000;

/** A full handshake at server time T0 that yields one ticket, with a fixed ticket key ring. */
async function ticketFrom(ring: TicketKeyRing, lifetimeSeconds = 60): Promise<ReceivedTicket> {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 1, ticketLifetimeSeconds: lifetimeSeconds, ticketKeys: ring }), () => T0);
  const client = new Tls13Client(t);
  await client.handshake();
  const [ticket] = await client.readTickets(1);
  assert.equal(ticket!.lifetime, lifetimeSeconds);
  return ticket!;
}

/** Offers `ticket` at server time T0 + elapsedMs, with a ticket age that matches. */
function resumingClient(ring: TicketKeyRing, ticket: ReceivedTicket, elapsedMs: number, alterBinder?: (b: Buffer) => Buffer, pskModes?: number[]) {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 1, ticketLifetimeSeconds: 60, ticketKeys: ring }), () => T0 + elapsedMs);
  const client = new Tls13Client(t, {
    psk: { ticket: ticket.ticket, psk: ticket.psk, obfuscatedAge: (elapsedMs + ticket.ageAdd) >>> 0, ...(alterBinder ? { alterBinder } : {}) },
    ...(pskModes ? { pskModes } : {}),
  });
  return { t, client };
}

test('PSK binder with one bit flipped: decrypt_error, no ServerHello', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring);
  const { t, client } = resumingClient(ring, ticket, 1000, (b) => flipBit(b, 5, 6));
  client.sendClientHello();
  const first = await client.readRecord();
  assert.ok(first, 'the server must answer with an alert');
  assert.equal(first.type, RecordType.alert, 'no ServerHello may precede the alert');
  assert.equal(first.content[1], DECRYPT_ERROR);
  assertServerAlert(t.server, 'decrypt_error', DECRYPT_ERROR);
});

test('positive control: the correct binder resumes, ServerHello selects identity 0', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring);
  const { t, client } = resumingClient(ring, ticket, 1000);
  client.sendClientHello();
  const sh = await client.readServerFlight();
  assert.ok(sh.extensionTypes.includes(EXT_PRE_SHARED_KEY));
  assert.equal(sh.selectedIdentity, 0);
  client.sendFinished({ thenData: Buffer.from('resumed') });
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.conn.info.resumed, true);
  assert.equal(Buffer.concat(t.server.delivered).toString(), 'resumed');
});

test('a valid ticket offered with psk_key_exchange_modes [psk_ke] only: full handshake, not resumed (§4.2.9: a mode the client did not list)', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring);
  const { t, client } = resumingClient(ring, ticket, 1000, undefined, [0]);
  client.sendClientHello();
  const sh = await client.readServerFlight();
  assert.equal(sh.selectedIdentity, undefined);
  assert.ok(!sh.extensionTypes.includes(EXT_PRE_SHARED_KEY));
  client.sendFinished();
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.handshakeComplete, true);
  assert.equal(t.server.conn.info.resumed, false);
});

test('positive control: the same ticket with [psk_ke, psk_dhe_ke] resumes with psk_dhe_ke', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring);
  const { t, client } = resumingClient(ring, ticket, 1000, undefined, [0, 1]);
  client.sendClientHello();
  const sh = await client.readServerFlight();
  assert.equal(sh.selectedIdentity, 0);
  client.sendFinished();
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.conn.info.resumed, true);
});

test('a ticket one second past its lifetime: full handshake, no pre_shared_key in ServerHello', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const { t, client } = resumingClient(ring, ticket, 61_000);
  client.sendClientHello();
  const sh = await client.readServerFlight(); // a full flight: Certificate and CertificateVerify included
  assert.equal(sh.selectedIdentity, undefined);
  assert.ok(!sh.extensionTypes.includes(EXT_PRE_SHARED_KEY));
  client.sendFinished();
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.handshakeComplete, true);
  assert.equal(t.server.conn.info.resumed, false);
});

test('positive control: the same ticket one second before its lifetime ends resumes', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const { t, client } = resumingClient(ring, ticket, 59_000);
  client.sendClientHello();
  const sh = await client.readServerFlight();
  assert.equal(sh.selectedIdentity, 0);
  client.sendFinished();
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.conn.info.resumed, true);
});

/** Offers `ticket` at server time T0 + elapsedMs with obfuscated_ticket_age for `claimedAgeMs`, and for `serverName`. */
function offerTicket(ring: TicketKeyRing, ticket: ReceivedTicket, elapsedMs: number, claimedAgeMs: number, serverName?: string) {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 1, ticketLifetimeSeconds: 60, ticketKeys: ring }), () => T0 + elapsedMs);
  const client = new Tls13Client(t, {
    ...(serverName ? { serverName } : {}),
    psk: { ticket: ticket.ticket, psk: ticket.psk, obfuscatedAge: (claimedAgeMs + ticket.ageAdd) >>> 0 },
  });
  return { t, client };
}

/** The ServerHello's choice, then the handshake completed; whether it resumed. */
async function resumes(t: ReturnType<typeof offerTicket>['t'], client: Tls13Client): Promise<boolean> {
  client.sendClientHello();
  const sh = await client.readServerFlight();
  client.sendFinished();
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.handshakeComplete, true);
  assert.equal(t.server.conn.info.resumed, sh.selectedIdentity === 0);
  return sh.selectedIdentity === 0;
}

// §4.2.11.1 / §8.3: the server compares the client's view of the ticket age (obfuscated
// with ticket_age_add) with its own; a ticket whose age disagrees by more than 10 s is not
// resumed (docs/ARCHITECTURE.md, checkForResumption).
test('obfuscated_ticket_age 20 s off the server\'s age (either way): full handshake, not resumed', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const late = offerTicket(ring, ticket, 30_000, 10_000);
  assert.equal(await resumes(late.t, late.client), false);
  const early = offerTicket(ring, ticket, 30_000, 50_000);
  assert.equal(await resumes(early.t, early.client), false);
});

test('positive control: obfuscated_ticket_age 5 s off the server\'s age (either way) resumes', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const late = offerTicket(ring, ticket, 30_000, 25_000);
  assert.equal(await resumes(late.t, late.client), true);
  const early = offerTicket(ring, ticket, 30_000, 35_000);
  assert.equal(await resumes(early.t, early.client), true);
});

// §4.2.11 with RFC 6066 §3: a ticket is resumed only for the server name it was issued for.
test('a ticket issued for example.test offered for other.test: full handshake, not resumed', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const other = offerTicket(ring, ticket, 1000, 1000, 'other.test');
  assert.equal(await resumes(other.t, other.client), false);
  assert.equal(other.t.server.conn.info.serverName, 'other.test');
});

test('positive control: the same ticket offered for example.test resumes', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const same = offerTicket(ring, ticket, 1000, 1000, 'example.test');
  assert.equal(await resumes(same.t, same.client), true);
});

// §4.6.1: each ticket on a connection has its own ticket_nonce, so its own PSK. Ours is the
// ticket's one-byte index: past 255 tickets it wrapped (ticket 256 had ticket 0's PSK).
test('ticketCount over 255 (or not a whole number) is refused: the one-byte nonce would repeat', () => {
  assert.throws(() => makeOptions(identity, { ticketCount: 256 }), RangeError);
  assert.throws(() => makeOptions(identity, { ticketCount: 1.5 }), RangeError);
  assert.throws(() => makeOptions(identity, { ticketCount: -1 }), RangeError);
});

test('positive control: 255 tickets on one connection have distinct nonces and distinct PSKs', async () => {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 255 }));
  const client = new Tls13Client(t);
  await client.handshake();
  const tickets = await client.readTickets(255);
  assert.equal(new Set(tickets.map((x) => x.nonce.toString('hex'))).size, 255);
  assert.equal(new Set(tickets.map((x) => x.psk.toString('hex'))).size, 255);
});

// ---- record protection (§5.2) ---------------------------------------------------------

test('a protected record with a corrupted tag: bad_record_mac, nothing delivered', async () => {
  const { client, server } = await established();
  client.sendApplicationData(Buffer.from('hello'), { alter: (r) => flipBit(r, -1, 0) });
  assert.equal(await client.readAlert(), BAD_RECORD_MAC);
  assertServerAlert(server, 'bad_record_mac', BAD_RECORD_MAC);
  assert.deepEqual(server.delivered, []);
});

test('positive control: the same record with its tag intact is delivered', async () => {
  const { client, server } = await established();
  client.sendApplicationData(Buffer.from('hello'));
  assert.equal(await client.readAlert(), undefined);
  assert.equal(server.error, undefined);
  assert.equal(Buffer.concat(server.delivered).toString(), 'hello');
});

test('2^14 + 1 bytes of protected plaintext: record_overflow', async () => {
  const { client, server } = await established();
  client.sendApplicationData(Buffer.alloc(2 ** 14 + 1, 0x61));
  assert.equal(await client.readAlert(), RECORD_OVERFLOW);
  assertServerAlert(server, 'record_overflow', RECORD_OVERFLOW);
  assert.deepEqual(server.delivered, []);
});

test('2^14 bytes of content plus one byte of padding (TLSInnerPlaintext of 2^14 + 2): record_overflow', async () => {
  const { client, server } = await established();
  client.sendApplicationData(Buffer.alloc(2 ** 14, 0x61), { padding: 1 });
  assert.equal(await client.readAlert(), RECORD_OVERFLOW);
  assertServerAlert(server, 'record_overflow', RECORD_OVERFLOW);
  assert.deepEqual(server.delivered, []);
});

test('positive control: 2^14 bytes of protected plaintext are delivered', async () => {
  const { client, server } = await established();
  client.sendApplicationData(Buffer.alloc(2 ** 14, 0x61));
  assert.equal(await client.readAlert(), undefined);
  assert.equal(server.error, undefined);
  assert.equal(Buffer.concat(server.delivered).length, 2 ** 14);
});

test('record_size_limit 1024: a record of 1025 bytes (1024 content + type) is record_overflow; 1024 bytes pass', async () => {
  {
    const { client, server } = await established({ recordSizeLimit: 1024 }, { recordSizeLimit: 1024 });
    assert.ok(client.encryptedExtensionTypes.includes(EXT_RECORD_SIZE_LIMIT), 'announced in EncryptedExtensions');
    client.sendApplicationData(Buffer.alloc(1024, 0x62));
    assert.equal(await client.readAlert(), RECORD_OVERFLOW);
    assertServerAlert(server, 'record_overflow', RECORD_OVERFLOW);
    assert.deepEqual(server.delivered, []);
  }
  {
    // positive control: TLSInnerPlaintext of exactly 1024 bytes
    const { client, server } = await established({ recordSizeLimit: 1024 }, { recordSizeLimit: 1024 });
    client.sendApplicationData(Buffer.alloc(1023, 0x62));
    assert.equal(await client.readAlert(), undefined);
    assert.equal(server.error, undefined);
    assert.equal(Buffer.concat(server.delivered).length, 1023);
  }
});

test('recordSizeLimit 1024 and a client that does not offer record_size_limit: the limit is not announced, so 2^14-byte records are accepted (RFC 8449 §4: only the advertised limit)', async () => {
  const { client, server } = await established({ recordSizeLimit: 1024 });
  assert.equal(client.encryptedExtensionTypes.includes(EXT_RECORD_SIZE_LIMIT), false, 'no record_size_limit in EncryptedExtensions');
  client.sendApplicationData(Buffer.alloc(2 ** 14, 0x63));
  assert.equal(await client.readAlert(), undefined);
  assert.equal(server.error, undefined);
  assert.equal(Buffer.concat(server.delivered).length, 2 ** 14);
  // Control: 2^14 + 1 bytes are still over the protocol's own limit (§5.2).
  const over = await established({ recordSizeLimit: 1024 });
  over.client.sendApplicationData(Buffer.alloc(2 ** 14 + 1, 0x63));
  assert.equal(await over.client.readAlert(), RECORD_OVERFLOW);
  assertServerAlert(over.server, 'record_overflow', RECORD_OVERFLOW);
});

// ---- KeyUpdate (§4.6.3) -------------------------------------------------------------

test('KeyUpdate not followed by the new keys: bad_record_mac, nothing delivered after it', async () => {
  const { client, server } = await established();
  client.sendKeyUpdate({ switchKeys: false });
  client.sendApplicationData(Buffer.from('old keys'));
  assert.equal(await client.readAlert(), BAD_RECORD_MAC);
  assertServerAlert(server, 'bad_record_mac', BAD_RECORD_MAC);
  assert.deepEqual(server.delivered, []);
});

test('positive control: KeyUpdate followed by the new keys delivers the data', async () => {
  const { client, server } = await established();
  client.sendKeyUpdate();
  client.sendApplicationData(Buffer.from('new keys'));
  assert.equal(await client.readAlert(), undefined);
  assert.equal(server.error, undefined);
  assert.equal(Buffer.concat(server.delivered).toString(), 'new keys');
});

// §5.1: a KeyUpdate changes the read keys, so it must end its record; handshake data after
// it in the same record was protected with the old keys. unexpected_message (docs/ARCHITECTURE.md).
const KEY_UPDATE = Buffer.of(24, 0, 0, 1, 0);
const UNEXPECTED_MESSAGE = 10;

test('two KeyUpdates in one record: unexpected_message, nothing delivered', async () => {
  const { client, server } = await established();
  client.transport.send(client.sealRecord(RecordType.handshake, Buffer.concat([KEY_UPDATE, KEY_UPDATE])));
  assert.equal(await client.readAlert(), UNEXPECTED_MESSAGE);
  assertServerAlert(server, 'unexpected_message', UNEXPECTED_MESSAGE);
  assert.deepEqual(server.delivered, []);
});

test('positive control: two KeyUpdates in two records, each followed by the new keys, deliver the data', async () => {
  const { client, server } = await established();
  client.sendKeyUpdate();
  client.sendKeyUpdate();
  client.sendApplicationData(Buffer.from('twice updated'));
  assert.equal(await client.readAlert(), undefined);
  assert.equal(server.error, undefined);
  assert.equal(Buffer.concat(server.delivered).toString(), 'twice updated');
});

// §4.6.3: KeyUpdate carries one byte, request_update 0 or 1.
const DECODE_ERROR = 50;
const ILLEGAL_PARAMETER = 47;

test('KeyUpdate with request_update 2: illegal_parameter; with no byte at all: decode_error (§4.6.3)', async () => {
  for (const [what, message, alertName, code] of [
    ['request_update 2', Buffer.of(24, 0, 0, 1, 2), 'illegal_parameter', ILLEGAL_PARAMETER],
    ['empty', Buffer.of(24, 0, 0, 0), 'decode_error', DECODE_ERROR],
  ] as const) {
    const { client, server } = await established();
    client.transport.send(client.sealRecord(RecordType.handshake, message));
    assert.equal(await client.readAlert(), code, what);
    assertServerAlert(server, alertName, code);
  }
  // Control: request_update 1 (update_requested) is answered and the data under the new keys delivered.
  const { client, server } = await established();
  client.sendKeyUpdate({ requestUpdate: true });
  client.sendApplicationData(Buffer.from('after update_requested'));
  assert.equal(await client.readAlert(), undefined);
  assert.equal(server.error, undefined);
  assert.equal(Buffer.concat(server.delivered).toString(), 'after update_requested');
});

// ---- client Finished length (§4.4.4) --------------------------------------------------

test('a client Finished one byte shorter than the hash: decode_error, not a crash (internal_error)', async () => {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0 }));
  const client = new Tls13Client(t);
  client.sendClientHello();
  await client.readServerFlight();
  client.sendFinished({ alter: (m) => Buffer.concat([Buffer.of(20, 0, 0, m.length - 5), m.subarray(4, -1)]) });
  assert.equal(await client.readAlert(), DECODE_ERROR);
  assertServerAlert(t.server, 'decode_error', DECODE_ERROR);
  assert.equal(t.server.handshakeComplete, false);
  // Control: the correct Finished is the positive control of the bit-flip test above.
});

// ---- what the client may send before its Finished (§2, §5.2) -----------------------------

test('application data under the client handshake keys, before its Finished: unexpected_message, nothing delivered', async () => {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0 }));
  const client = new Tls13Client(t);
  client.sendClientHello();
  await client.readServerFlight();
  client.sendApplicationData(Buffer.from('too early')); // sealed with the handshake keys
  assert.equal(await client.readAlert(), UNEXPECTED_MESSAGE);
  assertServerAlert(t.server, 'unexpected_message', UNEXPECTED_MESSAGE);
  assert.deepEqual(t.server.delivered, []);
  assert.equal(t.server.handshakeComplete, false);
  // Control: the same data after the Finished is delivered (the Finished positive control).
});

test('a plaintext alert is accepted while the client flight is awaited (a client without our CA), not after the handshake', async () => {
  const plaintextAlert = Buffer.of(21, 3, 3, 0, 2, 2, 48); // fatal unknown_ca
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0 }));
  const client = new Tls13Client(t);
  client.sendClientHello();
  await client.readServerFlight();
  t.send(plaintextAlert);
  assert.ok(t.server.error instanceof TlsPeerAlert, `the peer's alert during its flight, got ${String(t.server.error)}`);
  assert.equal(t.server.error.alert, 48);
  const { client: after, server } = await established();
  after.transport.send(plaintextAlert);
  assert.equal(await after.readAlert(), UNEXPECTED_MESSAGE);
  assertServerAlert(server, 'unexpected_message', UNEXPECTED_MESSAGE);
});

// ---- alert levels in TLS 1.3 (§6) -----------------------------------------------------

test('an error alert sent with level warning ends a TLS 1.3 connection (§6: the level is ignored); close_notify with level warning only closes', async () => {
  const { client, server } = await established();
  client.transport.send(Buffer.concat([client.sealRecord(RecordType.alert, Buffer.of(1, 40)), client.sealRecord(RecordType.applicationData, Buffer.from('after the alert'))]));
  assert.ok(server.error instanceof TlsPeerAlert, `expected the peer's alert, got ${String(server.error)}`);
  assert.equal(server.error.alert, 40);
  assert.deepEqual(server.delivered, [], 'nothing after the alert is delivered');
  // Control: close_notify (level warning) is no error.
  const other = await established();
  other.client.transport.send(other.client.sealRecord(RecordType.alert, Buffer.of(1, 0)));
  assert.equal(other.server.error, undefined);
});

// ---- the same client over a socket (socket.ts) ----------------------------------------

const servers: Server[] = [];
const openSockets = new Set<Socket>();
after(async () => {
  // A failed test may leave a connection open; close() would wait for it.
  for (const socket of openSockets) socket.destroy();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

async function listen(): Promise<{ port: number; secured: TlsSocket[]; received: Buffer[]; clientErrors: (Error & { alert?: number })[] }> {
  const secured: TlsSocket[] = [];
  const received: Buffer[] = [];
  const clientErrors: (Error & { alert?: number })[] = [];
  const server = createServer({ resolveIdentity: () => identity, ticketCount: 0 }, (socket) => {
    secured.push(socket);
    socket.on('data', (d: Buffer) => {
      received.push(d);
      socket.write(d); // echo
    });
    socket.on('error', () => {});
  });
  server.on('tlsClientError', (err: Error & { alert?: number }) => clientErrors.push(err));
  server.on('connection', (raw: Socket) => {
    openSockets.add(raw);
    raw.on('close', () => openSockets.delete(raw));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, secured, received, clientErrors };
}

// A hang guard, not a timed assertion: a server that wrongly waits would otherwise stall the run.
const SOCKET_TEST = { timeout: 30_000 };

test('over a socket: a flipped client Finished gets decrypt_error and the connection closes without data', SOCKET_TEST, async () => {
  const s = await listen();
  const client = new Tls13Client(await socketTransport(s.port));
  client.sendClientHello();
  await client.readServerFlight();
  client.sendFinished({ alter: (m) => flipBit(m, 4, 0), thenData: Buffer.from('ping') });
  assert.equal(await client.readAlert(), DECRYPT_ERROR);
  assert.equal(await client.readRecord(), null, 'the server closes after the alert');
  assert.equal(s.secured.length, 0);
  assert.deepEqual(s.received, []);
  assert.equal(s.clientErrors[0]?.alert, DECRYPT_ERROR);
  client.transport.close();
});

test('over a socket, positive control: a correct handshake echoes the data; a corrupted tag then gets bad_record_mac', SOCKET_TEST, async () => {
  const s = await listen();
  const client = new Tls13Client(await socketTransport(s.port));
  await client.handshake();
  client.sendApplicationData(Buffer.from('ping'));
  assert.equal((await client.readApplicationData(4)).toString(), 'ping');
  client.sendApplicationData(Buffer.from('pong'), { alter: (r) => flipBit(r, -2, 7) });
  assert.equal(await client.readAlert(), BAD_RECORD_MAC);
  assert.equal(Buffer.concat(s.received).toString(), 'ping');
  client.transport.close();
});

// ---- deferred NewSessionTickets (socket.ts ticketDelayMs) --------------------------------

/** A completed handshake with 2 tickets held back, as socket.ts does with ticketDelayMs > 0. */
async function deferredTickets() {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 2 }));
  t.server.conn.deferSessionTickets = true;
  const client = new Tls13Client(t);
  await client.handshake();
  assert.equal(t.server.handshakeComplete, true);
  return { t, client };
}

test('deferred tickets: nothing is sent after the client Finished; the first data carries both tickets, then the data', async () => {
  const { t, client } = await deferredTickets();
  assert.equal(t.server.conn.sessionTicketsPending, true);
  assert.equal(await t.read(), null, 'no record between the client Finished and our first data');
  t.server.conn.write(Buffer.from('banner'));
  assert.equal(t.server.conn.sessionTicketsPending, false);
  const tickets = await client.readTickets(2);
  assert.equal(tickets.length, 2);
  assert.equal((await client.readApplicationData(6)).toString(), 'banner');
});

test('deferred tickets: they go out before our close_notify, also after the peer closed first', async () => {
  const { t, client } = await deferredTickets();
  t.send(client.sealRecord(RecordType.alert, Buffer.of(1, 0))); // the client's close_notify first
  t.server.conn.close();
  const tickets = await client.readTickets(2);
  assert.equal(tickets.length, 2);
  assert.equal(await client.readAlert(), 0, 'close_notify after the tickets');
});

test('deferred tickets: flushSessionTickets sends them on their own (the socket adapter\'s timer)', async () => {
  const { t, client } = await deferredTickets();
  t.server.conn.flushSessionTickets();
  assert.equal((await client.readTickets(2)).length, 2);
  t.server.conn.flushSessionTickets(); // nothing more
  assert.equal(await t.read(), null);
});

/** A ticket key ring whose sealing fails (a fault, not an input: no input makes sealing throw now). */
class FailingTicketKeys extends TicketKeyRing {
  override seal(): Buffer {
    throw new Error('sealing failed (test fault)');
  }
}

test('deferred tickets: a failure to seal them ends this connection with internal_error; it is not thrown from flushSessionTickets (the socket\'s timer)', async () => {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 2, ticketKeys: new FailingTicketKeys() }));
  t.server.conn.deferSessionTickets = true;
  const client = new Tls13Client(t);
  await client.handshake();
  assert.equal(t.server.conn.sessionTicketsPending, true);
  assert.doesNotThrow(() => t.server.conn.flushSessionTickets());
  assert.equal(await client.readAlert(), 80, 'internal_error');
  assert.match(String(t.server.error), /sealing failed/);
  assert.throws(() => t.server.conn.write(Buffer.from('late')), /not open for writing/);
  // The same fault reached through a write or a close: the write is refused, the close sends nothing more.
  for (const act of ['write', 'close'] as const) {
    const u = memoryTransport(makeOptions(identity, { ticketCount: 2, ticketKeys: new FailingTicketKeys() }));
    u.server.conn.deferSessionTickets = true;
    const c = new Tls13Client(u);
    await c.handshake();
    if (act === 'write') assert.throws(() => u.server.conn.write(Buffer.from('banner')), /not open for writing/);
    else assert.doesNotThrow(() => u.server.conn.close());
    assert.equal(await c.readAlert(), 80, `internal_error on ${act}`);
    assert.equal(await u.read(), null, `nothing after the alert on ${act}`);
  }
});

test('positive control: without deferral the tickets follow the client Finished at once', async () => {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 2 }));
  const client = new Tls13Client(t);
  await client.handshake();
  assert.equal(t.server.conn.sessionTicketsPending, false);
  assert.equal((await client.readTickets(2)).length, 2);
});

test('over a socket: small writes queued behind a full socket are joined into records of up to 2^14 bytes, in order', SOCKET_TEST, async () => {
  const s = await listen();
  const client = new Tls13Client(await socketTransport(s.port));
  await client.handshake();
  client.sendApplicationData(Buffer.from('go'));
  // The echo of 'go' arrives first; then 4000 writes of 100 bytes, far past the socket's
  // high-water mark, so most of them wait for 'drain' and reach _writev together.
  assert.equal((await client.readApplicationData(2)).toString(), 'go');
  const server = s.secured[0]!;
  const expected: Buffer[] = [];
  for (let i = 0; i < 4000; i++) {
    const chunk = Buffer.alloc(100, i % 251);
    expected.push(chunk);
    server.write(chunk);
  }
  const want = Buffer.concat(expected);
  const got: Buffer[] = [];
  let records = 0;
  let largest = 0;
  for (let length = 0; length < want.length; ) {
    const record = await client.readRecord();
    assert.ok(record, `stream ended after ${length} bytes`);
    if (record.type !== RecordType.applicationData) continue;
    records++;
    largest = Math.max(largest, record.content.length);
    got.push(record.content);
    length += record.content.length;
  }
  assert.ok(Buffer.concat(got).equals(want), 'the bytes arrive complete and in order');
  assert.ok(largest <= 2 ** 14, `record of ${largest} bytes`);
  // Without joining, every write is its own record (4000); the writes that queued become few.
  assert.ok(records < 1000, `${records} records for 4000 writes`);
});

// §4.2.11 / §4.6.1: a ticket dated after the server's now (its clock stepped back) has no
// age to compare with the client's; it is not used even when the client's age is within the
// 10 s tolerance of the negative one (docs/ARCHITECTURE.md, checkForResumption).
test('a ticket issued 5 s after the server\'s now (clock stepped back), offered with age 0: full handshake, not resumed', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const stepped = offerTicket(ring, ticket, -5000, 0);
  assert.equal(await resumes(stepped.t, stepped.client), false);
});

test('positive control: the same ticket 5 s after its issue, offered with age 0 (within the tolerance), resumes', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const later = offerTicket(ring, ticket, 5000, 0);
  assert.equal(await resumes(later.t, later.client), true);
});

// §4.2.11: "the server MUST ensure that it selects a compatible PSK (if any) and cipher suite":
// a PSK is used only with a suite of its own hash. A SHA-256 ticket offered in a ClientHello
// whose only suite is SHA-384 is ignored (full handshake), even with a binder computed the
// client's way (SHA-384 over the 32-byte PSK).
test('a TLS_AES_128_GCM_SHA256 ticket offered with TLS_AES_256_GCM_SHA384 only: full handshake, not resumed', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const options = makeOptions(identity, { ticketCount: 1, ticketLifetimeSeconds: 60, ticketKeys: ring });
  const offer = (cipherSuite: number) => {
    const t = memoryTransport(options, () => T0 + 1000);
    const client = new Tls13Client(t, { cipherSuite, psk: { ticket: ticket.ticket, psk: ticket.psk, obfuscatedAge: (1000 + ticket.ageAdd) >>> 0 } });
    return { t, client };
  };
  const sha384 = offer(0x1302);
  assert.equal(await resumes(sha384.t, sha384.client), false);
  assert.equal(sha384.t.server.conn.info.cipherSuite, 'TLS_AES_256_GCM_SHA384');
  // Control: the ticket's own suite resumes.
  const sha256 = offer(0x1301);
  assert.equal(await resumes(sha256.t, sha256.client), true);
});

// §5.1: the client Finished changes the read keys, so it must end its record: a KeyUpdate
// after it in the same record was protected with the handshake keys. unexpected_message.
test('the client Finished followed by a KeyUpdate in the same record: unexpected_message, handshake not complete', async () => {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0 }));
  const client = new Tls13Client(t);
  client.sendClientHello();
  await client.readServerFlight();
  client.transport.send(client.sealRecord(RecordType.handshake, Buffer.concat([client.finishedMessage(), KEY_UPDATE])));
  assert.equal(await client.readAlert(), UNEXPECTED_MESSAGE);
  assertServerAlert(t.server, 'unexpected_message', UNEXPECTED_MESSAGE);
  assert.equal(t.server.handshakeComplete, false);
});

test('positive control: the client Finished alone in its record, then a KeyUpdate and data under the new keys', async () => {
  const { client, server } = await established();
  client.sendKeyUpdate();
  client.sendApplicationData(Buffer.from('after finished'));
  assert.equal(await client.readAlert(), undefined);
  assert.equal(server.error, undefined);
  assert.equal(Buffer.concat(server.delivered).toString(), 'after finished');
});

// §4.2.11: each offered identity the server tries costs a decryption and, for one of ours, an
// HMAC; at most 8 are tried (docs/ARCHITECTURE.md, checkForResumption). A valid ticket offered
// 9th is not looked at: full handshake.
test('a valid ticket offered as the 9th identity, after 8 that are not ours: full handshake, not resumed', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const options = makeOptions(identity, { ticketCount: 1, ticketLifetimeSeconds: 60, ticketKeys: ring });
  const offerAfter = async (decoyCount: number) => {
    const t = memoryTransport(options, () => T0 + 1000);
    const decoys = Array.from({ length: decoyCount }, () => randomBytes(64));
    const client = new Tls13Client(t, { psk: { ticket: ticket.ticket, psk: ticket.psk, obfuscatedAge: (1000 + ticket.ageAdd) >>> 0, decoys } });
    client.sendClientHello();
    const sh = await client.readServerFlight();
    client.sendFinished();
    assert.equal(await client.readAlert(), undefined);
    assert.equal(t.server.handshakeComplete, true);
    return { selected: sh.selectedIdentity, resumed: t.server.conn.info.resumed };
  };
  assert.deepEqual(await offerAfter(8), { selected: undefined, resumed: false });
  // Control: the same ticket as the 8th identity resumes, selected_identity 7.
  assert.deepEqual(await offerAfter(7), { selected: 7, resumed: true });
});

// options.ts: ticketCount 0 "disables resumption": a valid ticket from a server sharing the
// ring (or issued before a reload that set 0) is not resumed.
test('ticketCount 0: a valid ticket of the shared ring is not resumed (full handshake)', async () => {
  const ring = new TicketKeyRing();
  const ticket = await ticketFrom(ring, 60);
  const offerTo = (ticketCount: number) => {
    const t = memoryTransport(makeOptions(identity, { ticketCount, ticketLifetimeSeconds: 60, ticketKeys: ring }), () => T0 + 1000);
    return { t, client: new Tls13Client(t, { psk: { ticket: ticket.ticket, psk: ticket.psk, obfuscatedAge: (1000 + ticket.ageAdd) >>> 0 } }) };
  };
  const off = offerTo(0);
  assert.equal(await resumes(off.t, off.client), false);
  // Control: the same ticket on a server with tickets on resumes.
  const on = offerTo(1);
  assert.equal(await resumes(on.t, on.client), true);
});

// RFC 6066 §3: "When resuming a session, the server MUST NOT include a server_name extension"
// (in TLS 1.3 the acknowledgement moved to EncryptedExtensions, RFC 8446 §4.2); the name
// chose nothing on resumption.
const EXT_SERVER_NAME = 0;
test('a resumed handshake does not acknowledge server_name in EncryptedExtensions; the full one does', async () => {
  const ring = new TicketKeyRing();
  const full = memoryTransport(makeOptions(identity, { ticketCount: 1, ticketLifetimeSeconds: 60, ticketKeys: ring }), () => T0);
  const first = new Tls13Client(full);
  await first.handshake();
  assert.equal(first.encryptedExtensionTypes.includes(EXT_SERVER_NAME), true, 'control: the full handshake acknowledges it');
  const [ticket] = await first.readTickets(1);
  const { t, client } = offerTicket(ring, ticket!, 1000, 1000);
  assert.equal(await resumes(t, client), true);
  assert.equal(client.encryptedExtensionTypes.includes(EXT_SERVER_NAME), false);
});
