import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { IdentityCache } from '../../src/edge/identity-cache.js';
import { KeydPool, type KeydConnection, type KeydEndpoint, type KeydIdentityLike } from '../../src/edge/keyd-pool.js';

/** An in-memory keyd connection: answers from a map, can be "killed". */
class FakeKeyd extends EventEmitter implements KeydConnection {
  closed = false;
  identityCalls = 0;
  constructor(
    readonly name: string,
    readonly keys: Map<string, KeydIdentityLike>,
  ) {
    super();
  }
  async ping(): Promise<void> {}
  async identity(serverName: string): Promise<KeydIdentityLike | undefined> {
    this.identityCalls++;
    const found = this.keys.get(serverName); // the answer keyd had when asked
    await sleep(5);
    return found;
  }
  async sign(keyRef: string, serverName: string, scheme: number, hash: Uint8Array): Promise<Uint8Array> {
    if (this.closed) throw Object.assign(new Error('down'), { code: 'KEYD_UNAVAILABLE' });
    return Buffer.from(`${this.name}:${keyRef}:${serverName}:${scheme}:${hash.length}`);
  }
  async signServerKeyExchange(keyRef: string, serverName: string, scheme: number, clientRandom: Uint8Array, serverRandom: Uint8Array, params: Uint8Array): Promise<Uint8Array> {
    if (this.closed) throw Object.assign(new Error('down'), { code: 'KEYD_UNAVAILABLE' });
    return Buffer.from(`${this.name}:ske:${keyRef}:${serverName}:${scheme}:${clientRandom.length + serverRandom.length + params.length}`);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close');
  }
}

const ident = (name: string, version = 1): KeydIdentityLike => ({
  names: [name],
  keyRef: `ref-${name}-${version}`,
  keyType: 'ecdsa-p256',
  schemes: [0x0403],
  certificateChain: [Buffer.from(`cert-${name}-${version}`)],
  version,
});

/** Endpoints by socket path; `up` says which ones accept connections. */
function fakeNetwork(keys: Map<string, KeydIdentityLike>) {
  const up = new Set<string>();
  const live: FakeKeyd[] = [];
  let attempts = 0;
  const connect = async (endpoint: KeydEndpoint): Promise<KeydConnection> => {
    attempts++;
    const path = 'socketPath' in endpoint ? endpoint.socketPath : '';
    if (!up.has(path)) throw Object.assign(new Error(`connect ENOENT ${path}`), { code: 'ENOENT' });
    const client = new FakeKeyd(path, keys);
    live.push(client);
    return client;
  };
  return { up, live, connect, attempts: () => attempts };
}

test('fails at once while keyd is down, connects in the background, recovers after a kill', async () => {
  const keys = new Map([['a.example', ident('a.example')]]);
  const net = fakeNetwork(keys);
  const pool = new KeydPool([{ socketPath: 'primary' }], net.connect, { minBackoffMs: 10, maxBackoffMs: 40 });
  try {
    await pool.start();
    assert.equal(pool.state, 'down');
    const t0 = Date.now();
    await assert.rejects(pool.sign('r', 'n.test', 0x0403, new Uint8Array(32)), { code: 'KEYD_UNAVAILABLE', message: /primary: connect ENOENT/ });
    assert.ok(Date.now() - t0 < 50, 'a request while down fails at once');

    net.up.add('primary');
    await once(pool, 'connected');
    assert.equal(pool.state, 'connected');
    assert.equal(Buffer.from(await pool.sign('r', 'n.test', 0x0403, new Uint8Array(32))).toString(), 'primary:r:n.test:1027:32');

    net.up.delete('primary');
    net.live.at(-1)!.close(); // keyd killed
    assert.equal(pool.state, 'down');
    await assert.rejects(pool.identity('a.example'), { code: 'KEYD_UNAVAILABLE' });
    await sleep(100);
    const triesWhileDown = net.attempts();
    assert.ok(triesWhileDown >= 3, `keeps retrying (${triesWhileDown})`);
    net.up.add('primary');
    await once(pool, 'connected');
    assert.equal((await pool.identity('a.example'))?.keyRef, 'ref-a.example-1');
  } finally {
    pool.close();
  }
  assert.equal(pool.state, 'closed');
});

