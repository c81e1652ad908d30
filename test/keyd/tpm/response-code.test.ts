/**
 * The TPM response code keyd reads from a failed tpm2-tools command's stderr, in both forms
 * the tools print: the ESAPI log's "ErrorCode (0x0000099d)" and tpm2-tools' own
 * "Esys_Unseal(0x99D) - tpm:…" line (the only one left when the ESAPI log is off, e.g.
 * TSS2_LOG=all+none). keyd tells a PCR policy failure (0x99d) and a sealed object from
 * another TPM (0x1df) from other failures by it (src/keyd/tpm/sealed-root.ts). The tools
 * here are shell scripts put first on PATH; no TPM needed.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { TPM_RC, TpmCommandError, tpm } from '../../../src/keyd/tpm/tools.js';

const dir = mkdtempSync(join(tmpdir(), 'keyd-fake-tpm2-rc-'));
const script = (name: string, stderr: string) => {
  writeFileSync(join(dir, name), `#!/bin/sh\ncat >&2 <<'END'\n${stderr}\nEND\nexit 1\n`);
  chmodSync(join(dir, name), 0o755);
};
script('tpm2_unseal', 'ERROR: Esys_Unseal(0x99D) - tpm:session(1):a policy check failed\nERROR: Unable to run tpm2_unseal');
script('tpm2_load', 'WARNING:esys:src/tss2-esys/api/Esys_Load.c:324:Esys_Load_Finish() Received TPM Error\nERROR:esys:src/tss2-esys/api/Esys_Load.c:112:Esys_Load() Esys_Finish ErrorCode (0x000001df)\nERROR: Unable to run tpm2_load');
script('tpm2_nvread', 'ERROR: the index cannot be read\nERROR: Unable to run tpm2_nvread');
// A verbose TSS log (TSS2_LOG=all+debug in keyd's environment): 200 KiB of debug lines
// before the tools' own ERROR lines, which come last.
writeFileSync(
  join(dir, 'tpm2_policypcr'),
  `#!/bin/sh\ni=0\nwhile [ $i -lt 2000 ]; do echo "DEBUG:esys:src/tss2-esys/esys_iutil.c:394:iesys_check_response() $i ${'x'.repeat(80)}" >&2; i=$((i+1)); done\n` +
    `echo 'ERROR: Esys_Unseal(0x99D) - tpm:session(1):a policy check failed' >&2\necho 'ERROR: Unable to run tpm2_policypcr' >&2\nexit 1\n`,
);
chmodSync(join(dir, 'tpm2_policypcr'), 0o755);
// The ESAPI log's ErrorCode line first, then the same 200 KiB (no tools' ERROR line).
writeFileSync(
  join(dir, 'tpm2_evictcontrol'),
  `#!/bin/sh\necho 'ERROR:esys:src/tss2-esys/api/Esys_Load.c:112:Esys_Load() Esys_Finish ErrorCode (0x000001df)' >&2\n` +
    `i=0\nwhile [ $i -lt 2000 ]; do echo "DEBUG:esys:src/tss2-esys/esys_iutil.c:394:iesys_check_response() $i ${'x'.repeat(80)}" >&2; i=$((i+1)); done\nexit 1\n`,
);
chmodSync(join(dir, 'tpm2_evictcontrol'), 0o755);
process.env.PATH = `${dir}:${process.env.PATH ?? ''}`;

test.after(() => rmSync(dir, { recursive: true, force: true }));

async function responseCode(command: string): Promise<number | undefined> {
  let caught: unknown;
  await tpm({}, command, []).catch((err: unknown) => (caught = err));
  assert.ok(caught instanceof TpmCommandError, `${command} fails with a TpmCommandError`);
  return caught.responseCode;
}

test('tpm2-tools\' own "(0x99D) - tpm:" line gives the response code (a PCR policy failure)', async () => {
  assert.equal(await responseCode('tpm2_unseal'), TPM_RC.POLICY_FAIL_SESSION1);
});

test('the ESAPI log\'s "ErrorCode (0x000001df)" gives the response code (another TPM\'s object); no code in the text gives none (control)', async () => {
  assert.equal(await responseCode('tpm2_load'), TPM_RC.INTEGRITY_PARAM1);
  assert.equal(await responseCode('tpm2_nvread'), undefined);
});

test('a long stderr (a verbose TSS log) still gives the response code and the tools\' own ERROR lines, which come last', async () => {
  let caught: unknown;
  await tpm({}, 'tpm2_policypcr', []).catch((err: unknown) => (caught = err));
  assert.ok(caught instanceof TpmCommandError);
  assert.equal(caught.responseCode, TPM_RC.POLICY_FAIL_SESSION1);
  assert.equal(caught.detail, 'Esys_Unseal(0x99D) - tpm:session(1):a policy check failed; Unable to run tpm2_policypcr');
  assert.equal(await responseCode('tpm2_evictcontrol'), TPM_RC.INTEGRITY_PARAM1, 'control: a code early in a long stderr is kept too');
});
