/**
 * Unmodified OpenSSL servers (Debian's nginx, haproxy, `openssl s_server`) given a
 * DELEGATOR KEY REFERENCE file as their key and OPENSSL_CONF loading the provider: curl
 * verifies them over TLS 1.3 and TLS 1.2 with ECDSA and RSA keys, each handshake moves
 * keyd's signing count for the key by exactly one, and no private key file exists in the
 * test's directories (docs/OPENSSL-PROVIDER.md).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chownSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { nginxBinary, startNginx } from '../../../bench/lib/nginx.js';
import { KeydClient } from '../../../src/keyd/client.js';
import { Opcode } from '../../../src/keyd/protocol.js';
import type { TestKeyType } from '../../helpers/pki.js';
import { freePort, waitForPort } from '../../helpers/ports.js';
import { requireTool, runTool } from '../../helpers/tools.js';
import { scratchDir } from '../../edge/system.js';
import { buildProvider, curlOnce, filesUnder, privateKeyFiles, setUpKeyAndReference, UNPRIVILEGED, type ProviderSetup } from './harness.js';

const KEY_TYPES: TestKeyType[] = ['ecdsa-p256', 'rsa2048'];

interface RunningServer {
  port: number;
  stop(): Promise<void>;
}

/** Both TLS versions against a running server: curl verifies, and keyd signs once per handshake. */
async function assertServesThroughKeyd(setup: ProviderSetup, server: RunningServer, what: string): Promise<void> {
  for (const version of ['1.3', '1.2'] as const) {
    const before = await setup.counts();
    const result = await curlOnce(server.port, version, setup.caFile);
    assert.ok(result.ok, `${what}, TLS ${version}: curl did not verify a 200: ${result.output}`);
    const after = await setup.counts();
    assert.equal(after.signatures - before.signatures, 1, `${what}, TLS ${version}: keyd signatures for the key moved by one`);
    assert.equal(after.refusals, before.refusals, `${what}, TLS ${version}: no refusal`);
  }
  const pkcs8 = setup.pki.leafKey.export({ format: 'der', type: 'pkcs8' });
  assert.deepEqual(privateKeyFiles(setup.dir, pkcs8), [], `${what}: a private key file in the test's directory`);
  // Control: the walk reads the files there (the reference file is among them).
  assert.ok(filesUnder(setup.dir).some((f) => readFileSync(f, 'latin1').includes('BEGIN DELEGATOR KEY REFERENCE')), 'the walk sees the reference file');
}

async function withSetup(t: TestContext, keyType: TestKeyType, body: (setup: ProviderSetup) => Promise<void>): Promise<void> {
  const scratch = scratchDir(`provider-${keyType}-`);
  t.after(() => scratch.remove());
  const setup = await setUpKeyAndReference(scratch.dir, keyType);
  t.after(() => setup.keyd.kill());
  await body(setup);
}

test('nginx with ssl_certificate_key = a reference file signs every handshake through keyd', { timeout: 180_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'curl', 'curl')) return;
  const binary = nginxBinary();
  if (!binary) return t.skip('nginx not installed (apt-get install nginx)');
  for (const keyType of KEY_TYPES) {
    await t.test(keyType, async (st) => {
      await withSetup(st, keyType, async (setup) => {
        const nginx = await startNginx(binary, setup.dir, await freePort(), setup.certFile, setup.refFile, { protocols: 'TLSv1.2 TLSv1.3', env: setup.env });
        st.after(() => nginx.stop());
        await waitForPort(nginx.port);
        assert.equal(await setup.serverConnections(), 0, 'no keyd connection before the first handshake');
        await assertServesThroughKeyd(setup, nginx, `nginx ${keyType}`);
        // The one worker signed both handshakes on one connection, kept open for the next.
        assert.equal(await setup.serverConnections(), 1, 'one keyd connection, reused');
      });
    });
  }
});

test('haproxy with a reference file as the certificate\'s key signs every handshake through keyd', { timeout: 180_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'curl', 'curl') || !requireTool(t, 'haproxy', 'haproxy')) return;
  for (const keyType of KEY_TYPES) {
    await t.test(keyType, async (st) => {
      await withSetup(st, keyType, async (setup) => {
        const haproxy = await startHaproxy(setup);
        st.after(() => haproxy.stop());
        await assertServesThroughKeyd(setup, haproxy, `haproxy ${keyType}`);
      });
    });
  }
});

