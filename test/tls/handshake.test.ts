/**
 * Full handshakes between node:tls (OpenSSL) as the client and the engine (socket.ts
 * createServer) over loopback: every suite, every group, HelloRetryRequest, resumption,
 * ALPN, each key type, KeyUpdate, and the alerts a client must see.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo, Server, Socket } from 'node:net';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { createServer, type TlsSocket } from '../../src/tls/socket.js';
import type { TlsServerOptions } from '../../src/tls/options.js';
import { LocalSigner, type Identity } from '../../src/tls/signer.js';
import { NamedGroup } from '../../src/tls/wire/codepoints.js';
import { makeTestPki, type TestKeyType, type TestPki } from '../helpers/pki.js';

interface Running {
  server: Server;
  port: number;
  /** Server-side sockets after their handshake, in order. */
  secured: TlsSocket[];
  /** Errors of handshakes that failed on the server. */
  clientErrors: (Error & { code?: string })[];
  /** Number of ClientHello messages received in plaintext records, per connection. */
  clientHellos: number[];
  close(): Promise<void>;
}

const pkis = new Map<TestKeyType, TestPki>();

before(async () => {
  for (const keyType of ['ecdsa-p256', 'ecdsa-p384', 'rsa2048', 'ed25519'] as const) pkis.set(keyType, await makeTestPki({ keyType }));
});

const running: Running[] = [];
after(async () => {
  await Promise.all(running.map((r) => r.close()));
});

function identityOf(pki: TestPki): Identity {
  return { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
}

/** Counts ClientHellos in the plaintext handshake records a raw socket receives (a tap beside the engine's reader). */
function tapClientHellos(raw: Socket, counts: number[]): void {
  const index = counts.push(0) - 1;
  let buffered = Buffer.alloc(0);
  let plaintext = true;
  raw.on('data', (chunk: Buffer) => {
    if (!plaintext) return;
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt16BE(3)) {
      const type = buffered[0]!;
      const body = buffered.subarray(5, 5 + buffered.readUInt16BE(3));
      buffered = buffered.subarray(5 + body.length);
      if (type === 22 && body[0] === 1) counts[index]!++;
      if (type === 23) plaintext = false; // encrypted from here on
    }
  });
}

async function startServer(options: Partial<TlsServerOptions> & { pki?: TestPki } = {}): Promise<Running> {
  const pki = options.pki ?? pkis.get('ecdsa-p256')!;
  const identity = identityOf(pki);
  const secured: TlsSocket[] = [];
  const clientErrors: (Error & { code?: string })[] = [];
  const clientHellos: number[] = [];
  const raws = new Set<Socket>();
  const server = createServer({ resolveIdentity: () => identity, ...options }, (socket) => {
    secured.push(socket);
    socket.on('data', (d: Buffer) => socket.write(d)); // echo
    socket.on('end', () => socket.end());
    socket.on('error', () => {});
  });
  server.on('connection', (raw: Socket) => {
    raws.add(raw);
    raw.on('close', () => raws.delete(raw));
    tapClientHellos(raw, clientHellos);
  });
  server.on('tlsClientError', (err: Error & { code?: string }) => clientErrors.push(err));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const r: Running = {
    server,
    port: (server.address() as AddressInfo).port,
    secured,
    clientErrors,
    clientHellos,
    close: async () => {
      for (const raw of raws) raw.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  running.push(r);
  return r;
}

function connectClient(r: Running, options: ConnectionOptions = {}, pki: TestPki = pkis.get('ecdsa-p256')!): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const client = connect({
      host: '127.0.0.1',
      port: r.port,
      servername: 'localhost',
      ca: pki.caCertPem,
      minVersion: 'TLSv1.3',
      ...options,
    });
    client.once('secureConnect', () => resolve(client));
    client.once('error', reject);
  });
}

/** Client that is expected to fail: resolves with its error. */
function connectExpectingError(r: Running, options: ConnectionOptions = {}): Promise<Error & { code?: string }> {
  return new Promise((resolve, reject) => {
    const client = connect({ host: '127.0.0.1', port: r.port, servername: 'localhost', ca: pkis.get('ecdsa-p256')!.caCertPem, minVersion: 'TLSv1.3', ...options });
    client.once('secureConnect', () => {
      // TLS 1.3 clients finish before the server has checked their Finished; wait for data or an error.
      client.once('data', () => reject(new Error('handshake unexpectedly succeeded')));
      client.write('x');
    });
    client.once('error', (err) => {
      client.destroy();
      resolve(err);
    });
  });
}

