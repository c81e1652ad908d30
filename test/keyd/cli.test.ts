import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main as admin, type Io } from '../../src/cli/admin.js';
import { issueFromCsr, makeIdentity, pem, scratch, type TestIdentity } from './fixtures.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

let s: Awaited<ReturnType<typeof scratch>>;
let keyd: ChildProcess;
let keydLog = '';
let adminSocket: string;
let ca: TestIdentity;

function keydArgs(dir: string, machineIdPath: string, data = 'data'): string[] {
  return ['keyd', '--data', join(dir, data), '--root-key', join(dir, 'root.key'), '--socket', join(dir, 'sign.sock'), '--admin-socket', join(dir, 'admin.sock'), '--machine-id', machineIdPath];
}

/** Starts `delegator keyd`; resolves once it logged its start line. */
function startKeydProcess(args: string[]): Promise<{ child: ChildProcess; log: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    const timer = setTimeout(() => reject(new Error(`keyd did not start: ${log}`)), 20_000);
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      if (log.includes('keyd started')) {
        clearTimeout(timer);
        resolve({ child, log: () => log });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`keyd exited ${code}: ${log}`), { exitCode: code, log }));
    });
  });
}

/** Runs a command to completion; returns exit code and output. */
function runProcess(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs `delegator admin` in this process with captured output. */
async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: Io = { out: (t) => (out += t), err: (t) => (err += t), askPassphrase: async () => undefined };
  const code = await admin(['--socket', adminSocket, ...args], io);
  return { code, out, err };
}

before(async () => {
  s = await scratch();
  adminSocket = join(s.dir, 'admin.sock');
  ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=CLI test CA' });
  const started = await startKeydProcess(keydArgs(s.dir, s.machineIdPath));
  keyd = started.child;
  keydLog = started.log();
});

after(async () => {
  if (keyd && keyd.exitCode === null) {
    keyd.kill('SIGKILL');
    await new Promise((r) => keyd.once('exit', r));
  }
  await s?.cleanup();
});

async function files(id: TestIdentity, name: string, keyPem: string): Promise<{ key: string; chain: string }> {
  const key = join(s.dir, `${name}.key`);
  const chain = join(s.dir, `${name}.chain.pem`);
  await writeFile(key, keyPem, { mode: 0o600 });
  await writeFile(chain, id.chain.map((c) => pem(c)).join(''));
  return { key, chain };
}

test('keyd logs one start line with the store path and key count', () => {
  assert.match(keydLog, /keyd started: store .*data, 0 key\(s\)/);
  assert.doesNotMatch(keydLog, /PRIVATE KEY/);
});

