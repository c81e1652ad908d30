import 'reflect-metadata';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { verifyEkCertificate } from '../../../src/provision/attestation/ek-certificate.js';

/**
 * verifyEkCertificate on chains built here (keys made at test time, no TPM): a manufacturer
 * root, an intermediate, an EK certificate. The swtpm-based attested-put test checks a real
 * TPM's EK certificate; this one checks what the bundle's certificates may do.
 */

x509.cryptoProvider.set(webcrypto as never);

const EC: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGN: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const DAY = 24 * 3600 * 1000;
const NOW = Date.now();

interface Node {
  keys: webcrypto.CryptoKeyPair;
  cert: x509.X509Certificate;
}

interface Options {
  /** Extensions of the certificate; default: those of a CA (cA TRUE, keyCertSign). */
  extensions?: x509.Extension[];
  notBefore?: number;
  notAfter?: number;
}

const caExtensions = () => [
  new x509.BasicConstraintsExtension(true, undefined, true),
  new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
];

let serial = 1;
async function certificate(subject: string, issuer: Node | 'self', opts: Options = {}): Promise<Node> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    subject,
    issuer: issuer === 'self' ? subject : issuer.cert.subject,
    publicKey: keys.publicKey,
    signingKey: issuer === 'self' ? keys.privateKey : issuer.keys.privateKey,
    signingAlgorithm: SIGN,
    notBefore: new Date(opts.notBefore ?? NOW - DAY),
    notAfter: new Date(opts.notAfter ?? NOW + 30 * DAY),
    extensions: opts.extensions ?? caExtensions(),
  });
  return { keys, cert };
}

/** An ECC EK certificate (end entity: cA FALSE, keyAgreement as the TCG EK profile has it) issued by `issuer`. */
const ek = (issuer: Node, opts: Options = {}) =>
  certificate('CN=tpm ek', issuer, {
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyAgreement, true)],
    ...opts,
  });
const der = (n: Node) => new Uint8Array(n.cert.rawData);

test('EK certificate: every bundle certificate used as an issuer must be a CA allowed to sign certificates (RFC 5280 §4.2.1.9, §4.2.1.3)', async () => {
  const root = await certificate('CN=Manufacturer Root', 'self');
  const intermediate = await certificate('CN=Manufacturer EK CA', root);
  const genuine = await ek(intermediate);
  // Positive control: root → intermediate → EK, both issuers CAs with keyCertSign.
  const ok = await verifyEkCertificate(der(genuine), [root.cert, intermediate.cert]);
  assert.deepEqual(ok.chain, ['CN=tpm ek', 'CN=Manufacturer EK CA', 'CN=Manufacturer Root']);
  // Control: keyUsage is optional; a CA without it (cA TRUE) issues.
  const noKeyUsage = await certificate('CN=Manufacturer EK CA', root, { extensions: [new x509.BasicConstraintsExtension(true, undefined, true)] });
  assert.equal((await verifyEkCertificate(der(await ek(noKeyUsage)), [root.cert, noKeyUsage.cert])).chain.length, 3);

  // An intermediate of the bundle that is not a CA: no basicConstraints, cA FALSE, keyUsage without keyCertSign.
  const cases: [string, x509.Extension[], RegExp][] = [
    ['no basicConstraints', [new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)], /it has no basicConstraints extension, so it is not a CA certificate/],
    ['cA FALSE', [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)], /its basicConstraints has cA FALSE, so it is not a CA certificate/],
    ['no keyCertSign', [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.cRLSign, true)], /its keyUsage lacks keyCertSign/],
  ];
  for (const [what, extensions, reason] of cases) {
    const notCa = await certificate('CN=Manufacturer Server', root, { extensions });
    const forged = await ek(notCa);
    await assert.rejects(
      verifyEkCertificate(der(forged), [root.cert, notCa.cert]),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'PROVISION_ATTESTATION_FAILED', what);
        assert.match(err.message, /^ek-certificate: "CN=tpm ek" was signed by "CN=Manufacturer Server" of the manufacturer CA bundle, which may not issue certificates: /, what);
        assert.match(err.message, reason, what);
        return true;
      },
    );
  }

  // A self-signed bundle certificate that is not a CA, used as the root of the EK.
  const selfSignedLeaf = await certificate('CN=Manufacturer Portal', 'self', { extensions: [new x509.BasicConstraintsExtension(false, undefined, true)] });
  await assert.rejects(verifyEkCertificate(der(await ek(selfSignedLeaf)), [selfSignedLeaf.cert]), /"CN=tpm ek" was signed by "CN=Manufacturer Portal" .*may not issue certificates: its basicConstraints has cA FALSE/);
  // A root without keyCertSign, above a good intermediate: refused as the intermediate's issuer.
  const badRoot = await certificate('CN=Manufacturer Root', 'self', {
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
  });
  const underBadRoot = await certificate('CN=Manufacturer EK CA', badRoot);
  await assert.rejects(verifyEkCertificate(der(await ek(underBadRoot)), [badRoot.cert, underBadRoot.cert]), /"CN=Manufacturer EK CA" was signed by "CN=Manufacturer Root" .*its keyUsage lacks keyCertSign/);

  // Two bundle certificates of the issuer's name and key, one a CA: the CA one is used.
  const twin = await x509.X509CertificateGenerator.create({
    serialNumber: 'ff',
    subject: intermediate.cert.subject,
    issuer: root.cert.subject,
    publicKey: intermediate.keys.publicKey,
    signingKey: root.keys.privateKey,
    signingAlgorithm: SIGN,
    notBefore: new Date(NOW - DAY),
    notAfter: new Date(NOW + 30 * DAY),
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true)],
  });
  assert.equal((await verifyEkCertificate(der(genuine), [root.cert, twin, intermediate.cert])).chain.length, 3, 'control: a non-CA twin does not hide the CA');
});

