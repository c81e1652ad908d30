/**
 * The relay (src/tls/relay.ts) on its own: its batching and backpressure policy against a
 * stand-in host and upstream (every call seen, no sockets, no timing), and on loopback
 * without src/edge/proxy.ts around it (nothing else ends either side), the parts the edge
 * path hides: upstream data that arrives in the turn the TLS side ends, a small answer that
 * is not followed by a FIN, each side's end, and data either side sent before `relayTo`.
 * No timed assertions: each test waits for the event that proves the behaviour, and has a
 * 20 s limit so that a relay which loses it fails instead of hanging.
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { test, type TestContext } from 'node:test';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { MAX_PLAINTEXT } from '../../src/tls/record/protection.js';
import { connectForRelay, UpstreamRelay, type RelayHost } from '../../src/tls/relay.js';
import type { TlsSocket } from '../../src/tls/socket.js';
import { LocalSigner } from '../../src/tls/signer.js';
import { startEngineServer, startUpstreamApp } from '../helpers/engine-loopback.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';

const LIMIT = { timeout: 20_000 };

// ---------------------------------------------------------------------------------------
// Stand-ins: the relay's policy, call by call.

/** The TLS side as the relay sees it: records what is sealed, when, and the flow calls. */
class FakeHost extends Duplex implements RelayHost {
  /** Each sealForClient call: the buffer passed (identity kept) and a copy of its bytes then. */
  readonly sealed: { data: Uint8Array; bytes: Buffer }[] = [];
  /** What holdOutputForTurn answers (false: the output is closed, seal at once). */
  hold = true;
  /** setUpstreamBackpressure calls, in order. */
  readonly backpressure: boolean[] = [];
  readonly rawSocket = Object.assign(new EventEmitter(), { writableNeedDrain: false }) as unknown as Socket & { writableNeedDrain: boolean };

  constructor() {
    super({ allowHalfOpen: true });
  }
  sealForClient(data: Uint8Array): void {
    this.sealed.push({ data, bytes: Buffer.from(data) });
  }
  holdOutputForTurn(): boolean {
    return this.hold;
  }
  setUpstreamBackpressure(full: boolean): void {
    this.backpressure.push(full);
  }
  override _read(): void {}
  override _write(_chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    callback();
  }
}

/** The upstream socket as the relay uses it: writes (full or not), pause/resume, end. */
class FakeUpstream extends EventEmitter {
  readonly written: Buffer[] = [];
  full = false;
  paused = false;
  ended = false;
  write(data: Buffer): boolean {
    this.written.push(Buffer.from(data));
    return !this.full;
  }
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  end(): this {
    this.ended = true;
    return this;
  }
}

function standIns(): { host: FakeHost; upstream: FakeUpstream; relay: UpstreamRelay } {
  const host = new FakeHost();
  const upstream = new FakeUpstream();
  const relay = new UpstreamRelay(host, upstream as unknown as Socket);
  return { host, upstream, relay };
}

function filled(length: number, byte: number): Buffer {
  return Buffer.alloc(length, byte);
}

test('batching: small upstream reads are joined into one record at the end of the turn; a transient read is copied, not kept as a view', LIMIT, () => {
  const { host, relay } = standIns();
  const shared = filled(100, 0x61);
  relay.fromUpstream(shared, true); // lives in the shared read buffer
  relay.fromUpstream(filled(200, 0x62), false);
  assert.equal(host.sealed.length, 0, 'nothing sealed before the end of the turn');
  shared.fill(0x7a); // the next read overwrites the shared buffer
  relay.sealBatch();
  assert.equal(host.sealed.length, 1, 'one record for the turn');
  assert.deepEqual(host.sealed[0]!.bytes, Buffer.concat([filled(100, 0x61), filled(200, 0x62)]));
  relay.sealBatch();
  assert.equal(host.sealed.length, 1, 'an empty batch seals nothing');
});

