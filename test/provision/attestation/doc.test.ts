import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { freePortPair, swtpmMissing } from '../../keyd/tpm/swtpm.js';

/**
 * Runs docs/PROVISIONING.md's attested walk-through as written: the setup blocks of the
 * plain walk-through (```sh, up to the first that starts keyd: certificates and keyd.json),
 * then every ```sh tpm block, in one bash script in an empty directory, with `delegator`
 * on PATH. The only changes: the example ports (8444 for keyd, 2321/2322 for swtpm)
 * become free ports.
 */

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../../..');
const DOC = join(repo, 'docs/PROVISIONING.md');
const MAIN = join(repo, 'dist/src/cli/main.js');
const skip = await swtpmMissing();

function blocks(markdown: string, info: string): string[] {
  return [...markdown.matchAll(new RegExp(`^\`\`\`${info}\\n([\\s\\S]*?)^\`\`\`$`, 'gm'))].map((m) => m[1]!);
}

test('docs/PROVISIONING.md attested walk-through runs as written', { skip, timeout: 180_000 }, async () => {
  const markdown = await readFile(DOC, 'utf8');
  const plain = blocks(markdown, 'sh');
  const setup = plain.slice(0, plain.findIndex((b) => b.includes('delegator keyd')));
  const attested = blocks(markdown, 'sh tpm');
  assert.ok(setup.length >= 3 && attested.length >= 5, `found ${setup.length} setup and ${attested.length} attested blocks`);
  const keydPort = await freePortPair();
  const tpmPort = await freePortPair();
  const script = ['set -euo pipefail', ...setup, ...attested]
    .join('\n')
    .replaceAll('127.0.0.1:8444', `127.0.0.1:${keydPort}`)
    .replaceAll('port=2321', `port=${tpmPort}`)
    .replaceAll('port=2322', `port=${tpmPort + 1}`);

  const dir = await mkdtemp(join(tmpdir(), 'attest-doc-'));
  const bin = join(dir, '.bin');
  const home = join(dir, '.home');
  await mkdir(bin);
  await mkdir(home);
  await writeFile(join(bin, 'delegator'), `#!/bin/sh\nexec "${process.execPath}" "${MAIN}" "$@"\n`);
  await chmod(join(bin, 'delegator'), 0o755);
  const work = join(dir, 'walkthrough');
  await mkdir(work);
  await writeFile(join(dir, 'walkthrough.sh'), script);
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`, HOME: home };
  delete env.XDG_CONFIG_HOME;
  delete env.DELEGATOR_KNOWN_KEYD;
  delete env.TPM2TOOLS_TCTI;
  // Own process group: keyd and swtpm (started with & in the script) die with it whatever happens.
  const child = spawn('bash', [join(dir, 'walkthrough.sh')], { cwd: work, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const killGroup = (): void => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const timer = setTimeout(killGroup, 170_000);
  const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
  clearTimeout(timer);
  killGroup();
  try {
    const log = await readFile(join(work, 'keyd.log'), 'utf8').catch(() => '(no keyd.log)');
    const context = `exit ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr}\n--- keyd.log (tail)\n${log.slice(-3000)}`;
    assert.equal(code, 0, context);
    assert.match(stdout, /root key sealed by the TPM \(.*keyd-root\.tpm\), no PCR policy; rollback counter: TPM NV counter 0x01504b44/, context);
    assert.match(stdout, /recorded PCRs sha256:0\+1\+2\+3\+4\+5\+6\+7 in keyd-pcrs\.json/, context);
    assert.match(stdout, /PCR  7: [0-9a-f]{64}/, context);
    assert.match(stdout, /attested: EK certificate chains to CN=swtpm-localca-rootca, PCRs sha256:0\+1\+2\+3\+4\+5\+6\+7 match keyd-pcrs\.json/, context);
    assert.match(stdout, /pinned in .*known_keyd/, context);
    assert.match(stdout, /installed ecdsa-p256 key \S+ for shop\.example\.com/, context);
    assert.match(stdout, /delegator admin: pcr-policy: sha256 PCR 7 differ from the recorded policy .*\[PROVISION_ATTESTATION_FAILED\]/, context);
    assert.doesNotMatch(log, /PRIVATE KEY/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