test('EK certificate: the EK certificate, each intermediate and the root must be inside their validity periods', async () => {
  const root = await certificate('CN=Manufacturer Root', 'self');
  const intermediate = await certificate('CN=Manufacturer EK CA', root);
  const genuine = await ek(intermediate);
  assert.equal((await verifyEkCertificate(der(genuine), [root.cert, intermediate.cert])).chain.length, 3, 'control');

  const expiredEk = await ek(intermediate, { notBefore: NOW - 10 * DAY, notAfter: NOW - 2 * DAY });
  await assert.rejects(verifyEkCertificate(der(expiredEk), [root.cert, intermediate.cert]), /ek-certificate: "CN=tpm ek" is outside its validity period/);

  const expiredIntermediate = await certificate('CN=Manufacturer EK CA', root, { notBefore: NOW - 10 * DAY, notAfter: NOW - 2 * DAY });
  await assert.rejects(
    verifyEkCertificate(der(await ek(expiredIntermediate)), [root.cert, expiredIntermediate.cert]),
    /ek-certificate: "CN=Manufacturer EK CA" is outside its validity period/,
  );

  const futureRoot = await certificate('CN=Manufacturer Root', 'self', { notBefore: NOW + 2 * DAY, notAfter: NOW + 30 * DAY });
  const underFutureRoot = await certificate('CN=Manufacturer EK CA', futureRoot);
  await assert.rejects(
    verifyEkCertificate(der(await ek(underFutureRoot)), [futureRoot.cert, underFutureRoot.cert]),
    /ek-certificate: root "CN=Manufacturer Root" is outside its validity period/,
  );
  // Control: the same chain checked at a time inside the root's period passes.
  assert.equal((await verifyEkCertificate(der(await ek(underFutureRoot)), [futureRoot.cert, underFutureRoot.cert], new Date(NOW + 3 * DAY))).chain.length, 3);
});

const caWithPathLen = (pathLength: number) => [
  new x509.BasicConstraintsExtension(true, pathLength, true),
  new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
];

