import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { KeydClient, type KeydError } from '../../src/keyd/client.js';
import { AuditLog, type AuditEntry } from '../../src/keyd/audit.js';
import { FairScheduler, type Queue } from '../../src/keyd/fair-scheduler.js';
import { SignatureBuckets } from '../../src/keyd/token-bucket.js';
import { SigningLedger } from '../../src/keyd/signing-ledger.js';
import { Opcode, FrameDecoder, decodeAdmin, decodeError, encodeAdmin, encodeFrame, encodeSignRequest, HEADER_LENGTH } from '../../src/keyd/protocol.js';
import { LOCAL, makeIdentity, pem, scratch, startTestKeyd } from './fixtures.js';

/**
 * keyd's limits (docs/KEYD.md "Limits"): each test is the attack (a stalled frame, an
 * oversized header, a silent TLS peer, too many connections, a signature flood) and a
 * positive control. No timing assertions: each waits for the event that proves the limit
 * (close, error frame); the test's own timeout is what fails a keyd without the limit.
 */

const hash32 = createHash('sha256').update('transcript').digest();

function rawConnect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ path });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Everything keyd sends until it closes the connection. */
function untilClosed(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => undefined);
  return new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(chunks))));
}

async function auditEntries(keydClose: () => Promise<void>, dataDir: string): Promise<AuditEntry[]> {
  await keydClose(); // flushes the aggregated entries
  const log = await AuditLog.open(join(dataDir, 'audit.log'));
  try {
    return await log.read({ limit: 10_000 });
  } finally {
    await log.close();
  }
}

