/**
 * Durability is a sequence, not an outcome: SIGKILL keeps the page cache, so a crash test
 * cannot see a missing fsync. These tests record the file operations of a real store write
 * (node:fs/promises calls, replaced with recording wrappers) and check their order, and
 * interrupt a write half-way to show the old record survives (docs/KEYD.md).
 */
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import fsp, { type FileHandle } from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { SoftwareKeyHandle } from '../../src/keyd/key-handle.js';
import { SealedStore } from '../../src/keyd/store.js';
import { scratch } from './fixtures.js';

type FsEvent =
  | { op: 'open'; path: string; flags: string }
  | { op: 'write' | 'fsync' | 'close'; path: string }
  | { op: 'rename'; from: string; to: string };

/**
 * Replaces open/rename on node:fs/promises (named ESM imports follow after
 * syncBuiltinESMExports) and wraps each opened FileHandle, recording every call.
 * `onWrite` may replace a handle's writeFile (to interrupt a write).
 */
function recordFs(onWrite?: (fh: FileHandle, path: string, data: Uint8Array, original: (d: Uint8Array) => Promise<void>) => Promise<void>) {
  const events: FsEvent[] = [];
  const originalOpen = fsp.open;
  const originalRename = fsp.rename;
  mock.method(fsp, 'open', async (path: string, flags = 'r', mode?: number) => {
    const fh = await originalOpen(path, flags, mode);
    events.push({ op: 'open', path: String(path), flags: String(flags) });
    const writeFile = fh.writeFile.bind(fh) as (d: Uint8Array) => Promise<void>;
    const write = fh.write.bind(fh) as (...a: unknown[]) => Promise<unknown>;
    const sync = fh.sync.bind(fh);
    const datasync = fh.datasync.bind(fh);
    const close = fh.close.bind(fh);
    Object.assign(fh, {
      writeFile: async (data: Uint8Array) => {
        events.push({ op: 'write', path: String(path) });
        return onWrite ? onWrite(fh, String(path), data, writeFile) : writeFile(data);
      },
      write: async (...a: unknown[]) => {
        events.push({ op: 'write', path: String(path) });
        return write(...a);
      },
      sync: async () => {
        await sync();
        events.push({ op: 'fsync', path: String(path) });
      },
      datasync: async () => {
        await datasync();
        events.push({ op: 'fsync', path: String(path) });
      },
      close: async () => {
        events.push({ op: 'close', path: String(path) });
        return close();
      },
    });
    return fh;
  });
  mock.method(fsp, 'rename', async (from: string, to: string) => {
    await originalRename(from, to);
    events.push({ op: 'rename', from: String(from), to: String(to) });
  });
  syncBuiltinESMExports();
  return {
    events,
    restore() {
      mock.restoreAll();
      syncBuiltinESMExports();
    },
  };
}

function p256() {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
}

test('a store write is write(temp) → fsync(temp) → rename(temp → record) → fsync(directory), never a write to the record itself', async () => {
  const s = await scratch();
  const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
  const store = await SealedStore.open(opts);
  const recorder = recordFs();
  try {
    await store.putKey({ id: 'kdur', names: ['dur.test'], key: new SoftwareKeyHandle(p256()), chain: [] });
  } finally {
    recorder.restore();
  }
  try {
    const record = join(opts.dataDir, 'keys', 'kdur.rec');
    const dir = dirname(record);
    const { events } = recorder;
    const renameAt = events.findIndex((e) => e.op === 'rename' && e.to === record);
    assert.ok(renameAt >= 0, `the record is renamed into place: ${JSON.stringify(events)}`);
    const temp = (events[renameAt] as { from: string }).from;
    assert.notEqual(temp, record);
    assert.equal(dirname(temp), dir, 'the temporary file is in the same directory (rename is atomic only within one file system)');
    const writeAt = events.findIndex((e) => e.op === 'write' && e.path === temp);
    const fsyncTempAt = events.findIndex((e, i) => i > writeAt && e.op === 'fsync' && e.path === temp);
    const fsyncDirAt = events.findIndex((e, i) => i > renameAt && e.op === 'fsync' && e.path === dir);
    assert.ok(writeAt >= 0, 'the data is written to the temporary file');
    assert.ok(fsyncTempAt > writeAt, 'the temporary file is fsynced after the write');
    assert.ok(renameAt > fsyncTempAt, 'and only then renamed over the record');
    assert.ok(fsyncDirAt > renameAt, 'the directory is fsynced after the rename, so the rename itself is durable');
    // Nothing ever opens the record itself for writing: a crash can only leave old or new.
    const inPlace = events.filter((e) => e.op === 'open' && e.path === record);
    assert.deepEqual(inPlace, []);
    assert.ok(!events.some((e) => e.op === 'write' && e.path === record));
    // Positive control: the record reads back after a reopen.
    const { keys, failures } = await (await SealedStore.open(opts)).loadKeys();
    assert.deepEqual(failures, []);
    assert.deepEqual(keys.map((k) => k.id), ['kdur']);
  } finally {
    await s.cleanup();
  }
});

test('a write interrupted half-way leaves the old record intact and readable', async () => {
  const s = await scratch();
  const opts = { dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath };
  try {
    const store = await SealedStore.open(opts);
    const oldKey = p256();
    await store.putKey({ id: 'kint', names: ['old.test'], key: new SoftwareKeyHandle(oldKey), chain: [Uint8Array.of(1)] });
    const recordName = 'kint.rec';
    // The next write of anything for this record stops after half its bytes (a full disk, a crash).
    const recorder = recordFs(async (_fh, path, data, original) => {
      if (!basename(path).includes(recordName)) return original(data);
      await original(data.subarray(0, data.length >> 1));
      throw Object.assign(new Error('simulated failure half-way through the write'), { code: 'EIO' });
    });
    try {
      await assert.rejects(store.putKey({ id: 'kint', names: ['new.test'], key: new SoftwareKeyHandle(p256()), chain: [] }), /half-way/);
    } finally {
      recorder.restore();
    }
    assert.ok(recorder.events.some((e) => e.op === 'write'), 'the interrupted write happened');
    const { keys, failures } = await (await SealedStore.open(opts)).loadKeys();
    assert.deepEqual(failures, []);
    assert.equal(keys.length, 1);
    assert.deepEqual(keys[0]!.names, ['old.test']);
    assert.equal(keys[0]!.version, 1);
    assert.ok(keys[0]!.key.publicKey.equals(createPublicKey(oldKey)));
    // No half-written temporary file is left to be mistaken for a record.
    const left = await fsp.readdir(join(opts.dataDir, 'keys'));
    assert.deepEqual(left, [recordName]);
  } finally {
    await s.cleanup();
  }
});