test('batching: a read that would take the batch past 2^14 seals the batch first; no record is over 2^14 and the order holds', LIMIT, () => {
  const { host, relay } = standIns();
  relay.fromUpstream(filled(10_000, 1), false);
  relay.fromUpstream(filled(10_000, 2), false);
  assert.equal(host.sealed.length, 1, 'the first batch is sealed when the second read would overflow it');
  assert.deepEqual(host.sealed[0]!.bytes, filled(10_000, 1));
  relay.sealBatch();
  assert.deepEqual(host.sealed[1]!.bytes, filled(10_000, 2));
  // Positive control: reads that fit together stay one record of exactly 2^14.
  relay.fromUpstream(filled(MAX_PLAINTEXT - 1, 3), false);
  relay.fromUpstream(filled(1, 4), false);
  assert.equal(host.sealed.length, 2);
  relay.sealBatch();
  assert.equal(host.sealed[2]!.bytes.length, MAX_PLAINTEXT);
  assert.ok(host.sealed.every((s) => s.bytes.length <= MAX_PLAINTEXT));
});

test('batching: reads of 2^14 bytes or more are sealed at once, after what was batched, without a copy', LIMIT, () => {
  const { host, relay } = standIns();
  relay.fromUpstream(filled(100, 1), false);
  const exact = filled(MAX_PLAINTEXT, 2);
  relay.fromUpstream(exact, true);
  assert.equal(host.sealed.length, 2, 'the batch, then the 2^14-byte read, at once');
  assert.deepEqual(host.sealed[0]!.bytes, filled(100, 1), 'what was batched goes first');
  assert.equal(host.sealed[1]!.data, exact, 'the read itself, not a copy');
  const large = filled(70_000, 3);
  relay.fromUpstream(large, true);
  assert.equal(host.sealed.length, 3);
  assert.equal(host.sealed[2]!.data, large);
  relay.sealBatch();
  assert.equal(host.sealed.length, 3, 'nothing was left batched');
});

test('batching: when the host cannot hold its output for the turn, a small read is sealed at once', LIMIT, () => {
  const { host, relay } = standIns();
  host.hold = false;
  relay.fromUpstream(filled(10, 1), true);
  assert.equal(host.sealed.length, 1);
  assert.deepEqual(host.sealed[0]!.bytes, filled(10, 1));
});

test('backpressure upstream → client: the upstream is paused while the client socket needs drain, resumed at its drain, and paused again the next time', LIMIT, () => {
  const { host, upstream, relay } = standIns();
  relay.fromUpstream(filled(10, 1), false);
  assert.equal(upstream.paused, false, 'control: a client that keeps up does not pause the upstream');
  for (let round = 1; round <= 2; round++) {
    host.rawSocket.writableNeedDrain = true;
    relay.fromUpstream(filled(10, 1), false);
    assert.equal(upstream.paused, true, `round ${round}: paused while the client needs drain`);
    host.rawSocket.writableNeedDrain = false;
    host.rawSocket.emit('drain');
    assert.equal(upstream.paused, false, `round ${round}: resumed at the client's drain`);
  }
});

test('backpressure client → upstream: the client is not read while the upstream is full, is read again at its drain, and stops again the next time', LIMIT, () => {
  const { host, upstream, relay } = standIns();
  relay.fromClient(filled(10, 1));
  assert.deepEqual(host.backpressure, [], 'control: an upstream that takes the write changes nothing');
  for (let round = 1; round <= 2; round++) {
    upstream.full = true;
    relay.fromClient(filled(10, 1));
    relay.fromClient(filled(10, 2)); // a second record of the same read: still one stop
    assert.deepEqual(host.backpressure, Array.from({ length: 2 * round - 1 }, (_, i) => i % 2 === 0), `round ${round}: the client is stopped once`);
    upstream.full = false;
    upstream.emit('drain');
    assert.equal(host.backpressure.at(-1), false, `round ${round}: the client is read again at the upstream's drain`);
  }
  assert.equal(upstream.written.length, 5, 'every record was written to the upstream');
});

