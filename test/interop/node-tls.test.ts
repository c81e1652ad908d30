/**
 * Interop: node:tls as the client (OpenSSL inside Node), against our engine in the
 * same process. Always available, so these run on every machine: every key type,
 * ALPN, SNI, resumption through the `session` event, and larger transfers with
 * backpressure in both directions.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { randomBytes, createHash } from 'node:crypto';
import { once } from 'node:events';
import { startEngineServer, TEST_RESPONSE_BODY, type TestServer } from '../helpers/server.js';
import { makeTestPki, type TestKeyType } from '../helpers/pki.js';
import { NamedGroup } from '../../src/tls/wire/codepoints.js';

async function open(server: TestServer, options: ConnectionOptions = {}): Promise<TLSSocket> {
  const socket = connect({
    host: '127.0.0.1',
    port: server.port,
    servername: 'localhost',
    ca: server.pki.caCertPem,
    minVersion: 'TLSv1.3',
    ...options,
  });
  await once(socket, 'secureConnect');
  return socket;
}

/**
 * Writes `data`, waits for `expectedLength` bytes back (the echo: `data.length`), then
 * ends and collects anything else until the server closes.
 */
async function roundTrip(socket: TLSSocket, data: Buffer, expectedLength = data.length): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let received = 0;
  let wake: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    received += chunk.length;
    if (received >= expectedLength) wake?.();
  });
  const ended = once(socket, 'end');
  socket.write(data);
  if (received < expectedLength) {
    await Promise.race([new Promise<void>((resolve) => (wake = resolve)), ended]);
  }
  socket.end();
  await ended;
  return Buffer.concat(chunks);
}

