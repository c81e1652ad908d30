import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadOrSealRootKey } from '../../../src/keyd/tpm/sealed-root.js';

// The sealed directory's files are checked before any TPM command: no TPM is needed here
// (the TCTI names a port nothing listens on; reaching it would fail with KEYD_TPM).
const tcti = 'swtpm:host=127.0.0.1,port=1';

/**
 * Waits for `p` to settle. Should keyd open `fifo` to read it (the defect), it would block
 * in open() for a writer forever, and its thread with it: be that writer, so that the read
 * gets end-of-file and `p` settles — with something else than the refusal asserted.
 */
async function settled<T>(p: Promise<T>, fifo: string): Promise<() => Promise<T>> {
  let done = false;
  const result = p.then(
    (v) => ((done = true), () => Promise.resolve(v)),
    (e: unknown) => ((done = true), () => Promise.reject(e)),
  );
  while (!done) {
    await sleep(50);
    const w = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined); // ENXIO: no reader
    await w?.close();
  }
  return result;
}

/** A FIFO left in place of a sealed file must not block keyd's start (the test's own timeout is only a hang guard). */
test('sealed root files: a FIFO or an oversized root.json is refused with KEYD_ROOT_KEY, not read', { timeout: 30_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'keyd-sealed-files-'));
  // A private TMPDIR: keyd's work directory (os.tmpdir()/keyd-tpm-*) is made there, so
  // its removal is seen without other processes' directories.
  const savedTmp = process.env.TMPDIR;
  process.env.TMPDIR = join(dir, 'tmp');
  await mkdir(process.env.TMPDIR, { mode: 0o700 });
  try {
    // root.pub a FIFO: refused as not a regular file.
    const a = join(dir, 'a');
    await mkdir(a, { mode: 0o700 });
    execFileSync('mkfifo', [join(a, 'root.pub')]);
    await assert.rejects((await settled(loadOrSealRootKey({ tcti, sealedDir: a }), join(a, 'root.pub')))(), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /root\.pub is not a regular file/);
      return true;
    });

    // Control: a regular root.pub goes on to root.json (absent here → the documented error).
    const b = join(dir, 'b');
    await mkdir(b, { mode: 0o700 });
    await writeFile(join(b, 'root.pub'), Buffer.alloc(10));
    await assert.rejects(loadOrSealRootKey({ tcti, sealedDir: b }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /root\.json does not describe a sealed root key \(ENOENT/);
      return true;
    });

    // root.json a FIFO: refused, not waited on.
    execFileSync('mkfifo', [join(b, 'root.json')]);
    await assert.rejects((await settled(loadOrSealRootKey({ tcti, sealedDir: b }), join(b, 'root.json')))(), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /root\.json does not describe a sealed root key \(is not a regular file\)/);
      return true;
    });

    // root.json larger than 64 KiB: refused before it is parsed.
    await rm(join(b, 'root.json'));
    await writeFile(join(b, 'root.json'), ' '.repeat(64 * 1024 + 1));
    await assert.rejects(loadOrSealRootKey({ tcti, sealedDir: b }), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /root\.json does not describe a sealed root key \(is 65537 bytes, more than the 65536 it can hold\)/);
      return true;
    });

    // A damaged (but small) root.json: the same error, nothing changed in the directory.
    await writeFile(join(b, 'root.json'), '{"format": 2}');
    await assert.rejects(loadOrSealRootKey({ tcti, sealedDir: b }), /does not describe a sealed root key \(format 2\)/);
    assert.deepEqual((await readdir(b)).sort(), ['root.json', 'root.pub']);

    // No work directory is left behind by any of these failures.
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
  } finally {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
    await rm(dir, { recursive: true, force: true });
  }
});

test('a TPM that is not there, at sealing and at unsealing, is KEYD_TPM naming the step and the failed command; a damaged root.json stays KEYD_ROOT_KEY (control)', { timeout: 30_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'keyd-sealed-no-tpm-'));
  try {
    // First start: nothing sealed yet, tpm2_createprimary cannot reach the TPM.
    const fresh = join(dir, 'fresh');
    await assert.rejects(loadOrSealRootKey({ tcti, sealedDir: fresh }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_TPM', err.message);
      assert.match(err.message, /^TPM failure while sealing a root key in .*fresh: tpm2_createprimary failed/);
      return true;
    });
    // A sealed root in place: the same when unsealing.
    const sealed = join(dir, 'sealed');
    await mkdir(sealed, { mode: 0o700 });
    await writeFile(join(sealed, 'root.pub'), Buffer.alloc(10));
    await writeFile(join(sealed, 'root.priv'), Buffer.alloc(10));
    await writeFile(join(sealed, 'root.json'), JSON.stringify({ format: 1, pcrs: null, pcrValues: null, sealedAt: new Date().toISOString() }));
    await assert.rejects(loadOrSealRootKey({ tcti, sealedDir: sealed }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_TPM', err.message);
      assert.match(err.message, /^TPM failure while unsealing the root key in .*sealed: tpm2_createprimary failed/);
      return true;
    });
    // Control: a root.json of another format is still named as such, not as a TPM failure.
    await writeFile(join(sealed, 'root.json'), JSON.stringify({ format: 2 }));
    await assert.rejects(loadOrSealRootKey({ tcti, sealedDir: sealed }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY', err.message);
      assert.match(err.message, /root\.json does not describe a sealed root key \(format 2\)/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