/** Writes `data` and resolves when the same number of bytes has come back (the server echoes). */
function echo(client: TLSSocket, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= data.length) {
        client.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    client.on('data', onData);
    client.once('error', reject);
    client.write(data);
  });
}

async function closeClient(client: TLSSocket): Promise<void> {
  await new Promise<void>((resolve) => {
    client.once('close', () => resolve());
    client.end();
    setTimeout(() => client.destroy(), 2000).unref();
  });
}

const payload = Buffer.from(Array.from({ length: 40_000 }, (_, i) => (i * 7) & 0xff)); // several records

for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
  test(`cipher suite ${suite}: handshake and data both ways`, async () => {
    const r = await startServer();
    const client = await connectClient(r, { ciphers: suite });
    assert.equal(client.getProtocol(), 'TLSv1.3');
    assert.equal(client.getCipher().standardName, suite);
    assert.deepEqual(await echo(client, payload), payload);
    assert.equal(r.secured[0]!.cipherSuite, suite);
    assert.equal(r.secured[0]!.serverName, 'localhost');
    assert.equal(r.secured[0]!.group, 'x25519');
    assert.equal(r.secured[0]!.resumed, false);
    assert.equal(r.secured[0]!.remoteAddress, '127.0.0.1');
    assert.equal(r.secured[0]!.remotePort, client.localPort);
    await closeClient(client);
  });
}

test('recordSizeLimit 1024 and node:tls (which sends no record_size_limit): full-size records in both directions (RFC 8449 §4: the limit binds only a client it was announced to)', async () => {
  const r = await startServer({ recordSizeLimit: 1024 });
  const client = await connectClient(r);
  assert.deepEqual(await echo(client, payload), payload, '40 000 bytes, written by OpenSSL in records of 2^14');
  assert.deepEqual(r.clientErrors, []);
  await closeClient(client);
});

const groups: [string, string, string][] = [
  // node:tls ecdhCurve name, engine group name, node's ephemeral key name
  ['X25519', 'x25519', 'X25519'],
  ['prime256v1', 'secp256r1', 'prime256v1'],
  ['secp384r1', 'secp384r1', 'secp384r1'],
  ['secp521r1', 'secp521r1', 'secp521r1'],
  ['X448', 'x448', 'X448'],
];
for (const [curve, engineName, nodeName] of groups) {
  test(`group ${engineName}: handshake with a key share for it`, async () => {
    const r = await startServer();
    const client = await connectClient(r, { ecdhCurve: curve });
    assert.equal((client.getEphemeralKeyInfo() as { name?: string }).name, nodeName);
    assert.deepEqual(await echo(client, Buffer.from('ping')), Buffer.from('ping'));
    assert.equal(r.secured[0]!.group, engineName);
    assert.deepEqual(r.clientHellos, [1], 'no HelloRetryRequest');
    await closeClient(client);
  });
}

test('groups: a client offering only ffdhe8192 gets handshake_failure by default; ffdhe3072 is served; ffdhe8192 when listed', async () => {
  // A client chooses the group by offering only it: ffdhe8192 would make one handshake cost
  // ≈ 13 ms of key exchange (18× a whole ECDHE handshake), so it is not a default.
  const defaults = await startServer();
  const refused = await connectExpectingError(defaults, { ecdhCurve: 'ffdhe8192' });
  assert.match(refused.message, /handshake failure|alert number 40/i);
  assert.match(String(defaults.clientErrors[0]?.message), /no key exchange group in common/);
  // Control: a finite-field group of the defaults.
  const ffdhe3072 = await connectClient(defaults, { ecdhCurve: 'ffdhe3072' });
  assert.deepEqual(await echo(ffdhe3072, Buffer.from('ff')), Buffer.from('ff'));
  assert.equal(defaults.secured[0]!.group, 'ffdhe3072');
  await closeClient(ffdhe3072);
  // Control: an operator who lists ffdhe8192 gets it.
  const listed = await startServer({ groups: [NamedGroup.x25519, 0x0104] });
  const ffdhe8192 = await connectClient(listed, { ecdhCurve: 'ffdhe8192' });
  assert.deepEqual(await echo(ffdhe8192, Buffer.from('ff')), Buffer.from('ff'));
  assert.equal(listed.secured[0]!.group, 'ffdhe8192');
  await closeClient(ffdhe8192);
});