describe('node:tls client', () => {
  const keyTypes: { keyType: TestKeyType; scheme: string }[] = [
    { keyType: 'ecdsa-p256', scheme: 'ecdsa_secp256r1_sha256' },
    { keyType: 'ecdsa-p384', scheme: 'ecdsa_secp384r1_sha384' },
    { keyType: 'rsa2048', scheme: 'rsa_pss_rsae_sha256' },
    { keyType: 'ed25519', scheme: 'ed25519' },
  ];
  for (const { keyType, scheme } of keyTypes) {
    test(`key type ${keyType}: verified chain, parameters and echo`, async (t) => {
      const s = await startEngineServer({ keyType, alpnProtocols: ['h2', 'http/1.1'] }, t);
      const socket = await open(s, { ALPNProtocols: ['http/1.1'] });
      assert.equal(socket.authorized, true, String(socket.authorizationError));
      assert.equal(socket.getProtocol(), 'TLSv1.3');
      assert.equal(socket.alpnProtocol, 'http/1.1');
      const cipher = socket.getCipher();
      assert.equal(cipher.version, 'TLSv1.3');
      const peer = socket.getPeerCertificate(true);
      assert.equal(peer.subject.CN, 'localhost');
      assert.equal(peer.issuerCertificate?.subject.CN, 'delegator test CA', 'chain sent leaf first, then the CA');
      assert.equal(socket.getEphemeralKeyInfo() && (socket.getEphemeralKeyInfo() as { name?: string }).name, 'X25519');

      const payload = randomBytes(3000);
      const echoed = await roundTrip(socket, payload);
      assert.deepEqual(echoed, payload);

      const connection = await s.connection(0);
      await connection.closed;
      assert.deepEqual(connection.received, payload);
      assert.equal(connection.cipherSuite, cipher.standardName);
      assert.equal(connection.alpnProtocol, 'http/1.1');
      assert.equal(connection.serverName, 'localhost');
      if (s.implementation === 'engine') {
        assert.equal(connection.signatureScheme, scheme);
        assert.equal(connection.group, 'x25519');
      }
    });
  }

  for (const [curve, group] of [
    ['P-256', 'secp256r1'],
    ['P-384', 'secp384r1'],
  ] as const) {
    test(`ecdhCurve ${curve}`, async (t) => {
      const s = await startEngineServer({}, t);
      const socket = await open(s, { ecdhCurve: curve });
      assert.equal((socket.getEphemeralKeyInfo() as { name?: string }).name, curve === 'P-256' ? 'prime256v1' : 'secp384r1');
      assert.deepEqual(await roundTrip(socket, Buffer.from('x')), Buffer.from('x'));
      if (s.implementation === 'engine') assert.equal((await s.connection(0)).group, group);
    });
  }

  test('HelloRetryRequest when the client key share is for a group the server does not take', async (t) => {
    const s = await startEngineServer({ groups: [NamedGroup.secp384r1] }, t);
    // OpenSSL shares a key for the first group only.
    const socket = await open(s, { ecdhCurve: 'X25519:P-384' });
    assert.equal((socket.getEphemeralKeyInfo() as { name?: string }).name, 'secp384r1');
    assert.deepEqual(await roundTrip(socket, Buffer.from('after HRR')), Buffer.from('after HRR'));
  });

  for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
    test(`cipher suite ${suite}`, async (t) => {
      const s = await startEngineServer({}, t);
      const socket = await open(s, { ciphers: suite });
      assert.equal(socket.getCipher().standardName, suite);
      const payload = randomBytes(40_000);
      assert.deepEqual(await roundTrip(socket, payload), payload);
      assert.equal((await s.connection(0)).cipherSuite, suite);
    });
  }

  test('resumption: the session from the `session` event resumes', async (t) => {
    const s = await startEngineServer({}, t);
    const first = await open(s);
    assert.equal(first.isSessionReused(), false);
    const sessions: Buffer[] = [];
    first.on('session', (session: Buffer) => sessions.push(session));
    assert.deepEqual(await roundTrip(first, Buffer.from('one')), Buffer.from('one'));
    assert.ok(sessions.length >= 1, 'got a ticket');

    const second = await open(s, { session: sessions[0] });
    assert.equal(second.isSessionReused(), true);
    assert.equal(second.getProtocol(), 'TLSv1.3');
    assert.deepEqual(await roundTrip(second, Buffer.from('two')), Buffer.from('two'));
    const resumed = await s.connection(1);
    assert.equal(resumed.resumed, true);
    assert.equal(resumed.received.toString(), 'two');
    if (s.implementation === 'engine') assert.equal(resumed.signatureScheme, undefined);
  });

  test('each NewSessionTicket resumes (ticketCount 3)', async (t) => {
    const s = await startEngineServer({ ticketCount: 3 }, t);
    if (s.implementation !== 'engine') return t.skip('ticketCount is an engine option');
    const first = await open(s);
    const sessions: Buffer[] = [];
    first.on('session', (session: Buffer) => sessions.push(session));
    await roundTrip(first, Buffer.from('x'));
    assert.equal(sessions.length, 3);
    for (const session of sessions) {
      const socket = await open(s, { session });
      assert.equal(socket.isSessionReused(), true);
      await roundTrip(socket, Buffer.from('y'));
    }
  });

  test('SNI: serverName reaches the identity resolver; unknown names are refused', async (t) => {
    const pki = await makeTestPki({ extraNames: ['a.example.test'] });
    const asked: (string | undefined)[] = [];
    const s = await startEngineServer({ pki }, t);
    if (s.implementation !== 'engine') return t.skip('resolveIdentity is an engine option');
    await s.close();
    const { LocalSigner } = await import('../../src/tls/signer.js');
    const identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
    const s2 = await startEngineServer(
      {
        pki,
        resolveIdentity: (name) => {
          asked.push(name);
          return name === 'unknown.example.test' ? undefined : identity;
        },
      },
      t,
    );
    const ok = await open(s2, { servername: 'a.example.test' });
    assert.deepEqual(await roundTrip(ok, Buffer.from('sni')), Buffer.from('sni'));
    assert.equal((await s2.connection(0)).serverName, 'a.example.test');

    const refused = connect({ host: '127.0.0.1', port: s2.port, servername: 'unknown.example.test', ca: pki.caCertPem });
    const [err] = (await once(refused, 'error')) as [Error & { code?: string }];
    // RFC 6066 §3: unrecognized_name (112) for a name the server has no identity for.
    assert.match(String(err.code) + err.message, /UNRECOGNIZED_NAME|unrecognized name/i);
    assert.deepEqual(asked, ['a.example.test', 'unknown.example.test']);
  });

  test('HTTP GET gets the page', async (t) => {
    const s = await startEngineServer({}, t);
    const socket = await open(s);
    const request = Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    const response = (await roundTrip(socket, request, Number.MAX_SAFE_INTEGER)).toString();
    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/);
    assert.ok(response.endsWith(`\r\n\r\n${TEST_RESPONSE_BODY}`), response);
  });

  test('4 MB each way with backpressure, 20 connections in parallel', async (t) => {
    const s = await startEngineServer({}, t);
    const size = 4 * 1024 * 1024;
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const socket = await open(s);
        const payload = randomBytes(i === 0 ? size : 64 * 1024);
        const echoed = await roundTrip(socket, payload);
        assert.equal(createHash('sha256').update(echoed).digest('hex'), createHash('sha256').update(payload).digest('hex'));
      }),
    );
    assert.equal(s.connections.length, 20);
    assert.equal(s.clientErrors.length, 0);
  });

  test('half-close: data sent together with close_notify is still answered (RFC 8446 §6.1)', async (t) => {
    // close_notify closes the client's write side only; the server may still send. Clients that send a
    // request and then end (printf ... | openssl s_client, HTTP/1.0 tools) depend on this.
    const s = await startEngineServer({}, t);
    const socket = await open(s);
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.end('echo this after my close_notify');
    await once(socket, 'end');
    assert.equal(Buffer.concat(chunks).toString(), 'echo this after my close_notify');
    const connection = await s.connection(0);
    await connection.closed;
    assert.equal(connection.error, undefined, String(connection.error));
  });

  // TLS 1.2 is served by default (test/interop/tls12.test.ts); with it turned off, a TLS
  // 1.2-only client must be refused, not left waiting.
  test('a TLS 1.2-only client gets protocol_version from a server with TLS 1.2 off', { timeout: 30_000 }, async (t) => {
    const s = await startEngineServer({ tls12: false }, t);
    const socket = connect({
      host: '127.0.0.1',
      port: s.port,
      servername: 'localhost',
      ca: s.pki.caCertPem,
      maxVersion: 'TLSv1.2',
    });
    const [err] = (await once(socket, 'error')) as [Error & { code?: string }];
    assert.match(String(err.code) + err.message, /PROTOCOL_VERSION|protocol version/i);
    assert.equal(s.connections.length, 0);
  });
});
