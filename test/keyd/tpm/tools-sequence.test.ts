/**
 * tpm2-tools runs (src/keyd/tpm/tools.ts) without a TPM: `exclusive` runs one sequence at
 * a time per TPM (without a resource manager one sequence's flush would unload another's
 * objects and sessions), and a command whose output passes MAX_OUTPUT fails and is stopped
 * (never cut and handed on as a whole answer). The tools are shell scripts put first on PATH.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { KILL_GRACE_MS, MAX_OUTPUT, TpmCommandError, exclusive, tpm } from '../../../src/keyd/tpm/tools.js';
import { processAlive } from '../../helpers/process-alive.js';

const dir = mkdtempSync(join(tmpdir(), 'keyd-fake-tpm2-seq-'));
const pids = join(dir, 'pids');
const script = (name: string, body: string) => {
  writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
  chmodSync(join(dir, name), 0o755);
};
// Writes 3 MB and exits 0; writes exactly MAX_OUTPUT bytes; writes forever (recording its
// pid; exec keeps the pid); writes forever ignoring SIGTERM.
script('tpm2_pcrread', 'head -c 3000000 /dev/zero');
script('tpm2_nvread', `head -c ${MAX_OUTPUT} /dev/zero`);
script('tpm2_getcap', `echo $$ >> '${pids}'\nexec cat /dev/zero`);
script('tpm2_readpublic', `trap '' TERM\necho $$ >> '${pids}'\nexec cat /dev/zero`);
process.env.PATH = `${dir}:${process.env.PATH ?? ''}`;
const started = () => (existsSync(pids) ? readFileSync(pids, 'utf8').split('\n').filter((l) => l !== '').map(Number) : []);
const alive = processAlive;
test.after(() => {
  for (const pid of started()) if (alive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('exclusive: a second sequence on the same TPM waits for the first; another TPM\'s does not (control); a failed sequence does not block the next', async () => {
  const conn = { tcti: 'swtpm:host=127.0.0.1,port=1' };
  const events: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const first = exclusive(conn, async () => {
    events.push('first start');
    await gate;
    events.push('first end');
  });
  const second = exclusive(conn, async () => {
    events.push('second start');
    events.push('second end');
  });
  await exclusive({ tcti: 'swtpm:host=127.0.0.1,port=3' }, async () => {
    events.push('other TPM');
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(events, ['first start', 'other TPM'], 'the second waits while the first runs');
  release();
  await Promise.all([first, second]);
  assert.deepEqual(events, ['first start', 'other TPM', 'first end', 'second start', 'second end']);

  await assert.rejects(exclusive(conn, async () => Promise.reject(new Error('the TPM failed'))), /the TPM failed/);
  assert.equal(await exclusive(conn, async () => 7), 7);
});

/** The TpmCommandError `p` fails with (the test fails when it succeeds). */
async function failure(p: Promise<Buffer>): Promise<TpmCommandError> {
  const result = await p.then(
    (out) => assert.fail(`succeeded with ${out.length} bytes of output`),
    (err: unknown) => err,
  );
  assert.ok(result instanceof TpmCommandError, String(result));
  return result;
}

test('a command whose output passes 1 MiB (a TPM answer is a few KiB) fails, its output never cut and handed on; exactly 1 MiB is kept whole (control)', async () => {
  const err = await failure(tpm({}, 'tpm2_pcrread', []));
  assert.match(err.message, new RegExp(`^tpm2_pcrread failed: its output exceeded ${MAX_OUTPUT} bytes \\(a TPM answer is a few KiB\\): stopped \\(SIGTERM\\), its output discarded$`));
  assert.equal(err.timedOut, false);
  assert.equal(err.responseCode, undefined);
  const whole = await tpm({}, 'tpm2_nvread', []);
  assert.equal(whole.length, MAX_OUTPUT, 'control: output at the limit is returned whole');
});

test('a command that keeps writing is stopped when its output passes the limit, not at its timeout; one ignoring SIGTERM is killed after the grace', { timeout: 60_000 }, async () => {
  const conn = { commandTimeoutMs: 30_000 };
  const t0 = Date.now();
  const endless = await failure(tpm(conn, 'tpm2_getcap', []));
  assert.match(endless.message, /^tpm2_getcap failed: its output exceeded \d+ bytes .*: stopped \(SIGTERM\), its output discarded$/);
  assert.ok(Date.now() - t0 < 20_000, 'stopped long before the 30 s timeout');
  const stubborn = await failure(tpm(conn, 'tpm2_readpublic', []));
  assert.match(stubborn.message, new RegExp(`^tpm2_readpublic failed: its output exceeded \\d+ bytes .*: killed \\(SIGKILL\\) ${KILL_GRACE_MS} ms after SIGTERM, its output discarded$`));
  assert.equal(stubborn.timedOut, false);
  const pids = started();
  assert.equal(pids.length, 2);
  for (const pid of pids) assert.equal(alive(pid), false, `tool ${pid} is gone`);
});
