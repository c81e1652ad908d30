import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeydOptions, RunningKeyd } from '../../../src/keyd/daemon.js';
import { makeIdentity, scratch, startTestKeyd, LOCAL } from '../fixtures.js';
import { startSoftTpm, swtpmMissing, type SoftTpm } from '../tpm/swtpm.js';

const skip = await swtpmMissing();

interface Setup {
  dir: string;
  machineIdPath: string;
  extra: Partial<KeydOptions>;
}

function tpmSetup(dir: string, machineIdPath: string, tpm: SoftTpm): Setup {
  return { dir, machineIdPath, extra: { rootKey: `tpm:sealed=${join(dir, 'root.tpm')}`, config: { tpmTcti: tpm.tcti } } };
}

/** Every keyd a test started, closed in its `finally` even when an assertion failed (close is idempotent). */
const opened = new Set<RunningKeyd>();
async function start(s: Setup): Promise<RunningKeyd> {
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, s.extra);
  opened.add(keyd);
  return keyd;
}
async function closeAll(): Promise<void> {
  for (const keyd of opened) await keyd.close();
  opened.clear();
}

test('TPM counter: a restored old record, a resurrected deleted record, a rolled-back nonce store and a whole-store rollback are each refused at start, by name', { skip }, async () => {
  const s = await scratch();
  const tpm = await startSoftTpm();
  try {
    const setup = tpmSetup(s.dir, s.machineIdPath, tpm);
    const data = join(s.dir, 'data');
    const a = await makeIdentity('ecdsa-p256', ['a.test']);
    const b = await makeIdentity('ecdsa-p256', ['b.test']);
    const a2 = await makeIdentity('ecdsa-p256', ['a.test'], undefined, { subject: 'CN=a.test v2' });

    let keyd = await start(setup);
    const infoA = await keyd.adminService.put(LOCAL, ['a.test'], a.privateKey, a.chain);
    const infoB = await keyd.adminService.put(LOCAL, ['b.test'], b.privateKey, b.chain);
    await keyd.store.putSecret('provisioning-nonces', Buffer.from('{"old":1}'));
    await keyd.close();
    const snapshot = join(s.dir, 'snapshot');
    await cp(data, snapshot, { recursive: true });
    const recordA = keyd.store.keyRecordPath(infoA.keyRef);
    const recordB = keyd.store.keyRecordPath(infoB.keyRef);
    const oldA = await readFile(recordA);
    const oldB = await readFile(recordB);
    const oldNonces = await readFile(join(data, 'secrets', 'provisioning-nonces.rec'));

    keyd = await start(setup);
    await keyd.adminService.setChain(LOCAL, 'a.test', a.chain); // record a: version 2
    await keyd.adminService.delete(LOCAL, 'b.test'); // record b: tombstone
    await keyd.store.putSecret('provisioning-nonces', Buffer.from('{"new":1}'));
    await keyd.close();

    // Positive control: the current store starts with nothing refused.
    keyd = await start(setup);
    assert.deepEqual(keyd.refusedRecords, []);
    assert.ok(keyd.keyring.lookup('a.test'));
    assert.equal(keyd.keyring.lookup('b.test'), undefined);
    await keyd.close();

    // 1. A restored old copy of record a.
    await writeFile(recordA, oldA);
    keyd = await start(setup);
    assert.equal(keyd.keyring.lookup('a.test'), undefined, 'the rolled-back record is not served');
    assert.equal(keyd.refusedRecords.length, 1);
    assert.equal(keyd.refusedRecords[0]!.code, 'KEYD_RECORD_ROLLED_BACK');
    assert.match(keyd.refusedRecords[0]!.message, new RegExp(`key record ${infoA.keyRef} \\(names a.test\\) is version 1 but the manifest says version 2`));
    // A new put of the name is still possible, and is served.
    await keyd.adminService.put(LOCAL, ['a.test'], a2.privateKey, a2.chain);
    assert.ok(keyd.keyring.lookup('a.test'));
    await keyd.close();

    // 2. The deleted record b brought back.
    await writeFile(recordB, oldB);
    keyd = await start(setup);
    assert.equal(keyd.keyring.lookup('b.test'), undefined, 'the deleted record is not served');
    const deleted = keyd.refusedRecords.find((e) => e.code === 'KEYD_RECORD_DELETED');
    assert.ok(deleted, JSON.stringify(keyd.refusedRecords.map((e) => e.message)));
    assert.match(deleted.message, new RegExp(`key record ${infoB.keyRef} \\(names b.test\\) was deleted`));
    await keyd.close();
    await rm(recordB);
    await rm(recordA, { force: true });

    // 3. The nonce store rolled back: keyd refuses to start (a replay would get through).
    const nonces = join(data, 'secrets', 'provisioning-nonces.rec');
    const currentNonces = await readFile(nonces);
    await writeFile(nonces, oldNonces);
    await assert.rejects(start(setup), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_RECORD_ROLLED_BACK');
      assert.match(err.message, /secret provisioning-nonces is version 1 but the manifest says version 2/);
      return true;
    });
    await writeFile(nonces, currentNonces);

    // 4. The whole data directory replaced by the older snapshot (manifest included).
    const current = join(s.dir, 'current');
    await cp(data, current, { recursive: true });
    await rm(data, { recursive: true });
    await cp(snapshot, data, { recursive: true });
    await assert.rejects(start(setup), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_STORE_ROLLED_BACK');
      assert.match(err.message, /was rolled back: its manifest commits change \d+ of TPM NV counter 0x01504b44, but the counter is at \d+/);
      return true;
    });
    // And the current one still starts: nothing was lost by the refused attempts.
    await rm(data, { recursive: true });
    await cp(current, data, { recursive: true });
    keyd = await start(setup);
    assert.ok(keyd.keyring.lookup('a.test'));
    assert.deepEqual((await keyd.store.getSecret('provisioning-nonces'))?.toString(), '{"new":1}');
    await keyd.close();
  } finally {
    await closeAll();
    await tpm.stop();
    await s.cleanup();
  }
});

