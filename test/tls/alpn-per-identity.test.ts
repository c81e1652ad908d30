/**
 * ALPN per identity (RFC 7301 §3.2): an Identity's own protocol list overrides the
 * server's, so one listener can serve names with different protocols (edge routes).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo, Server } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { createServer } from '../../src/tls/socket.js';
import { LocalSigner, type Identity } from '../../src/tls/signer.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';

let pki: TestPki;
let server: Server;
let port: number;

before(async () => {
  pki = await makeTestPki({ extraNames: ['h2only.test', 'plain.test'] });
  const base: Identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  const byName = new Map<string | undefined, Identity>([
    ['h2only.test', { ...base, alpnProtocols: ['h2'] }],
    ['plain.test', base], // no list of its own: the server's list applies
  ]);
  server = createServer({ resolveIdentity: (name) => byName.get(name), alpnProtocols: ['http/1.1', 'h2'] }, (s) => {
    s.on('error', () => {});
    s.end(`alpn=${s.alpnProtocol ?? 'none'}`);
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(() => new Promise<void>((resolve) => server.close(() => resolve())));

function handshake(servername: string, ALPNProtocols: string[]): Promise<{ alpn: string | false | null; body: string }> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = connect({ host: '127.0.0.1', port, servername, ALPNProtocols, ca: pki.caCertPem });
    let body = '';
    socket.on('data', (d: Buffer) => (body += d.toString()));
    socket.on('end', () => resolve({ alpn: socket.alpnProtocol, body }));
    socket.on('error', reject);
  });
}

test('an identity with its own ALPN list is negotiated from that list, not the server one', async () => {
  const r = await handshake('h2only.test', ['http/1.1', 'h2']);
  assert.equal(r.alpn, 'h2');
  assert.equal(r.body, 'alpn=h2');
});

test('no overlap with the identity list is no_application_protocol, even when the server list would match', async () => {
  await assert.rejects(handshake('h2only.test', ['http/1.1']), (err: Error & { code?: string }) => {
    assert.match(`${err.code} ${err.message}`, /NO_APPLICATION_PROTOCOL|no application protocol/i);
    return true;
  });
});

test('an identity without a list uses the server list (server preference)', async () => {
  const r = await handshake('plain.test', ['h2', 'http/1.1']);
  assert.equal(r.alpn, 'http/1.1');
  assert.equal(r.body, 'alpn=http/1.1');
});