test('fails over to the next endpoint, in order', async () => {
  const net = fakeNetwork(new Map());
  net.up.add('secondary');
  const pool = new KeydPool([{ socketPath: 'primary' }, { socketPath: 'secondary' }], net.connect, { minBackoffMs: 10 });
  try {
    await pool.start();
    assert.equal(pool.endpoint, 'unix:secondary');
    net.up.add('primary');
    net.up.delete('secondary');
    net.live.at(-1)!.close();
    await once(pool, 'connected');
    assert.equal(pool.endpoint, 'unix:primary');
  } finally {
    pool.close();
  }
});

test('backoff grows: a long outage does not hammer keyd', async () => {
  const net = fakeNetwork(new Map());
  const pool = new KeydPool([{ socketPath: 'x' }], net.connect, { minBackoffMs: 20, maxBackoffMs: 200 });
  try {
    await pool.start();
    await sleep(600);
    // With 20, 40, 80, 160, 200… (jitter halves at worst) 600 ms holds at most ~10 rounds; without backoff thousands.
    assert.ok(net.attempts() <= 12, `attempts ${net.attempts()}`);
    assert.ok(net.attempts() >= 3, `attempts ${net.attempts()}`);
  } finally {
    pool.close();
  }
});

test('a connect that never answers times out and the next endpoint is tried', async () => {
  let calls = 0;
  const pool = new KeydPool(
    [{ socketPath: 'hangs' }, { socketPath: 'works' }],
    async (endpoint) => {
      calls++;
      if ('socketPath' in endpoint && endpoint.socketPath === 'hangs') return new Promise<KeydConnection>(() => undefined);
      return new FakeKeyd('works', new Map());
    },
    { connectTimeoutMs: 50 },
  );
  try {
    await pool.start();
    assert.equal(pool.endpoint, 'unix:works');
    assert.equal(calls, 2);
  } finally {
    pool.close();
  }
});