test('HelloRetryRequest: the client shares X25519, the server only takes P-384', async () => {
  const r = await startServer({ groups: [NamedGroup.secp384r1] });
  const client = await connectClient(r, { ecdhCurve: 'X25519:secp384r1' });
  assert.equal((client.getEphemeralKeyInfo() as { name?: string }).name, 'secp384r1');
  assert.deepEqual(await echo(client, Buffer.from('after retry')), Buffer.from('after retry'));
  assert.equal(r.secured[0]!.group, 'secp384r1');
  assert.deepEqual(r.clientHellos, [2], 'two ClientHellos: the retry happened');
  await closeClient(client);
});

test('HelloRetryRequest: the server prefers P-256 over the X25519 share only when it cannot use X25519', async () => {
  // Preference alone never forces a retry (§4.2.8: use a share the client sent if acceptable).
  const r = await startServer({ groups: [NamedGroup.secp256r1, NamedGroup.x25519] });
  const client = await connectClient(r, { ecdhCurve: 'X25519:prime256v1' });
  assert.equal(r.clientHellos[0], 1);
  await echo(client, Buffer.from('x'));
  assert.equal(r.secured[0]!.group, 'x25519');
  await closeClient(client);
});

test('resumption: the ticket from the first connection resumes the second', async () => {
  const r = await startServer({ ticketCount: 2 });
  const first = await connectClient(r);
  const session = await new Promise<Buffer>((resolve) => {
    first.once('session', resolve);
    first.write('hello');
  });
  assert.equal(first.isSessionReused(), false);
  await closeClient(first);
  const second = await connectClient(r, { session });
  assert.equal(second.isSessionReused(), true, 'client resumed');
  assert.deepEqual(await echo(second, Buffer.from('again')), Buffer.from('again'));
  assert.equal(r.secured[1]!.resumed, true, 'server resumed');
  assert.equal(r.secured[1]!.signatureScheme, undefined, 'no CertificateVerify on resumption');
  assert.equal(r.secured[0]!.resumed, false);
  await closeClient(second);
});

test('resumption with ticketDelayMs: the tickets held back arrive with the first data and resume', async () => {
  // A delay far longer than the test: only the echo can have carried the tickets.
  const r = await startServer({ ticketCount: 2, ticketDelayMs: 600_000 });
  const first = await connectClient(r);
  const sessions: Buffer[] = [];
  first.on('session', (session: Buffer) => sessions.push(session));
  assert.deepEqual(await echo(first, Buffer.from('hello')), Buffer.from('hello'));
  assert.equal(sessions.length, 2, 'both tickets before the echoed data');
  await closeClient(first);
  const second = await connectClient(r, { session: sessions[0]! });
  assert.equal(second.isSessionReused(), true, 'client resumed');
  assert.deepEqual(await echo(second, Buffer.from('again')), Buffer.from('again'));
  assert.equal(r.secured[1]!.resumed, true, 'server resumed');
  await closeClient(second);
});

