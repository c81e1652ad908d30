/**
 * The engine's socket adapter between the end of the handshake and 'secure' (src/tls/socket.ts):
 * the connection can complete the handshake and still fail before the application holds the
 * socket (the NewSessionTickets that go out with the client Finished cannot be built; here
 * the ticket key ring fails to seal). That
 * failure must be a handshake failure (tlsClientError, an alert to the client), not an
 * 'error' event on a socket nobody listens to yet, which ends the process.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { createServer, type TlsSocket } from '../../src/tls/socket.js';
import { LocalSigner } from '../../src/tls/signer.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import { AlertDescription } from '../../src/tls/alert.js';
import { makeTestPki } from '../helpers/pki.js';
import { socketTransport, Tls13Client } from '../helpers/tls13-client.js';

/** A ticket key ring whose sealing fails: the failure comes after the engine completed the handshake. */
class FailingTicketKeyRing extends TicketKeyRing {
  override seal(): Buffer {
    throw new Error('ticket sealing failed');
  }
}

async function startServer(t: TestContext, ticketKeys: TicketKeyRing = new FailingTicketKeyRing()) {
  const pki = await makeTestPki();
  const identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  const secured: TlsSocket[] = [];
  // Any name is served: the resolver is the application's, and it may accept long names.
  const server = createServer({ resolveIdentity: () => identity, ticketKeys, ticketCount: 1 }, (socket) => {
    secured.push(socket);
    events.emit('secured');
    socket.on('error', () => undefined);
    socket.end('ok');
  });
  const events = new EventEmitter();
  server.on('tlsClientError', (err: Error & { alert?: number }) => events.emit('clientError', err));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as AddressInfo).port, secured, events };
}

test('a failure after the client Finished but before secure is a tlsClientError with an alert, and the server lives on', { timeout: 30_000 }, async (t) => {
  const s = await startServer(t);
  const transport = await socketTransport(s.port);
  t.after(() => transport.close());
  const client = new Tls13Client(transport, { serverName: 'www.example' });
  const clientError = once(s.events, 'clientError');
  await client.handshake(); // the server's flight is fine; its tickets are not
  assert.equal(await client.readAlert(), AlertDescription.internal_error);
  const [err] = (await clientError) as [Error & { alert?: number }];
  assert.equal(err.alert, AlertDescription.internal_error);
  assert.equal(s.secured.length, 0, 'the application never got the failed connection');

  // The server lives on: another connection to it gets the same alert, not a refused connect.
  const again = await socketTransport(s.port);
  t.after(() => again.close());
  const second = new Tls13Client(again, { serverName: 'www.example' });
  await second.handshake();
  assert.equal(await second.readAlert(), AlertDescription.internal_error);
});

test('a server name too long for a ticket (over 255 bytes; RFC 6066 allows it) gets no ticket, and the handshake completes', { timeout: 30_000 }, async (t) => {
  const s = await startServer(t, new TicketKeyRing());
  const longName = `${'a'.repeat(300)}.example`;
  const transport = await socketTransport(s.port);
  t.after(() => transport.close());
  const client = new Tls13Client(transport, { serverName: longName });
  const secured = once(s.events, 'secured');
  await client.handshake();
  await secured;
  assert.equal(s.secured[0]!.serverName, longName);
  const first = await client.readRecord();
  assert.equal(first?.type, 23, 'the first record after the handshake is the application data, not a NewSessionTicket');
  assert.equal(first?.content.toString(), 'ok');

  // Positive control: an ordinary name gets its ticket first.
  const ok = await socketTransport(s.port);
  t.after(() => ok.close());
  const control = new Tls13Client(ok, { serverName: 'www.example' });
  await control.handshake();
  assert.equal((await control.readTickets(1)).length, 1);
  assert.equal((await control.readApplicationData(2)).toString(), 'ok');
});
