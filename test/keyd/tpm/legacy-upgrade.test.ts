import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import type { RunningKeyd } from '../../../src/keyd/daemon.js';
import { loadOrSealRootKey } from '../../../src/keyd/tpm/sealed-root.js';
import { TpmNvCounter, DEFAULT_NV_INDEX } from '../../../src/keyd/tpm/nv-counter.js';
import { makeIdentity, scratch, startTestKeyd, LOCAL } from '../fixtures.js';
import { startSoftTpm, swtpmMissing } from './swtpm.js';

// A store from before manifests (store.json format 1) is upgraded at its first start with
// a TPM counter: it gets a manifest bound to the counter, then store.json format 2. An
// older copy of it from before that upgrade — a backup — is still a genuine format-1
// store: restored later it must not be bound afresh to the counter's current value, which
// would let a whole-store rollback through (docs/KEYD.md "Rollback protection").
const skip = await swtpmMissing();

test('a pre-manifest copy of a TPM store restored after its upgrade is refused with KEYD_STORE_ROLLED_BACK; the upgrade itself, and one interrupted before store.json was rewritten, open (controls)', { skip, timeout: 180_000 }, async () => {
  const s = await scratch();
  const tpm = await startSoftTpm();
  const opened: RunningKeyd[] = [];
  const sealedDir = join(s.dir, 'root.tpm');
  const start = async (rootKey = `tpm:sealed=${sealedDir}`) => {
    const keyd = await startTestKeyd(s.dir, s.machineIdPath, { rootKey, config: { tpmTcti: tpm.tcti } });
    opened.push(keyd);
    return keyd;
  };
  const data = join(s.dir, 'data');
  const metaPath = join(data, 'store.json');
  try {
    // A store without a counter, made into what a store from before manifests looks like:
    // store.json format 1 (its check under format 1's label, made with the root key), no manifest.
    const a = await makeIdentity('ecdsa-p256', ['a.test']);
    let keyd = await start(`tpm:sealed=${sealedDir},counter=none`);
    await keyd.adminService.put(LOCAL, ['a.test'], a.privateKey, a.chain);
    await keyd.close();
    const { rootKey } = await loadOrSealRootKey({ tcti: tpm.tcti, sealedDir });
    const format1 = async () => {
      const meta = JSON.parse(await readFile(metaPath, 'utf8'));
      const check = createHmac('sha256', rootKey).update('keyd root key check\0').update(Buffer.from(meta.salt, 'base64')).digest('hex');
      await writeFile(metaPath, JSON.stringify({ ...meta, format: 1, rootKeyCheck: check }));
    };
    await format1();
    await rm(join(data, 'manifest.json'));
    const backup = join(s.dir, 'backup');
    await cp(data, backup, { recursive: true });

    // Control: the upgrade, the counter not yet defined on this TPM.
    const counter = new TpmNvCounter({ tcti: tpm.tcti }, DEFAULT_NV_INDEX);
    assert.equal(await counter.readOptional(), undefined);
    keyd = await start();
    assert.ok(keyd.keyring.lookup('a.test'));
    assert.equal(keyd.store.guard.hasCounter, true);
    await keyd.close();
    assert.equal(JSON.parse(await readFile(metaPath, 'utf8')).format, 2);

    // Control: an upgrade interrupted after its manifest, before store.json was rewritten.
    await format1();
    keyd = await start();
    assert.ok(keyd.keyring.lookup('a.test'));
    await keyd.close();
    assert.equal(JSON.parse(await readFile(metaPath, 'utf8')).format, 2);

    // The upgraded store changes: a.test deleted.
    keyd = await start();
    await keyd.adminService.delete(LOCAL, 'a.test');
    await keyd.close();
    const current = join(s.dir, 'current');
    await cp(data, current, { recursive: true });
    const before = await counter.read();

    // The attack: the pre-manifest backup restored.
    await rm(data, { recursive: true });
    await cp(backup, data, { recursive: true });
    await assert.rejects(start(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_STORE_ROLLED_BACK', err.message);
      assert.match(err.message, /is a store from before manifests \(store\.json format 1\), but TPM NV counter 0x01504b44 is already in use on this TPM/);
      return true;
    });
    assert.equal(await counter.read(), before, 'the refused start did not move the counter');
    assert.equal(JSON.parse(await readFile(metaPath, 'utf8')).format, 1, 'nor rewrite store.json');

    // The backup's records with the current manifest kept: checked against it, a.test is refused as deleted.
    await cp(join(current, 'manifest.json'), join(data, 'manifest.json'));
    keyd = await start();
    assert.equal(keyd.keyring.lookup('a.test'), undefined);
    assert.deepEqual(keyd.refusedRecords.map((e) => e.code), ['KEYD_RECORD_DELETED']);
    await keyd.close();

    // The current store still opens.
    await rm(data, { recursive: true });
    await cp(current, data, { recursive: true });
    keyd = await start();
    assert.deepEqual(keyd.refusedRecords, []);
    await keyd.close();
  } finally {
    for (const keyd of opened) await keyd.close();
    await tpm.stop();
    await s.cleanup();
  }
});
