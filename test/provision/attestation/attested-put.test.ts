import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main as runRemoteAdmin } from '../../../src/cli/admin.js';
import { appraiseQuote, prepareChallenge, type AttestationEvidence, type QuoteAnswer } from '../../../src/provision/attestation/appraise.js';
import { parseCaBundle, verifyEkCertificate } from '../../../src/provision/attestation/ek-certificate.js';
import { attestKeyd } from '../../../src/provision/attestation/attest-keyd.js';
import { readPolicy } from '../../../src/provision/attestation/policy.js';
import { makePki, startKeydForTest, type Keyd, type Pki } from '../harness.js';
import { otherLocalCa, startSoftTpm, swtpmMissing, type SoftTpm } from '../../keyd/tpm/swtpm.js';
import { makeIdentity } from '../../keyd/fixtures.js';

const skip = await swtpmMissing();
const LOCALCA = '/var/lib/swtpm-localca';

/** Runs `delegator admin --server … <args>` as alice; returns exit code and output. */
async function admin(keyd: Keyd, files: Record<string, string>, args: string[]) {
  let out = '';
  let err = '';
  const code = await runRemoteAdmin(
    ['--server', `127.0.0.1:${keyd.listener.port}`, '--cert', files.cert!, '--key', files.key!, '--ca', files.ca!, '--known-keyd', files.known!, '--ek-ca', files.ekCa!, ...args],
    { out: (s) => (out += s), err: (s) => (err += s) },
  );
  return { code, out, err };
}