test('resumption across setTlsOptions: tickets of the default ring still resume after a reload, also with a new lifetime', async () => {
  const r = await startServer({ ticketCount: 1 });
  const ticketOf = async () => {
    const client = await connectClient(r);
    const session = await new Promise<Buffer>((resolve) => {
      client.once('session', resolve);
      client.write('hello');
    });
    await closeClient(client);
    return session;
  };
  const resumes = async (session: Buffer) => {
    const client = await connectClient(r, { session });
    await echo(client, Buffer.from('x'));
    const reused = client.isSessionReused();
    await closeClient(client);
    return reused;
  };
  const identity = identityOf(pkis.get('ecdsa-p256')!);
  const before = await ticketOf();
  assert.equal(await resumes(before), true, 'control: resumes before any reload');
  // Options without ticketKeys, as a caller reloading routes or limits passes them.
  (r.server as unknown as { setTlsOptions(o: TlsServerOptions): void }).setTlsOptions({ resolveIdentity: () => identity, ticketCount: 1 });
  assert.equal(await resumes(before), true, 'a ticket issued before the reload resumes after it');
  (r.server as unknown as { setTlsOptions(o: TlsServerOptions): void }).setTlsOptions({ resolveIdentity: () => identity, ticketCount: 1, ticketLifetimeSeconds: 86_400 });
  assert.equal(await resumes(before), true, 'and after a reload that lengthens the lifetime');
  assert.equal(await resumes(await ticketOf()), true, 'tickets issued after the reloads resume');
  // A ring the caller passes is used as given: tickets of the default ring do not open there.
  const { TicketKeyRing } = await import('../../src/tls/handshake/ticket-keys.js');
  (r.server as unknown as { setTlsOptions(o: TlsServerOptions): void }).setTlsOptions({ resolveIdentity: () => identity, ticketCount: 1, ticketKeys: new TicketKeyRing() });
  assert.equal(await resumes(before), false, 'a caller-given ring replaces the default one');
});

test('resumption: a ticket from another server (other ticket keys) falls back to a full handshake', async () => {
  const a = await startServer();
  const b = await startServer();
  const first = await connectClient(a);
  const session = await new Promise<Buffer>((resolve) => {
    first.once('session', resolve);
    first.write('hello');
  });
  await closeClient(first);
  const second = await connectClient(b, { session });
  assert.equal(second.isSessionReused(), false);
  await echo(second, Buffer.from('x'));
  assert.equal(b.secured[0]!.resumed, false);
  await closeClient(second);
});

test('an IP-literal server_name is read as none: the identity for no SNI serves it (control: a host name is passed on)', async () => {
  const asked: (string | undefined)[] = [];
  const identity = identityOf(pkis.get('ecdsa-p256')!);
  const r = await startServer({ resolveIdentity: (name) => (asked.push(name), identity) });
  // node:tls still sends an IP servername (with a deprecation warning), as some clients do.
  const byAddress = await connectClient(r, { servername: '192.0.2.1', checkServerIdentity: () => undefined });
  await echo(byAddress, Buffer.from('x'));
  await closeClient(byAddress);
  const byName = await connectClient(r);
  await echo(byName, Buffer.from('x'));
  await closeClient(byName);
  assert.deepEqual(asked, [undefined, 'localhost']);
  assert.deepEqual(r.clientErrors, []);
});

test('ALPN: the server picks by its own preference', async () => {
  const r = await startServer({ alpnProtocols: ['h2', 'http/1.1'] });
  const client = await connectClient(r, { ALPNProtocols: ['http/1.1', 'h2'] });
  assert.equal(client.alpnProtocol, 'h2');
  await echo(client, Buffer.from('x'));
  assert.equal(r.secured[0]!.alpnProtocol, 'h2');
  await closeClient(client);
});

test('ALPN: no common protocol is no_application_protocol (RFC 7301 §3.2)', async () => {
  const r = await startServer({ alpnProtocols: ['h2'] });
  const err = await connectExpectingError(r, { ALPNProtocols: ['http/1.1'] });
  assert.match(String(err.code), /NO_APPLICATION_PROTOCOL/, `client error ${err.code}: ${err.message}`);
  assert.equal(r.clientErrors[0]?.code, 'TLS_ALERT_NO_APPLICATION_PROTOCOL');
});

test('ALPN: a client without ALPN still connects to a server with ALPN', async () => {
  const r = await startServer({ alpnProtocols: ['h2'] });
  const client = await connectClient(r);
  assert.equal(client.alpnProtocol, false);
  await echo(client, Buffer.from('x'));
  assert.equal(r.secured[0]!.alpnProtocol, undefined);
  await closeClient(client);
});

