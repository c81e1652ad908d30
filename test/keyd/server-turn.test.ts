/**
 * keyd answers the requests served in one scheduler turn with ONE write (the turn's replies
 * joined, in request order), and a reply made outside a turn at once. Observed on a fake
 * socket that records every write call: a read of N requests costs one write, not N.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { FairScheduler } from '../../src/keyd/fair-scheduler.js';
import { DEFAULT_LIMITS } from '../../src/keyd/limits.js';
import { FrameDecoder, Opcode, decodeError, decodePing, encodeFrame, encodePing, type Frame } from '../../src/keyd/protocol.js';
import { KeydConnection, type ServerDeps } from '../../src/keyd/server.js';

/** The part of net.Socket a KeydConnection uses; `writes` holds each write call's bytes. */
class FakeSocket extends EventEmitter {
  readonly writes: Buffer[] = [];
  writableLength = 0;
  private paused = false;
  write(data: Uint8Array): boolean {
    this.writes.push(Buffer.from(data));
    return true;
  }
  end(data?: Uint8Array): void {
    if (data) this.writes.push(Buffer.from(data));
  }
  destroy(): void {
    this.emit('close');
  }
  setTimeout(): this {
    return this;
  }
  /** No coalescing here: a cork would hide how many writes were made. */
  cork(): void {}
  uncork(): void {}
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  isPaused(): boolean {
    return this.paused;
  }
  /** The frames of each write call. */
  framesPerWrite(): Frame[][] {
    return this.writes.map((w) => new FrameDecoder().push(w));
  }
}

function connection(batch: number, maxPending = 64): { socket: FakeSocket; turns: (() => void)[] } {
  const turns: (() => void)[] = [];
  const socket = new FakeSocket();
  const deps = {
    logger: pino({ level: 'silent' }),
    maxPending,
    limits: DEFAULT_LIMITS,
    reporter: { refused: () => undefined },
    scheduler: new FairScheduler(batch, (run) => turns.push(run)),
  } as unknown as ServerDeps;
  new KeydConnection(socket as unknown as Socket, { id: 'test', admin: false, allowed: ['*'] }, deps);
  return { socket, turns };
}

function pings(ids: number[]): Buffer {
  return Buffer.concat(ids.map((id) => encodeFrame(Opcode.ping, id, encodePing(Buffer.of(id)))));
}

test('one read of five requests: five replies in ONE write, in request order', () => {
  const { socket, turns } = connection(64);
  socket.emit('data', pings([1, 2, 3, 4, 5]));
  assert.equal(turns.length, 0, 'all five served in the read that brought them');
  const writes = socket.framesPerWrite();
  assert.equal(writes.length, 1, 'one write for the turn');
  assert.deepEqual(
    writes[0]!.map((f) => [f.opcode, f.requestId, decodePing(f.payload)[0]]),
    [1, 2, 3, 4, 5].map((id) => [Opcode.ping | Opcode.replyFlag, id, id]),
  );
});

test('a turn bounded by the batch: one write per turn, the rest in the next turns', () => {
  const { socket, turns } = connection(2);
  socket.emit('data', pings([1, 2, 3, 4, 5]));
  assert.deepEqual(
    socket.framesPerWrite().map((frames) => frames.map((f) => f.requestId)),
    [[1, 2]],
  );
  while (turns.length > 0) turns.shift()!();
  assert.deepEqual(
    socket.framesPerWrite().map((frames) => frames.map((f) => f.requestId)),
    [[1, 2], [3, 4], [5]],
  );
});

test('a refusal before the turn is written at once; the served requests share the turn write', () => {
  // maxPending 2: of four requests in one read, two are queued and two refused on arrival.
  const { socket } = connection(64, 2);
  socket.emit('data', pings([1, 2, 3, 4]));
  const writes = socket.framesPerWrite();
  assert.deepEqual(
    writes.map((frames) => frames.map((f) => [f.opcode, f.requestId])),
    [[[Opcode.error, 3]], [[Opcode.error, 4]], [[Opcode.ping | Opcode.replyFlag, 1], [Opcode.ping | Opcode.replyFlag, 2]]],
  );
  assert.equal(decodeError(writes[0]![0]!.payload).code, 'KEYD_TOO_MANY_PENDING');
});

test('a request refused inside the turn: its error frame joins the turn write in order', () => {
  const { socket } = connection(64);
  // A ping whose data length (200) exceeds its limit (64): refused while served, between two pings.
  socket.emit('data', Buffer.concat([pings([1]), encodeFrame(Opcode.ping, 2, Buffer.of(200)), pings([3])]));
  const writes = socket.framesPerWrite();
  assert.equal(writes.length, 1);
  assert.deepEqual(
    writes[0]!.map((f) => [f.opcode, f.requestId]),
    [
      [Opcode.ping | Opcode.replyFlag, 1],
      [Opcode.error, 2],
      [Opcode.ping | Opcode.replyFlag, 3],
    ],
  );
  assert.equal(decodeError(writes[0]![1]!.payload).code, 'KEYD_BAD_REQUEST');
});

test('after close, a turn writes nothing', () => {
  const { socket, turns } = connection(1);
  socket.emit('data', pings([1, 2]));
  assert.equal(socket.writes.length, 1);
  socket.emit('close');
  while (turns.length > 0) turns.shift()!();
  assert.equal(socket.writes.length, 1);
});

/** Sends pings 1..n, each in a read and an ArrayBuffer of its own (in a function of its own: no local outlives it). */
function sendEachInItsOwnBuffer(socket: FakeSocket, n: number): WeakRef<ArrayBuffer>[] {
  const chunks: WeakRef<ArrayBuffer>[] = [];
  for (let id = 1; id <= n; id++) {
    const bytes = pings([id]);
    const own = new Uint8Array(new ArrayBuffer(bytes.length));
    own.set(bytes);
    chunks.push(new WeakRef(own.buffer));
    socket.emit('data', Buffer.from(own.buffer));
  }
  return chunks;
}

test('a served request is let go at once: its read chunk can be collected while the connection lives', async () => {
  // Each ping arrives in a read of its own, in a buffer of its own; a request's payload is a
  // view of that buffer. Until the queue compacts (past 1024 served slots) a slot still
  // holding its frame would keep every read chunk alive.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const { socket, turns } = connection(1);
  const chunks = sendEachInItsOwnBuffer(socket, 20);
  while (turns.length > 0) turns.shift()!();
  assert.equal(socket.framesPerWrite().flat().length, 20, 'every ping answered');
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  const alive = chunks.filter((ref) => ref.deref() !== undefined).length;
  assert.equal(alive, 0, `${alive} of 20 served requests' read chunks are still held`);
});

test('the collection check sees a chunk that is still referenced (positive control)', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const kept = new ArrayBuffer(64);
  const ref = new WeakRef(kept);
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  assert.ok(ref.deref() !== undefined && kept.byteLength === 64);
});