test('the audit log must still hold the entry the manifest committed: erased or rewritten entries are refused', async () => {
  const s = await scratch();
  try {
    const setup: Setup = { dir: s.dir, machineIdPath: s.machineIdPath, extra: {} };
    const a = await makeIdentity('ecdsa-p256', ['a.test']);
    let keyd = await start(setup);
    await keyd.adminService.put(LOCAL, ['a.test'], a.privateKey, a.chain);
    await keyd.adminService.delete(LOCAL, 'a.test');
    await keyd.adminService.put(LOCAL, ['a.test'], a.privateKey, a.chain);
    await keyd.close();
    const auditPath = join(s.dir, 'data', 'audit.log');
    const original = await readFile(auditPath, 'utf8');
    const lines = original.trimEnd().split('\n');
    assert.ok(lines.every((l) => /"n":\d+,"chain":"[0-9a-f]{64}"\}$/.test(l)));

    keyd = await start(setup); // positive control
    await keyd.close();
    const withStart = await readFile(auditPath, 'utf8');

    // The delete entry rewritten as a harmless "list".
    const deleteLine = lines.findIndex((l) => l.includes('"op":"delete"'));
    const edited = lines.map((l, i) => (i === deleteLine ? l.replace('"op":"delete"', '"op":"list"') : l));
    await writeFile(auditPath, edited.join('\n') + '\n');
    await assert.rejects(start(setup), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_AUDIT_TAMPERED');
      assert.match(err.message, new RegExp(`line ${deleteLine + 1}|line ${deleteLine + 2}|entry`));
      return true;
    });

    // The log cut back to before the delete.
    await writeFile(auditPath, lines.slice(0, deleteLine).join('\n') + '\n');
    await assert.rejects(start(setup), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_AUDIT_ROLLED_BACK');
      assert.match(err.message, /the store manifest committed entry \d+: audit entries were erased/);
      return true;
    });
    // The log removed altogether (no rotated file holds the committed entry).
    await rm(auditPath);
    await assert.rejects(start(setup), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_AUDIT_ROLLED_BACK');
      assert.match(err.message, /is empty and no rotated file holds entry \d+/);
      return true;
    });
    // Rotated away (renamed to audit.log.1, a fresh audit.log): the chain continues across files.
    await writeFile(join(s.dir, 'data', 'audit.log.1'), withStart);
    keyd = await start(setup);
    await keyd.adminService.delete(LOCAL, 'a.test');
    // The next commit pins the delete's audit entry (a commit records the head before its own entry).
    await keyd.adminService.put(LOCAL, ['a.test'], a.privateKey, a.chain);
    await keyd.close();
    const continued = (await readFile(auditPath, 'utf8')).trimEnd().split('\n');
    const lastRotated = withStart.trimEnd().split('\n').at(-1)!;
    assert.equal(JSON.parse(continued[0]!).n, JSON.parse(lastRotated).n + 1, 'numbering continues in the new file');
    keyd = await start(setup); // and the next start accepts the two files as one chain
    await keyd.close();
    await rm(join(s.dir, 'data', 'audit.log.1'));
    await rm(auditPath);
    // Both files replaced by the old log: the delete entry is gone.
    await writeFile(auditPath, withStart);
    await assert.rejects(start(setup), /KEYD_AUDIT_ROLLED_BACK|erased/);
  } finally {
    await closeAll();
    await s.cleanup();
  }
});

