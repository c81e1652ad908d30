import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, readFile, readdir, rename, rm, stat, symlink, truncate, writeFile, copyFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { createHmac, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { SoftwareKeyHandle } from '../../src/keyd/key-handle.js';
import { SealedStore } from '../../src/keyd/store.js';
import { scratch } from './fixtures.js';

function p256() {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
}

test('keys and secrets survive a reopen; the root key is created 0600, 32 bytes, outside the data dir', async () => {
  const s = await scratch();
  try {
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    const key = p256();
    const stored = await store.putKey({ id: 'kabc', names: ['a.test', '*.b.test'], key: new SoftwareKeyHandle(key), chain: [Uint8Array.of(1, 2, 3)] });
    assert.equal(stored.version, 1);
    const again = await store.putKey({ id: 'kabc', names: ['a.test'], key: new SoftwareKeyHandle(key), chain: [], seq: stored.seq, addedAt: stored.addedAt });
    assert.equal(again.version, 2);
    await store.putSecret('provisioning-key', Buffer.from('secret bytes'));
    const st = await stat(opts.rootKeyPath);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.size, 32);

    const reopened = await SealedStore.open(opts);
    const { keys, failures } = await reopened.loadKeys();
    assert.deepEqual(failures, []);
    assert.equal(keys.length, 1);
    assert.deepEqual(keys[0]!.names, ['a.test']);
    assert.equal(keys[0]!.version, 2);
    assert.equal(keys[0]!.addedAt, stored.addedAt);
    assert.ok(keys[0]!.key.publicKey.equals(createPublicKey(key)));
    assert.ok(keys[0]!.key.storedForm().kind === 'pkcs8');
    assert.deepEqual((await reopened.getSecret('provisioning-key'))!.toString(), 'secret bytes');
    assert.equal(await reopened.getSecret('absent'), undefined);

    // Nothing on disk holds the key or the secret in the clear.
    const pkcs8 = key.export({ format: 'der', type: 'pkcs8' });
    for (const dir of ['keys', 'secrets']) {
      for (const f of await readdir(join(opts.dataDir, dir))) {
        const bytes = await readFile(join(opts.dataDir, dir, f));
        assert.equal(bytes.indexOf(pkcs8.subarray(-32)), -1, `${f} contains key bytes`);
        assert.equal(bytes.indexOf('secret bytes'), -1, `${f} contains the secret`);
      }
    }
  } finally {
    await s.cleanup();
  }
});

test('a data directory used with another root key is refused, saying so', async () => {
  const s = await scratch();
  try {
    const dataDir = join(s.dir, 'data');
    const store = await SealedStore.open({ dataDir, rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath });
    await store.putKey({ id: 'k1', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath: join(s.dir, 'other-root.key'), machineIdPath: s.machineIdPath }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_STORE_OTHER_ROOT_KEY');
      assert.match(err.message, /sealed under another root key, not .*other-root\.key/);
      return true;
    });
  } finally {
    await s.cleanup();
  }
});

test('a data directory (and root key) copied to another machine is refused, saying so', async () => {
  const s = await scratch();
  try {
    const dataDir = join(s.dir, 'data');
    const rootKeyPath = join(s.dir, 'root.key');
    const store = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    await store.putKey({ id: 'k1', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    const otherMachine = join(s.dir, 'other-machine-id');
    await writeFile(otherMachine, '0000000000000000000000000000beef\n');
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath, machineIdPath: otherMachine }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_STORE_OTHER_MACHINE');
      assert.match(err.message, /sealed to another machine/);
      return true;
    });
    // Even with store.json forged to accept the new machine, the records do not open:
    // machine-id is part of the seal-key derivation, not only of the check.
    // store.json is not secret: anyone can recompute its machine check for the new machine.
    const meta = JSON.parse(await readFile(join(dataDir, 'store.json'), 'utf8'));
    meta.machineCheck = createHmac('sha256', Buffer.from(meta.salt, 'base64'))
      .update('keyd machine check\0')
      .update('0000000000000000000000000000beef')
      .digest('hex');
    await writeFile(join(dataDir, 'store.json'), JSON.stringify(meta));
    // The manifest is MACed under a key derived from the seal key: it fails first.
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath, machineIdPath: otherMachine }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_MANIFEST_TAMPERED');
      return true;
    });
  } finally {
    await s.cleanup();
  }
});

