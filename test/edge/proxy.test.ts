/**
 * The edge's data path (src/edge/proxy.ts over the engine's relay, src/tls/relay.ts) on
 * loopback: node:tls client → engine server → proxyToUpstream → a plain TCP upstream.
 * Bytes arrive exactly (hashes, both ways, TLS 1.3 and 1.2, both AEADs), backpressure
 * holds both ways (asserted on buffered bytes and paused sockets, never on time), each
 * side's end passes through, and an upstream that is refused or reset ends the client's
 * connection with close_notify, not a reset.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { EdgeMetrics } from '../../src/edge/metrics.js';
import { proxyToUpstream } from '../../src/edge/proxy.js';
import type { Route } from '../../src/edge/routes.js';
import type { TlsSocket } from '../../src/tls/socket.js';
import { LocalSigner } from '../../src/tls/signer.js';
import { startEngineServer, startUpstreamApp } from '../helpers/engine-loopback.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { blackholedPort } from '../helpers/blackhole.js';
import { peerClosed } from '../helpers/peer-closed.js';
import { Tls13Client, socketTransport } from '../helpers/tls13-client.js';

// Each test has a 20 s limit so a stall fails that test by name instead of running to the
// mutation runner's 10-minute limit; the slowest (backpressure, 4 MiB each way) take
// under 0.7 s.
const quiet = pino({ level: 'silent' });
const pkiPromise: Promise<TestPki> = makeTestPki({ keyType: 'ecdsa-p256' });

interface Relayed {
  /** The engine's side of the connection. */
  tls: TlsSocket;
  /** The edge's socket to the upstream. */
  upstream: Socket;
}

interface Fixture {
  port: number;
  metrics: EdgeMetrics;
  /** Server-side connections after their handshake, in order. */
  relayed: Relayed[];
  /** The upstream app's sockets, in order of accept. */
  accepted: Socket[];
  /** Resolves with the next connection the edge relays. */
  nextRelayed(): Promise<Relayed>;
  /** Resolves with the upstream app's next accepted socket. */
  nextAccepted(): Promise<Socket>;
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise<void>((resolve) => setImmediate(resolve));
}

