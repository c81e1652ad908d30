import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { AuditLog } from '../../../src/keyd/audit.js';
import type { KeydError } from '../../../src/keyd/errors.js';
import { makeIdentity, scratch, startTestKeyd, LOCAL } from '../fixtures.js';

// A small log that keeps one rotated file: a few dozen entries rotate it several times.
const config = { auditLog: { maxBytes: 4096, keep: 1 } };

test('audit rotation: a keyd whose keys do not change while its audit log rotates past "keep" files still starts, and erasure is still found', async () => {
  const s = await scratch();
  const id = await makeIdentity('ecdsa-p256', ['a.test']);
  let keyd = await startTestKeyd(s.dir, s.machineIdPath, { config });
  try {
    // Entries before the put, so that the put's commit pins an entry past the first.
    for (let i = 0; i < 3; i++) await keyd.adminService.list(LOCAL);
    await keyd.adminService.put(LOCAL, ['a.test'], id.privateKey, id.chain);
    const pinned = keyd.store.guard.committedAuditHead!.entries;
    assert.ok(pinned >= 3);
    // Audited calls that change no key (as `list`, `stats` or signing summaries are) fill several files.
    for (let i = 0; i < 80; i++) await keyd.adminService.list(LOCAL);
    assert.ok(keyd.store.guard.committedAuditHead!.entries > pinned, 'a rotation committed a newer head');
    await keyd.close();
    const files = (await readdir(join(s.dir, 'data'))).filter((f) => f.startsWith('audit.log'));
    assert.deepEqual(files.sort(), ['audit.log', 'audit.log.1'], 'only keep=1 rotated file is left');

    keyd = await startTestKeyd(s.dir, s.machineIdPath, { config });
    assert.ok(keyd.keyring.lookup('a.test'), 'the store opens and serves its key');
    await keyd.adminService.list(LOCAL);
    await keyd.close();

    // Control: the rotated file holding the committed entry removed is still refused.
    await rm(join(s.dir, 'data', 'audit.log.1'));
    await assert.rejects(startTestKeyd(s.dir, s.machineIdPath, { config }), (err: KeydError) => err.code === 'KEYD_AUDIT_ROLLED_BACK');
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('audit rotation waits while the manifest cannot record the head: the entry is kept, no file is dropped, the next append rotates', async () => {
  const s = await scratch();
  try {
    const dir = join(s.dir, 'data');
    await mkdir(dir);
    const path = join(dir, 'audit.log');
    let failing = true;
    let commits = 0;
    const log = await AuditLog.open(path, undefined, { maxBytes: 4096, keep: 1 }, async () => {
      if (failing) throw new Error('TPM busy');
      commits++;
    });
    const big = { op: 'list', caller: { kind: 'local' as const, id: 'x'.repeat(200) }, ok: true };
    for (let i = 0; i < 30; i++) await log.append(big);
    assert.deepEqual(await readdir(dir), ['audit.log'], 'no rotation while the commit fails');
    failing = false;
    await log.append(big);
    assert.equal(commits, 1);
    assert.deepEqual((await readdir(dir)).sort(), ['audit.log', 'audit.log.1']);
    assert.equal((await log.read({ limit: 1000 })).length, 31, 'every entry is kept');
    await log.close();
  } finally {
    await s.cleanup();
  }
});
