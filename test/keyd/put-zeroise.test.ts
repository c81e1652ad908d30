/**
 * A put's PKCS#8 bytes are wiped from the received frame once keyd has made its KeyObject
 * (docs/KEYD.md): only the KeyObject remains, not a plaintext copy in a network buffer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import type { Socket } from 'node:net';
import { pino } from 'pino';
import { FairScheduler } from '../../src/keyd/fair-scheduler.js';
import { DEFAULT_LIMITS } from '../../src/keyd/limits.js';
import { SignatureBuckets } from '../../src/keyd/token-bucket.js';
import { DEFAULT_SIGNED_CONTENT_POLICY } from '../../src/keyd/signed-content.js';
import { KeydConnection, type ServerDeps } from '../../src/keyd/server.js';
import { FrameDecoder, Opcode, encodeAdmin, encodeFrame, decodeError } from '../../src/keyd/protocol.js';

/** The parts of a net.Socket a KeydConnection uses; replies are collected. */
class FakeSocket extends EventEmitter {
  readonly replies = new FrameDecoder();
  readonly frames: ReturnType<FrameDecoder['push']> = [];
  writableLength = 0;
  write(b: Buffer): boolean {
    this.frames.push(...this.replies.push(b));
    this.emit('reply');
    return true;
  }
  end(b?: Buffer): void {
    if (b) this.write(b);
  }
  cork(): void {}
  uncork(): void {}
  pause(): void {}
  resume(): void {}
  isPaused(): boolean {
    return false;
  }
  setTimeout(): this {
    return this;
  }
  destroy(): void {}
}

function connection(put: (key: KeyObject) => void) {
  const socket = new FakeSocket();
  const deps = {
    keyring: {} as ServerDeps['keyring'],
    adminService: {
      put: async (_caller: unknown, names: string[], key: KeyObject) => {
        put(key);
        return { id: 'k1', names };
      },
    } as unknown as ServerDeps['adminService'],
    // A put touches neither the signing ledger nor the limit reporter.
    ledger: {} as ServerDeps['ledger'],
    logger: pino({ level: 'silent' }),
    maxPending: 4,
    limits: { ...DEFAULT_LIMITS },
    reporter: {} as ServerDeps['reporter'],
    scheduler: new FairScheduler(DEFAULT_LIMITS.schedulerBatch),
    buckets: new SignatureBuckets(DEFAULT_LIMITS.signaturesPerSecond, DEFAULT_LIMITS.signatureBurst),
    signingPolicy: DEFAULT_SIGNED_CONTENT_POLICY,
    delegation: { audit: async () => undefined, buckets: new SignatureBuckets(1, 1), now: Date.now },
  };
  new KeydConnection(socket as unknown as Socket, { id: 'admin-test', admin: true, allowed: [] }, deps);
  return socket;
}

async function nextReply(socket: FakeSocket) {
  if (!socket.frames.length) await new Promise((resolve) => socket.once('reply', resolve));
  return socket.frames.shift()!;
}

test('put: the PKCS#8 bytes in the received frame are zero once the key is imported', async () => {
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const pkcs8 = key.export({ format: 'der', type: 'pkcs8' });
  const frame = encodeFrame(Opcode.put, 7, encodeAdmin({ names: ['z.test'] }, [pkcs8, Uint8Array.of(9, 9, 9)]));
  const at = frame.indexOf(pkcs8);
  assert.ok(at > 0, 'the frame carries the key bytes before the put');
  let received: KeyObject | undefined;
  const socket = connection((k) => (received = k));
  socket.emit('data', frame);
  const reply = await nextReply(socket);
  assert.equal(reply.opcode, Opcode.put | Opcode.replyFlag, 'the put succeeded');
  assert.ok(received?.equals(key), 'keyd got the right key (positive control)');
  assert.ok(frame.subarray(at, at + pkcs8.length).every((b) => b === 0), 'the key bytes in the frame are zeroed');
  assert.equal(frame.indexOf(pkcs8.subarray(-32)), -1);
  assert.deepEqual([...frame.subarray(frame.length - 3)], [9, 9, 9], 'only the key attachment is wiped');
});

test('put with bytes that are not PKCS#8: refused with KEYD_BAD_KEY, and the bytes are zeroed too', async () => {
  const junk = Buffer.alloc(40, 0x5a);
  const frame = encodeFrame(Opcode.put, 8, encodeAdmin({ names: ['z.test'] }, [junk]));
  const at = frame.indexOf(junk);
  const socket = connection(() => assert.fail('no key may reach the admin service'));
  socket.emit('data', frame);
  const reply = await nextReply(socket);
  assert.equal(reply.opcode, Opcode.error);
  assert.equal(decodeError(reply.payload).code, 'KEYD_BAD_KEY');
  assert.ok(frame.subarray(at, at + junk.length).every((b) => b === 0));
});

test('put split across two reads (the key cut in half): the key bytes are zero in both pieces', async () => {
  const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const pkcs8 = key.export({ format: 'der', type: 'pkcs8' });
  const frame = encodeFrame(Opcode.put, 9, encodeAdmin({ names: ['z.test'] }, [pkcs8]));
  const at = frame.indexOf(pkcs8);
  const cut = at + (pkcs8.length >> 1);
  // Separate buffers, as two socket reads would be.
  const first = Buffer.from(frame.subarray(0, cut));
  const second = Buffer.from(frame.subarray(cut));
  let received: KeyObject | undefined;
  const socket = connection((k) => (received = k));
  socket.emit('data', first);
  socket.emit('data', second);
  const reply = await nextReply(socket);
  assert.equal(reply.opcode, Opcode.put | Opcode.replyFlag);
  assert.ok(received?.equals(key), 'keyd got the right key (positive control)');
  assert.ok(first.subarray(at).every((b) => b === 0), 'first half of the key zeroed in the first read');
  assert.ok(second.subarray(0, at + pkcs8.length - cut).every((b) => b === 0), 'second half zeroed in the second read');
});
