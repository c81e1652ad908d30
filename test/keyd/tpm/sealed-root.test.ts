import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeydOptions, RunningKeyd } from '../../../src/keyd/daemon.js';
import { makeIdentity, scratch, startTestKeyd as startKeydOnce, LOCAL } from '../fixtures.js';

/** Every keyd started here, closed in `finally` even when an assertion failed (close is idempotent). */
const opened = new Set<RunningKeyd>();
async function startTestKeyd(dir: string, machineIdPath: string, extra: Partial<KeydOptions>): Promise<RunningKeyd> {
  const keyd = await startKeydOnce(dir, machineIdPath, extra);
  opened.add(keyd);
  return keyd;
}
async function closeAll(): Promise<void> {
  for (const keyd of opened) await keyd.close();
  opened.clear();
}
import { startSoftTpm, swtpmMissing } from './swtpm.js';

const skip = await swtpmMissing();

test('TPM root key: sealed on first start, unsealed at the next; the store moved to another TPM is refused and nothing is decrypted', { skip }, async () => {
  const s = await scratch();
  const tpmA = await startSoftTpm();
  const tpmB = await startSoftTpm();
  try {
    const sealed = join(s.dir, 'root.tpm');
    const rootKey = `tpm:sealed=${sealed}`;
    const id = await makeIdentity('ecdsa-p256', ['tpm.test']);
    let keyd = await startTestKeyd(s.dir, s.machineIdPath, { rootKey, config: { tpmTcti: tpmA.tcti } });
    assert.match(keyd.store.binding, /sealed by the TPM/);
    await keyd.adminService.put(LOCAL, ['tpm.test'], id.privateKey, id.chain);
    await keyd.close();

    // On disk: the sealed object (TPM-encrypted), its description, nothing else; no root key file.
    assert.deepEqual((await readdir(sealed)).sort(), ['root.json', 'root.priv', 'root.pub']);
    assert.equal((await stat(sealed)).mode & 0o777, 0o700);
    const pkcs8 = id.privateKey.export({ format: 'der', type: 'pkcs8' });
    for (const f of await readdir(join(s.dir, 'data', 'keys'))) {
      assert.equal((await readFile(join(s.dir, 'data', 'keys', f))).indexOf(pkcs8.subarray(-32)), -1);
    }

    // Positive control: same TPM, same store → the key is served.
    keyd = await startTestKeyd(s.dir, s.machineIdPath, { rootKey, config: { tpmTcti: tpmA.tcti } });
    assert.ok(keyd.keyring.lookup('tpm.test'));
    await keyd.close();

    // The data directory and the sealed root copied to a machine with another TPM.
    const stolen = join(s.dir, 'stolen');
    await cp(join(s.dir, 'data'), join(stolen, 'data'), { recursive: true });
    await cp(sealed, join(stolen, 'root.tpm'), { recursive: true });
    await assert.rejects(
      startTestKeyd(stolen, s.machineIdPath, { rootKey: `tpm:sealed=${join(stolen, 'root.tpm')}`, config: { tpmTcti: tpmB.tcti } }),
      (err: Error & { code: string }) => {
        assert.equal(err.code, 'KEYD_ROOT_KEY_OTHER_TPM');
        assert.match(err.message, /sealed by another TPM/);
        return true;
      },
    );
    // Nor does a root key *file* open it (the store was sealed under the TPM's root key).
    await assert.rejects(startTestKeyd(stolen, s.machineIdPath, { rootKey: join(stolen, 'guess.key') }), /KEYD_STORE_OTHER_ROOT_KEY|another root key/);
  } finally {
    await closeAll();
    await tpmA.stop();
    await tpmB.stop();
    await s.cleanup();
  }
});

test('TPM root key with a PCR policy: unsealed while the PCR holds, refused once it is extended, naming the PCR', { skip }, async () => {
  const s = await scratch();
  const tpm = await startSoftTpm();
  try {
    // PCR 16 is the debug PCR: resettable by a reboot of the TPM and free for tests.
    const rootKey = `tpm:sealed=${join(s.dir, 'root.tpm')},pcrs=sha256:16`;
    const id = await makeIdentity('ecdsa-p256', ['pcr.test']);
    let keyd = await startTestKeyd(s.dir, s.machineIdPath, { rootKey, config: { tpmTcti: tpm.tcti } });
    assert.match(keyd.store.binding, /PCR policy sha256:16/);
    await keyd.adminService.put(LOCAL, ['pcr.test'], id.privateKey, id.chain);
    await keyd.close();

    keyd = await startTestKeyd(s.dir, s.machineIdPath, { rootKey, config: { tpmTcti: tpm.tcti } });
    assert.ok(keyd.keyring.lookup('pcr.test'), 'positive control: PCR unchanged, key served');
    await keyd.close();

    await tpm.tool('tpm2_pcrextend', [`16:sha256=${'ab'.repeat(32)}`]);
    await assert.rejects(startTestKeyd(s.dir, s.machineIdPath, { rootKey, config: { tpmTcti: tpm.tcti } }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY_PCR_MISMATCH');
      assert.match(err.message, /sha256 PCR 16 changed since sealing/);
      return true;
    });

    // A TPM reset (reboot) brings PCR 16 back to its sealed value: unsealed again.
    await tpm.restart();
    keyd = await startTestKeyd(s.dir, s.machineIdPath, { rootKey, config: { tpmTcti: tpm.tcti } });
    assert.ok(keyd.keyring.lookup('pcr.test'));
    await keyd.close();

    // Asking for another policy than the one it was sealed with is refused before the TPM is asked.
    await assert.rejects(
      startTestKeyd(s.dir, s.machineIdPath, { rootKey: `tpm:sealed=${join(s.dir, 'root.tpm')},pcrs=sha256:15`, config: { tpmTcti: tpm.tcti } }),
      /sealed to PCR policy sha256:16, not sha256:15/,
    );
  } finally {
    await closeAll();
    await tpm.stop();
    await s.cleanup();
  }
});

test('--root-key tpm options are checked, and the sealed root may not live in the data directory', async () => {
  const { parseRootKeySpec } = await import('../../../src/keyd/root/root-key.js');
  assert.deepEqual(parseRootKeySpec('tpm:pcrs=sha256:7+0,counter=none', 'x'), { kind: 'tpm', sealedDir: undefined, pcrs: { bank: 'sha256', pcrs: [0, 7] }, counterIndex: null, tcti: 'x' });
  assert.deepEqual(parseRootKeySpec('/k'), { kind: 'file', path: '/k' });
  assert.deepEqual(parseRootKeySpec('file:tpm'), { kind: 'file', path: 'tpm' });
  assert.throws(() => parseRootKeySpec('tpm:pcrs=sha256:24'), /0 to 23/);
  assert.throws(() => parseRootKeySpec('tpm:pcr=sha256:1'), /unknown --root-key tpm option "pcr"/);
  assert.throws(() => parseRootKeySpec('tpm:counter=0x81000001'), /not an NV index/);
  const s = await scratch();
  try {
    await assert.rejects(startTestKeyd(s.dir, s.machineIdPath, { rootKey: `tpm:sealed=${join(s.dir, 'data', 'root')}` }), /must live outside the data directory/);
  } finally {
    await closeAll();
    await s.cleanup();
  }
});
