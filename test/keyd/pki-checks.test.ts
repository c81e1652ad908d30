/**
 * What keyd accepts as a key and a certificate chain (admin put / setChain / generate):
 * src/keyd/pki.ts, src/keyd/key-handle.ts and src/keyd/handle-csr.ts. Each refusal is
 * checked with its exact code and message, beside the legitimate case (positive control).
 * The oracles are independent of src/: SKIs are computed from the public key's own
 * encoding, CSRs are parsed and verified with @peculiar/x509.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, generateKeyPair, generateKeyPairSync, webcrypto, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { checkLeafMatchesKey, checkPrivateKey, generateKeyAndCsr, parseChain, subjectKeyIdentifier, type GenerateKeyType } from '../../src/keyd/pki.js';
import { SoftwareKeyHandle } from '../../src/keyd/key-handle.js';
import { csrForHandle } from '../../src/keyd/handle-csr.js';
import { entryFromStored } from '../../src/keyd/keyring.js';
import { LOCAL, makeIdentity, pem, scratch, startTestKeyd, type TestIdentity } from './fixtures.js';

x509.cryptoProvider.set(webcrypto as never);

const rsaPair = promisify(generateKeyPair);
let rsa4096: KeyObject;
let rsa4104: KeyObject;
let ca: TestIdentity;
let leaf: TestIdentity;

before(async () => {
  // The two big keys are made at once (seconds each): the upper bound and its control.
  const [big, tooBig] = await Promise.all([rsaPair('rsa', { modulusLength: 4096 }), rsaPair('rsa', { modulusLength: 4104 })]);
  rsa4096 = big.privateKey;
  rsa4104 = tooBig.privateKey;
  ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=pki-checks CA' });
  leaf = await makeIdentity('ecdsa-p256', ['leaf.test'], ca);
});

const refusal = (code: string, message: RegExp) => ({ code, message });

test('checkPrivateKey: a public key, RSA outside 2048-4096 bits and curves TLS 1.3 does not use are refused; the supported types pass', () => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  assert.throws(() => checkPrivateKey(ec.publicKey), refusal('KEYD_BAD_KEY', /^expected a private key, got a public key$/));
  for (const bits of [1024, 2047]) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: bits });
    assert.throws(() => checkPrivateKey(privateKey), refusal('KEYD_BAD_KEY', new RegExp(`^RSA key of ${bits} bits: keyd takes 2048 to 4096$`)), `${bits} bits`);
  }
  assert.throws(() => checkPrivateKey(rsa4104), refusal('KEYD_BAD_KEY', /^RSA key of 4104 bits: keyd takes 2048 to 4096$/));
  assert.throws(() => checkPrivateKey(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey), refusal('KEYD_BAD_KEY', /^unsupported key type ec \(secp256k1\): use ECDSA/));
  assert.throws(() => checkPrivateKey(generateKeyPairSync('x25519').privateKey), refusal('KEYD_BAD_KEY', /^unsupported key type x25519: use ECDSA/));
  // Controls: both RSA bounds, and every other type keyd serves.
  assert.equal(checkPrivateKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey), 'rsa');
  assert.equal(checkPrivateKey(rsa4096), 'rsa');
  assert.equal(checkPrivateKey(ec.privateKey), 'ecdsa-p256');
  assert.equal(checkPrivateKey(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey), 'ecdsa-p384');
  assert.equal(checkPrivateKey(generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey), 'ecdsa-p521');
  assert.equal(checkPrivateKey(generateKeyPairSync('ed25519').privateKey), 'ed25519');
});

test('SoftwareKeyHandle refuses a public key and a key type TLS 1.3 does not use; a private key signs', () => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  assert.throws(() => new SoftwareKeyHandle(ec.publicKey), { name: 'TypeError', message: /needs a private key/ });
  assert.throws(() => new SoftwareKeyHandle(generateKeyPairSync('x25519').privateKey), { name: 'TypeError', message: /needs a private key/ });
  const handle = new SoftwareKeyHandle(ec.privateKey);
  assert.equal(handle.keyType, 'ecdsa-p256');
  assert.ok(handle.publicKey.export({ format: 'der', type: 'spki' }).equals(ec.publicKey.export({ format: 'der', type: 'spki' })));
});

test('parseChain: empty, a junk certificate anywhere in the chain, PEM text, trailing bytes and two certificates in one are refused', () => {
  const [leafDer, caDer] = leaf.chain as [Uint8Array, Uint8Array];
  assert.throws(() => parseChain([]), refusal('KEYD_BAD_CHAIN', /^certificate chain is empty$/));
  assert.throws(() => parseChain([Buffer.from('junk'), caDer]), refusal('KEYD_BAD_CHAIN', /^certificate 1 of the chain does not parse/));
  assert.throws(() => parseChain([leafDer, Buffer.from('junk')]), refusal('KEYD_BAD_CHAIN', /^certificate 2 of the chain does not parse/));
  // node's X509Certificate reads all of these, but keyd serves the bytes it was given: a TLS
  // client would get a Certificate entry that is not one DER certificate (RFC 8446 §4.4.2).
  const notOneDer = /^certificate 2 of the chain is not exactly one DER certificate/;
  assert.throws(() => parseChain([leafDer, Buffer.from(pem(caDer))]), refusal('KEYD_BAD_CHAIN', notOneDer));
  assert.throws(() => parseChain([leafDer, Buffer.concat([caDer, Buffer.from([0])])]), refusal('KEYD_BAD_CHAIN', notOneDer));
  assert.throws(() => parseChain([leafDer, Buffer.concat([caDer, caDer])]), refusal('KEYD_BAD_CHAIN', notOneDer));
  assert.throws(() => parseChain([Buffer.from(pem(leafDer))]), refusal('KEYD_BAD_CHAIN', /^certificate 1 of the chain is not exactly one DER certificate/));
  // Control: the DER chain, leaf first.
  const parsed = parseChain(leaf.chain);
  // A record an older keyd stored with such an entry still loads (its key can be given a
  // new chain with setChain); only what an admin request brings is held to one DER each.
  assert.equal(parseChain([Buffer.from(pem(leafDer))], { exactDer: false }).length, 1);
  const stored = entryFromStored({
    id: 'k1',
    version: 1,
    seq: 1,
    names: ['leaf.test'],
    key: new SoftwareKeyHandle(leaf.privateKey),
    chain: [Buffer.from(pem(leafDer)), caDer],
    addedAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
  });
  assert.equal(stored.subject, 'CN=leaf.test');
  assert.equal(parsed.length, 2);
  assert.match(parsed[0]!.subject, /CN=leaf\.test/);
  assert.match(parsed[1]!.subject, /CN=pki-checks CA/);
});

test('checkLeafMatchesKey compares the public keys themselves: another key of the same type is a mismatch', async () => {
  const [parsedLeaf] = parseChain(leaf.chain);
  const other = await makeIdentity('ecdsa-p256', ['leaf.test'], ca);
  assert.throws(() => checkLeafMatchesKey(parsedLeaf!, createPublicKey(other.privateKey)), refusal('KEYD_KEY_MISMATCH', /^the private key does not match the leaf certificate \(CN=leaf\.test\)$/));
  checkLeafMatchesKey(parsedLeaf!, createPublicKey(leaf.privateKey)); // control
});

test('subjectKeyIdentifier is RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits, for short and long DER lengths', () => {
  const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('hex');
  // RSA: the BIT STRING holds the PKCS#1 RSAPublicKey (its SPKI uses two-byte DER lengths).
  for (const key of [generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey, createPublicKey(rsa4096)]) {
    assert.equal(subjectKeyIdentifier(key), sha1(key.export({ format: 'der', type: 'pkcs1' })));
  }
  // EC: the uncompressed point 04 || x || y.
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey;
  const jwk = ec.export({ format: 'jwk' });
  assert.equal(subjectKeyIdentifier(ec), sha1(Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')])));
  // Ed25519: the 32-byte public key.
  const ed = generateKeyPairSync('ed25519').publicKey;
  assert.equal(subjectKeyIdentifier(ed), sha1(Buffer.from(ed.export({ format: 'jwk' }).x!, 'base64url')));
});

/** The CSR's public key, SAN names and subject, after checking its signature. */
async function readCsr(csrPem: string): Promise<{ publicKey: KeyObject; names: string[]; subject: string }> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  assert.equal(await csr.verify(), true, 'the CSR signature verifies');
  const san = csr.getExtension('2.5.29.17') as x509.SubjectAlternativeNameExtension | null; // subjectAltName
  return {
    publicKey: createPublicKey({ key: Buffer.from(csr.publicKey.rawData), format: 'der', type: 'spki' }),
    names: san ? san.names.items.map((n) => `${n.type}:${n.value}`) : [],
    subject: csr.subject,
  };
}