test('a tampered record is refused with an error naming it; the other records still load', async () => {
  const s = await scratch();
  try {
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    for (const id of ['kgood', 'kbody', 'kheader']) await store.putKey({ id, names: [`${id}.test`], key: new SoftwareKeyHandle(p256()), chain: [] });
    // Flip one ciphertext byte in one record, and rename a key in another's clear header.
    const bodyPath = store.keyRecordPath('kbody');
    const body = await readFile(bodyPath);
    body[body.length - 40]! ^= 0x01;
    await writeFile(bodyPath, body);
    const headerPath = store.keyRecordPath('kheader');
    const header = await readFile(headerPath);
    const at = header.indexOf('kheader.test');
    header[at] = 'x'.charCodeAt(0);
    await writeFile(headerPath, header);

    const { keys, failures } = await (await SealedStore.open(opts)).loadKeys();
    assert.deepEqual(keys.map((k) => k.id), ['kgood']);
    assert.equal(failures.length, 2);
    for (const f of failures) assert.equal(f.code, 'KEYD_RECORD_TAMPERED');
    assert.match(failures.map((f) => f.message).join('\n'), /key record kbody \(names kbody\.test\) failed authentication/);
    assert.match(failures.map((f) => f.message).join('\n'), /key record kheader .*failed authentication/);
  } finally {
    await s.cleanup();
  }
});

test('a record moved to another record name is refused', async () => {
  const s = await scratch();
  try {
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    await store.putKey({ id: 'ka', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    await copyFile(store.keyRecordPath('ka'), store.keyRecordPath('kb'));
    const { keys, failures } = await (await SealedStore.open(opts)).loadKeys();
    assert.deepEqual(keys.map((k) => k.id), ['ka']);
    assert.equal(failures[0]?.code, 'KEYD_RECORD_TAMPERED');
    assert.match(failures[0]!.message, /key record kb is tampered with: its header names key ka/);
  } finally {
    await s.cleanup();
  }
});

test('root key problems are refused with precise errors', async () => {
  const s = await scratch();
  try {
    const dataDir = join(s.dir, 'data');
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath: join(dataDir, 'root.key'), machineIdPath: s.machineIdPath }), {
      code: 'KEYD_ROOT_KEY',
      message: /must live outside the data directory/,
    });
    const rootKeyPath = join(s.dir, 'root.key');
    await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    await chmod(rootKeyPath, 0o644);
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath }), { code: 'KEYD_ROOT_KEY', message: /chmod 600/ });
    const short = join(s.dir, 'short.key');
    await writeFile(short, Buffer.alloc(16), { mode: 0o600 });
    await assert.rejects(SealedStore.open({ dataDir: join(s.dir, 'd2'), rootKeyPath: short, machineIdPath: s.machineIdPath }), {
      code: 'KEYD_ROOT_KEY',
      message: /holds 16 bytes, expected 32/,
    });
    await assert.rejects(SealedStore.open({ dataDir: join(s.dir, 'd3'), rootKeyPath: join(s.dir, 'r3.key'), machineIdPath: join(s.dir, 'nope') }), {
      code: 'KEYD_STORE_IO',
      message: /cannot read the machine id/,
    });
  } finally {
    await s.cleanup();
  }
});

