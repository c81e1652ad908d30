/**
 * A throw-away PKI for tests: a CA and one leaf certificate, generated at test time
 * (no key is ever stored in the repository).
 *
 * Built with @peculiar/x509 over node's WebCrypto, so no external tool is needed.
 * The leaf is a proper end-entity certificate (not self-signed, CA:FALSE,
 * digitalSignature + serverAuth), because several clients refuse anything else:
 * Firefox for delegated credentials, gnutls-cli and NSS for a leaf used as a CA.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { KeyObject, webcrypto, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detachedPrivateKey } from './detached-keys.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** Key types a test can ask for (the CLI's `--key-type` names). */
export type TestKeyType = 'ecdsa-p256' | 'ecdsa-p384' | 'ecdsa-p521' | 'rsa2048' | 'ed25519';

export const TEST_KEY_TYPES: readonly TestKeyType[] = ['ecdsa-p256', 'ecdsa-p384', 'ecdsa-p521', 'rsa2048', 'ed25519'];

export interface TestPkiOptions {
  /** Leaf key type. Default ecdsa-p256. */
  keyType?: TestKeyType;
  /** CA key type. Default ecdsa-p256 (the chain is then signed with ecdsa_secp256r1_sha256). */
  caKeyType?: TestKeyType;
  /** DNS names added to the leaf's subjectAltName besides `localhost` (and IP 127.0.0.1). */
  extraNames?: readonly string[];
  /** Common name of the leaf. Default `localhost`. */
  commonName?: string;
  /**
   * RFC 9345 §4.2 DelegationUsage extension on the leaf: absent (default), non-critical, or
   * wrongly: critical, or non-critical with an empty OCTET STRING where NULL belongs.
   */
  delegationUsage?: 'non-critical' | 'critical' | 'not-null';
  /** Leaf key usage flags instead of the default (digitalSignature, + keyEncipherment for RSA). */
  keyUsage?: number;
  /** Leaf validity from now, in ms. Default 30 days. */
  validityMs?: number;
}

export interface TestPki {
  keyType: TestKeyType;
  caCertPem: string;
  caCertDer: Uint8Array;
  leafCertPem: string;
  leafCertDer: Uint8Array;
  /** The leaf's private key, for an in-process LocalSigner or a node:tls reference server. */
  leafKey: KeyObject;
  /** PKCS#8 PEM of the leaf key (for tools such as nginx that read a key file). */
  leafKeyPem: string;
  /** DER chain as the engine's Identity wants it: leaf first, then the CA. */
  chainDer: Uint8Array[];
  /** DNS names in the leaf (localhost first). */
  dnsNames: string[];
}

// Algorithms for generating a key (and, for the CA, signing with it) in WebCrypto terms.
type KeyGenAlgorithm = webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams | webcrypto.Algorithm;

function algorithmFor(keyType: TestKeyType): KeyGenAlgorithm {
  switch (keyType) {
    case 'ecdsa-p256':
      return { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    case 'ecdsa-p384':
      return { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
    case 'ecdsa-p521':
      return { name: 'ECDSA', namedCurve: 'P-521', hash: 'SHA-512' };
    case 'rsa2048':
      return {
        name: 'RSASSA-PKCS1-v1_5',
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: 'SHA-256',
      };
    case 'ed25519':
      return { name: 'Ed25519' };
  }
}

async function generateKeyPair(keyType: TestKeyType): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(algorithmFor(keyType) as webcrypto.EcKeyGenParams, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
}

function serialNumber(): string {
  // Positive, 16 random bytes (RFC 5280 §4.1.2.2: at most 20 octets, must be positive).
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}

/** Generates a fresh CA and a leaf for localhost / 127.0.0.1 (+ extra names). */
export async function makeTestPki(options: TestPkiOptions = {}): Promise<TestPki> {
  const keyType = options.keyType ?? 'ecdsa-p256';
  const caKeyType = options.caKeyType ?? 'ecdsa-p256';
  const dnsNames = ['localhost', ...(options.extraNames ?? [])];
  const notBefore = new Date(Date.now() - 60 * 60 * 1000);
  const notAfter = new Date(Date.now() + (options.validityMs ?? 30 * 24 * 60 * 60 * 1000));

  const caKeys = await generateKeyPair(caKeyType);
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: 'CN=delegator test CA',
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: algorithmFor(caKeyType),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });

  const leafKeys = await generateKeyPair(keyType);
  const leafCert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${options.commonName ?? 'localhost'}`,
    issuer: caCert.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: algorithmFor(caKeyType),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      // NSS refuses an RSA server certificate without keyEncipherment, even for TLS 1.3 (which only signs).
      new x509.KeyUsagesExtension(
        options.keyUsage ??
          (keyType === 'rsa2048'
            ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment
            : x509.KeyUsageFlags.digitalSignature),
        true,
      ),
      // RFC 9345 §4.2: DelegationUsage ::= NULL (05 00).
      ...(options.delegationUsage
        ? [new x509.Extension('1.3.6.1.4.1.44363.44', options.delegationUsage === 'critical', options.delegationUsage === 'not-null' ? Buffer.of(0x04, 0x00) : Buffer.of(0x05, 0x00))]
        : []),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension([
        ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
        { type: 'ip', value: '127.0.0.1' },
      ]),
      await x509.SubjectKeyIdentifierExtension.create(leafKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });

  // Detached from its generation job: tests export it as JWK (test/helpers/detached-keys.ts).
  const leafKey = detachedPrivateKey(KeyObject.from(leafKeys.privateKey));
  const caCertDer = new Uint8Array(caCert.rawData);
  const leafCertDer = new Uint8Array(leafCert.rawData);
  return {
    keyType,
    caCertPem: caCert.toString('pem') + '\n',
    caCertDer,
    leafCertPem: leafCert.toString('pem') + '\n',
    leafCertDer,
    leafKey,
    leafKeyPem: leafKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    chainDer: [leafCertDer, caCertDer],
    dnsNames,
  };
}

/** Files of a TestPki in a fresh temp directory, for external tools; `remove()` deletes them. */
export interface PkiFiles {
  dir: string;
  caFile: string;
  certFile: string;
  /** leaf + CA, PEM (what nginx's ssl_certificate wants). */
  chainFile: string;
  keyFile: string;
  remove(): void;
}

export function writePkiFiles(pki: TestPki): PkiFiles {
  const dir = mkdtempSync(join(tmpdir(), 'delegator-pki-'));
  const files = {
    dir,
    caFile: join(dir, 'ca.pem'),
    certFile: join(dir, 'leaf.pem'),
    chainFile: join(dir, 'chain.pem'),
    keyFile: join(dir, 'leaf.key'),
  };
  writeFileSync(files.caFile, pki.caCertPem);
  writeFileSync(files.certFile, pki.leafCertPem);
  writeFileSync(files.chainFile, pki.leafCertPem + pki.caCertPem);
  writeFileSync(files.keyFile, pki.leafKeyPem, { mode: 0o600 });
  return { ...files, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
