import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SoftwareKeyHandle } from '../../../src/keyd/key-handle.js';
import { SealedStore } from '../../../src/keyd/store.js';
import { makeIdentity, scratch, startTestKeyd, LOCAL } from '../fixtures.js';

/**
 * A put that takes a name from a key writes the new record first, then trims the name from
 * the old record (admin-service.ts install). Killed in between, the disk holds both
 * records claiming the name: the state written here with the store, as the crash leaves it.
 */
test('a put interrupted before trimming the old record: the start finishes it, so deleting the name later does not bring the replaced key back', async () => {
  const s = await scratch();
  try {
    const old = await makeIdentity('ecdsa-p256', ['x.test', 'y.test']);
    const replacement = await makeIdentity('ecdsa-p256', ['x.test']);
    const other = await makeIdentity('ecdsa-p256', ['z.test']);
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    await store.putKey({ id: 'kold', names: ['x.test', 'y.test'], key: new SoftwareKeyHandle(old.privateKey), chain: old.chain });
    await store.putKey({ id: 'kother', names: ['z.test'], key: new SoftwareKeyHandle(other.privateKey), chain: other.chain });
    // The interrupted put: its new record, with a higher sequence number, and nothing after.
    await store.putKey({ id: 'knew', names: ['x.test'], key: new SoftwareKeyHandle(replacement.privateKey), chain: replacement.chain });

    let keyd = await startTestKeyd(s.dir, s.machineIdPath);
    try {
      assert.equal(keyd.keyring.owner('x.test')?.id, 'knew', 'the newer put owns the name');
      assert.equal(keyd.keyring.owner('y.test')?.id, 'kold');
    } finally {
      // Closed when an assertion fails too: a keyd left open keeps the test file from ending.
      await keyd.close();
    }
    const onDisk = new Map((await (await SealedStore.open(opts)).loadKeys()).keys.map((k) => [k.id, k]));
    assert.deepEqual(onDisk.get('kold')!.names, ['y.test'], 'the old record no longer claims the name taken from it');
    assert.equal(onDisk.get('kother')!.version, 1, 'control: a record nobody took a name from is not rewritten');

    keyd = await startTestKeyd(s.dir, s.machineIdPath);
    await keyd.adminService.delete(LOCAL, 'x.test');
    await keyd.close();
    keyd = await startTestKeyd(s.dir, s.machineIdPath);
    try {
      assert.equal(keyd.keyring.owner('x.test'), undefined, 'the deleted name stays deleted: the replaced key does not serve it again');
      assert.equal(keyd.keyring.owner('y.test')?.id, 'kold', 'control: the old key keeps the name nobody took');
      assert.equal(keyd.keyring.owner('z.test')?.id, 'kother');
      assert.deepEqual(keyd.refusedRecords, []);
    } finally {
      await keyd.close();
    }
  } finally {
    await s.cleanup();
  }
});