test('EK certificate: an issuer\'s pathLenConstraint bounds the intermediate CAs below it (RFC 5280 §4.2.1.9, §6.1.4 (l), (m))', { timeout: 20_000 }, async () => {
  // A root with pathLen 0 issues EK certificates directly, but no intermediate CA may follow it.
  const root0 = await certificate('CN=Manufacturer Root', 'self', { extensions: caWithPathLen(0) });
  assert.deepEqual((await verifyEkCertificate(der(await ek(root0)), [root0.cert])).chain, ['CN=tpm ek', 'CN=Manufacturer Root'], 'control: pathLen 0, no intermediate');
  const underRoot0 = await certificate('CN=Manufacturer EK CA', root0);
  await assert.rejects(verifyEkCertificate(der(await ek(underRoot0)), [root0.cert, underRoot0.cert]), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'PROVISION_ATTESTATION_FAILED');
    assert.match(
      err.message,
      /^ek-certificate: "CN=Manufacturer EK CA" was signed by "CN=Manufacturer Root" of the manufacturer CA bundle, which may not issue certificates: its basicConstraints pathLenConstraint 0 allows 0 intermediate CA certificate\(s\) below it, this path has 1 \(RFC 5280/,
    );
    return true;
  });
  // Control: the same shape under a root with pathLen 1.
  const root1 = await certificate('CN=Manufacturer Root', 'self', { extensions: caWithPathLen(1) });
  const underRoot1 = await certificate('CN=Manufacturer EK CA', root1);
  assert.equal((await verifyEkCertificate(der(await ek(underRoot1)), [root1.cert, underRoot1.cert])).chain.length, 3, 'control: pathLen 1, one intermediate');

  // pathLen on an intermediate: root → policy CA (pathLen 0) → EK CA → EK is one CA too many.
  const root = await certificate('CN=Manufacturer Root', 'self');
  const policy0 = await certificate('CN=Manufacturer Policy CA', root, { extensions: caWithPathLen(0) });
  const issuing0 = await certificate('CN=Manufacturer EK CA', policy0);
  await assert.rejects(
    verifyEkCertificate(der(await ek(issuing0)), [root.cert, policy0.cert, issuing0.cert]),
    /ek-certificate: "CN=Manufacturer EK CA" was signed by "CN=Manufacturer Policy CA" .*pathLenConstraint 0 allows 0 intermediate CA certificate\(s\) below it, this path has 1/,
  );
  // The root's constraint counts every intermediate below it: pathLen 1 over two intermediates.
  const policy = await certificate('CN=Manufacturer Policy CA', root1);
  const issuing = await certificate('CN=Manufacturer EK CA', policy);
  await assert.rejects(
    verifyEkCertificate(der(await ek(issuing)), [root1.cert, policy.cert, issuing.cert]),
    /ek-certificate: "CN=Manufacturer Policy CA" was signed by "CN=Manufacturer Root" .*pathLenConstraint 1 allows 1 intermediate CA certificate\(s\) below it, this path has 2/,
  );
  // Controls: pathLen 1 on the intermediate, and a path without pathLen, of the same length.
  const policy1 = await certificate('CN=Manufacturer Policy CA', root, { extensions: caWithPathLen(1) });
  const issuing1 = await certificate('CN=Manufacturer EK CA', policy1);
  assert.equal((await verifyEkCertificate(der(await ek(issuing1)), [root.cert, policy1.cert, issuing1.cert])).chain.length, 4, 'control: intermediate pathLen 1');
  const unconstrainedPolicy = await certificate('CN=Manufacturer Policy CA', root);
  const unconstrainedIssuing = await certificate('CN=Manufacturer EK CA', unconstrainedPolicy);
  assert.equal((await verifyEkCertificate(der(await ek(unconstrainedIssuing)), [root.cert, unconstrainedPolicy.cert, unconstrainedIssuing.cert])).chain.length, 4, 'control: no pathLen');
});

