/**
 * tpm2-tools runs (src/keyd/tpm/tools.ts) without a TPM: `exclusive` runs one sequence at
 * a time per TPM (without a resource manager one sequence's flush would unload another's
 * objects and sessions), and a command's output is bounded. The tool is a shell script put
 * first on PATH.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { exclusive, tpm } from '../../../src/keyd/tpm/tools.js';

const dir = mkdtempSync(join(tmpdir(), 'keyd-fake-tpm2-seq-'));
writeFileSync(join(dir, 'tpm2_pcrread'), `#!/bin/sh\nhead -c 3000000 /dev/zero\n`);
chmodSync(join(dir, 'tpm2_pcrread'), 0o755);
process.env.PATH = `${dir}:${process.env.PATH ?? ''}`;
test.after(() => rmSync(dir, { recursive: true, force: true }));

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

test('a command\'s output is cut at 1 MiB (a TPM answer is a few KiB): 3 MB are not kept whole', async () => {
  const out = await tpm({}, 'tpm2_pcrread', []);
  assert.ok(out.length > 0, 'the output starts as the tool wrote it');
  assert.ok(out.length <= (1 << 20) + 65_536, `kept ${out.length} bytes`);
});