test('ends: the upstream\'s end ends the TLS side after the batch is sealed; the client\'s end ends the upstream', LIMIT, async () => {
  const { host, upstream, relay } = standIns();
  relay.fromUpstream(filled(5, 1), false);
  const finished = once(host, 'finish');
  upstream.emit('end');
  assert.equal(host.sealed.length, 1, 'the batch is sealed before the end');
  assert.equal(host.writableEnded, true, 'the TLS side is ended (close_notify)');
  await finished;
  assert.equal(upstream.ended, false, 'control: the upstream is not ended by its own end');
  host.push(null); // the client's close_notify
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(upstream.ended, true, 'the client\'s end ends the upstream');
});

test('early client data: what the TLS side buffered before relayTo is written to the upstream first, in order', LIMIT, () => {
  const host = new FakeHost();
  host.push(Buffer.from('first '));
  host.push(Buffer.from('second'));
  const upstream = new FakeUpstream();
  const relay = new UpstreamRelay(host, upstream as unknown as Socket);
  relay.fromClient(Buffer.from(' third'));
  assert.equal(Buffer.concat(upstream.written).toString(), 'first second third');
});

// ---------------------------------------------------------------------------------------
// On loopback: node:tls client → engine server → relay (no proxy.ts) → plain TCP app.

const pkiPromise: Promise<TestPki> = makeTestPki({ keyType: 'ecdsa-p256' });

interface Loopback {
  port: number;
  appPort: number;
  /** Resolves with the app's next accepted socket. */
  nextAccepted(): Promise<Socket>;
}

/** `onSecure` gets each engine connection after its handshake and relays it as the test wants. */
async function loopback(t: TestContext, onSecure: (tls: TlsSocket) => void, onAccept?: (s: Socket, index: number) => void): Promise<Loopback> {
  const pki = await pkiPromise;
  const app = await startUpstreamApp(t, onAccept);
  const identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey) };
  const port = await startEngineServer(t, identity, (tls) => {
    tls.on('error', () => undefined);
    onSecure(tls);
  });
  return { port, appPort: app.port, nextAccepted: app.nextAccepted };
}

async function connectClient(port: number, options: ConnectionOptions = {}): Promise<TLSSocket> {
  const pki = await pkiPromise;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: pki.caCertPem, allowHalfOpen: true, ...options } as ConnectionOptions);
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Resolves when `socket` has received `length` bytes in all; returns them. */
function receive(socket: { on(e: 'data', f: (d: Buffer) => void): unknown }, length: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise((resolve) => {
    socket.on('data', (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= length) resolve(Buffer.concat(parts));
    });
  });
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise<void>((resolve) => setImmediate(resolve));
}

test('loopback: a small answer the upstream does not follow with a FIN reaches the client (the turn\'s batch is sealed at the end of the turn)', LIMIT, async (t) => {
  let appPort = 0;
  const lb = await loopback(t, (tls) => tls.relayTo(connectForRelay({ host: '127.0.0.1', port: appPort })));
  appPort = lb.appPort;
  const client = await connectClient(lb.port);
  const app = await lb.nextAccepted();
  for (const [request, answer] of [['ping', 'pong'], ['second request', 'second answer']]) {
    const atApp = receive(app, request.length);
    client.write(request);
    assert.equal((await atApp).toString(), request);
    const atClient = receive(client, answer.length);
    app.write(answer); // and nothing else: the connection stays open both ways
    assert.equal((await atClient).toString(), answer);
    client.removeAllListeners('data');
    app.removeAllListeners('data');
  }
  client.destroy();
});

