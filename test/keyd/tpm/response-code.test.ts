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
