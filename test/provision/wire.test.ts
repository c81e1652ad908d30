/**
 * toWire / fromWire (src/provision/protocol.ts): what an admin result becomes on the
 * provisioning protocol and back. Expected values are written out here, not built with the
 * functions under test.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromWire, toWire } from '../../src/provision/protocol.js';

test('toWire: a plain Uint8Array is bytes as much as a Buffer; fromWire gives the same bytes back, inside lists too', () => {
  const chain = [new Uint8Array([1, 2, 3]), Buffer.from([4, 5])];
  const wire = JSON.parse(JSON.stringify(toWire({ chain })));
  assert.deepEqual(wire, { chain: [{ $base64: 'AQID' }, { $base64: 'BAU=' }] });
  assert.deepEqual(fromWire(wire), { chain: [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5])] });
  assert.deepEqual(fromWire([{ $base64: 'AQID' }, 'x']), [new Uint8Array([1, 2, 3]), 'x']);
});

test('toWire: a bigint above 2^53 keeps every digit (a string); a Date is its ISO string; undefined fields are left out', () => {
  const wire = toWire({ counter: 2n ** 64n - 1n, small: 5n, at: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)), gone: undefined, n: 1 });
  assert.deepEqual(wire, { counter: '18446744073709551615', small: '5', at: '2026-01-02T03:04:05.000Z', n: 1 });
});

test('toWire: an object with toJSON is sent as its toJSON says, not field by field (control: a plain object is walked)', () => {
  class Secretive {
    readonly internal = 'not for the wire';
    toJSON(): unknown {
      return { shown: new Uint8Array([9]) };
    }
  }
  assert.deepEqual(toWire({ v: new Secretive() }), { v: { shown: { $base64: 'CQ==' } } });
  assert.deepEqual(toWire({ v: { internal: 'walked' } }), { v: { internal: 'walked' } });
});

test('fromWire: only the exact one-field {"$base64": string} is bytes; an object with more fields, or a $base64 that is not a string, stays an object', () => {
  assert.deepEqual(fromWire({ $base64: 'AA==', other: 1 }), { $base64: 'AA==', other: 1 });
  assert.deepEqual(fromWire({ other: 1, $base64: 'AA==' }), { other: 1, $base64: 'AA==' });
  assert.deepEqual(fromWire({ $base64: 5 }), { $base64: 5 });
  assert.deepEqual(fromWire({ $base64: 'AA==' }), new Uint8Array([0]));
});