test('identity cache: one keyd lookup per name, cleared on change and on reconnect', async () => {
  const keys = new Map([['a.example', ident('a.example')]]);
  const net = fakeNetwork(keys);
  net.up.add('k');
  const pool = new KeydPool([{ socketPath: 'k' }], net.connect, { minBackoffMs: 5 });
  const signs: boolean[] = [];
  const cache = new IdentityCache(pool, { observeSign: (_s, ok) => signs.push(ok) });
  try {
    await pool.start();
    const client = () => net.live.at(-1)!;
    const [x, y] = await Promise.all([cache.get('a.example'), cache.get('a.example')]);
    assert.equal(x, y, 'concurrent misses share one lookup');
    assert.equal(client().identityCalls, 1);
    assert.equal(cache.get('a.example'), x, 'a hit is synchronous');
    assert.equal(client().identityCalls, 1);
    assert.equal(await cache.get('unknown.example'), undefined);
    assert.equal(await cache.get('unknown.example'), undefined);
    assert.equal(client().identityCalls, 2, 'a miss is remembered briefly');

    const sig = await x!.signer.sign({ kind: 'tls13-certificate-verify', scheme: 0x0403, transcriptHash: new Uint8Array(32) });
    assert.equal(Buffer.from(sig).toString(), 'k:ref-a.example-1:a.example:1027:32');
    assert.deepEqual(signs, [true]);
    // A TLS 1.2 request goes to keyd's signServerKeyExchange, with the randoms and parameters.
    const ske = await x!.signer.sign({ kind: 'tls12-server-key-exchange', scheme: 0x0403, clientRandom: new Uint8Array(32), serverRandom: new Uint8Array(32), serverParams: new Uint8Array(69) });
    assert.equal(Buffer.from(ske).toString(), 'k:ske:ref-a.example-1:a.example:1027:133');
    assert.deepEqual(signs, [true, true]);
    // TLS 1.2 is offered exactly when keyd's identity lists TLS 1.2 schemes.
    assert.equal(x!.signer.tls12Schemes, undefined);
    assert.deepEqual(pool.signer({ ...ident('b.example'), tls12Schemes: [0x0403] }, 'b.example').tls12Schemes, [0x0403]);

    // keyd pushes a change: next lookup sees the new version
    keys.set('a.example', ident('a.example', 2));
    client().emit('change', { names: ['a.example'] });
    const z = await cache.get('a.example');
    assert.equal(z?.version, 2);
    assert.equal(Buffer.from(z!.certificateChain[0]).toString(), 'cert-a.example-2');

    // a lookup in flight when a change arrives is not stored
    keys.set('a.example', ident('a.example', 3));
    client().emit('change', {});
    const racing = cache.get('a.example');
    keys.set('a.example', ident('a.example', 4));
    client().emit('change', {});
    assert.equal((await racing)?.version, 3);
    assert.equal((await cache.get('a.example'))?.version, 4);

    // reconnect clears too (changes made while we were away are not pushed)
    keys.set('a.example', ident('a.example', 5));
    client().close();
    await once(pool, 'connected');
    assert.equal((await cache.get('a.example'))?.version, 5);

    // keyd down: the cached identity is still served, but signing fails at once
    net.up.delete('k');
    client().close();
    await assert.rejects(Promise.resolve(cache.get('b.example')), { code: 'KEYD_UNAVAILABLE' });
    const cached = await cache.get('a.example');
    assert.ok(cached, 'no flush on disconnect: the next connect flushes');
    await assert.rejects(cached.signer.sign({ kind: 'tls13-certificate-verify', scheme: 0x0403, transcriptHash: new Uint8Array(32) }), { code: 'KEYD_UNAVAILABLE' });
    assert.deepEqual(signs, [true, true, false]);
  } finally {
    pool.close();
  }
});

test('setEndpoints (reload): a listed endpoint in use is kept; otherwise the pool moves, and the old connection closes only after the request timeout', async () => {
  const net = fakeNetwork(new Map([['a.test', ident('a.test')]]));
  net.up.add('/k1').add('/k2').add('/k3');
  const pool = new KeydPool([{ socketPath: '/k1' }], net.connect, { requestTimeoutMs: 50 });
  await pool.start();
  assert.equal(pool.endpoint, 'unix:/k1');
  // Still listed (now second): kept, no new connection.
  assert.equal(await pool.setEndpoints([{ socketPath: '/k2' }, { socketPath: '/k1' }]), 'kept');
  assert.equal(pool.endpoint, 'unix:/k1');
  assert.equal(net.live.length, 1);
  // Not listed any more: moves to the new list; the old one still answers what was sent to it.
  const old = net.live[0]!;
  const closedOld = once(old, 'close');
  assert.equal(await pool.setEndpoints([{ socketPath: '/k3' }]), 'moved');
  assert.equal(pool.endpoint, 'unix:/k3');
  assert.equal(old.closed, false, 'in-flight requests on the old connection get their answer');
  assert.equal(String(await old.sign('r', 'a.test', 0x0403, new Uint8Array(32))), '/k1:r:a.test:1027:32');
  assert.equal(String(await pool.sign('r', 'a.test', 0x0403, new Uint8Array(32))), '/k3:r:a.test:1027:32');
  await closedOld;
  assert.equal(pool.state, 'connected', "the old connection's close is not the pool's");
  // No new endpoint answers: the working connection is kept until it drops.
  assert.equal(await pool.setEndpoints([{ socketPath: '/nowhere' }]), 'unreachable');
  assert.equal(pool.endpoint, 'unix:/k3');
  await assert.rejects(pool.setEndpoints([]), /at least one keyd endpoint/);
  pool.close();
});

