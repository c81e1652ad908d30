import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';

test('a ring that imports another ring\'s keys opens what that ring sealed, and seals what it opens', () => {
  const owner = new TicketKeyRing();
  const worker = new TicketKeyRing();
  const before = worker.seal('t', Buffer.from('made before the import'));
  worker.importKeys(owner.exportKeys());
  assert.equal(worker.open('t', owner.seal('t', Buffer.from('from owner')))?.toString(), 'from owner');
  assert.equal(owner.open('t', worker.seal('t', Buffer.from('from worker')))?.toString(), 'from worker');
  // Its own earlier key still opens what it sealed before the import.
  assert.equal(worker.open('t', before)?.toString(), 'made before the import');
  // Labels still separate uses, and an altered byte is refused.
  assert.equal(worker.open('other', owner.seal('t', Buffer.from('x'))), undefined);
  const sealed = owner.seal('t', Buffer.from('y'));
  sealed[sealed.length - 1]! ^= 1;
  assert.equal(worker.open('t', sealed), undefined);
});

test('rotation: the owner\'s new key reaches the worker; old keys open until they are retired', () => {
  let now = 1_000_000;
  const owner = new TicketKeyRing({ rotationMs: 1000, retainMs: 5000, now: () => now });
  const worker = new TicketKeyRing({ rotationMs: 1000, retainMs: 5000, now: () => now });
  worker.importKeys(owner.exportKeys());
  const old = owner.seal('t', Buffer.from('old'));
  now += 1500; // past rotation: exportKeys rotates
  const keys = owner.exportKeys();
  assert.equal(keys.length, 2);
  worker.importKeys(keys);
  assert.equal(worker.open('t', old)?.toString(), 'old');
  assert.equal(owner.open('t', worker.seal('t', Buffer.from('new')))?.toString(), 'new');
  now += 6000; // past retention of both
  assert.equal(worker.open('t', old), undefined);
  assert.equal(owner.open('t', old), undefined);
});

test('importKeys ignores malformed or expired keys', () => {
  const ring = new TicketKeyRing();
  ring.importKeys([{ id: 1, key: Buffer.alloc(16).toString('base64'), createdAt: Date.now() }]); // wrong size
  ring.importKeys([{ id: 2, key: Buffer.alloc(32).toString('base64'), createdAt: 0 }]); // long retired
  assert.equal(ring.exportKeys().some((k) => k.id === 1 || k.id === 2), false);
});

// The constructor took any rotationMs/retainMs: 0, negative or NaN rotation made a key per
// ticket (each kept for retainMs), 0 or NaN retention opened nothing, retention below the
// rotation retired the sealing key while it still sealed, Infinity never retired a key.
test('TicketKeyRing refuses rotationMs/retainMs that would break it, naming the option', () => {
  const bad: [object, ErrorConstructor, RegExp][] = [
    [{ rotationMs: 0 }, RangeError, /^TicketKeyRing: rotationMs must be an integer number of ms, at least 1000 and at most 604800000 \(got 0\)$/],
    [{ rotationMs: -1000 }, RangeError, /rotationMs .*\(got -1000\)$/],
    [{ rotationMs: NaN }, RangeError, /rotationMs .*\(got NaN\)$/],
    [{ rotationMs: Infinity }, RangeError, /rotationMs .*\(got Infinity\)$/],
    [{ rotationMs: 1500.5 }, RangeError, /rotationMs .*\(got 1500\.5\)$/],
    [{ rotationMs: 999 }, RangeError, /rotationMs .*\(got 999\)$/],
    [{ rotationMs: 604_800_001, retainMs: 604_800_002 }, RangeError, /rotationMs .*\(got 604800001\)$/],
    [{ rotationMs: 2 ** 31 }, RangeError, /rotationMs .*\(got 2147483648\)$/],
    [{ rotationMs: '3600000' }, TypeError, /^TicketKeyRing: rotationMs must be a number of milliseconds, not string$/],
    [{ retainMs: 0 }, RangeError, /^TicketKeyRing: retainMs must be an integer number of ms, greater than rotationMs \(3600000\) and at most 612000000 \(got 0\)$/],
    [{ retainMs: NaN }, RangeError, /retainMs .*\(got NaN\)$/],
    [{ retainMs: -1 }, RangeError, /retainMs .*\(got -1\)$/],
    [{ retainMs: Infinity }, RangeError, /retainMs .*\(got Infinity\)$/],
    [{ retainMs: 28_800_000.5 }, RangeError, /retainMs .*\(got 28800000\.5\)$/],
    [{ rotationMs: 10_000, retainMs: 5_000 }, RangeError, /retainMs .*greater than rotationMs \(10000\).*\(got 5000\)$/],
    [{ rotationMs: 10_000, retainMs: 10_000 }, RangeError, /retainMs .*\(got 10000\)$/],
    [{ rotationMs: 10_000, retainMs: 604_820_001 }, RangeError, /retainMs .*at most 604820000 \(got 604820001\)$/],
    [{ retainMs: 2 ** 31 }, RangeError, /retainMs .*\(got 2147483648\)$/],
    [{ retainMs: 8n }, TypeError, /retainMs must be a number of milliseconds, not bigint$/],
    [{ now: 5 }, TypeError, /^TicketKeyRing: now must be a function returning ms$/],
  ];
  for (const [options, type, message] of bad) {
    assert.throws(() => new TicketKeyRing(options as never), (err: unknown) => err instanceof type && message.test((err as Error).message), JSON.stringify(options, (_k, v) => (typeof v === 'number' && !Number.isFinite(v)) || typeof v === 'bigint' ? String(v) : v));
  }
});

