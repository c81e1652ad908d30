import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalAdminTransport } from '../../../src/keyd/admin-client.js';
import type { KeydOptions, RunningKeyd } from '../../../src/keyd/daemon.js';
import { makeIdentity, scratch, startTestKeyd as startKeydOnce, LOCAL, type TestIdentity } from '../fixtures.js';

/** Every keyd started here, closed in `finally` even when an assertion failed (close is idempotent). */
const opened = new Set<RunningKeyd>();
async function startTestKeyd(dir: string, machineIdPath: string, extra: Partial<KeydOptions>): Promise<RunningKeyd> {
  const keyd = await startKeydOnce(dir, machineIdPath, extra);
  opened.add(keyd);
  return keyd;
}
import { startSoftTpm, swtpmMissing } from '../tpm/swtpm.js';

const skip = await swtpmMissing();
const CLI = fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url));

/**
 * kill -9 at every step of a committed change (DELEGATOR_TEST_CRASH_AT, src/keyd/root/crash-point.ts):
 * a keyd CLI process with a TPM root key and NV counter dies in the middle of a put of a
 * new name, a rotation (two commits: the new record, then trimming the old one) or a
 * delete; the next keyd must start, refuse nothing, and still serve every acknowledged key.
 */
const STEPS = ['record-written', 'manifest-written', 'counter-incremented', 'record-written:2', 'manifest-written:2', 'counter-incremented:2'] as const;
type Op = 'put-new' | 'rotate' | 'delete';
const OPS: Op[] = ['put-new', 'rotate', 'delete'];

/** Runs `delegator keyd` with a crash point, performs `op` over the admin socket, returns once it died. */
async function crashDuring(dir: string, machineIdPath: string, configPath: string, rootKey: string, step: string, op: Op, ids: Record<string, TestIdentity>): Promise<'killed' | 'completed'> {
  const child = spawn(
    process.execPath,
    [CLI, 'keyd', '--data', join(dir, 'data'), '--root-key', rootKey, '--config', configPath, '--socket', join(dir, 'sign.sock'), '--admin-socket', join(dir, 'admin.sock'), '--machine-id', machineIdPath],
    { env: { ...process.env, DELEGATOR_TEST_CRASH_AT: step }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('keyd started')) resolve();
    });
    child.on('exit', () => reject(new Error(`keyd exited before starting: ${stderr}`)));
  });
  const admin = await LocalAdminTransport.connect(join(dir, 'admin.sock'));
  let outcome: 'killed' | 'completed' = 'killed';
  try {
    if (op === 'put-new') await admin.put(['new.test'], ids.fresh!.privateKey, ids.fresh!.chain);
    if (op === 'rotate') await admin.put(['a.test'], ids.a2!.privateKey, ids.a2!.chain);
    if (op === 'delete') await admin.delete('b.test');
    outcome = 'completed'; // this op has fewer commits than the step's count
    child.kill('SIGTERM');
  } catch {
    // The connection died with keyd: not acknowledged.
  }
  const how = await exited;
  if (outcome === 'killed') assert.equal(how, 'SIGKILL', `keyd should have died at ${step}: ${stderr}`);
  return outcome;
}

test('kill -9 at every step of a put, a rotation and a delete (TPM counter): keyd starts, refuses nothing, loses nothing acknowledged', { skip, timeout: 600_000 }, async () => {
  const tpm = await startSoftTpm();
  const ids = {
    a: await makeIdentity('ecdsa-p256', ['a.test']),
    a2: await makeIdentity('ecdsa-p256', ['a.test'], undefined, { subject: 'CN=a.test rotated' }),
    b: await makeIdentity('ecdsa-p256', ['b.test']),
    fresh: await makeIdentity('ecdsa-p256', ['new.test']),
    after: await makeIdentity('ecdsa-p256', ['after.test']),
  };
  try {
    for (const op of OPS) {
      // Only a rotation has a second commit (trimming the old record).
      for (const step of STEPS.filter((st) => op === 'rotate' || !st.endsWith(':2'))) {
        const s = await scratch();
        try {
          const rootKey = `tpm:sealed=${join(s.dir, 'root.tpm')}`;
          const config = { tpmTcti: tpm.tcti };
          const configPath = join(s.dir, 'keyd.json');
          await writeFile(configPath, JSON.stringify(config));
          const extra: Partial<KeydOptions> = { rootKey, config };
          let keyd = await startTestKeyd(s.dir, s.machineIdPath, extra);
          await keyd.adminService.put(LOCAL, ['a.test'], ids.a.privateKey, ids.a.chain);
          await keyd.adminService.put(LOCAL, ['b.test'], ids.b.privateKey, ids.b.chain);
          await keyd.close();

          const outcome = await crashDuring(s.dir, s.machineIdPath, configPath, rootKey, step, op, ids);
          const where = `${op} killed at ${step} (${outcome})`;

          keyd = await startTestKeyd(s.dir, s.machineIdPath, extra);
          assert.deepEqual(keyd.refusedRecords.map((e) => e.message), [], where);
          // The recovery path each step needs was taken (so the test exercises it).
          const recovered = keyd.store.guard.recovered.join('\n');
          if (outcome === 'killed' && step.startsWith('manifest-written')) assert.match(recovered, /completed an interrupted change/, where);
          if (outcome === 'killed' && step === 'record-written' && op !== 'delete') assert.match(recovered, /adopted key/, where);
          if (outcome === 'killed' && step === 'record-written' && op === 'delete') assert.match(recovered, /gone from disk/, where);
          if (outcome === 'killed' && step.startsWith('counter-incremented')) assert.equal(recovered, '', where);
          // Acknowledged before the crash: a.test (old or rotated key) and b.test (unless it was the delete).
          const a = keyd.keyring.lookup('a.test');
          assert.ok(a, `${where}: a.test lost`);
          if (op === 'rotate' && outcome === 'completed') assert.match(a.subject, /rotated/);
          if (op !== 'delete') assert.ok(keyd.keyring.lookup('b.test'), `${where}: b.test lost`);
          if (op === 'delete' && outcome === 'completed') assert.equal(keyd.keyring.lookup('b.test'), undefined);
          if (op === 'put-new' && outcome === 'completed') assert.ok(keyd.keyring.lookup('new.test'));
          // The store keeps committing after the recovery, and the next start agrees with it.
          await keyd.adminService.put(LOCAL, ['after.test'], ids.after.privateKey, ids.after.chain);
          await keyd.close();
          keyd = await startTestKeyd(s.dir, s.machineIdPath, extra);
          assert.deepEqual(keyd.refusedRecords, [], where);
          assert.deepEqual(keyd.store.guard.recovered, [], `${where}: second start had something to recover`);
          assert.ok(keyd.keyring.lookup('after.test'), where);
          await keyd.close();
        } finally {
          for (const keyd of opened) await keyd.close();
          opened.clear();
          await s.cleanup();
        }
      }
    }
  } finally {
    await tpm.stop();
  }
});