test('openssl s_server -key REFERENCE signs every handshake through keyd (ECDSA P-256/P-384, RSA, Ed25519)', { timeout: 180_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'curl', 'curl') || !requireTool(t, 'openssl', 'openssl')) return;
  // Every key type the provider supports (P-384 shows that TLS 1.2 picks the curve's hash).
  for (const keyType of [...KEY_TYPES, 'ecdsa-p384', 'ed25519'] as const) {
    await t.test(keyType, async (st) => {
      await withSetup(st, keyType, async (setup) => {
        const server = await startSServer(setup);
        st.after(() => server.stop());
        await assertServesThroughKeyd(setup, server, `s_server ${keyType}`);
      });
    });
  }
});

test('keyd down: the handshake fails at once with keyd named in the server\'s log, and recovers when keyd is back', { timeout: 120_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'curl', 'curl')) return;
  const binary = nginxBinary();
  if (!binary) return t.skip('nginx not installed (apt-get install nginx)');
  await withSetup(t, 'ecdsa-p256', async (setup) => {
    const nginx = await startNginx(binary, setup.dir, await freePort(), setup.certFile, setup.refFile, { protocols: 'TLSv1.2 TLSv1.3', env: setup.env });
    t.after(() => nginx.stop());
    await waitForPort(nginx.port);
    assert.ok((await curlOnce(nginx.port, '1.3', setup.caFile)).ok, 'control: served while keyd is up');

    await setup.keyd.kill(); // the worker's pooled connection is now dead too
    const down = await curlOnce(nginx.port, '1.3', setup.caFile);
    assert.equal(down.ok, false, 'no handshake without keyd');
    const log = readFileSync(nginx.errorLog, 'utf8');
    assert.match(log, /delegator.*keyd (unavailable|at \S+ (closed the connection|: ?connect))/, `nginx's log names keyd: ${log}`);

    await setup.keyd.start({ config: { principals: {
      local: { mode: '0660', names: ['*'] },
      servers: { socket: join(setup.dir, 'servers.sock'), mode: '0660', ...(UNPRIVILEGED ? { gid: UNPRIVILEGED.gid } : {}), names: ['a.test'] },
    } } });
    const back = await curlOnce(nginx.port, '1.3', setup.caFile);
    assert.ok(back.ok, `served again once keyd is back: ${back.output}`);
  });
});

test('a `changed` frame keyd pushes on the pooled connection is skipped: the next signature uses the same connection', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'curl', 'curl') || !requireTool(t, 'openssl', 'openssl')) return;
  await withSetup(t, 'ecdsa-p256', async (setup) => {
    const server = await startSServer(setup);
    t.after(() => server.stop());
    assert.ok((await curlOnce(server.port, '1.3', setup.caFile)).ok);
    assert.equal(await setup.serverConnections(), 1);
    // Setting a.test's chain again is an admin change: keyd announces it (opcode 0x40,
    // request id 0) on every signing connection that may use a.test, ours included, and
    // the frame waits in the socket until the provider next reads it.
    const admin = await KeydClient.connect({ socketPath: setup.keyd.adminSocket });
    try {
      await admin.admin(Opcode.setChain, { name: 'a.test' }, setup.pki.chainDer);
    } finally {
      admin.close();
    }
    const before = await setup.counts();
    const again = await curlOnce(server.port, '1.3', setup.caFile);
    assert.ok(again.ok, again.output);
    assert.equal((await setup.counts()).signatures, before.signatures + 1);
    assert.equal(await setup.serverConnections(), 1, 'the same connection, the pushed frame read past');
  });
});