test('loopback: upstream data read in the turn the TLS side is ended is sealed before our close_notify', LIMIT, async (t) => {
  let appPort = 0;
  const lb = await loopback(t, (tls) => {
    // A plain socket: its 'data' events reach the relay first (batched), then this
    // listener ends the TLS side in the same turn, before the end-of-turn seal.
    const upstream = netConnect({ host: '127.0.0.1', port: appPort });
    tls.relayTo(upstream);
    upstream.once('data', () => tls.end());
  });
  appPort = lb.appPort;
  const client = await connectClient(lb.port);
  const app = await lb.nextAccepted();
  const atClient: Buffer[] = [];
  client.on('data', (d: Buffer) => atClient.push(d));
  const ended = once(client, 'end'); // close_notify
  app.write('the last answer');
  await ended;
  assert.equal(Buffer.concat(atClient).toString(), 'the last answer', 'the data came before the close_notify');
  client.destroy();
});

test('loopback: the upstream\'s FIN ends the TLS side (close_notify) after its data; the client\'s close_notify reaches the upstream as FIN', LIMIT, async (t) => {
  let appPort = 0;
  const lb = await loopback(t, (tls) => tls.relayTo(connectForRelay({ host: '127.0.0.1', port: appPort })));
  appPort = lb.appPort;
  const client = await connectClient(lb.port);
  const app = await lb.nextAccepted();
  const atApp: Buffer[] = [];
  app.on('data', (d: Buffer) => atApp.push(d));
  const appEnded = once(app, 'end');
  client.end('request');
  await appEnded;
  assert.equal(Buffer.concat(atApp).toString(), 'request');
  const atClient: Buffer[] = [];
  client.on('data', (d: Buffer) => atClient.push(d));
  const clientEnded = once(client, 'end');
  app.end('answer');
  await clientEnded;
  assert.equal(Buffer.concat(atClient).toString(), 'answer');
});

test('loopback: data the client sent before relayTo reaches the upstream first, then what it sends after', LIMIT, async (t) => {
  let appPort = 0;
  const lb = await loopback(t, (tls) => {
    // Relay only once the client's first data waits in the TLS side.
    void until(() => tls.readableLength > 0).then(() => tls.relayTo(connectForRelay({ host: '127.0.0.1', port: appPort })));
  });
  appPort = lb.appPort;
  const client = await connectClient(lb.port);
  client.write('before the relay;');
  const app = await lb.nextAccepted();
  const atApp = receive(app, 'before the relay; after'.length);
  client.write(' after');
  assert.equal((await atApp).toString(), 'before the relay; after');
  client.destroy();
});

test('loopback: what the upstream sent before relayTo (read into the shared buffer, kept as a copy) reaches the client, then reading goes on', LIMIT, async (t) => {
  let appPort = 0;
  const upstreams: Socket[] = [];
  const tlsSockets: TlsSocket[] = [];
  const lb = await loopback(
    t,
    (tls) => {
      tlsSockets.push(tls);
      upstreams.push(connectForRelay({ host: '127.0.0.1', port: appPort }));
    },
    // Each upstream connection says who it is at once, before any relay is attached.
    (s, index) => s.write(Buffer.alloc(1000, index === 0 ? 0x41 : 0x42)),
  );
  appPort = lb.appPort;
  const first = await connectClient(lb.port);
  await until(() => upstreams.length === 1 && upstreams[0]!.bytesRead > 0);
  // A second connection's upstream reads into the same shared buffer while the first waits.
  const second = await connectClient(lb.port);
  await until(() => upstreams.length === 2 && upstreams[1]!.bytesRead > 0);
  const app = await lb.nextAccepted();
  const atFirst = receive(first, 1000);
  tlsSockets[0]!.relayTo(upstreams[0]!);
  assert.deepEqual(await atFirst, Buffer.alloc(1000, 0x41), 'the first upstream\'s own early bytes');
  first.removeAllListeners('data');
  // Reading the upstream resumed after the early read.
  const later = receive(first, 5);
  app.write('later');
  assert.equal((await later).toString(), 'later');
  first.destroy();
  second.destroy();
});
