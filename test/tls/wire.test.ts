/** Reader / Writer: the bounds-checked codec every message is built on (RFC 8446 §3). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DecodeError, Reader } from '../../src/lib/reader.js';
import { Writer } from '../../src/lib/writer.js';
import { TlsAlert, toAlert } from '../../src/tls/alert.js';
import { assertAlert } from './alerts.js';

/** RFC 8446 §6 alert codes, written out: each assertAlert result is also checked directly. */
const DECODE_ERROR = 50;

test('Writer writes big-endian integers and patches vector lengths', () => {
  const w = new Writer(1); // forces growth
  w.u8(0x01).u16(0x0203).u24(0x040506).u32(0x0708090a);
  w.vec(1, (x) => x.u8(0xaa));
  w.vec(2, (x) => x.bytes(Buffer.from('hi')));
  w.vec(3, (x) => x.vec(2, (y) => y.u16(0xbeef)));
  w.opaque(1, new Uint8Array(0));
  assert.equal(w.length, 1 + 2 + 3 + 4 + 2 + 4 + 7 + 1);
  assert.equal(w.finish().toString('hex'), '01' + '0203' + '040506' + '0708090a' + '01aa' + '00026869' + '0000040002beef' + '00');
});

test('Writer.u32 handles values with the top bit set', () => {
  assert.equal(new Writer().u32(0xfffffffe).finish().toString('hex'), 'fffffffe');
});

test('Writer.vec refuses a body that does not fit its length prefix', () => {
  assert.throws(() => new Writer().vec(1, (w) => w.bytes(Buffer.alloc(256))), RangeError);
  assert.equal(new Writer().vec(1, (w) => w.bytes(Buffer.alloc(255))).length, 256);
});

test('Writer.finish returns a copy', () => {
  const w = new Writer();
  w.u8(1);
  const a = w.finish();
  w.u8(2);
  assert.equal(a.length, 1);
  assert.equal(w.finish().length, 2);
});

test('Reader reads what Writer wrote (property)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xff }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.uint8Array({ maxLength: 300 }),
      fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 20 }),
      (a, b, c, d, bytes, list) => {
        const w = new Writer(4);
        w.u8(a).u16(b).u24(c).u32(d).opaque(2, bytes).vec(1, (x) => list.forEach((v) => x.u16(v)));
        const r = new Reader(w.finish());
        assert.equal(r.u8(), a);
        assert.equal(r.u16(), b);
        assert.equal(r.u24(), c);
        assert.equal(r.u32(), d);
        assert.deepEqual(Buffer.from(r.vec(2, 0, 0xffff, 'bytes')), Buffer.from(bytes));
        assert.deepEqual(r.u16List(1, 2, 254, 'list'), list);
        r.end();
      },
    ),
  );
});

test('Reader: every short read is decode_error', () => {
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(0)).u8(), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(1)).u16(), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(2)).u24(), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(3)).u32(), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(3)).bytesN(4), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(5, 1, 2)).vec(1, 0, 255, 'v'), 'decode_error', 'vector longer than input').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(0, 5, 1, 2)).sub(2, 0, 255, 'v'), 'decode_error', 'sub longer than input').alert, DECODE_ERROR);
});

test('Reader: vector lengths outside [min, max] fail with decode_error', () => {
  assert.equal(assertAlert(() => new Reader(Buffer.of(0)).vec(1, 1, 10, 'v'), 'decode_error', 'below min').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(3, 1, 2, 3)).vec(1, 0, 2, 'v'), 'decode_error', 'above max').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(0, 0)).sub(2, 1, 10, 'v'), 'decode_error', 'sub below min').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(0, 3, 1, 2, 3)).u16List(2, 0, 10, 'l'), 'decode_error', 'odd u16 list').alert, DECODE_ERROR);
});

test('Reader.end: trailing bytes are decode_error', () => {
  const r = new Reader(Buffer.of(1, 2));
  r.u8();
  assert.equal(assertAlert(() => r.end(), 'decode_error').alert, DECODE_ERROR);
  r.u8();
  r.end();
});

test('Reader.sub bounds the nested reader to its vector', () => {
  const r = new Reader(Buffer.of(0, 2, 0xaa, 0xbb, 0xcc));
  const s = r.sub(2, 0, 10, 'inner');
  assert.equal(s.remaining, 2);
  assert.equal(s.u16(), 0xaabb);
  assert.equal(assertAlert(() => s.u8(), 'decode_error', 'cannot read past the vector').alert, DECODE_ERROR);
  s.end();
  assert.equal(r.u8(), 0xcc);
  r.end();
});

test('Reader honours start/end offsets and returns views, not copies', () => {
  const buf = Buffer.of(9, 9, 1, 2, 3, 9);
  const r = new Reader(buf, 'm', 2, 5);
  assert.equal(r.position, 2);
  assert.equal(r.remaining, 3);
  const view = r.bytesN(2);
  buf[2] = 7;
  assert.equal(view[0], 7, 'a view into the input');
  assert.deepEqual([...r.rest()], [3]);
  r.end();
});

test('Reader.u32 returns unsigned values', () => {
  assert.equal(new Reader(Buffer.of(0xff, 0xff, 0xff, 0xff)).u32(), 0xffffffff);
});

test('Reader: arbitrary bytes never throw anything but DecodeError (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        const r = new Reader(bytes);
        r.u16List(1, 2, 254, 'a');
        r.sub(2, 0, 0xffff, 'b').vec(1, 1, 255, 'c');
        r.u24();
        r.end();
      } catch (err) {
        assert.ok(err instanceof DecodeError, String(err));
      }
    }),
  );
});

test('Reader throws a neutral DecodeError, which the engine sends as decode_error and not as a bug', () => {
  let thrown: unknown;
  try {
    new Reader(Buffer.of(1), 'Example').u16('field');
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof DecodeError, 'a DecodeError');
  assert.ok(!(thrown instanceof TlsAlert), 'not a TLS alert: keyd and its store use the same reader');
  assert.equal(thrown.message, 'Example: truncated field');
  const alert = toAlert(thrown);
  assert.equal(alert.alertName, 'decode_error');
  assert.equal(alert.message, 'tls: Example: truncated field');
  assert.equal((alert as Error & { cause?: unknown }).cause, undefined, 'a decode failure is the peer\'s, not an internal bug');
  const bug = toAlert(new RangeError('oops'));
  assert.equal(bug.alertName, 'internal_error');
  assert.ok((bug as Error & { cause?: unknown }).cause instanceof RangeError);
});
