/**
 * `delegator admin` argument checks and exit codes (docs/KEYD.md): a usage error exits 2
 * before anything connects or any file is written, a refusal exits 1 with one line that ends
 * in its [CODE], and --json prints the reply as it came. keyd is a recording stand-in here
 * (the real one is in test/keyd/cli), so every case is quick.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type Io } from '../../src/cli/admin.js';
import type { AdminTransport } from '../../src/keyd/admin-client.js';
import { KeydError } from '../../src/keyd/errors.js';
import type { KeyInfo } from '../../src/keyd/keyring.js';
import { createDemoCa, issueLeaf } from '../../src/demo/pki.js';

const INFO = {
  names: ['a.test'],
  keyType: 'ecdsa-p256',
  keyRef: 'k1',
  ski: '00'.repeat(20),
  subject: 'CN=a.test',
  notAfter: '2030-01-01T00:00:00.000Z',
  addedAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
  version: 1,
} as unknown as KeyInfo;

/** A stand-in keyd that records each call; `show` of an unknown name is refused as keyd does. */
function recorder() {
  const calls: string[] = [];
  const transport = {
    put: async (names: string[]) => (calls.push(`put ${names.join(',')}`), INFO),
    generate: async (name: string) => (calls.push(`generate ${name}`), { info: INFO, csrPem: 'CSR' }),
    setChain: async (name: string) => (calls.push(`setChain ${name}`), INFO),
    delete: async (name: string) => void calls.push(`delete ${name}`),
    list: async () => (calls.push('list'), [INFO]),
    show: async (name: string) => {
      calls.push(`show ${name}`);
      if (name !== 'a.test') throw new KeydError('KEYD_UNKNOWN_NAME', `no key for ${name}`);
      return INFO;
    },
    audit: async (query: unknown) => (calls.push(`audit ${JSON.stringify(query)}`), { entries: [] }),
    stats: async () => (calls.push('stats'), {}),
    close: () => undefined,
  } as unknown as AdminTransport;
  const sockets: string[] = [];
  const connect = async (socket: string): Promise<AdminTransport> => (sockets.push(socket), transport);
  return { calls, sockets, connect };
}

async function run(args: string[], r = recorder()): Promise<{ code: number; out: string; err: string; calls: string[]; sockets: string[] }> {
  let out = '';
  let err = '';
  const io: Io = { out: (t) => void (out += t), err: (t) => void (err += t), askPassphrase: async () => undefined };
  const code = await main(args, io, r.connect);
  return { code, out, err, calls: r.calls, sockets: r.sockets };
}