test('positive control: the limits themselves are accepted, and a ring at the smallest ones rotates and retires', () => {
  let now = 1_000_000;
  for (const options of [{}, { rotationMs: 1000, retainMs: 1001 }, { rotationMs: 604_800_000, retainMs: 3 * 604_800_000 }, { retainMs: 3_600_001 }]) {
    const ring = new TicketKeyRing({ ...options, now: () => now });
    assert.equal(ring.open('t', ring.seal('t', Buffer.from('x')))?.toString(), 'x', JSON.stringify(options));
  }
  const ring = new TicketKeyRing({ rotationMs: 1000, retainMs: 3000, now: () => now });
  const first = ring.seal('t', Buffer.from('first'));
  now += 999;
  ring.seal('t', Buffer.from('same key'));
  assert.equal(ring.exportKeys().length, 1, 'no new key before rotationMs');
  now += 1;
  ring.seal('t', Buffer.from('next key'));
  assert.equal(ring.exportKeys().length, 2);
  assert.equal(ring.open('t', first)?.toString(), 'first');
  now += 1999; // the first key is 2999 ms old
  assert.equal(ring.open('t', first)?.toString(), 'first');
  now += 1;
  assert.equal(ring.open('t', first), undefined, 'retired at retainMs');
});

// The edge reloads its ticket lifetime, and its ring's retention follows (docs/EDGE.md).
test('setRetainMs: longer keeps a held key that would have retired, shorter retires it at once; bad values refused with the constructor\'s message, retention unchanged', () => {
  let now = 1_000_000;
  const ring = new TicketKeyRing({ rotationMs: 1000, retainMs: 3000, now: () => now });
  const sealed = ring.seal('t', Buffer.from('x'));
  for (const [value, type, message] of [
    [1000, RangeError, /^TicketKeyRing: retainMs must be an integer number of ms, greater than rotationMs \(1000\) and at most 604802000 \(got 1000\)$/],
    [NaN, RangeError, /retainMs .*\(got NaN\)$/],
    [604_802_001, RangeError, /retainMs .*\(got 604802001\)$/],
    ['5000', TypeError, /^TicketKeyRing: retainMs must be a number of milliseconds, not string$/],
    [undefined, TypeError, /^TicketKeyRing: retainMs must be a number of milliseconds, not undefined$/],
  ] as const) {
    assert.throws(() => ring.setRetainMs(value as never), (err: unknown) => err instanceof type && message.test((err as Error).message), String(value));
  }
  now += 2999;
  assert.equal(ring.open('t', sealed)?.toString(), 'x', 'the refused values changed nothing: still open at 2999 ms');
  ring.setRetainMs(10_000);
  now += 5000; // 7999 ms: past the old retention, within the new one
  assert.equal(ring.open('t', sealed)?.toString(), 'x', 'kept for the longer retention');
  ring.setRetainMs(5000);
  assert.equal(ring.open('t', sealed), undefined, 'retired at once by a shorter one');
});
