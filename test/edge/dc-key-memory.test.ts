/**
 * DESIGN rule 1 for delegated credentials: the credential's private key lives in the edge
 * only while the credential does. A child process runs the edge's credential manager
 * (dc-key-holder-child.ts); we search its whole memory (/proc/PID/mem) for the key's
 * scalar. Positive control: while the credential is held, the scalar is found (OpenSSL keeps
 * it as a BIGNUM, little-endian 64-bit words, i.e. the big-endian bytes reversed); after
 * expiry plus the grace and a garbage collection, neither byte order is found anywhere.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { processMemoryReadable, scanProcessMemory } from '../helpers/memory-scan.js';
import { scratchDir } from './system.js';

const CHILD = fileURLToPath(new URL('./dc-key-holder-child.js', import.meta.url));

test('the credential key is in the edge while the credential is held, and nowhere in its memory after expiry + grace', { timeout: 120_000 }, async (t) => {
  const scratch = scratchDir('edge-dc-mem-');
  t.after(() => scratch.remove());
  const scalarFile = join(scratch.dir, 'scalar');
  const child = spawn(process.execPath, ['--expose-gc', CHILD, scalarFile, '60000'], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => (await lines.next()).value as string;
  assert.equal(await next(), 'held');
  if (!processMemoryReadable(child.pid!)) {
    t.skip('/proc/PID/mem not readable here');
    return;
  }
  const scalar = readFileSync(scalarFile);
  assert.equal(scalar.length, 32);
  const needles = [
    { name: 'scalar as OpenSSL BIGNUM words (little-endian)', value: Buffer.from(scalar).reverse().subarray(0, 24) },
    { name: 'scalar big-endian', value: scalar.subarray(0, 24) },
  ];
  const whileHeld = scanProcessMemory(child.pid!, needles);
  assert.ok(whileHeld.includes(needles[0]!.name), `control: the live key is found (${whileHeld.join(', ') || 'nothing'})`);

  child.stdin!.write('expire\n');
  assert.equal(await next(), 'expired');
  assert.deepEqual(scanProcessMemory(child.pid!, needles), [], 'the expired credential key is gone from the edge process memory');
});