function sha256(parts: Buffer[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/**
 * An engine server (allowHalfOpen, as the edge runs it) whose connections go through
 * proxyToUpstream to `upstreamPort`, or, without one, to an upstream app whose sockets the
 * test drives (allowHalfOpen too, so each direction ends on its own).
 */
async function fixture(t: TestContext, options: { upstreamPort?: number } = {}): Promise<Fixture> {
  const pki = await pkiPromise;
  const app = options.upstreamPort === undefined ? await startUpstreamApp(t) : undefined;
  const upstreamPort = options.upstreamPort ?? app!.port;
  const route: Route = { names: ['localhost'], upstream: { host: '127.0.0.1', port: upstreamPort }, proxyProtocol: false, alpn: [] };
  const metrics = new EdgeMetrics();
  const relayed: Relayed[] = [];
  const relayWaiters: ((r: Relayed) => void)[] = [];
  const identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  const port = await startEngineServer(t, identity, (tls) => {
    const upstream = proxyToUpstream(tls, route, 'localhost', metrics, quiet)!; // (no PROXY header here: always connects)
    const r = { tls, upstream };
    relayed.push(r);
    relayWaiters.shift()?.(r);
  });
  return {
    port,
    metrics,
    relayed,
    accepted: app?.accepted ?? [],
    nextRelayed: () => new Promise((resolve) => (relayed.length > relayWaiters.length ? resolve(relayed[relayWaiters.length]!) : relayWaiters.push(resolve))),
    // Without an app of its own (upstreamPort given), nothing is accepted here: never resolves, as before.
    nextAccepted: app ? app.nextAccepted : () => new Promise<Socket>(() => undefined),
  };
}

async function connectClient(port: number, options: ConnectionOptions = {}): Promise<TLSSocket> {
  const pki = await pkiPromise;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pki.caCertPem, ...options });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Writes `data` in pieces of varied sizes (1 byte to 70 000), honouring backpressure. */
async function writeInPieces(socket: { write(b: Buffer): boolean; once(e: 'drain', f: () => void): unknown }, data: Buffer): Promise<void> {
  const sizes = [1, 100, 16_384, 16_385, 70_000, 3, 40_000, 5_000];
  for (let off = 0, i = 0; off < data.length; i++) {
    const piece = data.subarray(off, off + sizes[i % sizes.length]!);
    off += piece.length;
    if (!socket.write(piece)) await new Promise<void>((resolve) => socket.once('drain', resolve));
  }
}

function collect(socket: { on(e: 'data', f: (d: Buffer) => void): unknown }): Buffer[] {
  const parts: Buffer[] = [];
  socket.on('data', (d: Buffer) => parts.push(d));
  return parts;
}

const SIZE = 4 * 2 ** 20;

for (const [label, options] of [
  ['TLS 1.3 AES-128-GCM', { minVersion: 'TLSv1.3', ciphersuites: 'TLS_AES_128_GCM_SHA256' }],
  ['TLS 1.3 ChaCha20-Poly1305', { minVersion: 'TLSv1.3', ciphersuites: 'TLS_CHACHA20_POLY1305_SHA256' }],
  ['TLS 1.2 ECDHE-ECDSA-AES128-GCM (explicit nonce)', { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' }],
  ['TLS 1.2 ECDHE-ECDSA-CHACHA20-POLY1305', { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305' }],
] as const) {
  test(`${label}: 4 MiB each way arrive byte-exact (SHA-256), in pieces of 1 byte to 70 000`, { timeout: 20_000 }, async (t) => {
    const f = await fixture(t);
    const up = randomBytes(SIZE);
    const down = randomBytes(SIZE);
    const client = await connectClient(f.port, options as ConnectionOptions);
    const app = await f.nextAccepted();
    const atUpstream = collect(app);
    const atClient = collect(client);
    const upstreamGotEnd = once(app, 'end');
    const clientGotEnd = once(client, 'end');
    // Both ways at once; the upstream ends only after the client's end reached it (the
    // edge's upstream socket, like any node:net socket without allowHalfOpen, ends its own
    // side when the upstream's FIN arrives, as it did with pipes).
    await Promise.all([writeInPieces(client, up).then(() => client.end()), writeInPieces(app, down).then(() => upstreamGotEnd).then(() => app.end())]);
    await Promise.all([upstreamGotEnd, clientGotEnd]);
    assert.equal(Buffer.concat(atUpstream).length, SIZE);
    assert.equal(sha256(atUpstream), sha256([up]), 'client → upstream');
    assert.equal(Buffer.concat(atClient).length, SIZE);
    assert.equal(sha256(atClient), sha256([down]), 'upstream → client');
    client.destroy();
  });
}

test('many connections at once, small upstream writes: each client gets exactly its own bytes (every upstream reads into one shared buffer)', { timeout: 20_000 }, async (t) => {
  // The relay batches small upstream reads until the end of the turn; with one read buffer
  // for every upstream (src/tls/relay.ts, connectForRelay) a batch that kept a view of it
  // instead of a copy would carry another connection's later read.
  const f = await fixture(t);
  const CONNECTIONS = 12;
  const clients = await Promise.all(Array.from({ length: CONNECTIONS }, () => connectClient(f.port)));
  await until(() => f.accepted.length === CONNECTIONS && f.relayed.length === CONNECTIONS && f.relayed.every((r) => r.upstream.localPort !== undefined));
  // The upstream app's socket of each client: client → edge connection → its upstream socket → accepted.
  const apps = clients.map((client) => {
    const relayed = f.relayed.find((r) => r.tls.rawSocket.remotePort === client.localPort)!;
    return f.accepted.find((s) => s.remotePort === relayed.upstream.localPort)!;
  });
  assert.equal(new Set(apps).size, CONNECTIONS);
  const sent = apps.map(() => [] as Buffer[]);
  const received = clients.map((c) => collect(c));
  const ended = clients.map((c) => once(c, 'end'));
  // Rounds of one small write per upstream socket, a turn apart, so that the reads of
  // different connections fall into the same poll phase.
  for (let round = 0; round < 200; round++) {
    apps.forEach((app, i) => {
      const piece = randomBytes(1 + ((round * 131 + i * 977) % 3000));
      sent[i]!.push(piece);
      app.write(piece);
    });
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  for (const app of apps) app.end();
  await Promise.all(ended);
  clients.forEach((client, i) => {
    assert.equal(sha256(received[i]!), sha256(sent[i]!), `connection ${i}`);
    client.destroy();
  });
});

test('backpressure client → upstream: an upstream that does not read makes the edge stop reading the client; the client\'s writes stop completing', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port);
  const app = await f.nextAccepted();
  const { tls, upstream } = await f.nextRelayed();
  app.pause(); // the upstream app stops reading
  const received = collect(app);
  // More than every socket buffer on the way can hold (loopback autotuning reaches a few MiB each).
  const total = 64 * 2 ** 20;
  const data = randomBytes(total);
  const piece = 256 * 1024;
  for (let off = 0; off < total; off += piece) client.write(data.subarray(off, off + piece));
  // Until the edge stops reading the client, or has read half of it (a broken build: fails below).
  await until(() => tls.rawSocket.isPaused() || tls.rawSocket.bytesRead >= total / 2);
  // A client read is at most 64 KiB of records: that is all that may sit in the edge beyond the mark.
  const bound = upstream.writableHighWaterMark + 65_536;
  assert.ok(upstream.writableLength <= bound, `${upstream.writableLength} bytes queued toward an upstream that does not read (bound ${bound})`);
  assert.equal(tls.readableLength, 0, 'nothing waits in the Duplex either');
  assert.ok(tls.rawSocket.bytesRead < total / 2, `the edge read ${tls.rawSocket.bytesRead} of ${total} bytes`);
  assert.ok(client.writableLength > 0, 'the client\'s writes stop completing');

  // Positive control: the upstream reads again → everything arrives, in order, and the client's writes complete.
  const ended = once(app, 'end');
  app.resume();
  client.end();
  await ended;
  assert.equal(sha256(received), sha256([data]));
  assert.equal(client.writableLength, 0);
  client.destroy();
});

test('backpressure upstream → client: a client that does not read makes the edge stop reading the upstream; the upstream\'s writes stop completing', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port);
  const app = await f.nextAccepted();
  const { tls, upstream } = await f.nextRelayed();
  client.pause(); // the client stops reading
  const total = 64 * 2 ** 20;
  const data = randomBytes(total);
  const piece = 256 * 1024;
  for (let off = 0; off < total; off += piece) app.write(data.subarray(off, off + piece));
  // Until the edge stops reading the upstream, or has read half of it (a broken build: fails below).
  await until(() => (upstream.isPaused() && tls.rawSocket.writableNeedDrain) || upstream.bytesRead >= total / 2);
  // One upstream read (at most 64 KiB, sealed into records) may pass the client socket's mark.
  const bound = tls.rawSocket.writableHighWaterMark + 65_536 + 4 * 22;
  assert.ok(tls.rawSocket.writableLength <= bound, `${tls.rawSocket.writableLength} bytes queued toward a client that does not read (bound ${bound})`);
  // Nothing else is held: upstream reads arrive through onread (connectForRelay) and are
  // sealed into the client socket's queue, measured above, by the end of their turn, so
  // there is no upstream readable buffer to bound.
  assert.ok(upstream.bytesRead < total / 2, `the edge read ${upstream.bytesRead} of ${total} bytes`);
  assert.ok(app.writableLength > 0, 'the upstream\'s writes stop completing');

  // Positive control: the client reads again → everything arrives, in order.
  const received = collect(client);
  const ended = once(client, 'end');
  client.resume();
  app.end();
  await ended;
  assert.equal(sha256(received), sha256([data]));
  assert.equal(app.writableLength, 0);
  client.destroy();
});

test('half-close client → upstream: the client\'s close_notify reaches the upstream as FIN after its data; the answer still comes back', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port);
  const app = await f.nextAccepted();
  const atUpstream = collect(app);
  const atClient = collect(client);
  const clientEnded = once(client, 'end');
  client.end('request, then close_notify'); // RFC 8446 §6.1: closes only the client's side
  await once(app, 'end');
  assert.equal(Buffer.concat(atUpstream).toString(), 'request, then close_notify', 'the data came before the FIN');
  app.end('answer after the client closed');
  await clientEnded; // close_notify after the answer
  assert.equal(Buffer.concat(atClient).toString(), 'answer after the client closed');
});

