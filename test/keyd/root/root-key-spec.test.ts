/**
 * --root-key parsing (src/keyd/root/root-key.ts) at its edges, and the places loadRoot makes:
 * what a mutation probe of root-key.ts found unpinned by test/keyd/tpm/sealed-root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultSealedDir, loadRoot, parseRootKeySpec } from '../../../src/keyd/root/root-key.js';
import { scratch } from '../fixtures.js';

test('counter= must be a whole hex NV index in 0x01000000–0x01bfffff: below the range, past it and with trailing characters refused; the range ends taken', () => {
  for (const value of ['0x00000001', '0x00ffffff', '0x01c00000', '0x81000001', '0x01504b44zz', '0x01504b44 ', '0x01504b44-1']) {
    assert.throws(() => parseRootKeySpec(`tpm:counter=${value}`), (err: Error & { code?: string }) => err.code === 'KEYD_CONFIG', value);
  }
  for (const [value, index] of [['0x01000000', 0x01000000], ['0x01bfffff', 0x01bfffff], ['0x01504B44', 0x01504b44]] as const) {
    assert.equal((parseRootKeySpec(`tpm:counter=${value}`) as { counterIndex: number }).counterIndex, index);
  }
});

test('an option or path left empty is refused, not resolved to the current directory; given ones are kept', () => {
  for (const text of ['tpm:sealed=', 'tpm:pcrs=', 'tpm:counter=', 'tpm:sealed', 'file:', '']) {
    assert.throws(() => parseRootKeySpec(text), (err: Error & { code?: string }) => err.code === 'KEYD_CONFIG', JSON.stringify(text));
  }
  assert.deepEqual(parseRootKeySpec('tpm:sealed=/s'), { kind: 'tpm', sealedDir: '/s', pcrs: undefined, counterIndex: 0x01504b44, tcti: undefined });
  assert.deepEqual(parseRootKeySpec('file:/k'), { kind: 'file', path: '/k' });
});

test('the default sealed directory is beside the data directory, resolved, whatever trailing slashes the data directory has', () => {
  assert.equal(defaultSealedDir('/var/lib/keyd'), '/var/lib/keyd.tpm-root');
  assert.equal(defaultSealedDir('/var/lib/keyd/'), '/var/lib/keyd.tpm-root');
  assert.equal(defaultSealedDir('/var/lib/keyd//'), '/var/lib/keyd.tpm-root');
  assert.equal(defaultSealedDir('data'), join(process.cwd(), 'data.tpm-root'));
});

test('loadRoot creates the data directory for keyd\'s user only (0700), even under a permissive umask', async () => {
  const s = await scratch();
  const umask = process.umask(0o022);
  try {
    const dataDir = join(s.dir, 'new', 'data');
    const root = await loadRoot({ kind: 'file', path: join(s.dir, 'root.key') }, dataDir);
    assert.equal(root.created, true);
    assert.equal(root.rootKey.length, 32);
    assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
  } finally {
    process.umask(umask);
    await s.cleanup();
  }
});