test('admin usage errors exit 2 with the usage text, and nothing connects; their valid forms reach keyd', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'admin-usage-'));
  try {
    const ca = await createDemoCa();
    const chain = join(dir, 'chain.pem');
    await writeFile(chain, (await issueLeaf(ca, generateKeyPairSync('ed25519').publicKey, ['a.test'])).pem);
    const csr = join(dir, 'out.csr');
    const remote = ['--server', '127.0.0.1:1', '--cert', 'op.pem', '--key', 'op.key', '--ca', 'ca.pem'];
    const cases: Array<[string[], RegExp]> = [
      [['--socket', 'admin.sock', 'frobnicate'], /unknown operation "frobnicate"/],
      [['--socket', 'admin.sock', ...remote, 'list'], /--socket and --server exclude each other/],
      [['--cert', 'op.pem', 'list'], /--cert only with --server HOST:PORT/],
      [['--socket', '--timeout', '5', 'list'], /--socket needs a value/],
      [['--socket', 'admin.sock', 'audit', '--limit', '0'], /--limit must be a positive integer/],
      [['--socket', 'admin.sock', 'delete', 'a.test', 'b.test'], /expected exactly one NAME, got 2/],
      [['--socket', 'admin.sock', 'show', 'a.test', 'b.test'], /expected exactly one NAME, got 2/],
      [['--socket', 'admin.sock', 'chain', 'a.test', chain, 'extra'], /chain needs NAME CHAIN\.pem/],
      [['--socket', 'admin.sock', 'gen', 'a.test', '--type', 'ecdsa-p256', '--subject', 'CN=a.test'], /gen needs --csr OUT\.csr/],
    ];
    for (const [args, message] of cases) {
      const r = await run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, new RegExp(`^delegator admin: ${message.source}`), args.join(' '));
      assert.match(r.err, /\nUsage: delegator admin /, args.join(' '));
      assert.equal(r.out, '');
      assert.deepEqual(r.sockets, [], `nothing connected: ${args.join(' ')}`);
      assert.deepEqual(r.calls, [], `keyd asked nothing: ${args.join(' ')}`);
    }
    // Controls: the valid forms of the same commands.
    const valid: Array<[string[], string]> = [
      [['--socket', 'admin.sock', 'audit', '--limit', '1'], 'audit {"limit":1}'],
      [['--socket', 'admin.sock', 'delete', 'a.test'], 'delete a.test'],
      [['--socket', 'admin.sock', 'chain', 'a.test', chain], 'setChain a.test'],
      [['--socket', 'admin.sock', 'gen', 'a.test', '--type', 'ecdsa-p256', '--subject', 'CN=a.test', '--csr', csr], 'generate a.test'],
      [['--socket=admin.sock', 'list'], 'list'],
    ];
    for (const [args, call] of valid) {
      const r = await run(args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
      assert.deepEqual(r.sockets, ['admin.sock']);
      assert.deepEqual(r.calls, [call]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('admin: a refusal exits 1 with one line ending in its code; show --json prints the reply as JSON, show without it a table', async () => {
  const refused = await run(['--socket', 'admin.sock', 'show', 'nothing.test']);
  assert.equal(refused.code, 1);
  assert.equal(refused.err, 'delegator admin: no key for nothing.test [KEYD_UNKNOWN_NAME]\n');
  assert.equal(refused.out, '');
  const json = await run(['--socket', 'admin.sock', 'show', 'a.test', '--json']);
  assert.equal(json.code, 0, json.err);
  assert.deepEqual(JSON.parse(json.out), JSON.parse(JSON.stringify(INFO)));
  const plain = await run(['--socket', 'admin.sock', 'show', 'a.test']);
  assert.equal(plain.code, 0, plain.err);
  assert.match(plain.out, /^names {6}a\.test\nkey type {3}ecdsa-p256\n/);
});

test('admin put: an unreadable --passphrase-file is that error (exit 1, KEYD_BAD_REQUEST), not an empty passphrase; a readable one works', { timeout: 20_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'admin-pass-'));
  try {
    const ca = await createDemoCa();
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const key = join(dir, 'key.pem');
    await writeFile(key, privateKey.export({ format: 'pem', type: 'pkcs8', cipher: 'aes-256-cbc', passphrase: 'correct horse' }), { mode: 0o600 });
    const chain = join(dir, 'chain.pem');
    await writeFile(chain, (await issueLeaf(ca, publicKey, ['a.test'])).pem);
    const missing = await run(['--socket', 'admin.sock', 'put', 'a.test', '--key', key, '--chain', chain, '--passphrase-file', join(dir, 'no-such-file')]);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /^delegator admin: cannot read passphrase file .*no-such-file: ENOENT \[KEYD_BAD_REQUEST\]\n$/);
    assert.deepEqual(missing.sockets, []);
    const passFile = join(dir, 'pass.txt');
    await writeFile(passFile, 'correct horse\n', { mode: 0o600 });
    const good = await run(['--socket', 'admin.sock', 'put', 'a.test', '--key', key, '--chain', chain, '--passphrase-file', passFile]);
    assert.equal(good.code, 0, good.err);
    assert.deepEqual(good.calls, ['put a.test']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