test('half-close upstream → client: the upstream\'s FIN reaches the client as close_notify after its data, while the client has not closed', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port, { allowHalfOpen: true } as ConnectionOptions);
  const app = await f.nextAccepted();
  const atClient = collect(client);
  let clientError: Error | undefined;
  client.on('error', (err) => (clientError = err));
  const clientEnded = once(client, 'end');
  app.end('the whole answer');
  await clientEnded; // 'end' on a TLSSocket = close_notify received
  assert.equal(Buffer.concat(atClient).toString(), 'the whole answer');
  assert.equal(clientError, undefined, 'an orderly end, not a reset');
  client.destroy();
});

test('upstream refused → the client gets close_notify after its handshake, and upstreamErrors counts a connect failure', { timeout: 20_000 }, async (t) => {
  // A port nothing listens on: bind one, then close it.
  const probe = createNetServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const closedPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const f = await fixture(t, { upstreamPort: closedPort });
  const client = await connectClient(f.port);
  let clientError: Error | undefined;
  client.on('error', (err) => (clientError = err));
  client.resume();
  await once(client, 'end'); // close_notify, not a reset
  assert.equal(clientError, undefined);
  assert.match(await f.metrics.registry.getSingleMetricAsString('edge_upstream_errors_total'), /reason="connect"\} 1/);
  client.destroy();
});