test('without a TPM: single-record rollback and resurrection are refused; a whole-store rollback is not detectable, and keyd says so', async () => {
  const s = await scratch();
  try {
    const setup: Setup = { dir: s.dir, machineIdPath: s.machineIdPath, extra: {} };
    const data = join(s.dir, 'data');
    const a = await makeIdentity('ecdsa-p256', ['a.test']);
    const b = await makeIdentity('ecdsa-p256', ['b.test']);
    let keyd = await start(setup);
    assert.match(keyd.store.binding, /root key in the file .*root\.key \(a copy of that file and the data directory opens every key/);
    assert.equal(keyd.store.guard.hasCounter, false);
    const infoA = await keyd.adminService.put(LOCAL, ['a.test'], a.privateKey, a.chain);
    const infoB = await keyd.adminService.put(LOCAL, ['b.test'], b.privateKey, b.chain);
    await keyd.close();
    const snapshot = join(s.dir, 'snapshot');
    await cp(data, snapshot, { recursive: true });
    const oldA = await readFile(keyd.store.keyRecordPath(infoA.keyRef));
    const oldB = await readFile(keyd.store.keyRecordPath(infoB.keyRef));

    keyd = await start(setup);
    await keyd.adminService.setChain(LOCAL, 'a.test', a.chain);
    await keyd.adminService.delete(LOCAL, 'b.test');
    await keyd.close();
    await writeFile(keyd.store.keyRecordPath(infoA.keyRef), oldA);
    await writeFile(keyd.store.keyRecordPath(infoB.keyRef), oldB);
    keyd = await start(setup);
    assert.deepEqual(keyd.refusedRecords.map((e) => e.code).sort(), ['KEYD_RECORD_DELETED', 'KEYD_RECORD_ROLLED_BACK']);
    assert.equal(keyd.keyring.size, 0);
    await keyd.close();

    // The whole directory, manifest included, from the snapshot: consistent, so it starts.
    await rm(data, { recursive: true });
    await cp(snapshot, data, { recursive: true });
    keyd = await start(setup);
    assert.ok(keyd.keyring.lookup('b.test'), 'a whole-store rollback without a counter is not detected (documented)');
    await keyd.close();

    // The manifest removed from a store created with one: refused (cannot check history).
    await rm(join(data, 'manifest.json'));
    await assert.rejects(start(setup), /KEYD_MANIFEST_MISSING|has no manifest\.json/);
    await copyFile(join(snapshot, 'manifest.json'), join(data, 'manifest.json'));
  } finally {
    await closeAll();
    await s.cleanup();
  }
});

test('a secret deleted and written again gets a version above its tombstone: a copy from before the delete is refused at start, not adopted as newer', async () => {
  const s = await scratch();
  try {
    const setup: Setup = { dir: s.dir, machineIdPath: s.machineIdPath, extra: {} };
    const recordPath = join(s.dir, 'data', 'secrets', 'test-secret.rec');
    let keyd = await start(setup);
    await keyd.store.putSecret('test-secret', Buffer.from('first'));
    await keyd.store.putSecret('test-secret', Buffer.from('second')); // version 2
    const beforeDelete = await readFile(recordPath);
    await keyd.store.deleteSecret('test-secret'); // tombstone: version 2
    await keyd.store.putSecret('test-secret', Buffer.from('after')); // version 3, not 1
    await keyd.close();

    keyd = await start(setup); // positive control
    assert.equal((await keyd.store.getSecret('test-secret'))?.toString(), 'after');
    await keyd.close();

    // The copy from before the delete put back: version 2 is older than the manifest's 3.
    await writeFile(recordPath, beforeDelete);
    await assert.rejects(start(setup), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_RECORD_ROLLED_BACK');
      assert.match(err.message, /^secret test-secret is version 2 but the manifest says version 3: an older copy was restored; not served$/);
      return true;
    });
  } finally {
    await closeAll();
    await s.cleanup();
  }
});