test('leftover temporary files from a crash are removed on open', async () => {
  const s = await scratch();
  try {
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    await store.putKey({ id: 'ka', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    const tmp = join(opts.dataDir, 'keys', '.kz.rec.tmp-123456');
    await writeFile(tmp, 'half');
    await SealedStore.open(opts);
    assert.deepEqual((await readdir(join(opts.dataDir, 'keys'))).sort(), ['ka.rec']);
    await rename(store.keyRecordPath('ka'), store.keyRecordPath('ka')); // still readable
  } finally {
    await s.cleanup();
  }
});

test('leftover temporaries of manifest.json, store.json and signing-totals.json (a crash mid-write) are removed on open; the files they were to replace are kept', async () => {
  const s = await scratch();
  try {
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    await store.putKey({ id: 'ka', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    await writeFile(join(opts.dataDir, 'signing-totals.json'), '{}');
    const before = (await readdir(opts.dataDir)).sort();
    const manifest = await readFile(join(opts.dataDir, 'manifest.json'));
    for (const name of ['.manifest.json.tmp-0a1b2c3d4e5f', '.store.json.tmp-0a1b2c3d4e5f', '.signing-totals.json.tmp-0a1b2c3d4e5f']) {
      await writeFile(join(opts.dataDir, name), 'half a file');
    }
    const reopened = await SealedStore.open(opts);
    assert.deepEqual((await readdir(opts.dataDir)).sort(), before, 'only the temporaries are gone');
    assert.deepEqual(await readFile(join(opts.dataDir, 'manifest.json')), manifest);
    assert.deepEqual((await reopened.loadKeys()).keys.map((k) => k.id), ['ka']);
  } finally {
    await s.cleanup();
  }
});

test('a data directory that lost store.json but holds keyd secrets is refused, and opens again once store.json is back', async () => {
  const s = await scratch();
  try {
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    await store.putSecret('provisioning-key', Buffer.from('pinned by operators'));
    const manifest = await readFile(join(opts.dataDir, 'manifest.json'));
    await rename(join(opts.dataDir, 'store.json'), join(s.dir, 'store.json.saved'));

    // Starting a new store here would replace the manifest: the old one could never open again.
    await assert.rejects(SealedStore.open(opts), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_STORE_CORRUPT');
      assert.match(err.message, /holds keyd secrets but no store\.json; refusing to start a new store over them/);
      return true;
    });
    assert.deepEqual(await readFile(join(opts.dataDir, 'manifest.json')), manifest, 'the manifest is untouched');

    // Control: with store.json back, the store and its secret open as before.
    await rename(join(s.dir, 'store.json.saved'), join(opts.dataDir, 'store.json'));
    const reopened = await SealedStore.open(opts);
    assert.equal((await reopened.getSecret('provisioning-key'))!.toString(), 'pinned by operators');
  } finally {
    await s.cleanup();
  }
});

const GIB = 1024 * 1024 * 1024;

/** A sparse file of `size` bytes (no disk used): what a 10 GB file planted in the data directory looks like to keyd. */
async function sparse(path: string, size: number): Promise<void> {
  await writeFile(path, '', { mode: 0o600 });
  await truncate(path, size);
}

test('files too large or not regular in the data directory are refused unread, each by name: a key record, a FIFO, a secret, the manifest, the root key', { timeout: 60_000 }, async () => {
  const s = await scratch();
  try {
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    await store.putKey({ id: 'ka', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    await store.putSecret('provisioning-key', Buffer.from('pinned'));

    // A key record of 100 MiB and a FIFO (whose open would wait for a writer) in keys/.
    await sparse(join(opts.dataDir, 'keys', 'kbig.rec'), 100 * 1024 * 1024);
    execFileSync('mkfifo', [join(opts.dataDir, 'keys', 'kfifo.rec')]);
    const withBadKeys = await SealedStore.open(opts);
    const { keys, failures } = await withBadKeys.loadKeys();
    assert.deepEqual(keys.map((k) => k.id), ['ka'], 'control: the good record is still served');
    const messages = failures.map((f) => `${f.code} ${f.message}`).sort();
    assert.equal(messages.length, 2);
    assert.match(messages[0]!, /^KEYD_RECORD_TAMPERED key record kbig is 104857600 bytes, more than the 16777216 it can hold/);
    assert.match(messages[1]!, /^KEYD_RECORD_TAMPERED key record kfifo is not a regular file/);
    await rm(join(opts.dataDir, 'keys', 'kbig.rec'));
    await rm(join(opts.dataDir, 'keys', 'kfifo.rec'));

    // A 10 GB secret: keyd does not start, naming it (not a RangeError from readFile).
    const secretPath = join(opts.dataDir, 'secrets', 'provisioning-key.rec');
    const secret = await readFile(secretPath);
    await sparse(secretPath, 10 * GIB);
    await assert.rejects(SealedStore.open(opts), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_RECORD_TAMPERED');
      assert.match(err.message, /^secret provisioning-key is 10737418240 bytes, more than/);
      return true;
    });
    await writeFile(secretPath, secret);

    // A 10 GB manifest.
    const manifestPath = join(opts.dataDir, 'manifest.json');
    const manifest = await readFile(manifestPath);
    await sparse(manifestPath, 10 * GIB);
    await assert.rejects(SealedStore.open(opts), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_MANIFEST_TAMPERED');
      assert.match(err.message, /manifest\.json is 10737418240 bytes, more than the \d+ it can hold: not a manifest keyd wrote/);
      return true;
    });
    await writeFile(manifestPath, manifest);

    // A 10 GB root key file.
    const rootKey = await readFile(opts.rootKeyPath);
    await rm(opts.rootKeyPath);
    await sparse(opts.rootKeyPath, 10 * GIB);
    await assert.rejects(SealedStore.open(opts), /root key file .* holds 10737418240 bytes, expected 32/);
    await writeFile(opts.rootKeyPath, rootKey);

    // Control: everything back, the store opens and serves as before.
    const restored = await SealedStore.open(opts);
    assert.deepEqual((await restored.loadKeys()).keys.map((k) => k.id), ['ka']);
    assert.equal((await restored.getSecret('provisioning-key'))!.toString(), 'pinned');
  } finally {
    await s.cleanup();
  }
});

test('a damaged store.json (a check cut short or missing, a salt cut) is named as damaged, not as another root key, and changes nothing', async () => {
  const s = await scratch();
  try {
    const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    await store.putKey({ id: 'ka', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    const metaPath = join(opts.dataDir, 'store.json');
    const good = await readFile(metaPath, 'utf8');
    const meta = JSON.parse(good) as Record<string, unknown>;
    const damaged: [Record<string, unknown>, RegExp][] = [
      [{ ...meta, rootKeyCheck: (meta.rootKeyCheck as string).slice(0, 40) }, /its rootKeyCheck is not 64 hex digits/],
      [{ ...meta, rootKeyCheck: undefined }, /its rootKeyCheck is not 64 hex digits/],
      [{ ...meta, machineCheck: 7 }, /its machineCheck is not 64 hex digits/],
      [{ ...meta, salt: (meta.salt as string).slice(0, 10) }, /its salt is not 32 bytes of base64/],
    ];
    for (const [bad, why] of damaged) {
      await writeFile(metaPath, JSON.stringify(bad));
      await assert.rejects(SealedStore.open(opts), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'KEYD_STORE_CORRUPT', err.message);
        assert.match(err.message, /store\.json is not a keyd store description/);
        assert.match(err.message, why);
        return true;
      });
      assert.equal(await readFile(metaPath, 'utf8'), JSON.stringify(bad), 'store.json is left as it was');
    }
    // Control: a well-formed store.json from another root key is still named as such.
    await writeFile(metaPath, JSON.stringify({ ...meta, rootKeyCheck: 'ab'.repeat(32) }));
    await assert.rejects(SealedStore.open(opts), (err: Error & { code?: string }) => err.code === 'KEYD_STORE_OTHER_ROOT_KEY');
    await writeFile(metaPath, good);
    assert.deepEqual((await (await SealedStore.open(opts)).loadKeys()).keys.map((k) => k.id), ['ka']);
  } finally {
    await s.cleanup();
  }
});

const asRoot = process.geteuid?.() === 0;

test('a root key file that belongs to another user (or a symlink to one) is refused; keyd\'s own is used', { skip: asRoot ? false : 'needs root, to give a file to another user' }, async () => {
  const s = await scratch();
  try {
    const dataDir = join(s.dir, 'data');
    const rootKeyPath = join(s.dir, 'root.key');
    const store = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    await store.putSecret('provisioning-key', Buffer.from('pinned'));
    // Another user's 32-byte 0600 file, reached directly and through a symlink planted in its place.
    const planted = join(s.dir, 'planted.key');
    await writeFile(planted, Buffer.alloc(32, 7), { mode: 0o600 });
    await chown(planted, 65534, 65534);
    await assert.rejects(SealedStore.open({ dataDir: join(s.dir, 'd2'), rootKeyPath: planted, machineIdPath: s.machineIdPath }), {
      code: 'KEYD_ROOT_KEY',
      message: /belongs to uid 65534, not to keyd's user \(uid 0\) or root/,
    });
    const link = join(s.dir, 'link.key');
    await symlink(planted, link);
    await assert.rejects(SealedStore.open({ dataDir: join(s.dir, 'd3'), rootKeyPath: link, machineIdPath: s.machineIdPath }), { code: 'KEYD_ROOT_KEY', message: /belongs to uid 65534/ });
    // Control: keyd's own root key file opens its store.
    const reopened = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    assert.equal((await reopened.getSecret('provisioning-key'))!.toString(), 'pinned');
  } finally {
    await s.cleanup();
  }
});

test('a root key file readable by its group, or reached through a symlink into the data directory, is refused with KEYD_ROOT_KEY; a 0600 file outside opens (control)', async () => {
  const s = await scratch();
  try {
    const dataDir = join(s.dir, 'data');
    const rootKeyPath = join(s.dir, 'root.key');
    const store = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    await store.putKey({ id: 'k1', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });

    // Group-readable (0640): anyone in the group reads the root key.
    await chmod(rootKeyPath, 0o640);
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /is accessible by group or others \(mode 640\); run chmod 600/);
      return true;
    });
    await chmod(rootKeyPath, 0o600);

    // A directory outside by name, but a symlink to the data directory: the root key would land
    // in it (and travel with every copy of it).
    const link = join(s.dir, 'keydir');
    await symlink(dataDir, link);
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath: join(link, 'root.key'), machineIdPath: s.machineIdPath }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /must live outside the data directory/);
      return true;
    });
    await assert.rejects(stat(join(dataDir, 'root.key')), { code: 'ENOENT' }, 'no root key was created in the data directory');

    // Control: the 0600 file outside opens the store.
    const reopened = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    assert.deepEqual((await reopened.loadKeys()).keys.map((k) => k.id), ['k1']);
  } finally {
    await s.cleanup();
  }
});

