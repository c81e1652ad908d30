/**
 * `delegator admin gen` waits longer than keyd's own timeout for a key generation (a token's
 * generateTimeoutMs, at most 600 s), so that on a slow token the operator sees keyd's answer
 * and not the CLI's timeout; other operations keep their 60 s, and --timeout overrides both
 * (docs/KEYD.md, "The admin CLI").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type Io } from '../../src/cli/admin.js';
import { DEFAULT_ADMIN_TIMEOUT_MS, GENERATE_REQUEST_TIMEOUT_MS, type AdminTransport } from '../../src/keyd/admin-client.js';
import { parseTokenConfigs } from '../../src/keyd/pkcs11/config.js';

function capture(): Io & { text: () => string } {
  let text = '';
  return { out: (t) => void (text += t), err: (t) => void (text += t), text: () => text };
}

test('admin gen: by default the CLI waits longer than the longest generateTimeoutMs keyd accepts; other operations 60 s; --timeout overrides', async () => {
  // The longest generation timeout a token may have, as keyd's config parser has it.
  const token = { token: 'keyd', module: '/usr/lib/x.so', pinEnv: 'PIN' };
  assert.doesNotThrow(() => parseTokenConfigs({ tokens: [{ ...token, generateTimeoutMs: 600_000 }] }));
  assert.throws(() => parseTokenConfigs({ tokens: [{ ...token, generateTimeoutMs: 600_001 }] }), /generateTimeoutMs must be an integer from 100 to 600000/);
  assert.equal(GENERATE_REQUEST_TIMEOUT_MS, 660_000);
  assert.equal(DEFAULT_ADMIN_TIMEOUT_MS, 60_000);

  const dir = await mkdtemp(join(tmpdir(), 'admin-gen-timeout-'));
  try {
    const connected: Array<[string, number]> = [];
    const info = { keyRef: 'k1', names: ['a.example'], keyType: 'ecdsa-p256', ski: '00', addedAt: '2026-01-01T00:00:00.000Z' };
    const transport = {
      generate: async () => ({ info, csrPem: 'CSR\n' }),
      list: async () => [],
      show: async () => info,
      delete: async () => undefined,
      audit: async () => ({ entries: [] }),
      stats: async () => ({}),
      close: () => undefined,
    } as unknown as AdminTransport;
    let op = '';
    const stub = async (_socket: string, timeoutMs: number): Promise<AdminTransport> => {
      connected.push([op, timeoutMs]);
      return transport;
    };
    const run = async (argv: string[]) => {
      op = argv.find((a) => ['gen', 'list', 'show', 'delete', 'audit', 'stats'].includes(a))!;
      const io = capture();
      assert.equal(await main(['--socket', '/nonexistent/admin.sock', ...argv], io, stub), 0, io.text());
    };
    const gen = ['gen', 'a.example', '--type', 'ecdsa-p256', '--subject', 'CN=a.example', '--csr', join(dir, 'a.csr')];
    await run(gen);
    await run([...gen, '--token', 'keyd']);
    assert.equal(await readFile(join(dir, 'a.csr'), 'utf8'), 'CSR\n');
    // Control: every other operation keeps the 60 s default.
    for (const argv of [['list'], ['show', 'a.example'], ['delete', 'a.example'], ['audit'], ['stats']]) await run(argv);
    // --timeout overrides it for gen as for the others.
    await run(['--timeout', '5', ...gen]);
    await run(['--timeout', '900', 'list']);
    assert.deepEqual(connected, [
      ['gen', 660_000],
      ['gen', 660_000],
      ['list', 60_000],
      ['show', 60_000],
      ['delete', 60_000],
      ['audit', 60_000],
      ['stats', 60_000],
      ['gen', 5_000],
      ['list', 900_000],
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
