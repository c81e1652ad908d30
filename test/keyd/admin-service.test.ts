/**
 * AdminService (src/keyd/admin-service.ts): the rules every key change follows, whoever
 * asks (admin socket or provisioning listener). Each test drives the service of a real
 * keyd with a store on disk and checks the keyring and the store both.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LOCAL, makeIdentity, scratch, startTestKeyd } from './fixtures.js';

async function withKeyd(body: (keyd: Awaited<ReturnType<typeof startTestKeyd>>) => Promise<void>): Promise<void> {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath);
  try {
    await body(keyd);
  } finally {
    await keyd.close();
    await s.cleanup();
  }
}

/** The key records on disk, as keyd would load them at its next start: id → names. */
async function stored(keyd: Awaited<ReturnType<typeof startTestKeyd>>): Promise<Map<string, string[]>> {
  const { keys, failures } = await keyd.adminService.store.loadKeys();
  assert.deepEqual(failures, []);
  return new Map(keys.map((k) => [k.id, [...k.names].sort()]));
}

test('delete of one name of a key serving several: the other names keep the key; the last name deletes it', { timeout: 30_000 }, () =>
  withKeyd(async (keyd) => {
    const id = await makeIdentity('ecdsa-p256', ['a.test', 'b.test']);
    const info = await keyd.adminService.put(LOCAL, ['a.test', 'b.test'], id.privateKey, id.chain);
    await keyd.adminService.delete(LOCAL, 'a.test');
    assert.equal(keyd.keyring.owner('a.test'), undefined);
    assert.equal(keyd.keyring.owner('b.test')?.id, info.keyRef);
    assert.deepEqual(await stored(keyd), new Map([[info.keyRef, ['b.test']]]));
    // The last name: the key goes from the keyring and the store.
    await keyd.adminService.delete(LOCAL, 'b.test');
    assert.equal(keyd.keyring.owner('b.test'), undefined);
    assert.deepEqual(await stored(keyd), new Map());
  }),
);

test('put needs 1 to 100 names: none or 101 are KEYD_BAD_NAME and change nothing', { timeout: 30_000 }, () =>
  withKeyd(async (keyd) => {
    const id = await makeIdentity('ecdsa-p256', ['n0.test']);
    await assert.rejects(keyd.adminService.put(LOCAL, [], id.privateKey, id.chain), { code: 'KEYD_BAD_NAME', message: 'at least one name is needed' });
    const many = Array.from({ length: 101 }, (_, i) => `n${i}.test`);
    await assert.rejects(keyd.adminService.put(LOCAL, many, id.privateKey, id.chain), { code: 'KEYD_BAD_NAME', message: 'at most 100 names per key' });
    assert.deepEqual(await stored(keyd), new Map());
    assert.deepEqual(keyd.keyring.entries(), []);
    // Control: 100 names are one key serving all of them.
    const info = await keyd.adminService.put(LOCAL, many.slice(0, 100), id.privateKey, id.chain);
    assert.equal((await stored(keyd)).get(info.keyRef)?.length, 100);
    assert.equal(keyd.keyring.owner('n99.test')?.id, info.keyRef);
  }),
);

test('changes are applied one at a time, in the order asked: concurrent puts of one name leave the last key; a delete waits for the put before it', { timeout: 60_000 }, () =>
  withKeyd(async (keyd) => {
    const ids = await Promise.all([0, 1, 2, 3].map(() => makeIdentity('ecdsa-p256', ['same.test'])));
    // Not awaited one by one: all four are in the service at once.
    const infos = await Promise.all(ids.map((id) => keyd.adminService.put(LOCAL, ['same.test'], id.privateKey, id.chain)));
    const last = infos[infos.length - 1]!.keyRef;
    assert.equal(keyd.keyring.owner('same.test')?.id, last);
    assert.deepEqual(keyd.keyring.entries().map((e) => e.id), [last]);
    // Each earlier key lost its only name to the next put and was deleted from the store.
    assert.deepEqual(await stored(keyd), new Map([[last, ['same.test']]]));
    // A delete asked right after a put waits for it: it deletes the key the put installed,
    // rather than finding no key for the name because the put has not reached the keyring.
    const next = await makeIdentity('ecdsa-p256', ['then.test']);
    const put = keyd.adminService.put(LOCAL, ['then.test'], next.privateKey, next.chain);
    const deleted = keyd.adminService.delete(LOCAL, 'then.test');
    await put;
    await deleted;
    assert.equal(keyd.keyring.owner('then.test'), undefined);
    assert.deepEqual(await stored(keyd), new Map([[last, ['same.test']]]));
  }),
);