test('attested provisioning: a genuine keyd gets the key; a changed PCR (reported or hidden), an EK from another CA or outside its validity, a replayed quote, a quote for another provisioning key or TLS certificate or of other PCRs, an unreleased credential and an unrestricted AK are refused, and nothing is sent', { skip, timeout: 300_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'attest-'));
  const tpms: SoftTpm[] = [];
  const keyds: Keyd[] = [];
  try {
    const pki: Pki = await makePki();
    const genuineTpm = await startSoftTpm();
    tpms.push(genuineTpm);
    const otherCaTpm = await startSoftTpm({ setupConfig: await otherLocalCa(dir) });
    tpms.push(otherCaTpm);
    const genuine = await startKeydForTest(pki, { tpmTcti: genuineTpm.tcti });
    keyds.push(genuine);
    const impostor = await startKeydForTest(pki, { tpmTcti: otherCaTpm.tcti });
    keyds.push(impostor);

    const files = {
      cert: join(dir, 'alice.pem'),
      key: join(dir, 'alice.key'),
      ca: join(dir, 'keyd-ca.pem'),
      known: join(dir, 'known_keyd'),
      ekCa: join(dir, 'tpm-manufacturers.pem'),
      policy: join(dir, 'keyd-pcrs.json'),
    };
    await writeFile(files.cert, pki.alice.certPem);
    await writeFile(files.key, pki.alice.keyPem, { mode: 0o600 });
    await writeFile(files.ca, pki.keydCa.certPem);
    await writeFile(files.ekCa, (await readFile(join(LOCALCA, 'swtpm-localca-rootca-cert.pem'), 'utf8')) + (await readFile(join(LOCALCA, 'issuercert.pem'), 'utf8')));
    const id = await makeIdentity('ecdsa-p256', ['www.attested.test']);
    await writeFile(join(dir, 'www.key'), id.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    await writeFile(join(dir, 'www.pem'), id.cert.toString('pem'));
    const put = (keyd: Keyd, name: string) => admin(keyd, files, ['--attestation-policy', files.policy, 'put', name, '--key', join(dir, 'www.key'), '--chain', join(dir, 'www.pem')]);

    // Record the policy from the known-good keyd, then trust and put with attestation.
    const recorded = await admin(genuine, files, ['--attestation-policy', files.policy, 'attestation-policy', 'record', '--pcrs', 'sha256:0+7+16']);
    assert.equal(recorded.code, 0, recorded.err);
    const policy = await readPolicy(files.policy);
    assert.equal(policy.pcrs, 'sha256:0+7+16');
    assert.deepEqual(Object.keys(policy.values).sort(), ['0', '16', '7']);
    const trusted = await admin(genuine, files, ['--attestation-policy', files.policy, 'trust']);
    assert.equal(trusted.code, 0, trusted.err);
    assert.match(trusted.out, /attested: EK certificate chains to CN=swtpm-localca-rootca, PCRs sha256:0\+7\+16 match/);
    const ok = await put(genuine, 'www.attested.test');
    assert.equal(ok.code, 0, ok.err);
    assert.ok(genuine.keyring.lookup('www.attested.test'), 'genuine keyd: the key was installed');

    // A PCR changes (something else was measured): the admin refuses and sends nothing.
    await genuineTpm.tool('tpm2_pcrextend', [`16:sha256=${'cd'.repeat(32)}`]);
    const auditBefore = (await genuine.audit()).length;
    const changed = await put(genuine, 'pcr-changed.attested.test');
    assert.equal(changed.code, 1);
    assert.match(changed.err, /pcr-policy: sha256 PCR 16 differ from the recorded policy .*\[PROVISION_ATTESTATION_FAILED\]/);
    assert.equal(genuine.keyring.lookup('pcr-changed.attested.test'), undefined);
    const puts = (await genuine.audit()).slice(auditBefore).filter((e) => e.op === 'put');
    assert.deepEqual(puts, [], 'no put reached keyd');
    await genuineTpm.restart(); // PCR 16 back to its recorded value

    // A TPM whose EK certificate comes from another CA (same CA name, another key).
    const impostorPin = await admin(impostor, files, ['trust']); // pin without attestation, so only the EK check can stop the put
    assert.equal(impostorPin.code, 0, impostorPin.err);
    const foreign = await put(impostor, 'foreign.attested.test');
    assert.equal(foreign.code, 1);
    assert.match(foreign.err, /ek-certificate: .*no certificate of that name in the manufacturer CA bundle signed it/);
    assert.equal(impostor.keyring.lookup('foreign.attested.test'), undefined);

    // Replayed quote / quote for another provisioning key: the appraisal itself, fed a genuine answer.
    const cas = parseCaBundle(await readFile(files.ekCa, 'utf8'), files.ekCa);
    const genuineClient = await genuine.connect(pki.alice);
    const impostorClient = await impostor.connect(pki.alice);
    try {
      const ctx = { manufacturerCas: cas, provisioningPublicKey: genuineClient.keydPublicKey, tlsCertificateDer: genuineClient.peerCertificateDer, policy, pcrs: policy.pcrs };
      const evidence = (await genuineClient.request('attestStart')) as AttestationEvidence;
      const challenge = await prepareChallenge(evidence, ctx);
      const answer = (await genuineClient.request('attestQuote', { credential: challenge.credential.toString('base64'), nonce: challenge.nonce.toString('base64'), pcrs: policy.pcrs })) as QuoteAnswer;
      // Positive control: this answer passes for this request.
      assert.equal(appraiseQuote(challenge, answer, ctx).pcrs, 'sha256:0+7+16');
      // The same quote offered for a later request (another nonce).
      assert.throws(() => appraiseQuote({ ...challenge, nonce: randomBytes(32) }, answer, ctx), /quote-freshness: the quote binds another nonce than this request's: a replayed \(old\) quote/);
      // Relayed: the admin talks to the impostor keyd, which forwards attestation to the genuine one.
      const relayedCtx = { ...ctx, provisioningPublicKey: impostorClient.keydPublicKey, tlsCertificateDer: impostorClient.peerCertificateDer };
      assert.throws(() => appraiseQuote(challenge, answer, relayedCtx), /quote-binding: the quote binds provisioning key SHA256:\S+, not SHA256:\S+ of the keyd on this connection/);
      // A quote signed by another AK than the activated one.
      const forged = { ...answer, signature: Buffer.from(answer.signature).fill(1, 10, 20) };
      assert.throws(() => appraiseQuote(challenge, forged, ctx), /quote-signature/);
      // PCR values re-cut: two bytes of PCR 7 moved to the end of PCR 0. The concatenation, and so
      // the signed digest, is unchanged; recording a policy (no policy yet) would keep these values.
      const v = answer.pcrValues;
      const recut = { ...answer, pcrValues: { ...v, '0': v['0']! + v['7']!.slice(0, 4), '7': v['7']!.slice(4) } };
      const recording = { ...ctx, policy: undefined };
      assert.equal(appraiseQuote(challenge, answer, recording).pcrValues['7'], v['7'], 'control: the genuine answer records its values');
      assert.throws(() => appraiseQuote(challenge, recut, recording), /pcr-policy: keyd reported sha256 PCR 0, 7 as 34 bytes, not the 32 of one sha256 digest/);
      // An odd trailing hex digit, which Buffer.from would drop.
      const odd = { ...answer, pcrValues: { ...v, '16': v['16']! + 'a' } };
      assert.throws(() => appraiseQuote(challenge, odd, recording), /pcr-policy: keyd reported sha256 PCR 16 as 32.5 bytes/);
      // The quote reached through an endpoint with another TLS certificate (same provisioning
      // key: a TLS-terminating relay in front of the genuine keyd): the quote binds keyd's own.
      const relayCertificate = new Uint8Array(new X509Certificate(pki.keydCa.certPem).raw);
      assert.throws(() => appraiseQuote(challenge, answer, { ...ctx, tlsCertificateDer: relayCertificate }), /quote-binding: the quote binds another TLS certificate than the one of this connection/);
      // keyd answers a secret the TPM did not release (its AK is not in the TPM of the EK it showed).
      assert.throws(() => appraiseQuote(challenge, { ...answer, activatedSecret: randomBytes(32) }, ctx), /ak-binding: the TPM did not release the credential/);
      // keyd reports PCR values the TPM did not sign (recording would keep them as the policy).
      const unsigned = { ...answer, pcrValues: { ...v, '16': 'ab'.repeat(32) } };
      assert.throws(() => appraiseQuote(challenge, unsigned, recording), /quote-signature: the reported PCR values do not match the digest the TPM signed/);

      // An AK that is not a restricted key (TPMA_OBJECT restricted, bit 16, cleared): such a key
      // signs any digest (TPM2_Sign), so a TPMS_ATTEST with TPM_GENERATED_VALUE proves nothing.
      const akPublic = Buffer.from(evidence.akPublic);
      akPublic.writeUInt32BE(akPublic.readUInt32BE(6) & ~(1 << 16), 6); // TPM2B size, type, nameAlg, then objectAttributes
      await assert.rejects(prepareChallenge({ ...evidence, akPublic }, ctx), /ak-binding: the attestation key's attributes 0x[0-9a-f]+ are not those of a TPM-resident restricted signing key/);

      // A quote of other PCRs relabelled as the policy's: swtpm's PCRs 1 and 7 are both zero, so
      // PCR 1's value stands in for PCR 7 and the signed digest still matches.
      const otherEvidence = (await genuineClient.request('attestStart')) as AttestationEvidence;
      const otherChallenge = await prepareChallenge(otherEvidence, ctx);
      const otherPcrs = 'sha256:0+1+16';
      const other = (await genuineClient.request('attestQuote', { credential: otherChallenge.credential.toString('base64'), nonce: otherChallenge.nonce.toString('base64'), pcrs: otherPcrs })) as QuoteAnswer;
      assert.equal(appraiseQuote(otherChallenge, other, { ...ctx, policy: undefined, pcrs: otherPcrs }).pcrs, otherPcrs, 'control: the quote passes for the PCRs it covers');
      const relabelled = { ...other, pcrValues: { '0': other.pcrValues['0']!, '7': other.pcrValues['1']!, '16': other.pcrValues['16']! } };
      assert.throws(() => appraiseQuote(otherChallenge, relabelled, ctx), /pcr-policy: the quote covers other PCRs than sha256:0\+7\+16/);

      // An EK certificate outside its validity period (here: before it was issued).
      assert.ok((await verifyEkCertificate(evidence.ekCertificate, cas)).chain.length >= 2, 'control: the EK certificate chains today');
      const beforeIssued = new Date(Date.parse(new X509Certificate(Buffer.from(evidence.ekCertificate)).validFrom) - 1000);
      await assert.rejects(verifyEkCertificate(evidence.ekCertificate, cas, beforeIssued), /ek-certificate: "[^"]*" is outside its validity period/);
    } finally {
      genuineClient.close();
      impostorClient.close();
    }

    // A keyd whose PCR 16 changed reports the recorded values instead of its own.
    await genuineTpm.tool('tpm2_pcrextend', [`16:sha256=${'ef'.repeat(32)}`]);
    const liar = await genuine.connect(pki.alice);
    try {
      const ctx = { manufacturerCas: cas, provisioningPublicKey: liar.keydPublicKey, tlsCertificateDer: liar.peerCertificateDer, policy, pcrs: policy.pcrs };
      const challenge = await prepareChallenge((await liar.request('attestStart')) as AttestationEvidence, ctx);
      const answer = (await liar.request('attestQuote', { credential: challenge.credential.toString('base64'), nonce: challenge.nonce.toString('base64'), pcrs: policy.pcrs })) as QuoteAnswer;
      assert.throws(() => appraiseQuote(challenge, answer, ctx), /pcr-policy: sha256 PCR 16 differ/, 'control: the honest answer shows the change');
      assert.throws(() => appraiseQuote(challenge, { ...answer, pcrValues: { ...policy.values } }, ctx), /quote-signature: the reported PCR values do not match the digest the TPM signed/);
    } finally {
      liar.close();
    }
    await genuineTpm.restart();

    // Two operators attesting at once: keyd runs each TPM sequence alone (no resource manager on swtpm).
    const [c1, c2] = [await genuine.connect(pki.alice), await genuine.connect(pki.alice)];
    try {
      const results = await Promise.all([c1, c2].map((c) => attestKeyd(c, { manufacturerCas: cas, policy, pcrs: policy.pcrs })));
      assert.deepEqual(results.map((r) => r.pcrs), [policy.pcrs, policy.pcrs]);
    } finally {
      c1.close();
      c2.close();
    }

    // `show` prints the policy without connecting.
    let shown = '';
    assert.equal(await runRemoteAdmin(['--attestation-policy', files.policy, 'attestation-policy', 'show'], { out: (s) => (shown += s), err: () => {} }), 0);
    assert.match(shown, /PCRs sha256:0\+7\+16/);
  } finally {
    for (const k of keyds) await k.close();
    for (const t of tpms) await t.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
