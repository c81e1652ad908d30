/**
 * The client-certificate policy over a CA bundle (src/tls/client-auth/chain-verifier.ts):
 * every refusal with the alert RFC 8446 §6.2 names, each next to an accepted control that
 * differs only in the property under test.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, randomBytes, X509Certificate as X509 } from 'node:crypto';
import { before, describe, test } from 'node:test';
import { TlsAlert } from '../../../src/tls/alert.js';
import { ClientAuthConfigError, ClientChainVerifier, loadClientAuth } from '../../../src/tls/client-auth/chain-verifier.js';
import { CLIENT_SIGNATURE_SCHEMES } from '../../../src/tls/handshake/client-certificate-verify.js';
import { encodeCertificateRequest13 } from '../../../src/tls/messages/client-authentication.js';
import { issue, makeClientCa, makeCrl, type Issued } from '../../helpers/client-pki.js';

const HOUR = 3_600_000;
let ca: Issued;
let otherCa: Issued;
let leaf: Issued;
let verifier: ClientChainVerifier;

before(async () => {
  ca = await makeClientCa({ commonName: 'Client CA' });
  otherCa = await makeClientCa({ commonName: 'Other CA' });
  leaf = await issue(ca, { commonName: 'alice' });
  verifier = await ClientChainVerifier.load({ mode: 'required', caPem: ca.pem });
});

function refused(v: ClientChainVerifier, chain: Issued[], alert: string, message?: RegExp): void {
  assert.throws(
    () => v.verify(chain.map((c) => c.der)),
    (err: unknown) => {
      assert.ok(err instanceof TlsAlert, `expected a TlsAlert, got ${String(err)}`);
      assert.equal(err.alertName, alert, err.message);
      if (message) assert.match(err.message, message);
      return true;
    },
  );
}

describe('client chain verifier', () => {
  test('a leaf of the configured CA is accepted, with its identity and key', () => {
    const verified = verifier.verify([leaf.der]);
    assert.equal(verified.identity.commonName, 'alice');
    assert.equal(verified.identity.subject, 'CN=alice');
    assert.equal(verified.identity.issuer, 'CN=Client CA');
    assert.equal(verified.identity.fingerprint256, new X509(Buffer.from(leaf.der)).fingerprint256);
    assert.equal(verified.publicKey.asymmetricKeyType, 'ec');
  });

  test('a leaf of another CA gets unknown_ca', async () => {
    refused(verifier, [await issue(otherCa, { commonName: 'mallory' })], 'unknown_ca');
  });

  test('a leaf signed by a key that only claims the CA name gets unknown_ca', async () => {
    const impostor = await makeClientCa({ commonName: 'Client CA' }); // same name, other key
    refused(verifier, [await issue(impostor)], 'unknown_ca');
  });

  test('expired and not-yet-valid leaves get certificate_expired', async () => {
    refused(verifier, [await issue(ca, { notBefore: new Date(Date.now() - 48 * HOUR), notAfter: new Date(Date.now() - HOUR) })], 'certificate_expired', /expired/);
    refused(verifier, [await issue(ca, { notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 48 * HOUR) })], 'certificate_expired', /not valid before/);
  });

  test('the clock decides validity (positive control with a clock inside the window)', async () => {
    const late = await ClientChainVerifier.load({ mode: 'required', caPem: ca.pem, now: () => Date.now() + 8 * 24 * HOUR });
    refused(late, [leaf], 'certificate_expired');
  });

  test('extendedKeyUsage without clientAuth gets unsupported_certificate; anyExtendedKeyUsage and none are accepted', async () => {
    refused(verifier, [await issue(ca, { extendedKeyUsage: [x509.ExtendedKeyUsage.serverAuth] })], 'unsupported_certificate', /clientAuth/);
    verifier.verify([(await issue(ca, { extendedKeyUsage: ['2.5.29.37.0'] })).der]);
    verifier.verify([(await issue(ca, { extendedKeyUsage: null })).der]);
  });

  test('keyUsage without digitalSignature gets unsupported_certificate', async () => {
    refused(verifier, [await issue(ca, { keyUsage: x509.KeyUsageFlags.keyEncipherment })], 'unsupported_certificate', /digitalSignature/);
    verifier.verify([(await issue(ca, { keyUsage: null })).der]);
  });

  test('an intermediate CA in the chain is followed; without it the leaf has no path (unknown_ca)', async () => {
    const intermediate = await issue(ca, { ca: true, commonName: 'Intermediate' });
    const viaIntermediate = await issue(intermediate, { commonName: 'bob' });
    assert.equal(verifier.verify([viaIntermediate.der, intermediate.der]).identity.commonName, 'bob');
    refused(verifier, [viaIntermediate], 'unknown_ca');
  });

  test('an issuer that is not a CA gets bad_certificate', async () => {
    const notCa = await issue(ca, { commonName: 'not a CA', keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature });
    const below = await issue(notCa, { commonName: 'carol' });
    refused(verifier, [below, notCa], 'bad_certificate', /not a CA/);
  });

  test('a path longer than a pathLenConstraint gets bad_certificate', async () => {
    const root = await makeClientCa({ commonName: 'Root pathlen 0', pathLength: 0 });
    const rootVerifier = await ClientChainVerifier.load({ mode: 'required', caPem: root.pem });
    const intermediate = await issue(root, { ca: true, commonName: 'Intermediate under pathlen 0' });
    const below = await issue(intermediate, { commonName: 'dave' });
    refused(rootVerifier, [below, intermediate], 'bad_certificate', /allows 0 intermediate/);
    assert.equal(rootVerifier.verify([(await issue(root, { commonName: 'direct' })).der]).identity.commonName, 'direct');
  });

  test('maxPathLength counts the leaf and the trust anchor: a path one certificate longer gets unknown_ca', async () => {
    const short = await ClientChainVerifier.load({ mode: 'required', caPem: ca.pem, maxPathLength: 3 });
    const first = await issue(ca, { ca: true, commonName: 'Intermediate 1' });
    const second = await issue(first, { ca: true, commonName: 'Intermediate 2' });
    const underFirst = await issue(first, { commonName: 'erin' });
    const underSecond = await issue(second, { commonName: 'frank' });
    // leaf, Intermediate 1, Client CA: 3 certificates.
    assert.equal(short.verify([underFirst.der, first.der]).identity.commonName, 'erin');
    // leaf, Intermediate 2, Intermediate 1, Client CA: 4.
    refused(short, [underSecond, second, first], 'unknown_ca', /within 3 certificates/);
    assert.equal(verifier.verify([underSecond.der, second.der, first.der]).identity.commonName, 'frank', 'control: the default (6) allows it');
  });

  test('a critical extension the policy does not process gets unsupported_certificate (RFC 5280 §4.2), leaf or intermediate', async () => {
    const unknown = (critical: boolean) => new x509.Extension('1.3.6.1.4.1.55555.1', critical, Buffer.of(0x05, 0x00));
    refused(verifier, [await issue(ca, { commonName: 'henry', extraExtensions: [unknown(true)] })], 'unsupported_certificate', /critical extension 1\.3\.6\.1\.4\.1\.55555\.1/);
    assert.equal(verifier.verify([(await issue(ca, { commonName: 'ivy', extraExtensions: [unknown(false)] })).der]).identity.commonName, 'ivy', 'control: the same extension, non-critical');
    // nameConstraints (critical, as RFC 5280 §4.2.1.10 requires): not enforced here, so refused rather than ignored.
    // NameConstraints ::= SEQUENCE { permittedSubtrees [0] { GeneralSubtree { dNSName "example.com" } } }
    const nameConstraints = new x509.Extension('2.5.29.30', true, Buffer.from('3011a00f300d820b6578616d706c652e636f6d', 'hex'));
    const constrained = await issue(ca, { ca: true, commonName: 'Constrained', extraExtensions: [nameConstraints] });
    refused(verifier, [await issue(constrained, { commonName: 'jack' }), constrained], 'unsupported_certificate', /2\.5\.29\.30/);
    const unconstrained = await issue(ca, { ca: true, commonName: 'Unconstrained' });
    assert.equal(verifier.verify([(await issue(unconstrained, { commonName: 'kate' })).der, unconstrained.der]).identity.commonName, 'kate', 'control: an intermediate without it');
    // The recognised ones may be critical (keyUsage and basicConstraints are, in every test certificate).
    const withSan = await issue(ca, { commonName: 'leo', extraExtensions: [new x509.SubjectAlternativeNameExtension([{ type: 'email', value: 'leo@example.com' }], true)] });
    assert.equal(verifier.verify([withSan.der]).identity.commonName, 'leo');
  });

  test('an expired intermediate gets certificate_expired', async () => {
    const old = await issue(ca, { ca: true, commonName: 'Old intermediate', notBefore: new Date(Date.now() - 10 * HOUR), notAfter: new Date(Date.now() - HOUR) });
    refused(verifier, [await issue(old), old], 'certificate_expired');
  });

  test('a revoked leaf gets certificate_revoked; another leaf of the same CA is accepted', async () => {
    const revoked = await issue(ca, { commonName: 'revoked' });
    const withCrl = await ClientChainVerifier.load({ mode: 'required', caPem: ca.pem, crlPem: await makeCrl(ca, [revoked]) });
    refused(withCrl, [revoked], 'certificate_revoked');
    withCrl.verify([leaf.der]);
  });

  // RFC 5280 §6.1.3 (a)(3): every certificate of the path is checked against the CRLs, not
  // only the leaf: a revoked intermediate takes the leaves below it with it.
  test('a revoked intermediate gets certificate_revoked; an intermediate the CRL does not list is accepted', async () => {
    const revokedIntermediate = await issue(ca, { ca: true, commonName: 'Revoked intermediate' });
    const goodIntermediate = await issue(ca, { ca: true, commonName: 'Good intermediate' });
    const withCrl = await ClientChainVerifier.load({ mode: 'required', caPem: ca.pem, crlPem: await makeCrl(ca, [revokedIntermediate]) });
    refused(withCrl, [await issue(revokedIntermediate, { commonName: 'mallory' }), revokedIntermediate], 'certificate_revoked', /Revoked intermediate/);
    assert.equal(withCrl.verify([(await issue(goodIntermediate, { commonName: 'nina' })).der, goodIntermediate.der]).identity.commonName, 'nina');
  });

  // RFC 5280 §4.2.1.3: an issuer whose keyUsage lacks keyCertSign does not sign certificates.
  // node:crypto's checkIssued (OpenSSL's X509_check_issued) already refuses such an issuer, so
  // path building finds none: unknown_ca, as OpenSSL's own verifier answers (checkIssuer's
  // keyCertSign test is a second line behind it).
  test('an intermediate CA whose keyUsage lacks keyCertSign issues nothing: unknown_ca', async () => {
    const noCertSign = await issue(ca, { ca: true, commonName: 'No keyCertSign', keyUsage: x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature });
    refused(verifier, [await issue(noCertSign, { commonName: 'oscar' }), noCertSign], 'unknown_ca', /No keyCertSign/);
    const withCertSign = await issue(ca, { ca: true, commonName: 'With keyCertSign', keyUsage: x509.KeyUsageFlags.keyCertSign });
    assert.equal(verifier.verify([(await issue(withCertSign, { commonName: 'peggy' })).der, withCertSign.der]).identity.commonName, 'peggy');
  });

  // RFC 5280 §5.2.3 / §6.3.3: a serial number names a certificate only together with its
  // issuer; a CRL revokes serials of its own issuer, not the same serial under another CA.
  test("a CRL revokes only its issuer's serials: the same serial under another configured CA is accepted", async () => {
    const serialNumber = '7a11ce';
    const revoked = await issue(ca, { commonName: 'revoked under Client CA', serialNumber });
    const twin = await issue(otherCa, { commonName: 'same serial under Other CA', serialNumber });
    const both = await ClientChainVerifier.load({ mode: 'required', caPem: ca.pem + otherCa.pem, crlPem: await makeCrl(ca, [revoked]) });
    assert.equal(both.verify([twin.der]).identity.commonName, 'same serial under Other CA');
    refused(both, [revoked], 'certificate_revoked', /revoked under Client CA/);
  });

  // RFC 5280 §6.1: the trust anchor is configuration, not input: its extensions are not
  // checked (a CA file may hold a root with a critical extension this policy does not process).
  test('a configured CA with a critical extension the policy does not process still anchors its leaves; a leaf with it is refused', async () => {
    const unknown = new x509.Extension('1.3.6.1.4.1.55555.2', true, Buffer.of(0x05, 0x00));
    const root = await makeClientCa({ commonName: 'Root with a critical extension', extraExtensions: [unknown] });
    const rootVerifier = await ClientChainVerifier.load({ mode: 'required', caPem: root.pem });
    assert.equal(rootVerifier.verify([(await issue(root, { commonName: 'quinn' })).der]).identity.commonName, 'quinn');
    refused(rootVerifier, [await issue(root, { commonName: 'rita', extraExtensions: [unknown] })], 'unsupported_certificate', /55555\.2/);
  });

  test('a CRL past its nextUpdate refuses its certificates (certificate_unknown)', async () => {
    const stale = await ClientChainVerifier.load({ mode: 'required', caPem: ca.pem, crlPem: await makeCrl(ca, [], new Date(Date.now() - 1000)) });
    refused(stale, [leaf], 'certificate_unknown', /nextUpdate/);
  });

  test('a CRL not signed by a configured CA is a configuration error', async () => {
    await assert.rejects(ClientChainVerifier.load({ mode: 'required', caPem: ca.pem, crlPem: await makeCrl(otherCa, []) }), ClientAuthConfigError);
  });

  test('a CA file without certificates, or with a non-CA certificate, is a configuration error', async () => {
    await assert.rejects(ClientChainVerifier.load({ mode: 'required', caPem: 'nothing here' }), /no PEM certificate/);
    await assert.rejects(ClientChainVerifier.load({ mode: 'required', caPem: leaf.pem }), /not a CA/);
  });

  test('a CA-signed leaf whose key node:crypto cannot load gets unsupported_certificate, not an internal error', async () => {
    // SubjectPublicKeyInfo { AlgorithmIdentifier { 1.2.3.4 }, BIT STRING 0x0102030405 }: parses as X.509, loads as no key.
    const spki = Buffer.from('300f300506032a03040306000102030405', 'hex');
    const odd = await x509.X509CertificateGenerator.create({
      serialNumber: '0badcafe',
      subject: 'CN=odd key',
      issuer: ca.cert.subject,
      notBefore: new Date(Date.now() - HOUR),
      notAfter: new Date(Date.now() + HOUR),
      publicKey: new x509.PublicKey(new Uint8Array(spki).buffer),
      signingKey: ca.keys.privateKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    });
    refused(verifier, [{ der: new Uint8Array(odd.rawData) } as Issued], 'unsupported_certificate', /cannot load/);
    assert.ok(verifier.verify([leaf.der]).publicKey, 'control: a P-256 leaf of the same CA');
  });

  test('an issuer candidate whose key would cost milliseconds per check gets unsupported_certificate before any signature check', async () => {
    // A leaf naming a look-alike issuer, and the look-alike: a CA certificate with that name
    // whose key the client chose. Path building would verify the leaf with it (OpenSSL only
    // pairs an issuer key with a subject signed by that key type: the leaf is RSA-signed).
    const lookAlike = await makeClientCa({ commonName: 'Look-alike', keyType: 'rsa2048' });
    const victim = await issue(lookAlike, { commonName: 'oscar' });
    const withKey = async (spki: Buffer) => ({ der: await certificateFor('CN=Look-alike', spki, true) }) as Issued;
    // 3072-bit modulus, 3064-bit public exponent: OpenSSL accepts it, ≈ 7 ms per verification.
    const slowExponent = await withKey(rsaSpki(3072, 3064));
    const calls = countVerifications(() => refused(verifier, [victim, slowExponent], 'unsupported_certificate', /3064-bit RSA public exponent/));
    assert.equal(calls, 0, 'refused before any verification with that key');
    refused(verifier, [victim, await withKey(rsaSpki(8208, 17))], 'unsupported_certificate', /8208-bit RSA modulus/);
    // A CA-signed leaf with a key no signature scheme uses.
    const x25519 = generateKeyPairSync('x25519', { publicKeyEncoding: { format: 'der', type: 'spki' }, privateKeyEncoding: { format: 'der', type: 'pkcs8' } }).publicKey;
    refused(verifier, [{ der: await certificateFor('CN=x25519 leaf', x25519, false) } as Issued], 'unsupported_certificate', /x25519 key/);
    // Control: the same shape with an ordinary exponent is tried (one verification, which fails:
    // the modulus is random) and the chain gets unknown_ca, as any wrong issuer does.
    const ordinary = await withKey(rsaSpki(3072, 17));
    assert.equal(countVerifications(() => refused(verifier, [victim, ordinary], 'unknown_ca')), 1);
  });

  test('a chain of look-alike issuers costs at most maxPathLength + 2 signature checks (unknown_ca)', async () => {
    const lookAlike = await makeClientCa({ commonName: 'Look-alike' });
    const victim = await issue(lookAlike, { commonName: 'paul' });
    // Nine certificates with the issuer's name and no key identifier: each one a candidate.
    const decoys: Issued[] = [];
    for (let i = 0; i < 9; i++) {
      const spki = generateKeyPairSync('ec', { namedCurve: 'P-256', publicKeyEncoding: { format: 'der', type: 'spki' }, privateKeyEncoding: { format: 'der', type: 'pkcs8' } }).publicKey;
      decoys.push({ der: await certificateFor('CN=Look-alike', spki, true) } as Issued);
    }
    const calls = countVerifications(() => refused(verifier, [victim, ...decoys], 'unknown_ca', /within 8 signature checks/));
    assert.equal(calls, 8, 'the default maxPathLength 6 allows 8 checks');
    // Control: a look-alike before the genuine intermediate costs one check more, and the path is found.
    const intermediate = await issue(ca, { ca: true, commonName: 'Look-alike' });
    const genuine = await issue(intermediate, { commonName: 'quinn' });
    assert.equal(countVerifications(() => assert.equal(verifier.verify([genuine.der, decoys[0]!.der, intermediate.der]).identity.commonName, 'quinn')), 3);
  });

  test('garbage instead of a certificate gets bad_certificate', () => {
    assert.throws(() => verifier.verify([Buffer.from('not a certificate')]), (e: unknown) => e instanceof TlsAlert && e.alertName === 'bad_certificate');
  });

  test('loadClientAuth: CA names that do not fit certificate_authorities are a configuration error unless not advertised', async () => {
    // Three CAs with 30 000-byte names: 90 000 bytes, beyond the CertificateRequest's 2^16-1.
    const big = await Promise.all([0, 1, 2].map((i) => makeClientCa({ commonName: `${'x'.repeat(30_000)}${i}` })));
    const bundle = big.map((c) => c.pem).join('');
    await assert.rejects(loadClientAuth({ mode: 'required', caPem: bundle }), (err: unknown) => {
      assert.ok(err instanceof ClientAuthConfigError, String(err));
      assert.match(err.message, /certificate_authorities.*advertiseCaNames false/);
      return true;
    });
    const hidden = await loadClientAuth({ mode: 'required', caPem: bundle, advertiseCaNames: false });
    const client = await issue(big[1]!, { commonName: 'grace' });
    assert.equal(hidden.verifyChain!([client.der]).identity.commonName, 'grace', 'control: the same CAs without advertising their names');
    // Control: names that fit are encoded into a CertificateRequest.
    const fits = await loadClientAuth({ mode: 'required', caPem: big[0]!.pem });
    assert.ok(encodeCertificateRequest13({ signatureSchemes: CLIENT_SIGNATURE_SCHEMES, certificateAuthorities: fits.certificateAuthorities }).length > 30_000);
  });

  test('loadClientAuth: CA names for certificate_authorities, and a policy id that changes with the CAs', async () => {
    const a = await loadClientAuth({ mode: 'required', caPem: ca.pem });
    const b = await loadClientAuth({ mode: 'required', caPem: otherCa.pem });
    const none = await loadClientAuth({ mode: 'optional', caPem: ca.pem, advertiseCaNames: false });
    assert.deepEqual(a.certificateAuthorities?.map((n) => new x509.Name(n).toString()), ['CN=Client CA']);
    assert.equal(none.certificateAuthorities, undefined);
    assert.notEqual(a.policyId, b.policyId);
    assert.notEqual(a.policyId, none.policyId);
    assert.equal(a.verifyChain!([leaf.der]).identity.commonName, 'alice');
  });
});

/** Verifications made by node:crypto's X509Certificate while `run` runs (path building uses no other). */
function countVerifications(run: () => void): number {
  const original = X509.prototype.verify;
  let calls = 0;
  X509.prototype.verify = function (this: X509, key) {
    calls++;
    return original.call(this, key);
  };
  try {
    run();
  } finally {
    X509.prototype.verify = original;
  }
  return calls;
}