const sameKey = (a: KeyObject, b: KeyObject) => a.export({ format: 'der', type: 'spki' }).equals(b.export({ format: 'der', type: 'spki' }));

test('generateKeyAndCsr makes the key type asked for and a signed CSR for it, with the name as SAN; an empty subject is refused', async () => {
  const expected: Array<[GenerateKeyType, (k: KeyObject) => void]> = [
    ['ecdsa-p256', (k) => assert.equal(k.asymmetricKeyDetails?.namedCurve, 'prime256v1')],
    ['ecdsa-p384', (k) => assert.equal(k.asymmetricKeyDetails?.namedCurve, 'secp384r1')],
    ['rsa2048', (k) => assert.equal(k.asymmetricKeyDetails?.modulusLength, 2048)],
    ['rsa3072', (k) => assert.equal(k.asymmetricKeyDetails?.modulusLength, 3072)],
    ['ed25519', (k) => assert.equal(k.asymmetricKeyType, 'ed25519')],
  ];
  for (const [keyType, check] of expected) {
    const { privateKey, csrPem } = await generateKeyAndCsr(keyType, '*.gen.test', 'CN=gen.test, O=Test');
    check(privateKey);
    const csr = await readCsr(csrPem);
    assert.ok(sameKey(csr.publicKey, createPublicKey(privateKey)), `${keyType}: the CSR is for the key made`);
    assert.deepEqual(csr.names, ['dns:*.gen.test'], keyType);
    assert.equal(csr.subject, 'CN=gen.test, O=Test');
  }
  for (const subject of ['', '   ']) {
    await assert.rejects(generateKeyAndCsr('ecdsa-p256', 'gen.test', subject), refusal('KEYD_BAD_REQUEST', /is not a distinguished name .*\(empty subject\)$/), JSON.stringify(subject));
  }
});

