/**
 * A change whose manifest commit fails while keyd runs is reported failed and must stay
 * undone: a start adopts a record the manifest lacks and takes a missing one as deleted
 * (that is what a crash between the two steps leaves), so the record file has to be put
 * back as it was. The manifest is made unwritable by putting a directory in its place
 * (rename(2) onto a directory fails, also for root).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SoftwareKeyHandle, spkiOf } from '../../../src/keyd/key-handle.js';
import { SealedStore } from '../../../src/keyd/store.js';
import type { LoadedRoot } from '../../../src/keyd/root/root-key.js';
import { scratch } from '../fixtures.js';

function softwareKey(): SoftwareKeyHandle {
  return new SoftwareKeyHandle(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey);
}

async function setup() {
  const s = await scratch();
  const rootKey = randomBytes(32);
  const dataDir = join(s.dir, 'data');
  const root = (): LoadedRoot => ({ rootKey: Buffer.from(rootKey), kind: 'file', binding: 'test root', location: 'test', counter: undefined, created: false, tpm: undefined });
  const open = () => SealedStore.open({ dataDir, machineIdPath: s.machineIdPath, root: root() });
  return { s, open, manifest: join(dataDir, 'manifest.json') };
}

async function served(store: SealedStore): Promise<Record<string, string>> {
  const { keys, failures } = await store.loadKeys();
  assert.deepEqual(failures, []);
  return Object.fromEntries(keys.map((k) => [k.id, spkiOf(k.key.publicKey).toString('hex')]));
}

test('store: put, replace, delete and secret writes whose manifest commit fails leave nothing behind for the next start', async () => {
  const { s, open, manifest } = await setup();
  try {
    const store = await open();
    const ka1 = softwareKey();
    await store.putKey({ id: 'ka', names: ['a.test'], key: ka1, chain: [] });
    await store.putKey({ id: 'kb', names: ['b.test'], key: softwareKey(), chain: [] });
    await store.putSecret('provisioning-nonces', Buffer.from('{"n1":1}'));
    const before = await served(store);

    const saved = await readFile(manifest);
    await rm(manifest);
    await mkdir(manifest);
    const ka2 = softwareKey();
    await assert.rejects(store.putKey({ id: 'kc', names: ['c.test'], key: softwareKey(), chain: [] }), 'a new key');
    await assert.rejects(store.putKey({ id: 'ka', names: ['a.test'], key: ka2, chain: [] }), 'a replacement');
    await assert.rejects(store.deleteKey('kb'), 'a delete');
    await assert.rejects(store.putSecret('provisioning-nonces', Buffer.from('{"n1":1,"n2":2}')), 'a secret rewrite');
    await assert.rejects(store.putSecret('other-secret', Buffer.from('x')), 'a new secret');
    await rm(manifest, { recursive: true });
    await writeFile(manifest, saved);

    const reopened = await open();
    assert.deepEqual(reopened.guard.recovered, [], 'nothing adopted, nothing taken as deleted');
    assert.deepEqual(await served(reopened), before, 'ka with its first key, kb kept, no kc');
    assert.equal((await reopened.getSecret('provisioning-nonces'))!.toString(), '{"n1":1}');
    assert.equal(await reopened.getSecret('other-secret'), undefined);

    // Control: the same changes, with a writable manifest, stand after a restart.
    await reopened.putKey({ id: 'kc', names: ['c.test'], key: softwareKey(), chain: [] });
    await reopened.putKey({ id: 'ka', names: ['a.test'], key: ka2, chain: [] });
    await reopened.deleteKey('kb');
    await reopened.putSecret('provisioning-nonces', Buffer.from('{"n1":1,"n2":2}'));
    const again = await open();
    assert.deepEqual(again.guard.recovered, []);
    const after = await served(again);
    assert.deepEqual(Object.keys(after).sort(), ['ka', 'kc']);
    assert.equal(after.ka, spkiOf(ka2.publicKey).toString('hex'));
    assert.equal((await again.getSecret('provisioning-nonces'))!.toString(), '{"n1":1,"n2":2}');
  } finally {
    await s.cleanup();
  }
});
