/**
 * keyd's attester (src/keyd/tpm/attester.ts) on a software TPM, below the provisioning
 * listener: one quote per session whatever the caller does (the AK answers one challenge,
 * docs/PROVISIONING.md), a credential the TPM will not activate reported as that
 * (TPM 2.0 Part 1 §24), and no work directory (AK context) left behind, also when begin()
 * fails half-way.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TpmAttester } from '../../../src/keyd/tpm/attester.js';
import { makeCredential } from '../../../src/provision/attestation/make-credential.js';
import { parseAkPublic } from '../../../src/provision/attestation/tpm-structures.js';
import { startSoftTpm, swtpmMissing, type SoftTpm } from './swtpm.js';

const skip = await swtpmMissing();

async function attestDirs(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith('keyd-attest-'));
}

test('one quote per attestation session: after a good one, and after one whose credential the TPM refused; the refusal says so; work directories go with close() and with a failed begin()', { skip, timeout: 180_000 }, async () => {
  const oldTmp = process.env.TMPDIR;
  const scratch = await mkdtemp(join(tmpdir(), 'attester-'));
  let tpm: SoftTpm | undefined;
  try {
    tpm = await startSoftTpm();
    // The attester's work directories go where TMPDIR points (os.tmpdir()).
    process.env.TMPDIR = scratch;
    const attester = new TpmAttester({ tcti: tpm.tcti });
    const nonce = () => randomBytes(32);

    // Control: a credential made for this EK and this AK is activated, the quote answered.
    const good = await attester.begin();
    assert.equal((await attestDirs(scratch)).length, 1, 'the session holds its work directory');
    const ekKey = new X509Certificate(good.start.ekCertificate).publicKey;
    const goodAk = parseAkPublic(good.start.akPublic);
    const secret = randomBytes(32);
    const evidence = await good.quote(await makeCredential(ekKey, goodAk.name, secret), nonce(), 'sha256:0');
    assert.deepEqual(evidence.activatedSecret, secret, 'the TPM released the secret');
    assert.match(evidence.pcrValues[0] ?? '', /^[0-9a-f]{64}$/);
    // The attack: a second challenge on the same AK (another secret, other qualifying data).
    await assert.rejects(good.quote(await makeCredential(ekKey, goodAk.name, randomBytes(32)), nonce(), 'sha256:0'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_BAD_REQUEST');
      assert.match(err.message, /^one quote per attestation session: start a new one$/);
      return true;
    });
    await good.close();

    // A credential bound to another AK's name: TPM2_ActivateCredential refuses it, and the
    // error says which step and why; the session is spent all the same.
    const other = await attester.begin();
    await assert.rejects(other.quote(await makeCredential(ekKey, goodAk.name, randomBytes(32)), nonce(), 'sha256:0'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_TPM');
      assert.match(err.message, /^TPM2_ActivateCredential refused the admin's credential: /);
      return true;
    });
    const otherAk = parseAkPublic(other.start.akPublic);
    await assert.rejects(other.quote(await makeCredential(ekKey, otherAk.name, randomBytes(32)), nonce(), 'sha256:0'), { code: 'KEYD_BAD_REQUEST' }, 'not even with a good credential');
    await other.close();
    assert.deepEqual(await attestDirs(scratch), [], 'close() removes each session\'s directory');

    // begin() failing half-way (the TPM gone): the error, and no directory left.
    await tpm.stop();
    await assert.rejects(attester.begin(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_TPM');
      return true;
    });
    assert.deepEqual(await attestDirs(scratch), [], 'a failed begin() leaves no work directory');
  } finally {
    if (oldTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = oldTmp;
    await tpm?.stop().catch(() => {});
    await rm(scratch, { recursive: true, force: true });
  }
});

test('an EK certificate index larger than its certificate (as some TPMs ship it): the DER alone is handed on, without the padding', { skip, timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attester-nv-'));
  let tpm: SoftTpm | undefined;
  try {
    tpm = await startSoftTpm();
    // TCG EK Credential Profile §2.2.1.5: NV index 0x01c00002, platform-created. Redefine it
    // 100 bytes larger and write the same certificate followed by 0xff padding.
    await tpm.tool('tpm2_nvread', ['0x01c00002', '-C', 'o', '-o', join(dir, 'ek.der')]);
    const der = await readFile(join(dir, 'ek.der'));
    const attester = new TpmAttester({ tcti: tpm.tcti });
    const plain = await attester.begin();
    assert.deepEqual(plain.start.ekCertificate, der, 'control: an index of the certificate\'s size');
    await plain.close();
    await writeFile(join(dir, 'padded'), Buffer.concat([der, Buffer.alloc(100, 0xff)]));
    await tpm.tool('tpm2_nvundefine', ['0x01c00002', '-C', 'p']);
    await tpm.tool('tpm2_nvdefine', ['0x01c00002', '-C', 'p', '-s', String(der.length + 100), '-a', 'ppwrite|writedefine|ppread|ownerread|authread|no_da|platformcreate']);
    await tpm.tool('tpm2_nvwrite', ['0x01c00002', '-C', 'p', '-i', join(dir, 'padded')]);
    const padded = await attester.begin();
    assert.deepEqual(padded.start.ekCertificate, der, 'the certificate\'s DER, not the whole index');
    assert.ok(new X509Certificate(padded.start.ekCertificate));
    await padded.close();
  } finally {
    await tpm?.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
});