test('EK certificate: a self-issued intermediate (CA key rollover) does not count against pathLenConstraint (RFC 5280 §6.1.4 (l))', { timeout: 20_000 }, async () => {
  // root (pathLen 1) → EK CA, old key → EK CA, new key (self-issued: same name, signed by the old key) → EK.
  const root1 = await certificate('CN=Manufacturer Root', 'self', { extensions: caWithPathLen(1) });
  const oldKey = await certificate('CN=Manufacturer EK CA', root1);
  const newKey = await certificate('CN=Manufacturer EK CA', oldKey);
  const ok = await verifyEkCertificate(der(await ek(newKey)), [root1.cert, oldKey.cert, newKey.cert]);
  assert.deepEqual(ok.chain, ['CN=tpm ek', 'CN=Manufacturer EK CA', 'CN=Manufacturer EK CA', 'CN=Manufacturer Root']);
  // The same rollover under a root with pathLen 0 is refused: the old-key certificate is a real intermediate.
  const root0 = await certificate('CN=Manufacturer Root', 'self', { extensions: caWithPathLen(0) });
  const oldKey0 = await certificate('CN=Manufacturer EK CA', root0);
  const newKey0 = await certificate('CN=Manufacturer EK CA', oldKey0);
  await assert.rejects(verifyEkCertificate(der(await ek(newKey0)), [root0.cert, oldKey0.cert, newKey0.cert]), /pathLenConstraint 0 allows 0 intermediate CA certificate\(s\) below it, this path has 1/);
});

/** SubjectDirectoryAttributes with the TCG tpmSpecification attribute (2.23.133.2.16: "2.0", level 0, revision 138), DER. */
const tpmSpecificationAttributes = Buffer.from('3019301706056781050210310e300c0c03322e30020100020200 8a'.replace(/ /g, ''), 'hex');
/** NameConstraints permitting only dNSName example.com, DER. */
const nameConstraints = Buffer.from('3011a00f300d820b6578616d706c652e636f6d', 'hex');
const UNKNOWN_OID = '1.3.6.1.4.1.55555.1';
const rawExtension = (oid: string, critical: boolean, value: Uint8Array = new Uint8Array([0x05, 0x00])) => new x509.Extension(oid, critical, value);

