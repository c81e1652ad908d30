import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, generateKeyPairSync, webcrypto, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';

/**
 * A throw-away PKI for demos, interop tests and benchmarks: one ECDSA P-256 CA and
 * `localhost` leaves issued for a public key made anywhere (here, or inside keyd,
 * which returns a CSR). Leaves carry DelegationUsage (RFC 9345 §4.2) unless asked not
 * to, so the demo serves delegated credentials. Nothing here is meant for production
 * certificates.
 */

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Algorithm = webcrypto.Algorithm;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export const DEMO_CA_COMMON_NAME = 'TLS sign delegator demo CA';
/** Names every demo leaf carries: the ones curl, browsers and tlsfuzzer use on this machine. */
export const DEFAULT_LEAF_NAMES: readonly string[] = ['localhost', '127.0.0.1'];

export type LeafKeyType = 'ecdsa-p256' | 'ecdsa-p384' | 'rsa2048' | 'ed25519';
export const LEAF_KEY_TYPES: readonly LeafKeyType[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa2048', 'ed25519'];

/** Browsers offer no Ed25519 signature scheme for TLS (RFC 8446 §4.2.3 allows it; none sends it). */
export const ED25519_WARNING =
  'warning: no browser opens an ed25519 site (Chromium, Firefox and Safari do not offer ed25519 in TLS); ' +
  'curl, openssl s_client and gnutls-cli do. Use --key-type ecdsa-p256 for a browser.\n';

export function isLeafKeyType(value: string): value is LeafKeyType {
  return (LEAF_KEY_TYPES as readonly string[]).includes(value);
}

const CA_VALIDITY_DAYS = 3650;
/** Below the 398 days browsers accept for a leaf (CA/B Forum BR §6.3.2). */
export const LEAF_VALIDITY_DAYS = 365;
/** Back-date notBefore so a peer whose clock is slightly behind still accepts a fresh certificate. */
const CLOCK_SKEW_MS = 60 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

const ECDSA_P256_SHA256: webcrypto.EcKeyGenParams & webcrypto.EcdsaParams = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

/** Error with a stable `code`, so callers can tell PKI failures apart without parsing messages. */
export class PkiError extends Error {
  constructor(
    readonly code: 'PKI_BAD_CSR' | 'PKI_CSR_SIGNATURE' | 'PKI_BAD_NAME' | 'PKI_BAD_CA' | 'PKI_BAD_KEY',
    message: string,
  ) {
    super(message);
    this.name = 'PkiError';
  }
}

export interface DemoCa {
  readonly certificate: x509.X509Certificate;
  /** The CA's signing key (WebCrypto, because @peculiar/x509 signs through WebCrypto). */
  readonly signingKey: CryptoKey;
}

export interface IssuedCertificate {
  readonly der: Uint8Array;
  readonly pem: string;
  readonly notAfter: Date;
}

/** Creates a new demo CA: ECDSA P-256, CN "TLS sign delegator demo CA", valid 10 years. */
export async function createDemoCa(now = new Date()): Promise<DemoCa> {
  const keys = (await webcrypto.subtle.generateKey(ECDSA_P256_SHA256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${DEMO_CA_COMMON_NAME}`,
    notBefore: new Date(now.getTime() - CLOCK_SKEW_MS),
    notAfter: new Date(now.getTime() + CA_VALIDITY_DAYS * DAY_MS),
    keys,
    signingAlgorithm: ECDSA_P256_SHA256,
    extensions: [
      // RFC 5280 §4.2.1.9: critical, and pathLen 0 because this CA only ever signs leaves.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certificate, signingKey: keys.privateKey };
}

/** The CA as PEM files: certificate, and its PKCS#8 private key (write that one with mode 0600). */
export async function exportDemoCa(ca: DemoCa): Promise<{ certificatePem: string; privateKeyPem: string }> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', ca.signingKey);
  const privateKeyPem = createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' })
    .export({ format: 'pem', type: 'pkcs8' })
    .toString();
  return { certificatePem: ca.certificate.toString('pem'), privateKeyPem };
}

/** Loads a CA written by `exportDemoCa`; refuses a key that does not belong to the certificate. */
export async function importDemoCa(certificatePem: string, privateKeyPem: string): Promise<DemoCa> {
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(certificatePem);
  } catch (err) {
    throw new PkiError('PKI_BAD_CA', `demo CA certificate is not a valid PEM certificate: ${(err as Error).message}`);
  }
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(privateKeyPem);
  } catch {
    throw new PkiError('PKI_BAD_CA', 'demo CA private key is not a valid PEM private key');
  }
  if (keyObject.asymmetricKeyType !== 'ec' || keyObject.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new PkiError('PKI_BAD_CA', 'demo CA private key is not an ECDSA P-256 key');
  }
  const publicFromKey = createPublicKey(keyObject).export({ format: 'der', type: 'spki' });
  if (!Buffer.from(certificate.publicKey.rawData).equals(publicFromKey)) {
    throw new PkiError('PKI_BAD_CA', 'demo CA private key does not match the CA certificate');
  }
  const pkcs8 = keyObject.export({ format: 'der', type: 'pkcs8' });
  const signingKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, ECDSA_P256_SHA256, false, ['sign']);
  return { certificate, signingKey };
}

/** Generates a leaf key pair in-process (the stand-alone `serve` path and tests; keyd makes its own). */
export function generateLeafKeyPair(keyType: LeafKeyType): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (keyType) {
    case 'ecdsa-p256':
      return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    case 'ecdsa-p384':
      return generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    case 'rsa2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048 });
    case 'ed25519':
      return generateKeyPairSync('ed25519');
  }
}

/**
 * Issues a TLS server leaf for `publicKey` (a KeyObject or SPKI DER): SAN with every name
 * (DNS names, and IP addresses as iPAddress entries), serverAuth EKU, not a CA.
 */
export async function issueLeaf(
  ca: DemoCa,
  publicKey: KeyObject | Uint8Array,
  names: readonly string[] = DEFAULT_LEAF_NAMES,
  options: { now?: Date; validityDays?: number; delegationUsage?: boolean } = {},
): Promise<IssuedCertificate> {
  const spki = spkiDer(publicKey);
  const subjectAltNames = subjectAltNamesFor(names);
  const now = options.now ?? new Date();
  const validityDays = options.validityDays ?? LEAF_VALIDITY_DAYS;
  const notAfter = new Date(now.getTime() + validityDays * DAY_MS);
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: `CN=${firstDnsName(names) ?? names[0]}`,
    issuer: ca.certificate.subjectName,
    notBefore: new Date(now.getTime() - CLOCK_SKEW_MS),
    notAfter,
    publicKey: spki,
    signingKey: ca.signingKey,
    signingAlgorithm: ECDSA_P256_SHA256,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(leafKeyUsage(spki), true),
      ...(options.delegationUsage === false ? [] : [delegationUsageExtension()]),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(subjectAltNames),
      await x509.SubjectKeyIdentifierExtension.create(spki),
      await x509.AuthorityKeyIdentifierExtension.create(ca.certificate),
    ],
  });
  return { der: new Uint8Array(certificate.rawData), pem: certificate.toString('pem'), notAfter };
}

/**
 * TLS 1.3 only signs with the leaf key (RFC 8446 §4.4.2.2), so digitalSignature is enough for
 * the protocol; but NSS refuses an RSA server certificate without keyEncipherment
 * (SEC_ERROR_INADEQUATE_KEY_USAGE), as RSA leaves from public CAs carry both (RFC 5280
 * §4.2.1.3 allows it for RSA keys; for EC and Ed25519 keys it would be meaningless).
 */
function leafKeyUsage(spki: Uint8Array): number {
  const rsa = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).asymmetricKeyType === 'rsa';
  return rsa ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment : x509.KeyUsageFlags.digitalSignature;
}

/**
 * Issues a leaf for the key in a PKCS#10 CSR (keyd generates keys and hands out only CSRs).
 * The CSR's self-signature is checked (proof of possession); its subject and requested
 * extensions are ignored: the names come from the caller.
 */
export async function issueFromCsr(
  ca: DemoCa,
  csrPem: string,
  names: readonly string[] = DEFAULT_LEAF_NAMES,
  options: { now?: Date; validityDays?: number } = {},
): Promise<IssuedCertificate> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new PkiError('PKI_BAD_CSR', `not a PEM or DER PKCS#10 certificate request: ${(err as Error).message}`);
  }
  let signatureValid: boolean;
  try {
    signatureValid = await csr.verify();
  } catch (err) {
    throw new PkiError('PKI_BAD_CSR', `certificate request uses an unsupported key or algorithm: ${(err as Error).message}`);
  }
  if (!signatureValid) {
    throw new PkiError('PKI_CSR_SIGNATURE', 'certificate request signature does not verify (no proof of key possession)');
  }
  return issueLeaf(ca, new Uint8Array(csr.publicKey.rawData), names, options);
}

/** Makes a CSR for an in-process key: for tests of the CSR path, and for tools that hold the key. */
export async function createCsr(privateKey: KeyObject, commonName: string): Promise<string> {
  const keyType = leafKeyTypeOf(privateKey);
  const algorithm = webCryptoAlgorithm(keyType);
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  const keys: CryptoKeyPair = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', pkcs8, algorithm, false, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', spki, algorithm, true, ['verify']),
  };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${commonName}`, keys, signingAlgorithm: algorithm });
  return csr.toString('pem');
}

/** The demo key type of a node:crypto key, or a PkiError when the demo PKI does not handle it. */
export function leafKeyTypeOf(key: KeyObject): LeafKeyType {
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  if (key.asymmetricKeyType === 'rsa' && key.asymmetricKeyDetails?.modulusLength === 2048) return 'rsa2048';
  if (key.asymmetricKeyType === 'ec') {
    if (key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ecdsa-p256';
    if (key.asymmetricKeyDetails?.namedCurve === 'secp384r1') return 'ecdsa-p384';
  }
  throw new PkiError('PKI_BAD_KEY', `demo PKI handles ${LEAF_KEY_TYPES.join(', ')} keys only`);
}

function webCryptoAlgorithm(keyType: LeafKeyType): Algorithm {
  switch (keyType) {
    case 'ecdsa-p256':
      return { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as webcrypto.EcKeyImportParams & webcrypto.EcdsaParams;
    case 'ecdsa-p384':
      return { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as webcrypto.EcKeyImportParams & webcrypto.EcdsaParams;
    case 'rsa2048':
      return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as webcrypto.RsaHashedImportParams;
    case 'ed25519':
      return { name: 'Ed25519' };
  }
}

function spkiDer(publicKey: KeyObject | Uint8Array): Uint8Array {
  if (publicKey instanceof Uint8Array) return publicKey;
  const key = publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey;
  return new Uint8Array(key.export({ format: 'der', type: 'spki' }));
}

/** RFC 9345 §4.2 DelegationUsage (non-critical, NULL): the leaf's key may certify delegated credentials. */
export const DELEGATION_USAGE_OID = '1.3.6.1.4.1.44363.44';

function delegationUsageExtension(): x509.Extension {
  return new x509.Extension(DELEGATION_USAGE_OID, false, Uint8Array.of(0x05, 0x00));
}

/** Whether a DER certificate carries DelegationUsage (the demo re-issues leaves that lack it). */
export function hasDelegationUsage(der: Uint8Array): boolean {
  return new x509.X509Certificate(der).getExtension(DELEGATION_USAGE_OID) !== null;
}

/** DNS names become dNSName, literal IPv4/IPv6 addresses iPAddress (RFC 5280 §4.2.1.6). */
function subjectAltNamesFor(names: readonly string[]): x509.JsonGeneralNames {
  if (names.length === 0) throw new PkiError('PKI_BAD_NAME', 'a leaf certificate needs at least one name');
  return names.map((name) => {
    if (isIP(name)) return { type: 'ip' as const, value: name };
    if (!isDnsName(name)) throw new PkiError('PKI_BAD_NAME', `not a DNS name or IP address: ${JSON.stringify(name)}`);
    return { type: 'dns' as const, value: name.toLowerCase() };
  });
}

/** LDH labels, optional leading `*.` wildcard (RFC 6125 §6.4.3), at most 253 characters. */
function isDnsName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  return labels.every(
    (label, index) => (index === 0 && label === '*' && labels.length > 1) || /^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$/.test(label),
  );
}

function firstDnsName(names: readonly string[]): string | undefined {
  return names.find((name) => !isIP(name));
}

/** 16 random bytes with the top bit clear, so the DER INTEGER stays positive (RFC 5280 §4.1.2.2). */
function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return Buffer.from(bytes).toString('hex');
}
