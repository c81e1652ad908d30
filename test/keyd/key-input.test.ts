/**
 * What `delegator admin put` reads from disk (src/keyd/key-input.ts): the key file's bytes
 * are zeroed once the KeyObject exists (docs/KEYD.md: no plaintext copy of a key outlives its
 * import), and every PEM block of a chain file must be a certificate before anything is sent.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestPki, writePkiFiles } from '../helpers/pki.js';
import { readChainFile, readPrivateKeyFile } from '../../src/keyd/key-input.js';
import { KeydError } from '../../src/keyd/errors.js';

const fsPromises = createRequire(import.meta.url)('node:fs/promises') as typeof import('node:fs/promises');

/** Runs `body` with fs/promises' readFile recording the buffers it returns (for key-input's own import of it). */
async function withReadsRecorded<T>(body: (reads: Buffer[]) => Promise<T>): Promise<T> {
  const original = fsPromises.readFile;
  const reads: Buffer[] = [];
  fsPromises.readFile = (async (...args: Parameters<typeof original>) => {
    const bytes = await original(...args);
    if (Buffer.isBuffer(bytes)) reads.push(bytes);
    return bytes;
  }) as typeof original;
  syncBuiltinESMExports();
  try {
    return await body(reads);
  } finally {
    fsPromises.readFile = original;
    syncBuiltinESMExports();
  }
}

const isZero = (b: Buffer) => b.every((byte) => byte === 0);

test('readPrivateKeyFile: the file bytes it read are all zero once the key is made', { timeout: 20_000 }, async () => {
  const pki = await makeTestPki();
  const files = writePkiFiles(pki);
  try {
    await withReadsRecorded(async (reads) => {
      const key = await readPrivateKeyFile(files.keyFile);
      assert.equal(key.type, 'private');
      assert.deepEqual(key.export({ format: 'der', type: 'pkcs8' }), pki.leafKey.export({ format: 'der', type: 'pkcs8' }), 'the key read is the key written (control)');
      assert.equal(reads.length, 1, 'one read of the key file');
      assert.ok(reads[0]!.length > 100);
      assert.ok(isZero(reads[0]!), 'the PEM bytes are zeroed');
    });
  } finally {
    files.remove();
  }
});

test('readPrivateKeyFile: a key file that does not parse is refused, and its bytes are zeroed too', { timeout: 20_000 }, async () => {
  const pki = await makeTestPki();
  const files = writePkiFiles(pki);
  try {
    const broken = join(files.dir, 'broken.key');
    const lines = pki.leafKeyPem.trim().split('\n');
    // The PEM frame kept, only the first line of its base64: a truncated DER body.
    writeFileSync(broken, [lines[0], ...lines.slice(1, -1).slice(0, 1), lines.at(-1), ''].join('\n'), { mode: 0o600 });
    await withReadsRecorded(async (reads) => {
      await assert.rejects(readPrivateKeyFile(broken), (err: unknown) => err instanceof KeydError && err.code === 'KEYD_BAD_KEY');
      assert.equal(reads.length, 1);
      assert.ok(isZero(reads[0]!));
    });
  } finally {
    files.remove();
  }
});

test('readChainFile: every PEM block must be a certificate; the block that is not is named', { timeout: 20_000 }, async () => {
  const pki = await makeTestPki();
  const files = writePkiFiles(pki);
  try {
    // Control: leaf + CA read to their DER bytes, in order.
    const chain = await readChainFile(files.chainFile);
    assert.deepEqual(chain.map((c) => Buffer.from(c)), [Buffer.from(pki.leafCertDer), Buffer.from(pki.caCertDer)]);

    const bad = join(files.dir, 'bad-chain.pem');
    const notACertificate = `-----BEGIN CERTIFICATE-----\n${Buffer.from('not a certificate at all').toString('base64')}\n-----END CERTIFICATE-----\n`;
    writeFileSync(bad, pki.leafCertPem + notACertificate);
    await assert.rejects(
      readChainFile(bad),
      (err: unknown) => err instanceof KeydError && err.code === 'KEYD_BAD_CHAIN' && /certificate 2 in .*bad-chain\.pem does not parse/.test(err.message),
    );
  } finally {
    files.remove();
  }
});