test('EK certificate: critical extensions of the TCG EK profile pass; any other critical extension on the EK, an intermediate or the root is refused, named (RFC 5280 §4.2)', { timeout: 20_000 }, async () => {
  const root = await certificate('CN=Manufacturer Root', 'self', {
    extensions: [...caExtensions(), await x509.SubjectKeyIdentifierExtension.create((await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])).publicKey)],
  });
  const intermediate = await certificate('CN=Manufacturer EK CA', root, { extensions: [...caExtensions(), new x509.CertificatePolicyExtension(['1.2.3.4.5'], true)] });
  const bundle = [root.cert, intermediate.cert];
  // Positive control, shaped like a manufacturer's EK certificate: empty subject, the TPM's
  // manufacturer/model/version in a critical subjectAltName directoryName, critical
  // basicConstraints and keyUsage, a critical certificatePolicies, tcg-kp-EKCertificate,
  // and a non-critical subjectDirectoryAttributes with the TPM specification.
  const tcgExtensions = (extra: x509.Extension[] = []) => [
    new x509.SubjectAlternativeNameExtension([{ type: 'dn', value: '2.23.133.2.1=id:494E5443, 2.23.133.2.2=SLB9670, 2.23.133.2.3=id:00070002' }], true),
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyAgreement, true),
    new x509.CertificatePolicyExtension(['2.23.133.2.1.1'], true),
    new x509.ExtendedKeyUsageExtension(['2.23.133.8.1'], false),
    rawExtension('2.5.29.9', false, tpmSpecificationAttributes),
    ...extra,
  ];
  const tcgEk = (extra: x509.Extension[] = []) => certificate('', intermediate, { extensions: tcgExtensions(extra) });
  const ok = await verifyEkCertificate(der(await tcgEk()), bundle);
  assert.deepEqual(ok.chain, ['(empty subject)', 'CN=Manufacturer EK CA', 'CN=Manufacturer Root']);
  // Control: a critical extendedKeyUsage that lists tcg-kp-EKCertificate is processed and passes.
  const criticalEku = await ek(intermediate, { extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.ExtendedKeyUsageExtension(['2.23.133.8.1'], true)] });
  assert.equal((await verifyEkCertificate(der(criticalEku), bundle)).chain.length, 3, 'control: critical EKU with tcg-kp-EKCertificate');
  // Control: an unknown extension that is not critical is ignored.
  const nonCritical = await ek(intermediate, { extensions: [new x509.BasicConstraintsExtension(false, undefined, true), rawExtension(UNKNOWN_OID, false)] });
  assert.equal((await verifyEkCertificate(der(nonCritical), bundle)).chain.length, 3, 'control: non-critical unknown extension');

  const refused = async (certDer: Uint8Array, certs: x509.X509Certificate[], message: RegExp, what: string) =>
    assert.rejects(verifyEkCertificate(certDer, certs), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'PROVISION_ATTESTATION_FAILED', what);
      assert.match(err.message, message, what);
      return true;
    });
  // An unknown critical OID on the EK certificate, named with its OID.
  const unknownOnEk = await ek(intermediate, { extensions: [new x509.BasicConstraintsExtension(false, undefined, true), rawExtension(UNKNOWN_OID, true)] });
  await refused(der(unknownOnEk), bundle, /^ek-certificate: "CN=tpm ek" has a critical extension 1\.3\.6\.1\.4\.1\.55555\.1 that this verifier does not process \(RFC 5280 §4\.2\)$/, 'unknown critical on EK');
  // On an EK certificate with an empty subject (the TCG norm) the error names its serial.
  const unknownOnTcgEk = await tcgEk([rawExtension(UNKNOWN_OID, true)]);
  await refused(
    der(unknownOnTcgEk),
    bundle,
    new RegExp(`^ek-certificate: the certificate with an empty subject \\(serial ${unknownOnTcgEk.cert.serialNumber}\\) has a critical extension 1\\.3\\.6\\.1\\.4\\.1\\.55555\\.1 that`),
    'unknown critical on an empty-subject EK',
  );
  // A critical subjectDirectoryAttributes (TPM specification, security assertions): not evaluated here.
  const criticalSda = await ek(intermediate, { extensions: [new x509.BasicConstraintsExtension(false, undefined, true), rawExtension('2.5.29.9', true, tpmSpecificationAttributes)] });
  await refused(der(criticalSda), bundle, /^ek-certificate: "CN=tpm ek" has a critical extension 2\.5\.29\.9 \(subjectDirectoryAttributes\) that this verifier does not process/, 'critical SDA');
  // A known extension whose value does not decode: a precise error, not the library's exception.
  const malformed = await ek(intermediate, { extensions: [new x509.BasicConstraintsExtension(false, undefined, true), rawExtension('2.5.29.31', false)] });
  await refused(der(malformed), bundle, /^ek-certificate: "CN=tpm ek" has an extension that does not parse: /, 'malformed extension');
  // A critical extendedKeyUsage for another purpose.
  const serverEku = await ek(intermediate, { extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], true)] });
  await refused(der(serverEku), bundle, /^ek-certificate: "CN=tpm ek" has a critical extendedKeyUsage \(2\.5\.29\.37\) that does not list tcg-kp-EKCertificate \(2\.23\.133\.8\.1\)/, 'critical EKU serverAuth');

  // A critical nameConstraints on the intermediate CA, and an unknown critical OID on it.
  for (const [what, extension, message] of [
    ['nameConstraints', rawExtension('2.5.29.30', true, nameConstraints), /^ek-certificate: "CN=Manufacturer EK CA" has a critical extension 2\.5\.29\.30 \(nameConstraints\) that this verifier does not process \(RFC 5280 §4\.2\)$/],
    ['unknown', rawExtension(UNKNOWN_OID, true), /^ek-certificate: "CN=Manufacturer EK CA" has a critical extension 1\.3\.6\.1\.4\.1\.55555\.1 that this verifier does not process/],
    ['cRLDistributionPoints', new x509.CRLDistributionPointsExtension(['http://crl.example/ek-ca.crl'], true), /^ek-certificate: "CN=Manufacturer EK CA" has a critical extension 2\.5\.29\.31 \(cRLDistributionPoints\)/],
  ] as const) {
    const constrained = await certificate('CN=Manufacturer EK CA', root, { extensions: [...caExtensions(), extension] });
    await refused(der(await ek(constrained)), [root.cert, constrained.cert], message, `intermediate ${what}`);
  }
  // A critical nameConstraints on the root.
  const constrainedRoot = await certificate('CN=Manufacturer Root', 'self', { extensions: [...caExtensions(), rawExtension('2.5.29.30', true, nameConstraints)] });
  const underConstrainedRoot = await certificate('CN=Manufacturer EK CA', constrainedRoot);
  await refused(
    der(await ek(underConstrainedRoot)),
    [constrainedRoot.cert, underConstrainedRoot.cert],
    /^ek-certificate: "CN=Manufacturer Root" has a critical extension 2\.5\.29\.30 \(nameConstraints\) that this verifier does not process/,
    'root nameConstraints',
  );
});

