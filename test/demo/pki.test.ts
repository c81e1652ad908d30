import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createCsr,
  createDemoCa,
  DEMO_CA_COMMON_NAME,
  exportDemoCa,
  generateLeafKeyPair,
  importDemoCa,
  issueFromCsr,
  issueLeaf,
  LEAF_KEY_TYPES,
  leafKeyTypeOf,
  PkiError,
} from '../../src/demo/pki.js';
import { demoPkiPaths, loadOrCreateCa, loadOrCreateLeaf } from '../../src/demo/pki-files.js';
import { describeResult, requireTool, runTool } from '../helpers/tools.js';

// The checks below use node:crypto's own X509Certificate, not the library that made the certificates.

test('demo CA: self-signed ECDSA P-256 CA with the documented name and a 10-year validity', async () => {
  const ca = await createDemoCa();
  const cert = new X509Certificate(Buffer.from(ca.certificate.rawData));
  assert.equal(cert.subject, `CN=${DEMO_CA_COMMON_NAME}`);
  assert.equal(cert.issuer, cert.subject);
  assert.equal(cert.ca, true);
  assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.ok(cert.verify(cert.publicKey), 'CA self-signature verifies');
  const years = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / (365.25 * 24 * 3600 * 1000);
  assert.ok(years > 9.9 && years < 10.1, `validity ${years} years`);
});

for (const keyType of LEAF_KEY_TYPES) {
  test(`leaf (${keyType}): verifies against the CA, has the SANs, is not a CA, matches its key`, async () => {
    const ca = await createDemoCa();
    const caCert = new X509Certificate(Buffer.from(ca.certificate.rawData));
    const { privateKey, publicKey } = generateLeafKeyPair(keyType);
    const issued = await issueLeaf(ca, publicKey, ['localhost', '127.0.0.1', 'www.example.test']);
    const leaf = new X509Certificate(Buffer.from(issued.der));
    assert.equal(leaf.toString().trim(), issued.pem.trim());
    assert.ok(leaf.verify(caCert.publicKey), 'leaf signature verifies with the CA key');
    assert.ok(leaf.checkIssued(caCert), 'issuer name matches the CA subject');
    assert.equal(leaf.ca, false);
    assert.equal(leaf.checkHost('localhost'), 'localhost');
    assert.equal(leaf.checkHost('www.example.test'), 'www.example.test');
    assert.equal(leaf.checkHost('evil.test'), undefined);
    assert.equal(leaf.checkIP('127.0.0.1'), '127.0.0.1');
    assert.ok(leaf.checkPrivateKey(privateKey), 'certificate carries the generated key');
    assert.ok(leaf.keyUsage?.includes('1.3.6.1.5.5.7.3.1'), 'serverAuth EKU');
    const days = (Date.parse(leaf.validTo) - Date.now()) / (24 * 3600 * 1000);
    assert.ok(days >= 90 && days <= 366, `leaf valid for ${days} days`);
  });
}

test('CSR path: the leaf carries the CSR key and the caller names, not the CSR subject', async () => {
  const ca = await createDemoCa();
  const caCert = new X509Certificate(Buffer.from(ca.certificate.rawData));
  for (const keyType of LEAF_KEY_TYPES) {
    const { privateKey } = generateLeafKeyPair(keyType);
    const csrPem = await createCsr(privateKey, 'attacker.example');
    const issued = await issueFromCsr(ca, csrPem, ['localhost']);
    const leaf = new X509Certificate(Buffer.from(issued.der));
    assert.ok(leaf.verify(caCert.publicKey), keyType);
    assert.ok(leaf.checkPrivateKey(privateKey), keyType);
    assert.equal(leaf.checkHost('attacker.example'), undefined, keyType);
    assert.equal(leaf.subjectAltName, 'DNS:localhost', keyType);
  }
});