test('upstream reset mid-stream → the client gets what was relayed, then close_notify; upstreamErrors counts a reset', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port);
  const app = await f.nextAccepted();
  const atClient = collect(client);
  let clientError: Error | undefined;
  client.on('error', (err) => (clientError = err));
  const before = randomBytes(100_000);
  app.write(before);
  // The edge has relayed it all once the client holds it; then the upstream resets.
  await until(() => Buffer.concat(atClient).length === before.length);
  const clientEnded = once(client, 'end');
  app.resetAndDestroy();
  await clientEnded;
  assert.equal(clientError, undefined, 'close_notify, not a reset');
  assert.equal(sha256(atClient), sha256([before]));
  assert.match(await f.metrics.registry.getSingleMetricAsString('edge_upstream_errors_total'), /reason="reset"\} 1/);
  client.destroy();
});

test('a client that resets → the edge destroys its upstream connection', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const tcp = netConnect({ host: '127.0.0.1', port: f.port });
  const client = await connectClient(f.port, { socket: tcp });
  const app = await f.nextAccepted();
  const { upstream } = await f.nextRelayed();
  client.write('some data');
  await once(app, 'data');
  const upstreamEnded = once(app, 'end');
  client.on('error', () => undefined);
  tcp.resetAndDestroy();
  await upstreamEnded;
  assert.equal(upstream.destroyed, true, 'destroyed (not only ended) on the client\'s error');
});

test('a client that resets while the upstream connect hangs (SYNs dropped): the attempt is destroyed at once, its connect timer cleared, nothing counted', { timeout: 20_000 }, async (t) => {
  const hole = await blackholedPort();
  t.after(() => hole.close());
  const f = await fixture(t, { upstreamPort: hole.port });
  // Ref'd timers of this process (the connect timer is one; socket timeouts are not listed).
  const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const before = timers();
  const tcp = netConnect({ host: '127.0.0.1', port: f.port });
  const client = await connectClient(f.port, { socket: tcp });
  client.on('error', () => undefined);
  const { upstream } = await f.nextRelayed();
  assert.equal(upstream.connecting, true, 'the connect hangs');
  assert.equal(timers(), before + 1, 'the connect timer is armed');
  const closed = once(upstream, 'close');
  tcp.resetAndDestroy();
  await closed;
  assert.equal(upstream.destroyed, true);
  assert.equal(timers(), before, 'no connect timer is left once the attempt is gone');
  assert.doesNotMatch(await f.metrics.registry.getSingleMetricAsString('edge_upstream_errors_total'), /reason=/);
});

/**
 * Once the TLS side is fully closed ('close': both directions done, or destroyed by a
 * reset, a timeout or the connection cap) nothing the upstream sends can reach the client:
 * the edge closes the upstream connection then, whether or not the upstream ever answers or
 * closes (docs/EDGE.md, "Upstream connections"). Before that — the client's close_notify +
 * FIN alone — the upstream stays open and may still answer (the half-close tests above).
 */
