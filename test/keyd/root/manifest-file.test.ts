/**
 * The store manifest file on its own (src/keyd/root/manifest-file.ts): what readManifest
 * refuses, and with which code, before the rollback guard ever sees a state.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { emptyManifest, readManifest, writeManifest, MANIFEST_FILE, type ManifestState } from '../../../src/keyd/root/manifest-file.js';

async function scratch(): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'manifest-file-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

test('a manifest of an unknown format, correctly MACed (a later keyd\'s), is refused by code; format 1 reads back as written (control)', async () => {
  const s = await scratch();
  try {
    const key = randomBytes(32);
    const state = { ...emptyManifest(), sequence: 7, keys: { ka: 2 } };
    await writeManifest(s.dir, key, { ...state, format: 2 } as unknown as ManifestState);
    await assert.rejects(readManifest(s.dir, key), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_MANIFEST_TAMPERED');
      assert.match(err.message, /manifest\.json has unknown format 2/);
      return true;
    });

    await writeManifest(s.dir, key, state);
    assert.deepEqual(await readManifest(s.dir, key), state);
  } finally {
    await s.cleanup();
  }
});

test('manifest.json that cannot be read (a symlink loop: ELOOP) is KEYD_STORE_IO naming the reason, not "no manifest"; an absent one is undefined (control)', async () => {
  const s = await scratch();
  try {
    const key = randomBytes(32);
    assert.equal(await readManifest(s.dir, key), undefined);
    await symlink(MANIFEST_FILE, join(s.dir, MANIFEST_FILE));
    await assert.rejects(readManifest(s.dir, key), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_STORE_IO');
      assert.match(err.message, /cannot read .*manifest\.json: ELOOP/);
      return true;
    });
  } finally {
    await s.cleanup();
  }
});

test('JSON that is not a {body, mac} pair of strings (null, a number, an array, a body object) is KEYD_MANIFEST_TAMPERED, never a TypeError', async () => {
  const s = await scratch();
  try {
    const key = randomBytes(32);
    const mac = '00'.repeat(32);
    for (const text of ['null', '5', '"x"', '[]', JSON.stringify({ body: {}, mac }), JSON.stringify({ body: '{}', mac: 5 }), JSON.stringify({ mac })]) {
      await writeFile(join(s.dir, MANIFEST_FILE), text);
      await assert.rejects(readManifest(s.dir, key), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'KEYD_MANIFEST_TAMPERED', `${text}: ${err.message}`);
        assert.match(err.message, /is not a keyd store manifest; refusing to open the store/);
        return true;
      });
    }
    // Control: the right shape with a wrong MAC gets as far as authentication.
    await writeFile(join(s.dir, MANIFEST_FILE), JSON.stringify({ body: '{}', mac }));
    await assert.rejects(readManifest(s.dir, key), /fails authentication/);
  } finally {
    await s.cleanup();
  }
});

test('a MAC that is not exactly 64 lowercase hex digits (the right MAC with junk after it, an odd digit more, upper case, cut short) is KEYD_MANIFEST_TAMPERED; the MAC keyd wrote reads (control)', async () => {
  const s = await scratch();
  try {
    const key = randomBytes(32);
    const state = { ...emptyManifest(), sequence: 3, keys: { kb: 1 } };
    await writeManifest(s.dir, key, state);
    const written = JSON.parse(await readFile(join(s.dir, MANIFEST_FILE), 'utf8')) as { body: string; mac: string };
    assert.match(written.mac, /^[0-9a-f]{64}$/);
    assert.deepEqual(await readManifest(s.dir, key), state, 'control: the manifest as keyd wrote it');
    // Buffer.from(hex) stops at the first non-hex character and drops an odd last digit:
    // each of these decoded to the right 32 bytes before.
    for (const mac of [`${written.mac}zz`, `${written.mac} `, `${written.mac}0`, `${written.mac}\n`, written.mac.toUpperCase(), written.mac.slice(0, 62)]) {
      if (mac === written.mac) continue; // an all-digit MAC has no upper case
      await writeFile(join(s.dir, MANIFEST_FILE), JSON.stringify({ body: written.body, mac }));
      await assert.rejects(readManifest(s.dir, key), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'KEYD_MANIFEST_TAMPERED', JSON.stringify(mac));
        assert.match(err.message, /manifest\.json fails authentication: it was edited, or belongs to another store; refusing to open the store$/);
        return true;
      }, JSON.stringify(mac));
    }
    await writeFile(join(s.dir, MANIFEST_FILE), JSON.stringify({ body: written.body, mac: written.mac }));
    assert.deepEqual(await readManifest(s.dir, key), state, 'control: the same body and MAC re-written');
  } finally {
    await s.cleanup();
  }
});
