import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile, access } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

/**
 * Runs docs/PROVISIONING.md as written: every ```sh block, in order, in one bash script in
 * an empty directory, with `delegator` on PATH (node dist/src/cli/main.js) and HOME pointing
 * into the temp dir (the pin file lands there). The only change: the example address
 * 127.0.0.1:8444 becomes a free port, so the test never collides with anything.
 */

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const DOC = join(repo, 'docs/PROVISIONING.md');
const MAIN = join(repo, 'dist/src/cli/main.js');

function shBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

test('docs/PROVISIONING.md walk-through runs as written', { timeout: 90_000 }, async (t) => {
  if (spawnSync('openssl', ['version']).error) {
    t.skip('openssl not installed (apt-get install openssl)');
    return;
  }
  const blocks = shBlocks(await readFile(DOC, 'utf8'));
  assert.ok(blocks.length >= 8, `expected the walk-through's sh blocks, found ${blocks.length}`);
  const port = await freePort();
  const script = ['set -euo pipefail', ...blocks].join('\n').replaceAll('127.0.0.1:8444', `127.0.0.1:${port}`);

  const dir = await mkdtemp(join(tmpdir(), 'provision-doc-'));
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
  // Own process group, so keyd (started with & in the script) dies with it whatever happens.
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
  const timer = setTimeout(killGroup, 80_000);
  const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
  clearTimeout(timer);
  killGroup();
  try {
    const log = await readFile(join(work, 'keyd.log'), 'utf8').catch(() => '(no keyd.log)');
    const context = `exit ${code}\n--- stdout\n${stdout}\n--- stderr\n${stderr}\n--- keyd.log (tail)\n${log.slice(-3000)}`;
    assert.equal(code, 0, context);

    const fingerprint = /provisioning key (SHA256:[A-Za-z0-9+/]{43})/.exec(log)?.[1];
    assert.ok(fingerprint, 'keyd logged its provisioning key fingerprint');
    assert.match(stdout, new RegExp(`keyd at 127\\.0\\.0\\.1:${port}: provisioning key ${fingerprint.replace(/[+/]/g, '\\$&')}`), context);
    const pins = await readFile(join(home, '.config/delegator/known_keyd'), 'utf8');
    assert.equal(pins, `127.0.0.1:${port} ${fingerprint}\n`);
    assert.match(stdout, /installed ecdsa-p256 key \S+ for www\.example\.com, example\.com/, context);
    assert.match(stdout, /the key file www\.key can now be deleted/);
    await assert.rejects(access(join(work, 'www.key')), 'the walk-through deletes the key file after put');
    assert.match(stdout, /CSR written to api\.csr/);
    assert.match(stdout, /chain set for api\.example\.com/);
    assert.match(stderr, /operator "CN=audit-bot, O=Example Ops" has role auditor, which may not delete \[PROVISION_FORBIDDEN\]/);
    assert.match(stdout, /delete\s+operator:CN=audit-bot, O=Example Ops\s+www\.example\.com\s+PROVISION_FORBIDDEN/);
    assert.match(stdout, /deleted api\.example\.com/);
    // The final list still has www.example.com, and no longer api.example.com.
    const finalList = stdout.slice(stdout.lastIndexOf('NAMES'));
    assert.match(finalList, /www\.example\.com/);
    assert.doesNotMatch(finalList, /api\.example\.com/);
    // Neither the key nor any private key material reached keyd's log.
    assert.doesNotMatch(log, /PRIVATE KEY/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
