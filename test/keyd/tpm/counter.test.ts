import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { RunningKeyd } from '../../../src/keyd/daemon.js';
import { makeIdentity, scratch, startTestKeyd, LOCAL } from '../fixtures.js';
import { startSoftTpm, swtpmMissing } from './swtpm.js';

// The rollback counter taken away (docs/KEYD.md "Rollback protection", "the counter gone
// from the TPM"): someone who can send commands to the TPM undefines keyd's NV index, or
// undefines and defines it again without incrementing it. Either way keyd refuses the
// store with KEYD_COUNTER_MISSING, not a generic TPM failure.
const skip = await swtpmMissing();
const INDEX = '0x01504b44';

test('the NV counter undefined, or defined again and never incremented: keyd refuses to start with KEYD_COUNTER_MISSING; with the counter in place it starts (control)', { skip, timeout: 120_000 }, async () => {
  const s = await scratch();
  const tpm = await startSoftTpm();
  const opened: RunningKeyd[] = [];
  const start = async () => {
    const keyd = await startTestKeyd(s.dir, s.machineIdPath, { rootKey: `tpm:sealed=${join(s.dir, 'root.tpm')}`, config: { tpmTcti: tpm.tcti } });
    opened.push(keyd);
    return keyd;
  };
  const refusedAsMissing = (err: Error & { code?: string }) => {
    assert.equal(err.code, 'KEYD_COUNTER_MISSING', err.message);
    assert.match(err.message, new RegExp(`bound to TPM NV counter ${INDEX} at \\d+, which this TPM does not have`));
    return true;
  };
  try {
    const id = await makeIdentity('ecdsa-p256', ['counter.test']);
    let keyd = await start();
    await keyd.adminService.put(LOCAL, ['counter.test'], id.privateKey, id.chain);
    await keyd.close();
    // Control: the counter in place, the store opens and serves.
    keyd = await start();
    assert.ok(keyd.keyring.lookup('counter.test'));
    await keyd.close();

    await tpm.tool('tpm2_nvundefine', [INDEX, '-C', 'o']);
    await assert.rejects(start(), refusedAsMissing);

    await tpm.tool('tpm2_nvdefine', [INDEX, '-C', 'o', '-s', '8', '-a', 'ownerread|ownerwrite|nt=counter']);
    await assert.rejects(start(), refusedAsMissing);
  } finally {
    for (const keyd of opened) await keyd.close();
    await tpm.stop();
    await s.cleanup();
  }
});
