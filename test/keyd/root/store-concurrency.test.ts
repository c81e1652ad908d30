import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { SoftwareKeyHandle } from '../../../src/keyd/key-handle.js';
import { SealedStore } from '../../../src/keyd/store.js';
import type { LoadedRoot, RootCounter } from '../../../src/keyd/root/root-key.js';
import { scratch } from '../fixtures.js';

/** A monotonic counter that, like tpm2_nvincrement run as a child process, answers later. */
class AsyncCounter implements RootCounter {
  readonly description = 'test counter';
  value = 100n;
  async read(): Promise<bigint> {
    return this.value;
  }
  async readOptional(): Promise<bigint | undefined> {
    return this.value;
  }
  async increment(): Promise<bigint> {
    await new Promise((resolve) => setImmediate(resolve));
    return ++this.value;
  }
  async create(): Promise<bigint> {
    return this.increment();
  }
}

function softwareKey(): SoftwareKeyHandle {
  return new SoftwareKeyHandle(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey);
}

async function setup(counter: RootCounter | undefined) {
  const s = await scratch();
  const rootKey = randomBytes(32);
  // SealedStore.open zeroes the root key it is given: each open gets its own copy.
  const root = (): LoadedRoot => ({ rootKey: Buffer.from(rootKey), kind: counter ? 'tpm' : 'file', binding: 'test root', location: 'test', counter, created: false, tpm: undefined });
  const open = () => SealedStore.open({ dataDir: join(s.dir, 'data'), machineIdPath: s.machineIdPath, root: root() });
  return { s, open };
}

test('store: a key change and a secret change at once (an admin put while provisioning saves its nonce store), with a TPM counter: both commit, the store reopens', async () => {
  const counter = new AsyncCounter();
  const { s, open } = await setup(counter);
  try {
    const store = await open();
    const start = counter.value;
    await Promise.all([
      store.putKey({ id: 'ka', names: ['a.test'], key: softwareKey(), chain: [] }),
      store.putSecret('provisioning-nonces', Buffer.from('{"n1":1}')),
      store.putSecret('provisioning-nonces', Buffer.from('{"n1":1,"n2":2}')),
    ]);
    assert.equal(counter.value, start + 3n, 'one counter value per change');
    assert.equal(store.guard.expected('key', 'ka').version, 1, 'the key change is in the manifest');
    assert.equal(store.guard.expected('secret', 'provisioning-nonces').version, 2, 'each secret write got its own version');

    const reopened = await open();
    assert.deepEqual(reopened.guard.recovered, [], 'nothing to recover: every change was committed');
    const { keys, failures } = await reopened.loadKeys();
    assert.deepEqual(failures, []);
    assert.deepEqual(keys.map((k) => k.id), ['ka']);
    assert.equal((await reopened.getSecret('provisioning-nonces'))!.toString(), '{"n1":1,"n2":2}', 'the last write called is the one kept');
  } finally {
    await s.cleanup();
  }
});

test('store: concurrent changes without a counter: the manifest holds every one (none overwritten by another built from the same state)', async () => {
  const { s, open } = await setup(undefined);
  try {
    const store = await open();
    await store.putKey({ id: 'kb', names: ['b.test'], key: softwareKey(), chain: [] });
    const before = store.guard.sequence;
    await Promise.all([
      store.putKey({ id: 'ka', names: ['a.test'], key: softwareKey(), chain: [] }),
      store.deleteKey('kb'),
      store.putSecret('provisioning-nonces', Buffer.from('{}')),
    ]);
    assert.equal(store.guard.sequence, before + 3);
    assert.equal(store.guard.expected('key', 'ka').version, 1);
    assert.deepEqual(store.guard.expected('key', 'kb'), { deleted: 1 }, 'the tombstone is kept');
    assert.equal(store.guard.expected('secret', 'provisioning-nonces').version, 1);
    const reopened = await open();
    assert.deepEqual(reopened.guard.recovered, []);
  } finally {
    await s.cleanup();
  }
});

test('store (control): one change after another commits each in turn, and a rolled-back counter is still refused', async () => {
  const counter = new AsyncCounter();
  const { s, open } = await setup(counter);
  try {
    const store = await open();
    await store.putKey({ id: 'ka', names: ['a.test'], key: softwareKey(), chain: [] });
    await store.putSecret('provisioning-nonces', Buffer.from('{}'));
    assert.equal(store.guard.expected('key', 'ka').version, 1);
    assert.equal(store.guard.expected('secret', 'provisioning-nonces').version, 1);
    await open();
    counter.value += 1n;
    await assert.rejects(open(), (err: Error & { code?: string }) => err.code === 'KEYD_STORE_ROLLED_BACK');
  } finally {
    await s.cleanup();
  }
});