/** An RSA SubjectPublicKeyInfo of a random odd modulus and exponent of these sizes (17 bits: 65537); no private key exists. */
function rsaSpki(modulusBits: number, exponentBits: number): Buffer {
  const oddWithTopBit = (bits: number): Buffer => {
    const b = randomBytes(Math.ceil(bits / 8));
    const top = (bits - 1) % 8;
    b[0] = (b[0]! & ((1 << (top + 1)) - 1)) | (1 << top);
    b[b.length - 1]! |= 1;
    return b;
  };
  const n = oddWithTopBit(modulusBits);
  const e = exponentBits === 17 ? Buffer.of(1, 0, 1) : oddWithTopBit(exponentBits);
  return createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') }, format: 'jwk' }).export({ format: 'der', type: 'spki' });
}

/** A CA (or leaf) certificate for `spki` under `subject`, signed by the test CA, without key identifiers (so any name match is a candidate). */
async function certificateFor(subject: string, spki: Buffer, isCa: boolean): Promise<Uint8Array> {
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString('hex').replace(/^./, '1'),
    subject,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - HOUR),
    notAfter: new Date(Date.now() + HOUR),
    publicKey: new x509.PublicKey(new Uint8Array(spki).buffer),
    signingKey: ca.keys.privateKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.BasicConstraintsExtension(isCa, undefined, true), new x509.KeyUsagesExtension(isCa ? x509.KeyUsageFlags.keyCertSign : x509.KeyUsageFlags.digitalSignature, true)],
  });
  return new Uint8Array(cert.rawData);
}
