/**
 * The linear reassembler (src/lib/reassembler.ts) and its three users: a maximal message fed
 * one byte at a time costs a number of byte copies linear in its size (counted, not timed),
 * and what was handed out is never overwritten.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LinearReassembler } from '../../src/lib/reassembler.js';
import { FrameDecoder as KeydFrameDecoder, HEADER_LENGTH, MAX_PAYLOAD, PROTOCOL_VERSION } from '../../src/keyd/protocol.js';
import { FrameDecoder as ProvisionFrameDecoder, MAX_FRAME_BYTES } from '../../src/provision/frames.js';
import { TlsServerConnection } from '../../src/tls/connection.js';
import { MiniTlsClient } from '../helpers/mini-tls-client.js';
import { ed25519Identity, makeOptions, settle } from '../tls/connection-harness.js';

test('a message fed byte by byte: at most 3n bytes copied and O(log n) allocations', () => {
  const n = 131_072;
  const message = Buffer.alloc(n);
  for (let i = 0; i < n; i++) message[i] = i * 7;
  const r = new LinearReassembler();
  for (let i = 0; i < n; i++) r.push(message.subarray(i, i + 1));
  assert.equal(r.length, n);
  assert.ok(r.stats.copiedBytes <= 3 * n, `copied ${r.stats.copiedBytes} bytes for ${n}`);
  assert.ok(r.stats.allocations <= Math.ceil(Math.log2(n)) + 1, `${r.stats.allocations} allocations`);
  assert.deepEqual(r.take(n), message);
  assert.equal(r.length, 0);
});

test('a whole message in one chunk is not copied at all', () => {
  const r = new LinearReassembler();
  const chunk = Buffer.from('0123456789');
  r.push(chunk);
  const taken = r.take(4);
  assert.equal(taken.buffer, chunk.buffer, 'a view of the chunk');
  assert.equal(r.take(6).toString(), '456789');
  assert.deepEqual(r.stats, { copiedBytes: 0, allocations: 0 });
});

test('views handed out stay intact across later pushes (property)', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ minLength: 0, maxLength: 300 }), { maxLength: 40 }), fc.array(fc.nat(400)), (chunks, takes) => {
      const r = new LinearReassembler();
      const expected: number[] = [];
      const handed: { view: Buffer; copy: Buffer }[] = [];
      let t = 0;
      for (const c of chunks) {
        r.push(Buffer.from(c));
        expected.push(...c);
        const want = takes[t++ % Math.max(1, takes.length)] ?? 0;
        const n = Math.min(want, r.length);
        const view = r.take(n);
        assert.deepEqual([...view], expected.splice(0, n));
        handed.push({ view, copy: Buffer.from(view) });
      }
      assert.deepEqual([...r.peek()], expected);
      for (const h of handed) assert.deepEqual(h.view, h.copy);
    }),
  );
});

/** Counts the bytes copied by Buffer.concat and Buffer#copy while `fn` runs (what joining costs on any implementation). */
function countCopies(fn: () => void): number {
  const concat = Buffer.concat;
  const copy = Buffer.prototype.copy;
  let bytes = 0;
  Buffer.concat = function (list: readonly Uint8Array[], total?: number) {
    const out = concat.call(Buffer, list, total);
    bytes += out.length;
    return out;
  } as typeof Buffer.concat;
  Buffer.prototype.copy = function (this: Buffer, ...args: Parameters<Buffer['copy']>) {
    const n = copy.apply(this, args);
    bytes += n;
    return n;
  };
  try {
    fn();
  } finally {
    Buffer.concat = concat;
    Buffer.prototype.copy = copy;
  }
  return bytes;
}

test('engine: a ~125 KB ClientHello in 1-byte records is joined with a linear number of copies', async () => {
  const conn = new TlsServerConnection(makeOptions(ed25519Identity()));
  const sent: Buffer[] = [];
  conn.onSend = (b) => sent.push(b);
  const errors: Error[] = [];
  conn.onError = (e) => errors.push(e);
  const records = new MiniTlsClient().clientHello({ fragment: 1, padTo: 125_000 });
  const helloBytes = records.length / 6;
  assert.ok(helloBytes > 120_000, `ClientHello of ${helloBytes} bytes`);
  // Records arrive as the network delivers them: here 1 KiB reads.
  const copied = countCopies(() => {
    for (let off = 0; off < records.length; off += 1024) conn.receive(records.subarray(off, off + 1024));
  });
  await settle();
  assert.deepEqual(errors, []);
  assert.equal(sent[0]?.[0], 22, 'the ServerHello came back: the message was reassembled whole');
  assert.ok(copied <= 10 * helloBytes, `${copied} bytes copied for a ${helloBytes}-byte message`);
});

test('keyd FrameDecoder: a maximal frame in 100-byte writes is joined with a linear number of copies', () => {
  const payload = Buffer.alloc(MAX_PAYLOAD, 0x5a);
  const header = Buffer.alloc(HEADER_LENGTH);
  header[0] = PROTOCOL_VERSION;
  header[1] = 0x10;
  header.writeUInt32BE(7, 4);
  header.writeUInt32BE(payload.length, 8);
  const wire = Buffer.concat([header, payload]);
  const decoder = new KeydFrameDecoder();
  const frames: unknown[] = [];
  const copied = countCopies(() => {
    for (let off = 0; off < wire.length; off += 100) frames.push(...decoder.push(wire.subarray(off, off + 100)));
  });
  assert.equal(frames.length, 1);
  assert.equal((frames[0] as { payload: Buffer }).payload.length, MAX_PAYLOAD);
  assert.equal(decoder.pending, 0);
  assert.ok(copied <= 3 * wire.length, `${copied} bytes copied for ${wire.length}`);
});

test('provisioning FrameDecoder: a maximal frame byte by byte is joined with a linear number of copies', () => {
  const json = Buffer.from(JSON.stringify({ pad: 'x'.repeat(MAX_FRAME_BYTES - 10) }));
  assert.equal(json.length, MAX_FRAME_BYTES);
  const wire = Buffer.concat([Buffer.from([json.length >>> 24, (json.length >>> 16) & 0xff, (json.length >>> 8) & 0xff, json.length & 0xff]), json]);
  const decoder = new ProvisionFrameDecoder();
  const messages: unknown[] = [];
  const copied = countCopies(() => {
    for (let off = 0; off < wire.length; off++) messages.push(...decoder.push(wire.subarray(off, off + 1)));
  });
  assert.equal(messages.length, 1);
  assert.equal((messages[0] as { pad: string }).pad.length, MAX_FRAME_BYTES - 10);
  assert.ok(copied <= 3 * wire.length, `${copied} bytes copied for ${wire.length}`);
});