test('CSR path: a CSR whose signature does not verify is refused (no proof of possession)', async () => {
  const ca = await createDemoCa();
  const { privateKey } = generateLeafKeyPair('ecdsa-p256');
  const csrPem = await createCsr(privateKey, 'localhost');
  const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 5]! ^= 0x01; // inside the signature BIT STRING
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  await assert.rejects(issueFromCsr(ca, tampered), (err: unknown) => {
    assert.ok(err instanceof PkiError);
    assert.ok(err.code === 'PKI_CSR_SIGNATURE' || err.code === 'PKI_BAD_CSR', err.code);
    return true;
  });
  await assert.rejects(issueFromCsr(ca, 'not a csr'), { code: 'PKI_BAD_CSR' });
});

test('names: bad names are refused, IPv6 literals become iPAddress', async () => {
  const ca = await createDemoCa();
  const { publicKey } = generateLeafKeyPair('ecdsa-p256');
  await assert.rejects(issueLeaf(ca, publicKey, []), { code: 'PKI_BAD_NAME' });
  await assert.rejects(issueLeaf(ca, publicKey, ['bad name']), { code: 'PKI_BAD_NAME' });
  await assert.rejects(issueLeaf(ca, publicKey, ['-x.test']), { code: 'PKI_BAD_NAME' });
  const issued = await issueLeaf(ca, publicKey, ['*.example.test', '::1']);
  const leaf = new X509Certificate(Buffer.from(issued.der));
  // checkHost returns the certificate's name that matched: the wildcard covers exactly one label.
  assert.equal(leaf.checkHost('a.example.test'), '*.example.test');
  assert.equal(leaf.checkHost('a.b.example.test'), undefined);
  assert.equal(leaf.checkIP('::1'), '::1');
});