test('EK certificate: its keyUsage, when present, must allow the credential wrapped to the EK: keyEncipherment (RSA), keyAgreement (ECC) (RFC 5280 §4.2.1.3)', { timeout: 20_000 }, async () => {
  const root = await certificate('CN=Manufacturer Root', 'self');
  const bundle = [root.cert];
  const RSA: webcrypto.RsaHashedKeyGenParams = { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
  const rsaKeys = (await webcrypto.subtle.generateKey(RSA, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const rsaEk = async (usages: x509.KeyUsageFlags | undefined) =>
    x509.X509CertificateGenerator.create({
      serialNumber: (serial++).toString(16).padStart(2, '0'),
      subject: 'CN=tpm rsa ek',
      issuer: root.cert.subject,
      publicKey: rsaKeys.publicKey,
      signingKey: root.keys.privateKey,
      signingAlgorithm: SIGN,
      notBefore: new Date(NOW - DAY),
      notAfter: new Date(NOW + 30 * DAY),
      extensions: [new x509.BasicConstraintsExtension(false, undefined, true), ...(usages === undefined ? [] : [new x509.KeyUsagesExtension(usages, true)])],
    });
  const eccEk = (usages: x509.KeyUsageFlags | undefined) =>
    ek(root, { extensions: [new x509.BasicConstraintsExtension(false, undefined, true), ...(usages === undefined ? [] : [new x509.KeyUsagesExtension(usages, true)])] });

  // Controls: the TCG profile's bits, and no keyUsage at all.
  const rsaOk = await verifyEkCertificate(new Uint8Array((await rsaEk(x509.KeyUsageFlags.keyEncipherment)).rawData), bundle);
  assert.equal(rsaOk.publicKey.asymmetricKeyType, 'rsa');
  assert.equal((await verifyEkCertificate(der(await eccEk(x509.KeyUsageFlags.keyAgreement)), bundle)).publicKey.asymmetricKeyType, 'ec');
  assert.equal((await verifyEkCertificate(new Uint8Array((await rsaEk(undefined)).rawData), bundle)).chain.length, 2, 'control: RSA EK without keyUsage');
  assert.equal((await verifyEkCertificate(der(await eccEk(undefined)), bundle)).chain.length, 2, 'control: ECC EK without keyUsage');

  await assert.rejects(
    verifyEkCertificate(new Uint8Array((await rsaEk(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement)).rawData), bundle),
    /^ProvisionError: ek-certificate: "CN=tpm rsa ek" has a keyUsage without keyEncipherment, which the credential wrapped to its RSA key needs \(RFC 5280 §4\.2\.1\.3\)$/,
  );
  await assert.rejects(
    verifyEkCertificate(der(await eccEk(x509.KeyUsageFlags.keyEncipherment)), bundle),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, 'PROVISION_ATTESTATION_FAILED');
      assert.match(err.message, /^ek-certificate: "CN=tpm ek" has a keyUsage without keyAgreement, which the credential wrapped to its ECC key needs/);
      return true;
    },
  );
  await assert.rejects(verifyEkCertificate(der(await eccEk(x509.KeyUsageFlags.digitalSignature)), bundle), /has a keyUsage without keyAgreement/);
});
