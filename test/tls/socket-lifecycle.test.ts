/**
 * TlsSocket and the engine's server (src/tls/socket.ts) over loopback TCP: failure reported
 * once, the handshake deadline after the handshake, the linger's byte cap, backpressure both
 * ways, errors after 'secure', and the connection and linger caps at their bounds. What a
 * mutation probe of socket.ts found unpinned by the other tests.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { connect, type TLSSocket } from 'node:tls';
import { createServer, type TlsServer, type TlsSocket } from '../../src/tls/socket.js';
import type { TlsServerOptions } from '../../src/tls/options.js';
import { LocalSigner } from '../../src/tls/signer.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';

let pki: TestPki;
before(async () => {
  pki = await makeTestPki({ keyType: 'ecdsa-p256' });
});

interface Running {
  server: TlsServer;
  port: number;
  secured: TlsSocket[];
  clientErrors: (Error & { code?: string })[];
  refused: number;
}
const servers: { server: TlsServer; raws: Set<Socket> }[] = [];
after(async () => {
  for (const { server, raws } of servers) {
    for (const raw of raws) raw.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

async function startServer(options: Partial<TlsServerOptions> = {}, onSecure: (s: TlsSocket) => void = () => {}): Promise<Running> {
  const identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  const r = { secured: [], clientErrors: [], refused: 0 } as unknown as Running;
  const raws = new Set<Socket>();
  const server = createServer({ resolveIdentity: () => identity, ...options }, (socket) => {
    r.secured.push(socket);
    socket.on('error', () => {});
    onSecure(socket);
  });
  server.on('connection', (raw: Socket) => {
    raws.add(raw);
    raw.on('close', () => raws.delete(raw));
  });
  server.on('connectionRefused', () => r.refused++);
  server.on('tlsClientError', (err: Error & { code?: string }) => r.clientErrors.push(err));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push({ server, raws });
  r.server = server;
  r.port = (server.address() as AddressInfo).port;
  return r;
}

function connectClient(r: Running, socket?: Socket): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const client = connect({ host: '127.0.0.1', port: r.port, servername: 'localhost', ca: pki.caCertPem, minVersion: 'TLSv1.3', ...(socket ? { socket } : {}) });
    client.once('secureConnect', () => resolve(client));
    client.once('error', reject);
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A client sending a byte of a ClientHello every 10 ms, half-open so it keeps sending after the server's FIN. */
function trickler(r: Running) {
  const raw = netConnect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true });
  raw.on('error', () => {});
  raw.resume();
  const timer = setInterval(() => raw.writable && raw.write(Buffer.of(0x16)), 10);
  const closed = new Promise<void>((resolve) => raw.once('close', () => (clearInterval(timer), resolve())));
  const alerted = new Promise<void>((resolve) => raw.once('end', () => resolve()));
  return { raw, closed, alerted, stop: () => (clearInterval(timer), raw.destroy()) };
}

test('a failure is reported once: garbage then the client\'s FIN is one tlsClientError, not a second for the end of input', { timeout: 20_000 }, async () => {
  const r = await startServer();
  const raw = netConnect(r.port, '127.0.0.1');
  raw.on('error', () => {});
  raw.resume();
  const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
  raw.end('GET / HTTP/1.1\r\n\r\n');
  await closed;
  await sleep(50);
  assert.deepEqual(r.clientErrors.map((e) => e.code), ['TLS_ALERT_UNEXPECTED_MESSAGE']);
});

test('the handshake deadline ends with the handshake: an open connection outlives handshakeTimeoutMs (control: a silent client is cut at it)', { timeout: 20_000 }, async () => {
  const r = await startServer({ handshakeTimeoutMs: 300 }, (s) => s.on('data', (d: Buffer) => s.write(d)));
  const client = await connectClient(r);
  client.on('error', () => {});
  await sleep(700);
  const echoed = new Promise<Buffer>((resolve) => client.once('data', resolve));
  client.write('still here');
  assert.equal((await echoed).toString(), 'still here');
  assert.equal(r.clientErrors.length, 0);
  client.destroy();
  const silent = netConnect(r.port, '127.0.0.1');
  silent.on('error', () => {});
  silent.resume();
  await new Promise<void>((resolve) => silent.once('close', () => resolve()));
  assert.equal(r.clientErrors[0]?.code, 'TLS_HANDSHAKE_TIMEOUT');
});

test('a lingering connection is closed once the bytes it sent, summed over many small reads, pass lingerMaxBytes (long before lingerMs)', { timeout: 20_000 }, async () => {
  const r = await startServer({ handshakeTimeoutMs: 100, lingerMs: 10_000, lingerIdleMs: 10_000, lingerMaxBytes: 20 });
  const t = trickler(r);
  await t.alerted;
  const start = Date.now();
  await t.closed;
  assert.ok(Date.now() - start < 3000, `closed after ${Date.now() - start} ms: ~20 one-byte reads, not lingerMs`);
});

