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
import { openTicket, sealTicket } from '../../src/tls/handshake/session-ticket.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';

let pki: TestPki;
let server: Server;
let port: number;

before(async () => {
  pki = await makeTestPki({ extraNames: ['h2only.test', 'plain.test', 'utf8.test'] });
  const base: Identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  const byName = new Map<string | undefined, Identity>([
    ['h2only.test', { ...base, alpnProtocols: ['h2'] }],
    ['plain.test', base], // no list of its own: the server's list applies
    ['utf8.test', { ...base, alpnProtocols: ['ĥ2', 'é'] }],
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

function handshake(servername: string, ALPNProtocols: string[] | Uint8Array, maxVersion: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.3'): Promise<{ alpn: string | false | null; body: string }> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = connect({ host: '127.0.0.1', port, servername, ALPNProtocols, ca: pki.caCertPem, maxVersion });
    let body = '';
    socket.on('data', (d: Buffer) => (body += d.toString('utf8')));
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

/** ALPNProtocols in wire form (each name after its one-byte length): node:tls sends them as given. */
const offer = (...names: Buffer[]) => Buffer.concat(names.flatMap((n) => [Buffer.of(n.length), n]));

test('a non-ASCII protocol name is matched and sent as its UTF-8 bytes (RFC 7301 §3.1: opaque bytes), TLS 1.3 and 1.2', async () => {
  for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
    const r = await handshake('utf8.test', offer(Buffer.from('é', 'utf8')), maxVersion);
    assert.equal(r.body, 'alpn=é', `${maxVersion}: the server's socket reports the name as configured`);
    // node:tls hands the selected name over one char per byte: the bytes the server sent.
    assert.deepEqual(Buffer.from(r.alpn as string, 'latin1'), Buffer.from('é', 'utf8'), maxVersion);
    const wide = await handshake('utf8.test', offer(Buffer.from('http/1.1'), Buffer.from('ĥ2', 'utf8')), maxVersion);
    assert.equal(wide.body, 'alpn=ĥ2', maxVersion);
    assert.deepEqual(Buffer.from(wide.alpn as string, 'latin1'), Buffer.from('ĥ2', 'utf8'), maxVersion);
  }
  // The same name in another encoding (latin1 é is the one byte 0xE9) is another protocol.
  await assert.rejects(handshake('utf8.test', offer(Buffer.from('é', 'latin1'))), (err: Error & { code?: string }) => {
    assert.match(`${err.code} ${err.message}`, /NO_APPLICATION_PROTOCOL|no application protocol/i);
    return true;
  });
});

test('a session ticket records the negotiated protocol as those UTF-8 bytes and opens to the same name', () => {
  const ring = new TicketKeyRing();
  const state = { cipherSuite: 0x1301, psk: Buffer.alloc(32, 7), issuedAt: 1, ageAdd: 2, lifetimeSeconds: 3, serverName: 'utf8.test', clientAuthPolicy: 'off', clientIdentity: undefined };
  assert.equal(openTicket(ring, sealTicket(ring, { ...state, alpnProtocol: 'ĥ2' }))?.alpnProtocol, 'ĥ2');
  assert.equal(openTicket(ring, sealTicket(ring, { ...state, alpnProtocol: 'h2' }))?.alpnProtocol, 'h2', 'control: ASCII');
});