test('put accepts PKCS#8, SEC1, PKCS#1 and encrypted PKCS#8 PEM, and says the key file can go', async () => {
  const cases: Array<[string, 'ecdsa-p256' | 'ecdsa-p384' | 'rsa2048' | 'ed25519', (id: TestIdentity) => string]> = [
    ['pkcs8', 'ecdsa-p256', (id) => id.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string],
    ['sec1', 'ecdsa-p384', (id) => id.privateKey.export({ format: 'pem', type: 'sec1' }) as string],
    ['pkcs1', 'rsa2048', (id) => id.privateKey.export({ format: 'pem', type: 'pkcs1' }) as string],
    ['encrypted', 'ed25519', (id) => id.privateKey.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'correct horse' }) as string],
  ];
  const passFile = join(s.dir, 'pass.txt');
  await writeFile(passFile, 'correct horse\n', { mode: 0o600 });
  for (const [format, keyType, toPem] of cases) {
    const id = await makeIdentity(keyType, [`${format}.cli.test`], ca);
    const f = await files(id, format, toPem(id));
    const extra = format === 'encrypted' ? ['--passphrase-file', passFile] : [];
    if (format === 'encrypted') {
      const noPass = await run('put', `${format}.cli.test`, '--key', f.key, '--chain', f.chain);
      assert.equal(noPass.code, 1);
      assert.match(noPass.err, /is encrypted: give --passphrase-file/);
      const wrong = join(s.dir, 'wrong.txt');
      await writeFile(wrong, 'wrong horse');
      const bad = await run('put', `${format}.cli.test`, '--key', f.key, '--chain', f.chain, '--passphrase-file', wrong);
      assert.equal(bad.code, 1);
      assert.match(bad.err, /wrong passphrase for/);
    }
    const r = await run('put', `${format}.cli.test,alias-${format}.cli.test`, '--key', f.key, '--chain', f.chain, ...extra);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`installed \\S+ key \\S+ for ${format}\\.cli\\.test, alias-${format}\\.cli\\.test: `));
    assert.match(r.out, /can now be deleted/);
  }
  const list = await run('list', '--json');
  const keys = JSON.parse(list.out) as Array<{ names: string[]; keyType: string; ski: string; notAfter: string; addedAt: string }>;
  const byName = new Map(keys.map((k) => [k.names[0], k]));
  assert.equal(byName.get('pkcs1.cli.test')?.keyType, 'rsa');
  assert.equal(byName.get('sec1.cli.test')?.keyType, 'ecdsa-p384');
  assert.equal(byName.get('encrypted.cli.test')?.keyType, 'ed25519');
  for (const k of keys) {
    assert.match(k.ski, /^[0-9a-f]{40}$/);
    assert.ok(!Number.isNaN(Date.parse(k.notAfter)));
    assert.ok(!Number.isNaN(Date.parse(k.addedAt)));
  }
  const table = await run('list');
  assert.match(table.out, /^NAMES\s+TYPE\s+SKI\s+NOT AFTER\s+ADDED/);
  assert.match(table.out, /pkcs8\.cli\.test,alias-pkcs8\.cli\.test\s+ecdsa-p256\s+[0-9a-f]{40}/);
});