test('backpressure to the application: writes to a client that does not read return false once the TCP socket needs drain', { timeout: 20_000 }, async () => {
  let server!: TlsSocket;
  const r = await startServer({}, (s) => (server = s));
  const client = await connectClient(r);
  client.pause();
  while (!server) await sleep(5);
  const chunk = Buffer.alloc(8192, 0x61);
  let writes = 0;
  while (writes < 1024 && server.write(chunk)) writes++;
  assert.ok(writes < 1024, 'write() returned false before 8 MiB were buffered');
  assert.ok(server.rawSocket.writableLength < 2 ** 20, `the TCP socket holds ${server.rawSocket.writableLength} bytes`);
  client.destroy();
});

test('backpressure from the application: a client\'s data is not read from TCP while the application does not read it', { timeout: 20_000 }, async () => {
  const r = await startServer();
  const client = await connectClient(r);
  client.on('error', () => {});
  client.write(Buffer.alloc(8 * 2 ** 20, 0x62));
  await sleep(800);
  const server = r.secured[0]!;
  assert.ok(server.rawSocket.bytesRead < 4 * 2 ** 20, `the server read ${server.rawSocket.bytesRead} bytes with nobody reading them`);
  // Control: once the application reads, everything arrives.
  let got = 0;
  const all = new Promise<void>((resolve) => server.on('data', (d: Buffer) => (got += d.length) >= 8 * 2 ** 20 && resolve()));
  await all;
  client.destroy();
});

test('a failure after \'secure\' (a record that does not authenticate) reaches the application as an error, not as a quiet close', { timeout: 20_000 }, async () => {
  const r = await startServer();
  const raw = netConnect(r.port, '127.0.0.1');
  raw.on('error', () => {});
  const client = await connectClient(r, raw);
  client.on('error', () => {});
  while (!r.secured[0]) await sleep(5);
  const server = r.secured[0];
  const outcome = new Promise<string>((resolve) => {
    server.once('error', (err: Error & { code?: string }) => resolve(`error ${err.code ?? err.message}`));
    server.once('close', () => resolve('close'));
  });
  raw.write(Buffer.concat([Buffer.of(23, 3, 3, 0, 40), Buffer.alloc(40, 0x55)]));
  const seen = await outcome;
  assert.match(seen, /^error /);
});

test('maxConnections is the number of connections admitted: with 2, a third handshaking one is refused and two are not', { timeout: 20_000 }, async () => {
  const r = await startServer({ maxConnections: 2 });
  const open: Socket[] = [];
  const connectRaw = async () => {
    const raw = netConnect(r.port, '127.0.0.1');
    raw.on('error', () => {});
    open.push(raw);
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    await sleep(100);
  };
  await connectRaw();
  await connectRaw();
  assert.equal(r.refused, 0);
  await connectRaw();
  assert.equal(r.refused, 1);
  for (const raw of open) raw.destroy();
});

test('maxLingering is the number kept lingering: with 2, two failed connections both linger; a third pushes out the oldest', { timeout: 20_000 }, async () => {
  const r = await startServer({ handshakeTimeoutMs: 100, maxLingering: 2 });
  const a = trickler(r);
  await a.alerted;
  const b = trickler(r);
  await b.alerted;
  await sleep(200);
  assert.equal(a.raw.destroyed, false, 'the first is still lingering beside the second');
  const c = trickler(r);
  await c.alerted;
  await a.closed;
  assert.equal(b.raw.destroyed, false);
  b.stop();
  c.stop();
});

test('setTlsOptions without allowHalfOpen means the default (false) for new connections: the peer\'s close ends ours (control: with allowHalfOpen the server holds its side open)', { timeout: 20_000 }, async () => {
  const r = await startServer({ allowHalfOpen: true }, (s) => s.resume());
  const endedWithin = async (ms: number) => {
    const client = await connectClient(r);
    client.on('error', () => {});
    client.resume();
    const ended = new Promise<boolean>((resolve) => {
      client.once('end', () => resolve(true));
      setTimeout(() => resolve(false), ms);
    });
    client.end();
    const result = await ended;
    client.destroy();
    return result;
  };
  assert.equal(await endedWithin(500), false, 'half-open: the server did not end its side');
  const identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  r.server.setTlsOptions({ resolveIdentity: () => identity });
  assert.equal(await endedWithin(5000), true, 'after the reload the server ends its side when the client does');
});