test('a keyd that accepts and drops at once is not reconnected in a loop: each drop waits the backoff', async (t) => {
  // The clock and timers are the test's: nothing here depends on how fast the machine is.
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  let connects = 0;
  const dropping: KeydConnection[] = [];
  const pool = new KeydPool(
    [{ socketPath: 'flaky' }],
    async () => {
      connects++;
      const client = new FakeKeyd('flaky', new Map());
      dropping.push(client);
      return client;
    },
    { minBackoffMs: 100, maxBackoffMs: 5000 },
  );
  t.after(() => pool.close());
  await pool.start();
  assert.equal(connects, 1);
  // The attack: keyd accepts, then closes the connection straight away, again and again.
  dropping.at(-1)!.close();
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(connects, 1, 'no reconnect before the backoff');
  assert.equal(pool.state, 'down');
  t.mock.timers.tick(100); // the first backoff: 50..100 ms
  await once(pool, 'connected');
  assert.equal(connects, 2);
  dropping.at(-1)!.close();
  t.mock.timers.tick(100);
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.equal(connects, 2, 'the second drop waits longer (100..200 ms)');
  t.mock.timers.tick(100);
  await once(pool, 'connected');
  assert.equal(connects, 3);

  // The control: a connection that lasted (maxBackoffMs) reconnects at once when it drops.
  t.mock.timers.tick(5000);
  const reconnected = once(pool, 'connected');
  dropping.at(-1)!.close();
  await reconnected;
  assert.equal(connects, 4);
});

test('the backoff is capped at maxBackoffMs: after a long outage, keyd back up is connected within maxBackoffMs', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  t.mock.method(Math, 'random', () => 0.999); // the longest jittered delay: just under the backoff
  const flush = async () => {
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  };
  const net = fakeNetwork(new Map());
  const pool = new KeydPool([{ socketPath: 'k' }], net.connect, { minBackoffMs: 100, maxBackoffMs: 400 });
  t.after(() => pool.close());
  await pool.start();
  // A long outage: 100, 200, 400, then every 400 ms (the cap), one round per 400 ms tick.
  for (let i = 0; i < 12; i++) {
    t.mock.timers.tick(400);
    await flush();
  }
  assert.ok(net.attempts() >= 12, `rounds keep coming at the cap (${net.attempts()})`);
  net.up.add('k');
  t.mock.timers.tick(400);
  await flush();
  assert.equal(pool.state, 'connected', 'reconnected within maxBackoffMs of keyd coming back');
});

test('a keyd connection that completes after its connect timed out is closed, not leaked; the endpoint that answered is used', async () => {
  let completeLate: ((c: KeydConnection) => void) | undefined;
  const late = new FakeKeyd('slow', new Map());
  const working = new FakeKeyd('works', new Map());
  const pool = new KeydPool(
    [{ socketPath: 'slow' }, { socketPath: 'works' }],
    async (endpoint) => {
      if ('socketPath' in endpoint && endpoint.socketPath === 'slow') return new Promise<KeydConnection>((resolve) => (completeLate = resolve));
      return working;
    },
    { connectTimeoutMs: 20 },
  );
  try {
    await pool.start();
    assert.equal(pool.endpoint, 'unix:works');
    completeLate!(late); // the slow endpoint's connect completes now, after its timeout
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(late.closed, true, 'the late connection is closed');
    assert.equal(working.closed, false, 'control: the connection in use stays open');
    assert.equal(pool.state, 'connected');
  } finally {
    pool.close();
  }
});

test('both endpoints up: the first listed (the primary) is used, the second only on failover', async () => {
  const net = fakeNetwork(new Map());
  net.up.add('primary').add('secondary');
  const pool = new KeydPool([{ socketPath: 'primary' }, { socketPath: 'secondary' }], net.connect, { minBackoffMs: 10 });
  try {
    await pool.start();
    assert.equal(pool.endpoint, 'unix:primary');
    assert.equal(net.attempts(), 1, 'the secondary was not even tried');
  } finally {
    pool.close();
  }
});
