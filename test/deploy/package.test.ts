/**
 * The installable package: `npm pack` yields a tarball with the built code, the units and
 * the docs (and no tests or state); `npm install -g --prefix DIR` of that tarball gives a
 * `delegator` whose --help and demo work from any directory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/ports.js';
import { describeResult, runTool, startTool } from '../helpers/tools.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const NETWORK_ERROR = /ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ENETUNREACH|network/i;

test('npm pack → npm install -g --prefix DIR → delegator --help and delegator demo from another directory', { timeout: 300_000 }, async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; scripts: Record<string, string> };
  // `npm pack` builds first (prepack), so a tarball never holds stale or missing code. Here
  // the build is the one `npm test` just made, so the test packs without running it again.
  assert.match(pkg.scripts.prepack ?? '', /npm run build/);
  const work = mkdtempSync(join(tmpdir(), 'delegator-pack-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const packed = await runTool('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], '', { cwd: ROOT, timeoutMs: 120_000 });
  assert.equal(packed.code, 0, describeResult(packed));
  const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  const files = info!.files.map((f) => f.path);
  for (const expected of ['package.json', 'README.md', 'dist/src/cli/main.js', 'dist/src/keyd/daemon.js', 'deploy/systemd/delegator-keyd.service', 'deploy/systemd/delegator-edge.service', 'docs/DEPLOY.md']) {
    assert.ok(files.includes(expected), `the tarball holds ${expected}`);
  }
  assert.deepEqual(files.filter((f) => /^(dist\/test|dist\/bench|test|src|\.delegator)\//.test(f)), [], 'no tests, sources or state in the package');
  assert.equal(info!.filename, `${pkg.name}-${pkg.version}.tgz`);

  const prefix = join(work, 'prefix');
  // --ignore-scripts: the PKCS#11 binding (pkcs11js, native) is not compiled; keyd loads it
  // only when a token is configured, so the commands tested here do not need it.
  const installed = await runTool('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', join(work, info!.filename)], '', {
    cwd: work,
    timeoutMs: 240_000,
  });
  if (installed.code !== 0 && NETWORK_ERROR.test(installed.stderr)) {
    t.skip(`npm install needs the registry (or its cache) for the dependencies: ${installed.stderr.split('\n').find((l) => NETWORK_ERROR.test(l))}`);
    return;
  }
  assert.equal(installed.code, 0, describeResult(installed));
  const bin = join(prefix, 'bin', 'delegator');
  assert.ok(existsSync(bin), 'npm linked the delegator command');

  const elsewhere = mkdtempSync(join(work, 'cwd-'));
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${join(prefix, 'bin')}:${process.env.PATH}` };
  delete env.DELEGATOR_HOME;
  const help = await runTool('delegator', ['--help'], '', { cwd: elsewhere, env });
  assert.equal(help.code, 0, describeResult(help));
  for (const command of ['demo', 'keyd', 'admin', 'edge', 'status']) assert.match(help.stdout, new RegExp(`^  ${command} `, 'm'));

  const port = await freePort();
  const demo = startTool(t, 'delegator', ['demo', '--port', String(port), '--host', '127.0.0.1'], { cwd: elsewhere, env, timeoutMs: 120_000 });
  await demo.waitFor('Ctrl-C stops everything', 90_000);
  assert.ok(demo.stdout.includes(`state in ${join(elsewhere, '.delegator')}`), demo.stdout);
  const ca = readFileSync(join(elsewhere, '.delegator', 'demo-ca', 'ca.pem'), 'utf8');
  const page = await new Promise<string>((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca });
    let body = '';
    socket.setEncoding('utf8');
    socket.once('secureConnect', () => socket.end('GET / HTTP/1.0\r\nUser-Agent: curl\r\n\r\n'));
    socket.on('data', (d: string) => (body += d));
    socket.once('end', () => resolve(body));
    socket.once('error', reject);
  });
  assert.match(page, /Hello from the upstream app/);
  demo.child.kill('SIGINT');
  const [code] = await once(demo.child, 'exit');
  assert.equal(code, 0, demo.stderr);
});