test('csrForHandle: the CSR signed through a handle verifies under the algorithm it names, for every key type a token holds', async () => {
  const keys: KeyObject[] = [
    generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey,
    generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey,
    generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
    generateKeyPairSync('ed25519').privateKey,
  ];
  for (const key of keys) {
    const handle = new SoftwareKeyHandle(key);
    const csr = await readCsr(await csrForHandle(handle, 'token.test', 'CN=token.test'));
    assert.ok(sameKey(csr.publicKey, handle.publicKey), handle.keyType);
    assert.deepEqual(csr.names, ['dns:token.test'], handle.keyType);
    assert.equal(csr.subject, 'CN=token.test');
  }
  const p521 = new SoftwareKeyHandle(generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey);
  await assert.rejects(csrForHandle(p521, 'token.test', 'CN=token.test'), refusal('KEYD_BAD_KEY', /^no CSR for a ecdsa-p521 key$/));
});

test('admin put and setChain: a refused key or chain changes nothing; the DER chain is taken', async () => {
  const t = await scratch();
  const k = await startTestKeyd(t.dir, t.machineIdPath);
  after(async () => {
    await k.close();
    await t.cleanup();
  });
  const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
  await assert.rejects(k.adminService.put(LOCAL, ['leaf.test'], small, leaf.chain), refusal('KEYD_BAD_KEY', /^RSA key of 1024 bits/));
  const [leafDer, caDer] = leaf.chain as [Uint8Array, Uint8Array];
  await assert.rejects(k.adminService.put(LOCAL, ['leaf.test'], leaf.privateKey, [leafDer, Buffer.from(pem(caDer))]), refusal('KEYD_BAD_CHAIN', /^certificate 2 of the chain is not exactly one DER/));
  assert.equal(k.keyring.owner('leaf.test'), undefined, 'nothing stored');
  const info = await k.adminService.put(LOCAL, ['leaf.test'], leaf.privateKey, leaf.chain); // control
  await assert.rejects(k.adminService.setChain(LOCAL, 'leaf.test', [Buffer.concat([leafDer, Buffer.from('x')]), caDer]), refusal('KEYD_BAD_CHAIN', /^certificate 1 of the chain is not exactly one DER/));
  const entry = k.keyring.owner('leaf.test')!;
  assert.equal(entry.version, info.version, 'the refused setChain changed nothing');
  assert.deepEqual(entry.chain.map((c) => Buffer.from(c).toString('hex')), leaf.chain.map((c) => Buffer.from(c).toString('hex')));
});
