import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { KeydError } from '../../../src/keyd/errors.js';
import { RollbackGuard } from '../../../src/keyd/root/rollback-guard.js';
import type { RootCounter } from '../../../src/keyd/root/root-key.js';

/** A monotonic counter whose increments can be made to fail, like a TPM that is busy or gone. */
class FlakyCounter implements RootCounter {
  readonly description = 'test counter';
  value = 100n;
  failures = 0;
  async read(): Promise<bigint> {
    return this.value;
  }
  async readOptional(): Promise<bigint | undefined> {
    return this.value;
  }
  async increment(): Promise<bigint> {
    if (this.failures > 0) {
      this.failures--;
      throw new KeydError('KEYD_TPM', 'TPM failure while incrementing test counter');
    }
    return ++this.value;
  }
  async create(): Promise<bigint> {
    return this.increment();
  }
}

async function scratchDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'rollback-guard-'));
}

test('rollback guard: two commits whose counter increments fail in a row leave a store that still opens', async () => {
  const dir = await scratchDir();
  try {
    const macKey = randomBytes(32);
    const counter = new FlakyCounter();
    const guard = await RollbackGuard.open(dir, macKey, counter, 'fresh');
    await guard.commit((s) => RollbackGuard.markKey(s, 'ka', 1));
    assert.equal(counter.value, 102n);

    counter.failures = 2;
    await assert.rejects(guard.commit((s) => RollbackGuard.markKey(s, 'kb', 1)), /TPM failure/);
    // The TPM is still failing: the second change must not write a manifest two ahead.
    await assert.rejects(guard.commit((s) => RollbackGuard.markKey(s, 'kc', 1)), /TPM failure/);

    // The TPM is back, keyd restarts: the interrupted change is completed, nothing is refused.
    const reopened = await RollbackGuard.open(dir, macKey, counter, 'existing');
    assert.equal(counter.value, 103n);
    assert.equal(reopened.expected('key', 'kb').version, 1, 'the change whose increment failed is in the manifest');
    assert.equal(reopened.expected('key', 'kc').version, undefined, 'the change refused while the TPM was failing is not');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('rollback guard: after a failed increment the next commit finishes it first, without overshooting', async () => {
  const dir = await scratchDir();
  try {
    const macKey = randomBytes(32);
    const counter = new FlakyCounter();
    const guard = await RollbackGuard.open(dir, macKey, counter, 'fresh');
    counter.failures = 1;
    await assert.rejects(guard.commit((s) => RollbackGuard.markKey(s, 'ka', 1)), /TPM failure/);
    await guard.commit((s) => RollbackGuard.markKey(s, 'kb', 1));
    assert.equal(counter.value, 103n, 'one increment per change: the pending one, then this one');
    const reopened = await RollbackGuard.open(dir, macKey, counter, 'existing');
    assert.equal(reopened.recovered.length, 0, 'counter and manifest agree');
    assert.equal(reopened.expected('key', 'kb').version, 1);

    // Control: the rollback check still bites — the counter moved past the manifest.
    counter.value += 1n;
    await assert.rejects(RollbackGuard.open(dir, macKey, counter, 'existing'), (err: KeydError) => err.code === 'KEYD_STORE_ROLLED_BACK');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