test('TLS side closed after the client\'s close_notify + FIN (the idle timeout destroys the client\'s socket): an upstream that never answers is closed', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port);
  client.on('error', () => undefined);
  const app = await f.nextAccepted();
  const { tls, upstream } = await f.nextRelayed();
  const atUpstream = collect(app);
  client.end('request, then close_notify');
  await once(app, 'end');
  assert.equal(Buffer.concat(atUpstream).toString(), 'request, then close_notify');
  // Half-closed only: the upstream may still answer, so it is kept (positive control).
  assert.equal(upstream.destroyed, false, 'kept open while the TLS side can still send');
  const tlsClosed = once(tls, 'close');
  tls.rawSocket.destroy(); // what the edge's idle timeout does (src/edge/edge.ts)
  await tlsClosed;
  assert.equal(upstream.destroyed, true, 'the upstream connection goes with the TLS side');
  await peerClosed(app);
});

test('TLS side destroyed without an error while both directions are open (the connection cap, shutdown): the upstream is closed', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port);
  client.on('error', () => undefined);
  const app = await f.nextAccepted();
  const { tls, upstream } = await f.nextRelayed();
  client.write('some data');
  await once(app, 'data');
  const tlsClosed = once(tls, 'close');
  tls.destroy();
  await tlsClosed;
  assert.equal(upstream.destroyed, true, 'the upstream connection goes with the TLS side');
  await peerClosed(app);
});

test('positive control: a request, the client\'s close_notify + FIN, then the whole answer and the upstream\'s FIN: every byte both ways, then both sockets close', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port);
  const app = await f.nextAccepted();
  const { tls, upstream } = await f.nextRelayed();
  const atUpstream = collect(app);
  const atClient = collect(client);
  const request = randomBytes(300_000);
  const answer = randomBytes(500_000);
  const clientEnded = once(client, 'end');
  client.end(request);
  await once(app, 'end');
  assert.equal(sha256(atUpstream), sha256([request]));
  const tlsClosed = once(tls, 'close');
  const upstreamClosed = once(upstream, 'close');
  const appClosed = once(app, 'close');
  app.end(answer);
  await clientEnded;
  assert.equal(sha256(atClient), sha256([answer]));
  await Promise.all([tlsClosed, upstreamClosed, appClosed]);
  client.destroy();
});

test('half-close upstream → client, then the client still sends: its data reaches the upstream, which half-closed only its own side', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const client = await connectClient(f.port, { allowHalfOpen: true } as ConnectionOptions);
  const app = await f.nextAccepted();
  const atClient = collect(client);
  const atUpstream = collect(app);
  let appEnded = false;
  app.on('end', () => (appEnded = true));
  const clientEnded = once(client, 'end');
  app.end('answer, and I am done sending');
  await clientEnded; // close_notify received: the upstream's FIN was passed on
  assert.equal(Buffer.concat(atClient).toString(), 'answer, and I am done sending');
  // The upstream shut down only its sending side (TCP half-close): the client's last words
  // and then its close_notify must still reach it, as data and then FIN.
  client.end('one more thing');
  await until(() => appEnded);
  assert.equal(Buffer.concat(atUpstream).toString(), 'one more thing');
  client.destroy();
});

test('upstream refused, seen by a client that reads records: the edge ends the connection with a close_notify alert (0), not a bare FIN or a reset', { timeout: 20_000 }, async (t) => {
  // node:tls reports a FIN without close_notify as a plain 'end' too; the scripted client sees the alert itself.
  const probe = createNetServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const closedPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const f = await fixture(t, { upstreamPort: closedPort });
  const transport = await socketTransport(f.port);
  t.after(() => transport.socket.destroy());
  transport.socket.on('error', () => undefined);
  const client = new Tls13Client(transport, { serverName: 'localhost' });
  await client.handshake();
  assert.equal(await client.readAlert(), 0, 'close_notify (RFC 8446 §6.1)');
  assert.match(await f.metrics.registry.getSingleMetricAsString('edge_upstream_errors_total'), /reason="connect"\} 1/);
});
