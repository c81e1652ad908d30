import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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

/** A counter shared by another writer (or another TPM's): its value is set by the test, and `missing` makes it undefined there. */
class SharedCounter extends FlakyCounter {
  missing = false;
  /** Extra increments another writer makes at the next increment. */
  others = 0n;
  override async readOptional(): Promise<bigint | undefined> {
    return this.missing ? undefined : this.value;
  }
  override async increment(): Promise<bigint> {
    this.value += this.others;
    this.others = 0n;
    return super.increment();
  }
}

test('rollback guard against the counter: a manifest one change behind, one from another history ahead of it, or a counter this TPM lacks are refused by code; the current one opens (control)', async () => {
  const dir = await scratchDir();
  try {
    const macKey = randomBytes(32);
    const counter = new SharedCounter();
    const guard = await RollbackGuard.open(dir, macKey, counter, 'fresh');
    await guard.commit((s) => RollbackGuard.markKey(s, 'ka', 1));
    const manifestPath = join(dir, 'manifest.json');
    const older = await readFile(manifestPath);
    await guard.commit((s) => RollbackGuard.markKey(s, 'ka', 2));
    const current = await readFile(manifestPath);
    assert.equal(counter.value, 103n);

    // Control: manifest and counter agree.
    assert.equal((await RollbackGuard.open(dir, macKey, counter, 'existing')).expected('key', 'ka').version, 2);

    // The last change rolled back (the manifest of change 102 restored; the counter is at 103).
    await writeFile(manifestPath, older);
    await assert.rejects(RollbackGuard.open(dir, macKey, counter, 'existing'), (err: KeydError) => {
      assert.equal(err.code, 'KEYD_STORE_ROLLED_BACK');
      assert.match(err.message, /was rolled back: its manifest commits change 102 of test counter, but the counter is at 103 \(1 committed change\(s\) missing\)/);
      return true;
    });
    assert.equal(counter.value, 103n, 'a refused start does not move the counter');
    await writeFile(manifestPath, current);

    // The counter is two behind the manifest (another TPM's counter, or another history): refused, not "completed".
    counter.value = 101n;
    await assert.rejects(RollbackGuard.open(dir, macKey, counter, 'existing'), (err: KeydError) => {
      assert.equal(err.code, 'KEYD_STORE_ROLLED_BACK');
      assert.match(err.message, /commits change 103 of test counter, but the counter is only at 101: this store's history is not this TPM's/);
      return true;
    });
    assert.equal(counter.value, 101n);

    // The counter is not defined on this TPM.
    counter.value = 103n;
    counter.missing = true;
    await assert.rejects(RollbackGuard.open(dir, macKey, counter, 'existing'), (err: KeydError) => {
      assert.equal(err.code, 'KEYD_COUNTER_MISSING');
      assert.match(err.message, /bound to test counter at 103, which this TPM does not have/);
      return true;
    });
    counter.missing = false;
    assert.equal((await RollbackGuard.open(dir, macKey, counter, 'existing')).expected('key', 'ka').version, 2, 'control: opens again');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('rollback guard: another writer incrementing the counter is noticed by a commit and by completing an interrupted change; alone, both succeed (control)', async () => {
  const dir = await scratchDir();
  try {
    const macKey = randomBytes(32);
    const counter = new SharedCounter();
    const guard = await RollbackGuard.open(dir, macKey, counter, 'fresh');
    // Control: a commit alone moves the counter to the manifest's value.
    await guard.commit((s) => RollbackGuard.markKey(s, 'ka', 1));
    assert.equal(counter.value, 102n);

    // A commit whose increment lands past its value: someone else incremented too.
    counter.others = 1n;
    await assert.rejects(guard.commit((s) => RollbackGuard.markKey(s, 'kb', 1)), (err: KeydError) => {
      assert.equal(err.code, 'KEYD_STORE_ROLLED_BACK');
      assert.match(err.message, /test counter is at 104 after committing change 103: another writer uses this counter/);
      return true;
    });

    // An interrupted change (manifest one ahead of the counter) completed at start.
    counter.value = 102n;
    const resumed = await RollbackGuard.open(dir, macKey, counter, 'existing');
    assert.equal(counter.value, 103n, 'control: completed by one increment');
    assert.match(resumed.recovered.join('\n'), /completed an interrupted change/);
    // The same, with another writer's increment in between.
    counter.value = 102n;
    counter.others = 1n;
    await assert.rejects(RollbackGuard.open(dir, macKey, counter, 'existing'), (err: KeydError) => {
      assert.equal(err.code, 'KEYD_STORE_ROLLED_BACK');
      assert.match(err.message, /test counter moved to 104 while completing change 103: another writer uses this counter/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('rollback guard: a store bound to a counter is refused without it (counter=none) or with another one; controls: its own counter, a store never bound', async () => {
  const dir = await scratchDir();
  const unbound = await scratchDir();
  try {
    const macKey = randomBytes(32);
    const counter = new FlakyCounter();
    const guard = await RollbackGuard.open(dir, macKey, counter, 'fresh');
    await guard.commit((s) => RollbackGuard.markKey(s, 'ka', 1));
    assert.equal(counter.value, 102n);

    // Without a counter the store's whole-store rollback check would silently be off.
    await assert.rejects(RollbackGuard.open(dir, macKey, undefined, 'existing'), (err: KeydError) => {
      assert.equal(err.code, 'KEYD_COUNTER_MISSING');
      assert.match(err.message, /is bound to test counter at 102, but keyd was started without a counter \(counter=none\)/);
      return true;
    });
    // Another counter, one behind the manifest: it must be neither trusted nor incremented.
    const other = new FlakyCounter();
    (other as { description: string }).description = 'other counter';
    other.value = 101n;
    await assert.rejects(RollbackGuard.open(dir, macKey, other, 'existing'), (err: KeydError) => {
      assert.equal(err.code, 'KEYD_COUNTER_MISSING');
      assert.match(err.message, /is bound to test counter, but keyd was started with other counter/);
      return true;
    });
    assert.equal(other.value, 101n, 'the other counter was not incremented');

    // Controls: the store's own counter opens it; a store never bound opens without one.
    const reopened = await RollbackGuard.open(dir, macKey, counter, 'existing');
    assert.equal(reopened.expected('key', 'ka').version, 1);
    const plain = await RollbackGuard.open(unbound, macKey, undefined, 'fresh');
    await plain.commit((s) => RollbackGuard.markKey(s, 'kb', 1));
    assert.equal((await RollbackGuard.open(unbound, macKey, undefined, 'existing')).expected('key', 'kb').version, 1);
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(unbound, { recursive: true, force: true });
  }
});
