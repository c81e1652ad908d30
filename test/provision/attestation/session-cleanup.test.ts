import { test } from 'node:test';
import assert from 'node:assert/strict';
import { watch, type FSWatcher } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki, startKeydForTest, type Keyd } from '../harness.js';
import { startSoftTpm, swtpmMissing, type SoftTpm } from '../../keyd/tpm/swtpm.js';

const skip = await swtpmMissing();

/** keyd's attestation work directories (src/keyd/tpm/attester.ts) under `dir`. */
async function attestDirs(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('keyd-attest-'));
}

async function settledCount(dir: string, want: number, ms: number): Promise<number> {
  const until = Date.now() + ms;
  let n = (await attestDirs(dir)).length;
  while (n !== want && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    n = (await attestDirs(dir)).length;
  }
  return n;
}

test('an attestation started by an operator who hangs up while the TPM works is cleaned up; one in use stays until its connection closes', { skip, timeout: 180_000 }, async () => {
  const oldTmp = process.env.TMPDIR;
  const scratch = await mkdtemp(join(tmpdir(), 'attest-cleanup-'));
  let tpm: SoftTpm | undefined;
  let keyd: Keyd | undefined;
  let watcher: FSWatcher | undefined;
  try {
    const pki = await makePki();
    tpm = await startSoftTpm();
    keyd = await startKeydForTest(pki, { tpmTcti: tpm.tcti });
    // keyd runs in this process: its work directories go where TMPDIR points now.
    process.env.TMPDIR = scratch;

    // Control: an attestation in progress keeps its directory while its connection is open,
    // and loses it when the connection closes.
    const holder = await keyd.connect(pki.alice);
    const started = (await holder.request('attestStart')) as { akPublic?: unknown; ekCertificate?: unknown };
    assert.ok(started.akPublic && started.ekCertificate, 'attestStart answered with the EK certificate and an AK');
    assert.equal((await attestDirs(scratch)).length, 1, 'the open attestation keeps its work directory');
    holder.close();
    assert.equal(await settledCount(scratch, 0, 5000), 0, 'closing the connection removes it');

    // The attack: attestStart, then hang up before keyd's TPM has answered (twice queued on
    // one connection, once alone). The close handler runs while there is nothing to close yet.
    // Every work directory keyd creates from here on is seen (inotify), to count TPM preparations.
    const created = new Set<string>();
    watcher = watch(scratch, (_event, name) => {
      if (typeof name === 'string' && name.startsWith('keyd-attest-')) created.add(name);
    });
    const seen = async (n: number) => {
      const until = Date.now() + 30_000;
      while (created.size < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      assert.ok(created.size >= n, 'keyd began preparing the attestation');
    };
    const quitter = await keyd.connect(pki.alice);
    void quitter.request('attestStart').catch(() => {});
    void quitter.request('attestStart').catch(() => {});
    await seen(1); // the first is with the TPM, the second queued behind it
    quitter.close();
    const other = await keyd.connect(pki.alice);
    void other.request('attestStart').catch(() => {});
    await seen(created.size + 1);
    other.close();
    // The TPM is used one command at a time: when a later attestStart has answered, every
    // earlier one has finished with it.
    const witness = await keyd.connect(pki.alice);
    await witness.request('attestStart');
    witness.close();
    assert.equal(await settledCount(scratch, 0, 5000), 0, 'no work directory outlives its connection');
    watcher.close();
    watcher = undefined;
    // The quitter's first attestStart was already running when it hung up, the other's alone
    // too, and the witness's: 3. Its second one was still queued: it must not use the TPM.
    assert.equal(created.size, 3, `TPM preparations after the hang-ups: ${[...created].join(', ')}`);
  } finally {
    watcher?.close(); // an open watcher keeps the test process alive
    if (oldTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = oldTmp;
    await keyd?.close();
    await tpm?.stop();
    await rm(scratch, { recursive: true, force: true });
  }
});
