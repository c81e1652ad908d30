/**
 * The engine's socket adapter between the end of the handshake and 'secure' (src/tls/socket.ts):
 * the connection can complete the handshake and still fail before the application holds the
 * socket (the NewSessionTickets that go out with the client Finished cannot be built, here
 * because a ticket carries the server name in a 1-byte length and the name is longer). That
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

async function startServer(t: TestContext) {
  const pki = await makeTestPki();
  const identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  const secured: TlsSocket[] = [];
  // Any name is served: the resolver is the application's, and it may accept long names.
  const server = createServer({ resolveIdentity: () => identity, ticketKeys: new TicketKeyRing(), ticketCount: 1 }, (socket) => {
    secured.push(socket);
    events.emit('secured');
    socket.on('error', () => undefined);
    socket.end();
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
  const client = new Tls13Client(transport, { serverName: `${'a'.repeat(300)}.example` });
  const clientError = once(s.events, 'clientError');
  await client.handshake(); // the server's flight is fine; its tickets are not
  assert.equal(await client.readAlert(), AlertDescription.internal_error);
  const [err] = (await clientError) as [Error & { alert?: number }];
  assert.equal(err.alert, AlertDescription.internal_error);
  assert.equal(s.secured.length, 0, 'the application never got the failed connection');

  // Positive control: the same server still completes a handshake with an ordinary name.
  const ok = await socketTransport(s.port);
  t.after(() => ok.close());
  const secured = once(s.events, 'secured');
  await new Tls13Client(ok, { serverName: 'www.example' }).handshake();
  await secured;
  assert.equal(s.secured[0]!.serverName, 'www.example');
});
