/**
 * A TPM that stops answering: a tpm2-tools command blocked in its TCTI may never act on
 * SIGTERM. keyd stops it with SIGTERM at the command's timeout and SIGKILL KILL_GRACE_MS
 * later, and a command that timed out is not followed by three tpm2_flushcontext runs
 * (each would wait its own timeout). The tools here are shell scripts put first on PATH,
 * as keyd finds the real ones there: a tpm2_createprimary that ignores SIGTERM and sleeps,
 * a tpm2_pcrread that answers, a tpm2_flushcontext that records each run (or hangs too).
 * No TPM needed.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { KILL_GRACE_MS, TpmCommandError, tpm } from '../../../src/keyd/tpm/tools.js';
import { processAlive } from '../../helpers/process-alive.js';

const TIMEOUT_MS = 300;

const dir = mkdtempSync(join(tmpdir(), 'keyd-fake-tpm2-'));
const pids = join(dir, 'pids');
const flushes = join(dir, 'flushes');
const flushHangs = join(dir, 'flush-hangs');
const script = (name: string, body: string) => {
  writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
  chmodSync(join(dir, name), 0o755);
};
// Ignores SIGTERM, as a tool blocked in the TCTI would; exec keeps the pid and the ignored signal.
script('tpm2_createprimary', `trap '' TERM\necho $$ >> '${pids}'\nexec sleep 120`);
script('tpm2_pcrread', `echo "sha256: $*"`);
script('tpm2_flushcontext', `echo "$1" >> '${flushes}'\nif [ -e '${flushHangs}' ]; then trap '' TERM; echo $$ >> '${pids}'; exec sleep 120; fi`);
process.env.PATH = `${dir}:${process.env.PATH ?? ''}`;

const conn = { commandTimeoutMs: TIMEOUT_MS };
const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : []);
const alive = processAlive;

/** `p`'s outcome, or a failure when it has not settled in 20 s (a hang, not a speed check). */
async function outcome<T>(p: Promise<T>, what: string): Promise<{ value?: T; error?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: never settled (the hung tool was not killed?)`)), 20_000);
  });
  try {
    return await Promise.race([p.then((value) => ({ value }), (error: unknown) => ({ error })), hang]);
  } finally {
    clearTimeout(timer);
  }
}

test.after(() => {
  for (const pid of lines(pids).map(Number)) if (alive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

test('a command that answers: its output, then the three flushes (control)', async () => {
  rmSync(flushes, { force: true });
  const out = await outcome(tpm(conn, 'tpm2_pcrread', ['sha256:0'], { flush: true }), 'tpm2_pcrread');
  assert.equal(out.error, undefined);
  assert.equal(out.value!.toString('utf8'), 'sha256: sha256:0\n');
  assert.deepEqual(lines(flushes), ['-t', '-l', '-s']);
});

test('a command that ignores SIGTERM is killed after the grace, fails with the timeout, and no flush follows', async () => {
  rmSync(flushes, { force: true });
  const before = lines(pids).length;
  const out = await outcome(tpm(conn, 'tpm2_createprimary', ['-C', 'o'], { flush: true }), 'tpm2_createprimary');
  const err = out.error;
  assert.ok(err instanceof TpmCommandError, String(err));
  assert.equal(err.timedOut, true);
  assert.equal(err.message, `tpm2_createprimary failed: no answer within ${TIMEOUT_MS} ms: killed (SIGKILL) ${KILL_GRACE_MS} ms after SIGTERM; the TPM is not answering`);
  const started = lines(pids).slice(before).map(Number);
  assert.equal(started.length, 1);
  assert.equal(alive(started[0]!), false, 'the tool is gone');
  assert.deepEqual(lines(flushes), [], 'no tpm2_flushcontext after a timed-out command');
});

test('a flush that hangs stops the flushing: one run, killed; the command\'s answer stands', async () => {
  rmSync(flushes, { force: true });
  writeFileSync(flushHangs, '');
  try {
    const before = lines(pids).length;
    const out = await outcome(tpm(conn, 'tpm2_pcrread', ['sha256:7'], { flush: true }), 'tpm2_pcrread with a hung flush');
    assert.equal(out.error, undefined);
    assert.equal(out.value!.toString('utf8'), 'sha256: sha256:7\n');
    assert.deepEqual(lines(flushes), ['-t'], 'the flushes after the hung one are not run');
    const started = lines(pids).slice(before).map(Number);
    assert.equal(started.length, 1);
    assert.equal(alive(started[0]!), false, 'the hung tpm2_flushcontext is gone');
  } finally {
    rmSync(flushHangs, { force: true });
  }
});