test('a sign request announcing more than the opcode allows is refused on its header, before the body is read', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath);
  try {
    const socket = await rawConnect(keyd.socketPath);
    const closed = untilClosed(socket);
    // A header announcing a 1 MiB sign request (the old global maximum), and no body.
    const header = encodeFrame(Opcode.signCertificateVerify, 7, Buffer.alloc(0));
    header.writeUInt32BE(1 << 20, 8);
    socket.write(header);
    const reply = new FrameDecoder().push(await closed);
    assert.equal(reply.length, 1);
    assert.equal(reply[0]!.opcode, Opcode.error);
    assert.equal(reply[0]!.requestId, 7);
    const err = decodeError(reply[0]!.payload);
    assert.equal(err.code, 'KEYD_BAD_FRAME');
    assert.match(err.message, /exceeds the 1024-byte maximum for opcode 0x03/);
    // Positive control: a real sign request (a few hundred bytes at most) still works.
    const id = await makeIdentity('ecdsa-p256', ['ok.test']);
    await keyd.adminService.put(LOCAL, ['ok.test'], id.privateKey, id.chain);
    const c = await KeydClient.connect({ socketPath: keyd.socketPath });
    const identity = (await c.identity('ok.test'))!;
    assert.ok((await c.sign(identity.keyRef, 'ok.test', 0x0403, hash32)).length > 0);
    c.close();
    // The admin socket still takes a large put (its own limit): only put/setChain may be big.
    const admin = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
    await assert.rejects(admin.admin(Opcode.put, { names: ['x.test'] }, [Buffer.alloc(200_000)]), { code: 'KEYD_BAD_KEY' });
    admin.close();
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

/** What keyd answers a frame header announcing `length` bytes of `opcode` with no body: the error frame, then its close. */
async function refusedHeader(socketPath: string, opcode: number, length: number): Promise<KeydError> {
  const socket = await rawConnect(socketPath);
  const closed = untilClosed(socket);
  const header = encodeFrame(opcode, 9, Buffer.alloc(0));
  header.writeUInt32BE(length, 8);
  socket.write(header);
  const reply = new FrameDecoder().push(await closed);
  assert.equal(reply.length, 1, `one reply to opcode 0x${opcode.toString(16)}`);
  assert.equal(reply[0]!.opcode, Opcode.error);
  return decodeError(reply[0]!.payload);
}

test('admin opcodes are held to the signing limit on a signing connection, and only put and setChain may be large on the admin socket', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath);
  try {
    // A signing client cannot make keyd buffer a put-sized body: admin opcodes are refused
    // there anyway, and their body would be read first (docs/KEYD.md, "Limits").
    for (const opcode of [Opcode.put, Opcode.setChain, Opcode.list]) {
      const err = await refusedHeader(keyd.socketPath, opcode, 1 << 20);
      assert.equal(err.code, 'KEYD_BAD_FRAME');
      assert.match(err.message, new RegExp(`exceeds the 1024-byte maximum for opcode 0x${opcode.toString(16)}`));
    }
    // On the admin socket the JSON-only requests keep 16 KiB.
    for (const opcode of [Opcode.generate, Opcode.delete, Opcode.list, Opcode.audit]) {
      const err = await refusedHeader(keyd.adminSocketPath, opcode, 1 << 20);
      assert.equal(err.code, 'KEYD_BAD_FRAME');
      assert.match(err.message, new RegExp(`exceeds the 16384-byte maximum for opcode 0x${opcode.toString(16)}`));
    }
    // Control: the admin socket reads a 200 KB put and a 2 KB list to the end (their own
    // errors, not the frame's), and a signing connection reads a 2 KB admin frame no further
    // than the 1 KiB limit above.
    const admin = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
    await assert.rejects(admin.admin(Opcode.setChain, { name: 'none.test' }, [Buffer.alloc(200_000)]), (e: KeydError) => e.code !== 'KEYD_BAD_FRAME');
    assert.ok(Array.isArray((await admin.admin(Opcode.list, { pad: 'x'.repeat(2000) })).json.keys));
    admin.close();
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('a stalled partial frame is closed at the frame deadline; trickled bytes do not extend it', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: { limits: { frameTimeoutMs: 300 } } });
  try {
    const socket = await rawConnect(keyd.socketPath);
    const closed = untilClosed(socket);
    const frame = encodeFrame(Opcode.signCertificateVerify, 1, encodeSignRequest('k', 'a.test', 0x0403, hash32));
    // One byte every 50 ms: the idle timer would be re-armed by each; the frame deadline is not.
    let sent = 0;
    const trickle = setInterval(() => {
      if (sent < frame.length - 1 && !socket.destroyed) socket.write(frame.subarray(sent, ++sent));
    }, 50);
    await closed;
    clearInterval(trickle);
    assert.ok(sent < frame.length, 'closed before the frame completed');
    const entries = await auditEntries(() => keyd.close(), join(s.dir, 'data'));
    const limit = entries.filter((e) => e.op === 'limit' && e.code === 'KEYD_LIMIT_FRAME_TIMEOUT');
    assert.equal(limit.length, 1);
    assert.equal(limit[0]!.caller.id, 'local');
    assert.equal(limit[0]!.count, 1);
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('an idle connection is closed after limits.idleTimeoutMs; a busy one is not', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: { limits: { idleTimeoutMs: 300 } } });
  try {
    const idle = await rawConnect(keyd.socketPath);
    const busy = await KeydClient.connect({ socketPath: keyd.socketPath });
    let pings = 0;
    const closedIdle = untilClosed(idle);
    const keepBusy = setInterval(() => void busy.ping().then(() => pings++, () => undefined), 50);
    await closedIdle;
    // The busy client kept its connection while the idle one was dropped.
    await busy.ping();
    clearInterval(keepBusy);
    assert.equal(busy.closed, false);
    assert.ok(pings > 0);
    busy.close();
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('a request answered after limits.idleTimeoutMs keeps its connection: keyd closes it only once idle after the answer', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: { limits: { idleTimeoutMs: 300 } } });
  try {
    // An admin operation that takes over three idle timeouts, as a key generation in a slow token does.
    const stats = keyd.adminService.stats.bind(keyd.adminService);
    keyd.adminService.stats = async (...args) => {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return stats(...args);
    };
    const socket = await rawConnect(keyd.adminSocketPath);
    const closed = untilClosed(socket);
    socket.write(encodeFrame(Opcode.stats, 9, encodeAdmin({})));
    // Control: once answered, the connection is idle and keyd closes it (the test's timeout
    // fails a keyd that never does).
    const frames = new FrameDecoder().push(await closed);
    assert.deepEqual(frames.map((f) => [f.opcode, f.requestId]), [[Opcode.stats | Opcode.replyFlag, 9]], 'the answer, on the same connection, then the close');
    assert.equal(typeof decodeAdmin(frames[0]!.payload).json.clients, 'object');
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('connection caps: per client identity, and per listener (a new client on another socket is still served)', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, {
    config: {
      limits: { maxConnectionsPerClient: 2, maxConnectionsPerListener: 3 },
      principals: { 'edge-b': { socket: join(s.dir, 'edge-b.sock'), mode: '0600', names: ['*'] } },
    },
  });
  const open: KeydClient[] = [];
  try {
    open.push(await KeydClient.connect({ socketPath: keyd.socketPath }), await KeydClient.connect({ socketPath: keyd.socketPath }));
    for (const c of open) await c.ping();
    const third = await KeydClient.connect({ socketPath: keyd.socketPath });
    await assert.rejects(third.ping(), (err: KeydError) => err.code === 'KEYD_UNAVAILABLE' || err.code === 'KEYD_TOO_MANY_CONNECTIONS');
    third.close();
    // Per listener: raw sockets to edge-b's socket beyond 3 are dropped by the listener.
    const raws = await Promise.all([1, 2, 3].map(() => rawConnect(keyd.principalSockets['edge-b']!)));
    const fourth = await rawConnect(keyd.principalSockets['edge-b']!);
    await untilClosed(fourth);
    // Another listener (and another client) is unaffected: fd use is bounded per listener.
    const c = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
    assert.ok(Array.isArray((await c.admin(Opcode.list, {})).json.keys));
    c.close();
    for (const r of raws) r.destroy();
    for (const c of open) c.close();
    const entries = await auditEntries(() => keyd.close(), join(s.dir, 'data'));
    assert.ok(entries.some((e) => e.code === 'KEYD_LIMIT_CLIENT_CONNECTIONS' && e.caller.id === 'local'), JSON.stringify(entries));
    assert.ok(entries.some((e) => e.code === 'KEYD_LIMIT_LISTENER_CONNECTIONS' && e.caller.id === 'edge-b'), JSON.stringify(entries));
  } finally {
    for (const c of open) c.close();
    await keyd.close();
    await s.cleanup();
  }
});

