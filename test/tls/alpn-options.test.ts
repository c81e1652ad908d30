/**
 * The engine's `alpnProtocols` option is checked where the server is made (createServer,
 * setTlsOptions: resolveOptions), by the check the edge's config and serve use
 * (src/tls/alpn-names.ts; RFC 7301 §3.1: each ProtocolName is 1..255 bytes, sent as the
 * name's UTF-8). Before, a library user's empty name, 256-byte name, lone surrogate or
 * duplicate was taken and only met (or silently never matched) at handshake time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import { createServer, resolveOptions, LocalSigner, type Identity, type TlsServerOptions } from '../../src/tls/index.js';
import { makeTestPki } from '../helpers/pki.js';

const identity = { certificateChain: [], signer: undefined } as unknown as Identity; // never used: no handshake
const withAlpn = (alpnProtocols: unknown): TlsServerOptions => ({ resolveIdentity: () => identity, alpnProtocols: alpnProtocols as string[] });

const REFUSED: [unknown, string, string][] = [
  [['h2', ''], 'RangeError', 'alpnProtocols[1] must be a non-empty string'],
  [['p'.repeat(256)], 'RangeError', 'alpnProtocols[0] is longer than 255 bytes (RFC 7301 §3.1)'],
  [['h2', 'é'.repeat(128)], 'RangeError', 'alpnProtocols[1] is longer than 255 bytes (RFC 7301 §3.1)'], // 128 characters, 256 bytes
  [['x\ud800'], 'RangeError', 'alpnProtocols[0] holds a lone UTF-16 surrogate, which has no UTF-8 encoding'],
  [['h2', 'http/1.1', 'h2'], 'RangeError', "alpnProtocols[2]: 'h2' is already alpnProtocols[0]; each protocol is listed once"],
  [['h2', 2], 'TypeError', 'alpnProtocols[1] must be a non-empty string'],
  ['h2', 'TypeError', 'alpnProtocols must be a list of protocol names'],
];

test('resolveOptions refuses an empty name, one over 255 UTF-8 bytes, a lone surrogate, a duplicate and a non-string', () => {
  for (const [alpn, name, message] of REFUSED) {
    assert.throws(() => resolveOptions(withAlpn(alpn)), { name, message }, JSON.stringify(alpn));
  }
});

test('createServer refuses a bad alpnProtocols when it is made', () => {
  for (const [alpn, name, message] of REFUSED) {
    assert.throws(() => createServer(withAlpn(alpn)), { name, message }, JSON.stringify(alpn));
  }
});

test('positive control: 255-byte, non-ASCII and case-distinct names are taken as given; none and [] mean no ALPN', () => {
  const taken = (alpn: string[]) => resolveOptions(withAlpn(alpn)).alpnProtocols;
  assert.deepEqual(taken(['p'.repeat(255)]), ['p'.repeat(255)]);
  assert.deepEqual(taken([`${'é'.repeat(127)}x`, '\u{1F600}']), [`${'é'.repeat(127)}x`, '\u{1F600}']);
  assert.deepEqual(taken(['h2', 'H2', 'http/1.1']), ['h2', 'H2', 'http/1.1']);
  assert.deepEqual(taken([]), []);
  assert.deepEqual(resolveOptions({ resolveIdentity: () => identity }).alpnProtocols, []);
});

test('setTlsOptions with a bad alpnProtocols throws and changes nothing: the old list is still negotiated', { timeout: 20_000 }, async (t) => {
  const pki = await makeTestPki();
  const real: Identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  const options: TlsServerOptions = { resolveIdentity: () => real, alpnProtocols: ['p'.repeat(255), 'http/1.1'] };
  const server = createServer(options, (s) => {
    s.on('error', () => {});
    s.end(`alpn=${s.alpnProtocol ?? 'none'}`);
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  const negotiated = (ALPNProtocols: string[]) =>
    new Promise<string>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ALPNProtocols, ca: pki.caCertPem });
      let body = '';
      socket.on('data', (d: Buffer) => (body += d.toString('utf8')));
      socket.on('end', () => resolve(body));
      socket.on('error', reject);
    });

  assert.equal(await negotiated(['h2', 'http/1.1']), 'alpn=http/1.1');
  assert.equal(await negotiated(['p'.repeat(255)]), `alpn=${'p'.repeat(255)}`, 'a 255-byte name is negotiated');
  assert.throws(() => server.setTlsOptions({ ...options, alpnProtocols: ['h2', 'h2'] }), {
    name: 'RangeError',
    message: "alpnProtocols[1]: 'h2' is already alpnProtocols[0]; each protocol is listed once",
  });
  assert.equal(await negotiated(['h2', 'http/1.1']), 'alpn=http/1.1', 'the old list still applies');
});
