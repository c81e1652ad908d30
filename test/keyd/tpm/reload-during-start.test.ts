/**
 * A SIGHUP that reaches `delegator keyd` while it starts (here: sealing its root key in a
 * TPM, which takes seconds) is held and applied once keyd runs; before, Node's default
 * action for SIGHUP killed keyd, and the systemd unit reloads with `kill -HUP $MAINPID`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTool } from '../../helpers/tools.js';
import { MAIN } from '../../edge/system.js';
import { scratch } from '../fixtures.js';
import { startSoftTpm, swtpmMissing } from './swtpm.js';

const skip = await swtpmMissing();

test('delegator keyd: a SIGHUP while the TPM root key is being prepared is held, then reloads the grants once keyd has started', { skip, timeout: 120_000 }, async (t) => {
  const s = await scratch();
  t.after(() => s.cleanup());
  const tpm = await startSoftTpm();
  t.after(() => tpm.stop());
  const configPath = join(s.dir, 'keyd.json');
  await writeFile(configPath, JSON.stringify({ tpmTcti: tpm.tcti, clients: { 'CN=edge-1': ['a.test'] } }));
  const keyd = startTool(t, process.execPath, [
    MAIN, 'keyd', '--data', join(s.dir, 'data'), '--root-key', `tpm:sealed=${join(s.dir, 'root.tpm')}`, '--socket', join(s.dir, 'k.sock'),
    '--admin-socket', join(s.dir, 'a.sock'), '--config', configPath, '--machine-id', s.machineIdPath,
  ], { timeoutMs: 100_000 });
  await keyd.waitFor('keyd starting', 30_000);
  // Freeze keyd where it is: if it has not said "keyd started" yet, the SIGHUP below is
  // delivered (on SIGCONT) while it is still starting.
  keyd.child.kill('SIGSTOP');
  await new Promise((r) => setTimeout(r, 100)); // let what it wrote reach us
  assert.doesNotMatch(keyd.stderr, /keyd started/, 'keyd is still starting (the TPM work takes seconds)');
  // Replaced whole (rename), as config tools do: keyd may have stopped between the fstat and
  // the read of its own config read, which an in-place rewrite would cut short.
  await writeFile(`${configPath}.new`, JSON.stringify({ tpmTcti: tpm.tcti, clients: { 'CN=edge-1': ['a.test', 'b.test'], 'CN=edge-2': ['c.test'] } }));
  await rename(`${configPath}.new`, configPath);
  keyd.child.kill('SIGHUP');
  keyd.child.kill('SIGCONT');

  await keyd.waitFor('keyd started', 60_000);
  await keyd.waitFor('keyd reloaded its grants', 20_000);
  assert.match(keyd.stderr, /a SIGHUP arrived while keyd was starting/);
  assert.match(keyd.stderr.slice(keyd.stderr.indexOf('keyd reloaded its grants') - 300), /"clients":2/);
  assert.equal(keyd.child.exitCode, null, 'still running');
  assert.equal(keyd.child.signalCode, null);

  // Control: a SIGHUP once started reloads as before (no held signal replayed again).
  keyd.child.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(keyd.stderr.split('a SIGHUP arrived while keyd was starting').length - 1, 1, 'the held SIGHUP is applied once');
  assert.equal(keyd.stderr.split('keyd reloaded its grants').length - 1, 2, 'a later SIGHUP reloads again');
  keyd.child.kill('SIGTERM');
  const [code] = await once(keyd.child, 'exit');
  assert.equal(code, 0);
});