test('a silent TCP peer on the mTLS listener is closed at the TLS handshake timeout', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=keyd test CA' });
  const server = await makeIdentity('ecdsa-p256', ['localhost', '127.0.0.1'], ca, { subject: 'CN=keyd' });
  await writeFile(join(s.dir, 'tls.crt'), pem(server.chain[0]!));
  await writeFile(join(s.dir, 'tls.key'), server.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  await writeFile(join(s.dir, 'ca.crt'), pem(ca.chain[0]!));
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, {
    listen: '127.0.0.1:0',
    tlsCert: join(s.dir, 'tls.crt'),
    tlsKey: join(s.dir, 'tls.key'),
    clientCa: join(s.dir, 'ca.crt'),
    config: { limits: { tlsHandshakeTimeoutMs: 300 } },
  });
  try {
    const silent = connect({ host: '127.0.0.1', port: keyd.tlsPort! });
    await untilClosed(silent);
    const entries = await auditEntries(() => keyd.close(), join(s.dir, 'data'));
    assert.ok(entries.some((e) => e.code === 'KEYD_LIMIT_TLS_HANDSHAKE_TIMEOUT' && e.caller.id === '(unauthenticated)'), JSON.stringify(entries));
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('per-client token bucket: a flood is throttled with KEYD_THROTTLED, counted in a metric, audited once per window', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: { limits: { signaturesPerSecond: 1, signatureBurst: 3 } } });
  try {
    const id = await makeIdentity('ecdsa-p256', ['flood.test']);
    await keyd.adminService.put(LOCAL, ['flood.test'], id.privateKey, id.chain);
    const c = await KeydClient.connect({ socketPath: keyd.socketPath });
    const identity = (await c.identity('flood.test'))!;
    // 20 requests in one write: served in one turn, far quicker than one token per second.
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, () => c.sign(identity.keyRef, 'flood.test', 0x0403, hash32).then(() => 'ok', (e: KeydError) => e.code)),
    );
    assert.equal(outcomes.filter((o) => o === 'ok').length, 3, outcomes.join());
    assert.equal(outcomes.filter((o) => o === 'KEYD_THROTTLED').length, 17, outcomes.join());
    const metrics = await keyd.metrics.registry.metrics();
    assert.match(metrics, /keyd_limit_refusals_total\{client="local",limit="signature-rate"\} 17/);
    c.close();
    const entries = await auditEntries(() => keyd.close(), join(s.dir, 'data'));
    const throttled = entries.filter((e) => e.op === 'limit' && e.code === 'KEYD_LIMIT_SIGNATURE_RATE');
    assert.equal(throttled.length, 1, 'one aggregated entry, not one per refusal');
    assert.equal(throttled[0]!.count, 17);
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('fair scheduler: a connection with a deep backlog delays another by at most one request per round', () => {
  const order: string[] = [];
  let endTurns = 0;
  const queue = (name: string, n: number): Queue & { n: number } => ({
    n,
    get queued() {
      return this.n;
    },
    serveOne() {
      this.n--;
      order.push(name);
    },
    endTurn() {
      endTurns++;
    },
  });
  const turns: Array<() => void> = [];
  const scheduler = new FairScheduler(8, (run) => turns.push(run));
  const flood = queue('flood', 1000);
  scheduler.wake(flood); // no turn pending: the first turn runs at once, 8 of the flood's requests
  assert.deepEqual(order, Array(8).fill('flood'));
  assert.equal(turns.length, 1, 'the rest waits for the next turn');
  const normal = queue('normal', 1);
  scheduler.wake(normal);
  turns.shift()!();
  // The normal request is served in the very next turn, second in the round.
  assert.deepEqual(order.slice(8, 10), ['flood', 'normal']);
  assert.equal(order.length, 16, 'each turn is bounded by the batch size');
  while (turns.length) turns.shift()!();
  assert.equal(order.length, 1001);
  assert.ok(endTurns > 0);
});

