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