const keyTypes: [TestKeyType, string][] = [
  ['ecdsa-p256', 'ecdsa_secp256r1_sha256'],
  ['ecdsa-p384', 'ecdsa_secp384r1_sha384'],
  ['rsa2048', 'rsa_pss_rsae_sha256'],
  ['ed25519', 'ed25519'],
];
for (const [keyType, scheme] of keyTypes) {
  test(`key type ${keyType}: the client verifies a ${scheme} CertificateVerify`, async () => {
    const pki = pkis.get(keyType)!;
    const r = await startServer({ pki });
    const client = await connectClient(r, {}, pki);
    assert.equal(client.authorized, true);
    assert.deepEqual(client.getPeerCertificate(true).raw, Buffer.from(pki.leafCertDer));
    await echo(client, Buffer.from('x'));
    assert.equal(r.secured[0]!.signatureScheme, scheme);
    await closeClient(client);
  });
}

test('KeyUpdate: server updates with update_requested; data keeps flowing both ways', async () => {
  const r = await startServer();
  const client = await connectClient(r);
  await echo(client, Buffer.from('before'));
  const server = r.secured[0]!;
  server.keyUpdate(true);
  assert.deepEqual(await echo(client, payload), payload, 'after the first update');
  server.keyUpdate(false);
  server.keyUpdate(true);
  assert.deepEqual(await echo(client, Buffer.from('after three updates')), Buffer.from('after three updates'));
  // Server-initiated writes under the new keys reach the client.
  const got = new Promise<Buffer>((resolve) => client.once('data', resolve));
  server.write('pushed by the server');
  assert.equal((await got).toString(), 'pushed by the server');
  await closeClient(client);
});

test('unknown server name with resolveIdentity returning undefined: client sees unrecognized_name', async () => {
  const pki = pkis.get('ecdsa-p256')!;
  const r = await startServer({ resolveIdentity: (name) => (name === 'localhost' ? identityOf(pki) : undefined) });
  const err = await connectExpectingError(r, { servername: 'unknown.test' });
  assert.match(String(err.code), /UNRECOGNIZED_NAME/, `client error ${err.code}: ${err.message}`);
  assert.equal(r.clientErrors[0]?.code, 'TLS_ALERT_UNRECOGNIZED_NAME');
});

test('resolveIdentity may be asynchronous', async () => {
  const identity = identityOf(pkis.get('ecdsa-p256')!);
  const r = await startServer({ resolveIdentity: (name) => new Promise((resolve) => setTimeout(() => resolve(name === 'localhost' ? identity : undefined), 20)) });
  const client = await connectClient(r);
  await echo(client, Buffer.from('x'));
  await closeClient(client);
});

test('a signer that rejects: client sees internal_error', async () => {
  const pki = pkis.get('ecdsa-p256')!;
  const failing: Identity = {
    certificateChain: pki.chainDer,
    signer: { schemes: new LocalSigner(pki.leafKey).schemes, sign: () => Promise.reject(new Error('keyd unavailable')) },
  };
  const r = await startServer({ resolveIdentity: () => failing });
  const err = await connectExpectingError(r);
  assert.match(String(err.code), /INTERNAL_ERROR/, `client error ${err.code}: ${err.message}`);
  assert.equal(r.clientErrors[0]?.code, 'TLS_ALERT_INTERNAL_ERROR');
});

test('many handshakes wait on a slow signer at once without blocking each other', async () => {
  const pki = pkis.get('ecdsa-p256')!;
  const local = new LocalSigner(pki.leafKey);
  let inFlight = 0;
  let maxInFlight = 0;
  const slow: Identity = {
    certificateChain: pki.chainDer,
    signer: {
      schemes: local.schemes,
      sign: async (request) => {
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        await new Promise((resolve) => setTimeout(resolve, 100));
        inFlight--;
        return local.sign(request);
      },
    },
  };
  const r = await startServer({ resolveIdentity: () => slow });
  const clients = await Promise.all(Array.from({ length: 8 }, () => connectClient(r)));
  assert.equal(maxInFlight, 8, 'all eight signatures were pending together');
  await Promise.all(clients.map((c) => echo(c, Buffer.from('x'))));
  await Promise.all(clients.map(closeClient));
});

test('socket: a client that sends nothing is cut off after handshakeTimeoutMs', async () => {
  const r = await startServer({ handshakeTimeoutMs: 200 });
  const { connect: netConnect } = await import('node:net');
  const raw = netConnect(r.port, '127.0.0.1');
  raw.on('error', () => {});
  const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
  raw.resume();
  await closed;
  assert.equal(r.clientErrors[0]?.code, 'TLS_HANDSHAKE_TIMEOUT');
});