test('a pooled connection keyd closed while idle is replaced at the next signature, which succeeds', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'curl', 'curl') || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-idle-');
  t.after(() => scratch.remove());
  const setup = await setUpKeyAndReference(scratch.dir, 'ecdsa-p256', undefined, { limits: { idleTimeoutMs: 300 } });
  t.after(() => setup.keyd.kill());
  const server = await startSServer(setup);
  t.after(() => server.stop());
  assert.ok((await curlOnce(server.port, '1.3', setup.caFile)).ok);
  // keyd closes the idle connection; the provider's pool still holds its end.
  while ((await setup.serverConnections()) !== 0) await new Promise((resolve) => setTimeout(resolve, 50)); // polls a condition
  const before = await setup.counts();
  const again = await curlOnce(server.port, '1.3', setup.caFile);
  assert.ok(again.ok, `the stale connection is retried on a fresh one: ${again.output}`);
  assert.equal((await setup.counts()).signatures, before.signatures + 1, 'signed once');
});

test('TLS 1.2 static RSA key exchange cannot complete: the provider offers no decryption, and keyd is never asked', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'curl', 'curl') || !requireTool(t, 'openssl', 'openssl')) return;
  await withSetup(t, 'rsa2048', async (setup) => {
    const server = await startSServer(setup);
    t.after(() => server.stop());
    const curl = (cipher: string) =>
      runTool('curl', ['-sS', '--tls-max', '1.2', '--ciphers', cipher, '--cacert', setup.caFile, '--resolve', `a.test:${server.port}:127.0.0.1`,
        '-o', '/dev/null', '-w', '%{http_code}', `https://a.test:${server.port}/`], '', { env: { ...process.env, OPENSSL_CONF: '/dev/null' } });
    const before = await setup.counts();
    const rsaKex = await curl('AES128-GCM-SHA256'); // TLS_RSA_WITH_AES_128_GCM_SHA256
    assert.notEqual(rsaKex.code, 0, 'no session without the key exchange');
    assert.match(rsaKex.stderr, /alert/, rsaKex.stderr);
    assert.deepEqual(await setup.counts(), before, 'keyd neither signed nor refused anything');
    // Control: the same server and key with an ECDHE suite.
    const ecdhe = await curl('ECDHE-RSA-AES128-GCM-SHA256');
    assert.equal(ecdhe.code, 0, ecdhe.stderr);
    assert.equal((await setup.counts()).signatures, before.signatures + 1);
  });
});

async function startHaproxy(setup: ProviderSetup): Promise<RunningServer> {
  const dir = join(setup.dir, 'haproxy');
  mkdirSync(dir, { mode: 0o755 });
  // haproxy loads `crt FILE` and, beside it, FILE.key (ssl-load-extra-files): the reference.
  const crt = join(dir, 'a.test.pem');
  copyFileSync(setup.certFile, crt);
  copyFileSync(setup.refFile, `${crt}.key`);
  if (UNPRIVILEGED) chownSync(`${crt}.key`, 0, UNPRIVILEGED.gid);
  const port = await freePort();
  const config = join(dir, 'haproxy.cfg');
  writeFileSync(config, `global
  maxconn 100
${UNPRIVILEGED ? '  user nobody\n  group nogroup\n' : ''}
defaults
  mode http
  timeout connect 5s
  timeout client 5s
  timeout server 5s

frontend fe
  bind 127.0.0.1:${port} ssl crt ${crt} ssl-min-ver TLSv1.2
  http-request return status 200 content-type text/plain string ok
`);
  const check = spawnSync('haproxy', ['-c', '-f', config], { env: setup.env, encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`haproxy -c: ${check.stdout}${check.stderr}`);
  const child = spawn('haproxy', ['-db', '-f', config], { env: setup.env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  await waitForPort(port).catch((e: Error) => {
    child.kill('SIGKILL');
    throw new Error(`${e.message}: ${stderr}`);
  });
  return { port, stop: () => stopChild(child) };
}

async function startSServer(setup: ProviderSetup): Promise<RunningServer> {
  const port = await freePort();
  const child = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-key', setup.refFile, '-cert', setup.certFile, '-www', '-quiet'], {
    env: setup.env, stdio: ['pipe', 'pipe', 'pipe'], ...(UNPRIVILEGED ?? {}),
  });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (output += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (output += d));
  await waitForPort(port).catch((e: Error) => {
    child.kill('SIGKILL');
    throw new Error(`${e.message}: ${output}`);
  });
  return { port, stop: () => stopChild(child) };
}

async function stopChild(child: ReturnType<typeof spawn>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}