test('CA export/import round trip; a key from another CA is refused', async () => {
  const ca = await createDemoCa();
  const { certificatePem, privateKeyPem } = await exportDemoCa(ca);
  const again = await importDemoCa(certificatePem, privateKeyPem);
  const { publicKey } = generateLeafKeyPair('ed25519');
  const issued = await issueLeaf(again, publicKey);
  assert.ok(new X509Certificate(Buffer.from(issued.der)).verify(new X509Certificate(certificatePem).publicKey));
  const other = await exportDemoCa(await createDemoCa());
  await assert.rejects(importDemoCa(certificatePem, other.privateKeyPem), { code: 'PKI_BAD_CA' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' });
  await assert.rejects(importDemoCa(certificatePem, rsa.toString()), { code: 'PKI_BAD_CA' });
});

test('files: created once with key files 0600, reused on the next start, reissued when broken', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'demo-pki-'));
  try {
    const paths = demoPkiPaths(dir);
    const first = await loadOrCreateCa(dir);
    assert.equal(first.created, true);
    assert.equal((await stat(paths.caPrivateKey)).mode & 0o777, 0o600);
    const leaf = await loadOrCreateLeaf(dir, first.ca, 'ecdsa-p256');
    assert.equal(leaf.created, true);
    assert.equal((await stat(paths.leafPrivateKey('ecdsa-p256'))).mode & 0o777, 0o600);

    const second = await loadOrCreateCa(dir);
    assert.equal(second.created, false);
    const leafAgain = await loadOrCreateLeaf(dir, second.ca, 'ecdsa-p256');
    assert.equal(leafAgain.created, false);
    assert.deepEqual(Buffer.from(leafAgain.certificateChain[0]!), Buffer.from(leaf.certificateChain[0]!));
    // The reloaded key still signs for the certificate.
    const message = Buffer.from('hello');
    const leafCert = new X509Certificate(Buffer.from(leafAgain.certificateChain[0]!));
    assert.ok(verify('sha256', message, leafCert.publicKey, sign('sha256', message, leafAgain.privateKey)));

    // Asking for a name the stored leaf lacks reissues it.
    const wider = await loadOrCreateLeaf(dir, second.ca, 'ecdsa-p256', ['localhost', '127.0.0.1', 'extra.test']);
    assert.equal(wider.created, true);
    // A corrupted leaf file is replaced, not fatal.
    await writeFile(paths.leafCertificate('ecdsa-p256'), 'garbage');
    const repaired = await loadOrCreateLeaf(dir, second.ca, 'ecdsa-p256');
    assert.equal(repaired.created, true);
    assert.match(await readFile(paths.leafCertificate('ecdsa-p256'), 'utf8'), /BEGIN CERTIFICATE/);
    assert.ok(new X509Certificate(Buffer.from(repaired.certificateChain[0]!)).checkPrivateKey(repaired.privateKey));
    assert.deepEqual(createPublicKey(repaired.privateKey).asymmetricKeyDetails?.namedCurve, 'prime256v1');

    // A CA with its key missing is an error, never silently replaced (clients trust the old one).
    await rm(paths.caPrivateKey);
    await assert.rejects(loadOrCreateCa(dir), /incomplete/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** `openssl x509 -ext basicConstraints` of a DER certificate: node's X509Certificate.ca cannot tell a leaf with cA TRUE (it also needs keyCertSign). */
async function basicConstraints(der: Uint8Array): Promise<string> {
  const pemText = `-----BEGIN CERTIFICATE-----\n${Buffer.from(der).toString('base64')}\n-----END CERTIFICATE-----\n`;
  const r = await runTool('openssl', ['x509', '-noout', '-ext', 'basicConstraints'], pemText);
  assert.equal(r.code, 0, describeResult(r));
  return r.stdout.replace(/\s+/g, ' ').trim();
}

test('basic constraints (RFC 5280 §4.2.1.9): the CA is critical CA:TRUE with pathlen 0, a leaf critical CA:FALSE', { timeout: 20_000 }, async (t) => {
  if (!requireTool(t, 'openssl', 'openssl')) return;
  const ca = await createDemoCa();
  assert.equal(await basicConstraints(new Uint8Array(ca.certificate.rawData)), 'X509v3 Basic Constraints: critical CA:TRUE, pathlen:0');
  const issued = await issueLeaf(ca, generateLeafKeyPair('ecdsa-p256').publicKey);
  assert.equal(await basicConstraints(issued.der), 'X509v3 Basic Constraints: critical CA:FALSE');
});

test('names: the DNS length limits (63-character labels, 253-character names) and a bare "*" (RFC 1035 §2.3.4, RFC 6125 §6.4.3)', async () => {
  const ca = await createDemoCa();
  const { publicKey } = generateLeafKeyPair('ecdsa-p256');
  const label63 = 'a'.repeat(63);
  // 253 characters: three 63-character labels, one of 61, three dots.
  const name253 = `${label63}.${label63}.${label63}.${'b'.repeat(61)}`;
  assert.equal(name253.length, 253);
  for (const good of [`${label63}.test`, name253, '*.test']) {
    const leaf = new X509Certificate(Buffer.from((await issueLeaf(ca, publicKey, [good])).der));
    assert.equal(leaf.subjectAltName, `DNS:${good}`, 'control: accepted at the limit');
  }
  for (const bad of [`${'a'.repeat(64)}.test`, `${name253}c`, '*']) {
    await assert.rejects(issueLeaf(ca, publicKey, [bad]), { code: 'PKI_BAD_NAME' }, bad.slice(0, 20));
  }
});

test('key types: an RSA key other than 2048 bits is not a demo key type; RSA 2048 is', () => {
  assert.throws(() => leafKeyTypeOf(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey), { code: 'PKI_BAD_KEY' });
  assert.throws(() => leafKeyTypeOf(generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey), { code: 'PKI_BAD_KEY' });
  assert.equal(leafKeyTypeOf(generateLeafKeyPair('rsa2048').privateKey), 'rsa2048');
});

test('CA import: a CA certificate with its own key that is not ECDSA P-256 is refused with PKI_BAD_CA', { timeout: 20_000 }, async (t) => {
  if (!requireTool(t, 'openssl', 'openssl')) return;
  const dir = await mkdtemp(join(tmpdir(), 'demo-pki-ca-'));
  try {
    const key = join(dir, 'ca.key');
    const cert = join(dir, 'ca.pem');
    const r = await runTool('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384', '-nodes', '-subj', '/CN=P-384 CA', '-days', '1', '-keyout', key, '-out', cert]);
    assert.equal(r.code, 0, describeResult(r));
    await assert.rejects(importDemoCa(await readFile(cert, 'utf8'), await readFile(key, 'utf8')), { code: 'PKI_BAD_CA', message: /not an ECDSA P-256 key/ });
    // Control: a P-256 CA made the same way is taken.
    const r256 = await runTool('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=P-256 CA', '-days', '1', '-keyout', key, '-out', cert]);
    assert.equal(r256.code, 0, describeResult(r256));
    const ca = await importDemoCa(await readFile(cert, 'utf8'), await readFile(key, 'utf8'));
    const issued = await issueLeaf(ca, generateLeafKeyPair('ed25519').publicKey);
    assert.ok(new X509Certificate(Buffer.from(issued.der)).verify(new X509Certificate(await readFile(cert)).publicKey));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('files: a stored leaf is replaced when within 7 days of expiry, from another CA, or with a key that is not its own; kept otherwise', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'demo-pki-leaf-'));
  try {
    const paths = demoPkiPaths(dir);
    const { ca } = await loadOrCreateCa(dir);
    const day = 24 * 3600 * 1000;
    const start = new Date();
    const first = await loadOrCreateLeaf(dir, ca, 'ecdsa-p256', undefined, start);
    assert.equal(first.created, true);
    // The leaf is valid 365 days: at day 300 it is kept (control), at day 360 (5 days left) replaced.
    assert.equal((await loadOrCreateLeaf(dir, ca, 'ecdsa-p256', undefined, new Date(start.getTime() + 300 * day))).created, false);
    const renewed = await loadOrCreateLeaf(dir, ca, 'ecdsa-p256', undefined, new Date(start.getTime() + 360 * day));
    assert.equal(renewed.created, true, 'a leaf 5 days from expiry is replaced');
    assert.ok(renewed.notAfter.getTime() > start.getTime() + 700 * day);

    // Another CA (the demo CA was recreated): the stored leaf does not chain to it.
    const otherDir = await mkdtemp(join(tmpdir(), 'demo-pki-other-'));
    const other = (await loadOrCreateCa(otherDir)).ca;
    await rm(otherDir, { recursive: true, force: true });
    const reissued = await loadOrCreateLeaf(dir, other, 'ecdsa-p256');
    assert.equal(reissued.created, true, 'a leaf from another CA is replaced');
    assert.ok(new X509Certificate(Buffer.from(reissued.certificateChain[0]!)).verify(new X509Certificate(Buffer.from(other.certificate.rawData)).publicKey));
    assert.equal((await loadOrCreateLeaf(dir, other, 'ecdsa-p256')).created, false, 'control: the same CA keeps it');

    // A key file that is not the certificate's key (same type).
    const stranger = generateLeafKeyPair('ecdsa-p256').privateKey;
    await writeFile(paths.leafPrivateKey('ecdsa-p256'), stranger.export({ format: 'pem', type: 'pkcs8' }));
    const matched = await loadOrCreateLeaf(dir, other, 'ecdsa-p256');
    assert.equal(matched.created, true, 'a leaf whose key file holds another key is replaced');
    assert.ok(new X509Certificate(Buffer.from(matched.certificateChain[0]!)).checkPrivateKey(matched.privateKey));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('files: a CA file that cannot be read (not missing) is an error naming the read failure, and nothing is replaced', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'demo-pki-unreadable-'));
  try {
    const paths = demoPkiPaths(dir);
    await loadOrCreateCa(dir);
    const certificate = await readFile(paths.caCertificate, 'utf8');
    // A directory where the key file should be: reading it fails with EISDIR (as root, the one
    // read failure a test can make; EACCES for other users is the same path).
    await rm(paths.caPrivateKey);
    await mkdir(paths.caPrivateKey);
    await assert.rejects(loadOrCreateCa(dir), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'EISDIR', err.message);
      assert.doesNotMatch(err.message, /missing/);
      return true;
    });
    assert.equal(await readFile(paths.caCertificate, 'utf8'), certificate, 'the CA certificate is untouched');
    // Control: with the key file only missing, the error says so.
    await rm(paths.caPrivateKey, { recursive: true });
    await assert.rejects(loadOrCreateCa(dir), /demo CA is incomplete: .*ca-key\.pem is missing/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