test('socket: a client trickling bytes (half-open) is cut at the deadline with user_canceled + close_notify; input does not extend the linger', { timeout: 20_000 }, async () => {
  const r = await startServer({ handshakeTimeoutMs: 200, lingerMs: 300 });
  const { connect: netConnect } = await import('node:net');
  const raw = netConnect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true });
  raw.on('error', () => {});
  const got: Buffer[] = [];
  raw.on('data', (d: Buffer) => got.push(d));
  // One byte of a ClientHello record every 10 ms, before and after the server's FIN.
  const timer = setInterval(() => raw.writable && raw.write(Buffer.of(0x16)), 10);
  await new Promise<void>((resolve) => raw.once('close', () => resolve()));
  clearInterval(timer);
  assert.equal(r.clientErrors[0]?.code, 'TLS_HANDSHAKE_TIMEOUT');
  assert.deepEqual([...Buffer.concat(got)], [21, 3, 3, 0, 2, 1, 90, 21, 3, 3, 0, 2, 1, 0], 'user_canceled, then close_notify (RFC 8446 §6.1)');
});

test('socket: a lingering (failed) connection holds no maxConnections slot; past maxLingering the oldest is closed', { timeout: 20_000 }, async () => {
  const r = await startServer({ handshakeTimeoutMs: 200, maxConnections: 1, maxLingering: 1 });
  const { connect: netConnect } = await import('node:net');
  /** A half-open client trickling a byte every 10 ms; resolves with the bytes it got once the server's alert arrived. */
  const trickler = () => {
    const raw = netConnect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true });
    raw.on('error', () => {});
    raw.resume();
    const timer = setInterval(() => raw.writable && raw.write(Buffer.of(0x16)), 10);
    const closed = new Promise<void>((resolve) => raw.once('close', () => {
      clearInterval(timer);
      resolve();
    }));
    const alerted = new Promise<void>((resolve) => raw.once('end', () => resolve())); // the server's FIN after its alert
    return { raw, closed, alerted, stop: () => (clearInterval(timer), raw.destroy()) };
  };
  const a = trickler();
  await a.alerted; // a timed out and lingers, still sending
  // The one slot is free again although a is still open: a fresh client completes its handshake.
  const client = await connectClient(r);
  assert.equal(a.raw.destroyed, false, 'a is still lingering');
  await closeClient(client);
  const b = trickler();
  await b.alerted;
  await a.closed; // b's linger pushed out a, the oldest
  assert.equal(b.raw.destroyed, false);
  b.stop();
});

test('socket: TCP FIN in the middle of a ClientHello is reported as a handshake error', async () => {
  const r = await startServer();
  const { connect: netConnect } = await import('node:net');
  const raw = netConnect(r.port, '127.0.0.1');
  raw.on('error', () => {});
  await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
  const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
  raw.resume();
  raw.end(Buffer.from([22, 3, 1, 0, 100, 1, 0, 0]));
  await closed;
  assert.equal(r.clientErrors[0]?.code, 'TLS_EOF_IN_HANDSHAKE');
});

test('socket: garbage from a client gets a plaintext alert and the connection closes', async () => {
  const r = await startServer();
  const { connect: netConnect } = await import('node:net');
  const raw = netConnect(r.port, '127.0.0.1');
  raw.on('error', () => {});
  const chunks: Buffer[] = [];
  raw.on('data', (d: Buffer) => chunks.push(d));
  const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
  raw.write('GET / HTTP/1.1\r\n\r\n');
  await closed;
  assert.deepEqual(Buffer.concat(chunks), Buffer.from([21, 3, 3, 0, 2, 2, 10]), 'unexpected_message alert');
  assert.equal(r.clientErrors[0]?.code, 'TLS_ALERT_UNEXPECTED_MESSAGE');
});

test('socket: close_notify from the client is answered and the stream ends on both sides', async () => {
  const r = await startServer();
  const client = await connectClient(r);
  await echo(client, Buffer.from('x'));
  const serverEnded = new Promise<void>((resolve) => r.secured[0]!.once('end', () => resolve()));
  await closeClient(client);
  await serverEnded;
});