test('token bucket: an idle client\'s bucket refills to its burst, not beyond (idling buys no flood later)', () => {
  let now = 0;
  const buckets = new SignatureBuckets(1, 3, () => now);
  const takeAll = () => {
    let n = 0;
    while (buckets.take('edge-a') && n < 1000) n++;
    return n;
  };
  assert.equal(takeAll(), 3, 'the burst');
  now += 1000;
  assert.equal(takeAll(), 1, 'positive control: one second refills one token');
  now += 3_600_000; // an hour idle
  assert.equal(takeAll(), 3, 'still only the burst');
  assert.equal(buckets.take('edge-b'), true, 'another client has its own bucket');
});

test('fair scheduler: a connection closed while one of its requests is served is not served again', () => {
  const served: string[] = [];
  const turns: Array<() => void> = [];
  const scheduler = new FairScheduler(64, (run) => turns.push(run));
  const queue = (name: string, n: number, onServe?: () => void): Queue => ({
    get queued() {
      return n;
    },
    serveOne() {
      n--;
      served.push(name);
      onServe?.();
    },
    endTurn() {},
  });
  // The first request's answer fails its write and the connection is closed (forget) mid-turn.
  const closing: Queue = queue('closing', 5, () => scheduler.forget(closing));
  const other = queue('other', 3);
  scheduler.wake(other);
  scheduler.wake(closing);
  while (turns.length) turns.shift()!();
  assert.deepEqual(served.filter((n) => n === 'closing'), ['closing'], 'only the request that was being served when it closed');
  assert.equal(served.filter((n) => n === 'other').length, 3, 'positive control: the other connection is served to the end');
});

test('signing ledger: a window with refusals is audited with ok: false; one with signatures only with ok: true', async () => {
  const s = await scratch();
  try {
    const entries: Array<Omit<AuditEntry, 'time'>> = [];
    const ledger = await SigningLedger.open({ totalsPath: join(s.dir, 'signing-totals.json'), intervalMs: 60_000, audit: async (e) => void entries.push(e) });
    ledger.signed('edge-a', 'k1');
    ledger.signed('edge-a', 'k1');
    ledger.signed('edge-b', 'k1');
    ledger.refused('edge-b', 'k1', 'KEYD_THROTTLED');
    ledger.refused('edge-b', undefined, 'KEYD_UNKNOWN_KEY');
    await ledger.flush();
    const row = (client: string, keyRef?: string) => entries.find((e) => e.caller.id === client && e.keyRef === keyRef);
    assert.deepEqual([row('edge-a', 'k1')?.ok, row('edge-a', 'k1')?.count, row('edge-a', 'k1')?.refusals], [true, 2, 0]);
    assert.deepEqual([row('edge-b', 'k1')?.ok, row('edge-b', 'k1')?.count, row('edge-b', 'k1')?.refusals], [false, 1, 1]);
    assert.deepEqual([row('edge-b')?.ok, row('edge-b')?.refusals], [false, 1], 'a refusal naming no key');
    assert.equal(entries.length, 3);
  } finally {
    await s.cleanup();
  }
});