test('the manifest MAC depends on the root key: with another root key and a store.json recomputed for it, the old manifest fails authentication (KEYD_MANIFEST_TAMPERED)', async () => {
  const s = await scratch();
  try {
    const dataDir = join(s.dir, 'data');
    const rootKeyPath = join(s.dir, 'root.key');
    const store = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    await store.putKey({ id: 'k1', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });

    // A root key of the attacker's, and store.json's root-key check recomputed for it
    // (store.json is not secret: the salt is in it).
    const otherPath = join(s.dir, 'other.key');
    const other = randomBytes(32);
    await writeFile(otherPath, other, { mode: 0o600 });
    const metaPath = join(dataDir, 'store.json');
    const good = await readFile(metaPath, 'utf8');
    const meta = JSON.parse(good);
    meta.rootKeyCheck = createHmac('sha256', other)
      .update(`keyd root key check format ${meta.format}\0`)
      .update(Buffer.from(meta.salt, 'base64'))
      .digest('hex');
    await writeFile(metaPath, JSON.stringify(meta));
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath: otherPath, machineIdPath: s.machineIdPath }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_MANIFEST_TAMPERED');
      assert.match(err.message, /manifest\.json fails authentication/);
      return true;
    });

    // Control: store.json back, the store's own root key opens it.
    await writeFile(metaPath, good);
    const reopened = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    assert.deepEqual((await reopened.loadKeys()).keys.map((k) => k.id), ['k1']);
  } finally {
    await s.cleanup();
  }
});