test('precise one-line errors and exit codes', async () => {
  const id = await makeIdentity('ecdsa-p256', ['err.cli.test'], ca);
  const other = await makeIdentity('ecdsa-p256', ['err.cli.test'], ca);
  const good = await files(id, 'err', id.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  const otherFiles = await files(other, 'other', other.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  const notPem = join(s.dir, 'junk.pem');
  await writeFile(notPem, 'hello');

  const expect = async (args: string[], code: number, pattern: RegExp) => {
    const r = await run(...args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, pattern, args.join(' '));
    if (code === 1) assert.equal(r.err.trim().split('\n').length, 1, `one line: ${r.err}`);
  };
  await expect(['put', 'err.cli.test', '--key', join(s.dir, 'missing.pem'), '--chain', good.chain], 1, /cannot read key file .*missing\.pem: no such file/);
  await expect(['put', 'err.cli.test', '--key', notPem, '--chain', good.chain], 1, /junk\.pem is not a PEM file/);
  await expect(['put', 'err.cli.test', '--key', good.chain, '--chain', good.chain], 1, /holds a certificate or public key, not a private key/);
  await expect(['put', 'err.cli.test', '--key', good.key, '--chain', notPem], 1, /holds no PEM certificate/);
  await expect(['put', 'err.cli.test', '--key', good.key, '--chain', otherFiles.chain], 1, /does not match the leaf certificate.*\[KEYD_KEY_MISMATCH\]/);
  await expect(['show', 'nothing.cli.test'], 1, /no key for nothing\.cli\.test \[KEYD_UNKNOWN_NAME\]/);
  await expect(['delete', 'nothing.cli.test'], 1, /\[KEYD_UNKNOWN_NAME\]/);
  await expect(['put', 'bad_name!', '--key', good.key, '--chain', good.chain], 1, /not a DNS name.*\[KEYD_BAD_NAME\]/);
  await expect(['frobnicate'], 2, /unknown operation "frobnicate"/);
  await expect(['put', 'x.test'], 2, /put needs --key/);
  await expect(['gen', 'x.test', '--type', 'dsa', '--subject', 'CN=x', '--csr', 'x.csr'], 2, /gen: --type must be one of/);
  const down = await admin(['--socket', join(s.dir, 'nobody.sock'), 'list'], { out: () => {}, err: (t) => assert.match(t, /cannot connect to keyd .*nobody\.sock: ENOENT \(is keyd running\?\) \[KEYD_UNAVAILABLE\]/) });
  assert.equal(down, 1);
});

test('gen writes a CSR (key stays in keyd), chain installs the signed certificate, delete removes the name', async () => {
  const csr = join(s.dir, 'gen.csr');
  const g = await run('gen', 'gen.cli.test', '--type', 'ecdsa-p384', '--subject', 'CN=gen.cli.test, O=Test', '--csr', csr);
  assert.equal(g.code, 0, g.err);
  assert.match(g.out, /generated ecdsa-p384 key/);
  const csrPem = await readFile(csr, 'utf8');
  assert.match(csrPem, /BEGIN CERTIFICATE REQUEST/);
  const chainFile = join(s.dir, 'gen.chain.pem');
  await writeFile(chainFile, (await issueFromCsr(csrPem, ca)).map((c) => pem(c)).join(''));
  const c = await run('chain', 'gen.cli.test', chainFile);
  assert.equal(c.code, 0, c.err);
  assert.match(c.out, /chain set for gen\.cli\.test: ecdsa-p384 key, SKI [0-9a-f]{40}, leaf valid until/);
  const shown = await run('show', 'gen.cli.test');
  assert.match(shown.out, /subject\s+CN=gen\.cli\.test/);
  const d = await run('delete', 'gen.cli.test');
  assert.equal(d.code, 0);
  assert.equal((await run('show', 'gen.cli.test')).code, 1);
  const audit = await run('audit', '--json', '--limit', '500');
  const entries = JSON.parse(audit.out) as Array<{ op: string; ok: boolean }>;
  assert.ok(entries.some((e) => e.op === 'generate' && e.ok));
  assert.ok(entries.some((e) => e.op === 'put' && !e.ok));
});

test('the registered command works end to end: delegator admin list --json', async () => {
  const r = await runProcess(['admin', '--socket', adminSocket, 'list', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(Array.isArray(JSON.parse(r.stdout)));
  const help = await runProcess(['keyd', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--root-key FILE/);
});

test('keyd refuses a second instance, a store from another machine, and stops cleanly on SIGTERM', async () => {
  await assert.rejects(startKeydProcess(keydArgs(s.dir, s.machineIdPath, 'data-2')), (err: { exitCode: number; log: string }) => {
    assert.equal(err.exitCode, 1);
    assert.match(err.log, /another keyd is already listening on .*sign\.sock \[KEYD_ALREADY_RUNNING\]/);
    return true;
  });
  keyd.kill('SIGTERM');
  const code = await new Promise((r) => keyd.once('exit', (c) => r(c)));
  assert.equal(code, 0);
  await assert.rejects(access(join(s.dir, 'sign.sock')), 'socket removed on shutdown');

  const otherMachine = join(s.dir, 'machine-id-2');
  await writeFile(otherMachine, 'ffffffffffffffffffffffffffffffff\n');
  await assert.rejects(startKeydProcess(keydArgs(s.dir, otherMachine)), (err: { exitCode: number; log: string }) => {
    assert.equal(err.exitCode, 1);
    assert.match(err.log, /data directory .*data is sealed to another machine.*\[KEYD_STORE_OTHER_MACHINE\]/);
    return true;
  });
  // The four keys put above (two names each) are all still there for the right machine.
  const again = await startKeydProcess(keydArgs(s.dir, s.machineIdPath));
  keyd = again.child;
  assert.match(again.log(), /keyd started: store .*data, 4 key\(s\)/);
});

test('`delegator admin list | head -1`: a reader that goes away ends the CLI quietly (EPIPE), exit 0', async () => {
  // Closing our end of the pipe before the CLI writes makes its write fail with EPIPE, as
  // it does when `head -1` exits after the first line.
  const child = spawn(process.execPath, [MAIN, 'admin', '--socket', adminSocket, 'list'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.destroy();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  assert.equal(stderr, '');
  assert.equal(code, 0);
});

test('`delegator admin stats` shows signatures and refusals per client and key', async () => {
  const id = await makeIdentity('ecdsa-p256', ['stats.cli.test']);
  const f = await files(id, 'stats', id.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  assert.equal((await run('put', 'stats.cli.test', '--key', f.key, '--chain', f.chain)).code, 0);
  const { KeydClient } = await import('../../src/keyd/client.js');
  const c = await KeydClient.connect({ socketPath: join(s.dir, 'sign.sock') });
  const identity = (await c.identity('stats.cli.test'))!;
  const hash = Buffer.alloc(32, 7);
  await c.sign(identity.keyRef, 'stats.cli.test', 0x0403, hash);
  await c.sign(identity.keyRef, 'stats.cli.test', 0x0403, hash);
  await c.sign(identity.keyRef, 'stats.cli.test', 0x0403, Buffer.alloc(20)).catch(() => undefined);
  c.close();
  const { code, out } = await run('stats');
  assert.equal(code, 0);
  assert.match(out, /^CLIENT\s+KEY\s+SIGNATURES\s+REFUSALS\n/);
  assert.match(out, new RegExp(`\\nlocal +${identity.keyRef} +2 +1\\n`));
});

test('keyd usage errors exit 2 before anything starts: no --root-key (nor --config), no --data, an unknown flag', { timeout: 30_000 }, async () => {
  const cases: [string[], RegExp][] = [
    [['keyd', '--data', join(s.dir, 'data-usage')], /^delegator keyd: --data and --root-key \(or a --config with "rootKey"\) are required$/m],
    [['keyd', '--root-key', join(s.dir, 'root.key')], /^delegator keyd: --data and --root-key \(or a --config with "rootKey"\) are required$/m],
    [['keyd', '--data', join(s.dir, 'data-usage'), '--root-key', join(s.dir, 'root.key'), '--no-such-flag'], /^delegator keyd: Unknown option '--no-such-flag'/m],
  ];
  for (const [args, message] of cases) {
    const r = await runProcess(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message, args.join(' '));
    await assert.rejects(access(join(s.dir, 'data-usage')), 'no store created');
  }
});

// The CLI is what hands keyd the provisioning module (startProvisioningListener); keyd refuses
// --provision-listen without it (KEYD_CONFIG), so without the wiring the flag could never work.
test('delegator keyd --provision-listen runs the provisioning listener: an operator lists the keys over it', { timeout: 60_000 }, async (t) => {
  const { makePki, SUBJECTS } = await import('../provision/harness.js');
  const { RemoteAdminClient } = await import('../../src/provision/remote-client.js');
  const pki = await makePki();
  const dir = join(s.dir, 'provisioning');
  await (await import('node:fs/promises')).mkdir(dir, { mode: 0o700 });
  await writeFile(join(dir, 'operator-ca.pem'), pki.operatorCa.certPem);
  await writeFile(join(dir, 'keyd.pem'), pki.keydServer.certPem);
  await writeFile(join(dir, 'keyd.key'), pki.keydServer.keyPem, { mode: 0o600 });
  await writeFile(
    join(dir, 'keyd.json'),
    JSON.stringify({ provisioning: { operators: { [SUBJECTS.alice]: 'admin' }, tlsCert: join(dir, 'keyd.pem'), tlsKey: join(dir, 'keyd.key') } }),
  );
  const args = [
    'keyd', '--data', join(dir, 'data'), '--root-key', join(dir, 'root.key'), '--socket', join(dir, 'sign.sock'), '--admin-socket', join(dir, 'admin.sock'),
    '--machine-id', s.machineIdPath, '--config', join(dir, 'keyd.json'), '--provision-listen', '127.0.0.1:0',
  ];
  // Without --operator-ca keyd refuses to start (control of the refusal's wording).
  const refused = await runProcess(args);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /--provision-listen needs --operator-ca \[KEYD_CONFIG\]/);
  const started = await startKeydProcess([...args, '--operator-ca', join(dir, 'operator-ca.pem')]);
  t.after(async () => {
    if (started.child.exitCode === null) {
      started.child.kill('SIGTERM');
      await new Promise((r) => started.child.once('exit', r));
    }
  });
  const port = Number(/provisioning listener on 127\.0\.0\.1:(\d+)/.exec(started.log())?.[1]);
  assert.ok(port > 0, started.log());
  const client = await RemoteAdminClient.connect({ host: '127.0.0.1', port, cert: pki.alice.certPem, key: pki.alice.keyPem, ca: pki.keydCa.certPem, timeoutMs: 10_000 });
  try {
    assert.deepEqual(await client.list(), []);
  } finally {
    client.close();
  }
});