test('store.json edited back to format 1 (before manifests) with manifest.json removed is refused (its root-key check covers the format), so a deleted record cannot come back that way; a genuine format-1 store is upgraded (control)', async () => {
  const s = await scratch();
  try {
    const dataDir = join(s.dir, 'data');
    const rootKeyPath = join(s.dir, 'root.key');
    const opts = { dataDir, rootKeyPath, machineIdPath: s.machineIdPath };
    const store = await SealedStore.open(opts);
    await store.putKey({ id: 'k1', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    await store.putKey({ id: 'k2', names: ['b.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
    const k2Path = store.keyRecordPath('k2');
    const k2 = await readFile(k2Path);
    await store.deleteKey('k2');
    const metaPath = join(dataDir, 'store.json');
    const manifestPath = join(dataDir, 'manifest.json');
    const good = await readFile(metaPath, 'utf8');
    const manifest = await readFile(manifestPath);
    const meta = JSON.parse(good);
    assert.equal(meta.format, 2);

    // The attack: the deleted record restored, store.json said to be from before manifests, the manifest removed.
    await writeFile(k2Path, k2);
    await writeFile(metaPath, JSON.stringify({ ...meta, format: 1 }));
    await rm(manifestPath);
    await assert.rejects(SealedStore.open(opts), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_STORE_OTHER_ROOT_KEY', err.message);
      return true;
    });
    await assert.rejects(stat(manifestPath), { code: 'ENOENT' }, 'no manifest was written by the refused start');

    // Put back, the deleted record is refused by its tombstone.
    await writeFile(metaPath, good);
    await writeFile(manifestPath, manifest);
    const current = await SealedStore.open(opts);
    assert.deepEqual((await current.loadKeys()).keys.map((k) => k.id), ['k1']);
    assert.deepEqual(current.refused.map((e) => e.code), ['KEYD_RECORD_DELETED']);
    await rm(k2Path);

    // Control: a genuine format-1 store (its check made with the root key, under format 1's label) opens,
    // gets a manifest and moves to format 2.
    const rootKey = await readFile(rootKeyPath);
    const legacy = {
      ...meta,
      format: 1,
      rootKeyCheck: createHmac('sha256', rootKey).update('keyd root key check\0').update(Buffer.from(meta.salt, 'base64')).digest('hex'),
    };
    await writeFile(metaPath, JSON.stringify(legacy));
    await rm(manifestPath);
    const upgraded = await SealedStore.open(opts);
    assert.deepEqual((await upgraded.loadKeys()).keys.map((k) => k.id), ['k1']);
    assert.equal(JSON.parse(await readFile(metaPath, 'utf8')).format, 2);
    await stat(manifestPath);
  } finally {
    await s.cleanup();
  }
});

test('a root key path, or a sealed root directory, that is itself a symlink into the data directory is refused with KEYD_ROOT_KEY; the real file outside opens (control)', async () => {
  const { loadRoot, parseRootKeySpec } = await import('../../src/keyd/root/root-key.js');
  const s = await scratch();
  try {
    const dataDir = join(s.dir, 'data');
    const rootKeyPath = join(s.dir, 'root.key');
    const store = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    await store.putKey({ id: 'k1', names: ['a.test'], key: new SoftwareKeyHandle(p256()), chain: [] });

    // The key moved into the data directory, a symlink left at its path: a copy of the data
    // directory alone would now open every key.
    const inside = join(dataDir, 'root.key');
    await rename(rootKeyPath, inside);
    await symlink(inside, rootKeyPath);
    await assert.rejects(SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /root key file .*root\.key must live outside the data directory/);
      return true;
    });

    // The same for the TPM's sealed directory (refused before the TPM is asked; the TCTI
    // names a port nothing listens on).
    const tcti = 'swtpm:host=127.0.0.1,port=1';
    const sealedLink = join(s.dir, 'root.tpm');
    await symlink(join(dataDir, 'keys'), sealedLink);
    await assert.rejects(loadRoot(parseRootKeySpec(`tpm:sealed=${sealedLink}`, tcti), dataDir), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /the sealed root key directory .*root\.tpm must live outside the data directory/);
      return true;
    });
    // Control: a sealed directory outside passes the check and goes on to the TPM (which is not there).
    await assert.rejects(loadRoot(parseRootKeySpec(`tpm:sealed=${join(s.dir, 'elsewhere.tpm')}`, tcti), dataDir), (err: Error & { code?: string }) => {
      assert.notEqual(err.code, 'KEYD_ROOT_KEY', err.message);
      assert.match(err.message, /tpm2_createprimary failed/);
      return true;
    });

    // Control: the key back in place of the symlink opens the store.
    await rm(rootKeyPath);
    await rename(inside, rootKeyPath);
    const reopened = await SealedStore.open({ dataDir, rootKeyPath, machineIdPath: s.machineIdPath });
    assert.deepEqual((await reopened.loadKeys()).keys.map((k) => k.id), ['k1']);
  } finally {
    await s.cleanup();
  }
});
