/**
 * Client-certificate PKIs for tests, generated at test time (no key in the repository):
 * a CA, intermediates, client certificates with the extensions a test wants wrong or
 * right, and CRLs. Built with @peculiar/x509 over node's WebCrypto, like pki.ts.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { KeyObject, randomBytes, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type ClientKeyType = 'ecdsa-p256' | 'ecdsa-p384' | 'rsa2048' | 'ed25519';

type Alg = webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams | webcrypto.Algorithm;

function algorithmFor(keyType: ClientKeyType): Alg {
  switch (keyType) {
    case 'ecdsa-p256':
      return { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as Alg;
    case 'ecdsa-p384':
      return { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as Alg;
    case 'rsa2048':
      return { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
    case 'ed25519':
      return { name: 'Ed25519' };
  }
}

function serial(): string {
  const bytes = randomBytes(12);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString('hex');
}

const HOUR = 3_600_000;

export interface Issued {
  readonly cert: x509.X509Certificate;
  readonly der: Uint8Array;
  readonly pem: string;
  readonly keys: webcrypto.CryptoKeyPair;
  readonly key: KeyObject;
  readonly keyPem: string;
  readonly keyType: ClientKeyType;
}

export interface IssueOptions {
  keyType?: ClientKeyType;
  commonName?: string;
  /** Make it a CA (basicConstraints cA), with this pathLenConstraint. */
  ca?: boolean;
  pathLength?: number;
  /** keyUsage flags; null = no keyUsage extension. Default: digitalSignature (leaf) / keyCertSign|cRLSign (CA). */
  keyUsage?: number | null;
  /** extendedKeyUsage OIDs; null = none. Default: clientAuth for a leaf, none for a CA. */
  extendedKeyUsage?: string[] | null;
  notBefore?: Date;
  notAfter?: Date;
  /** Further extensions, as given. */
  extraExtensions?: x509.Extension[];
  /** Hex serial number (default: random), e.g. to give certificates of two CAs the same one. */
  serialNumber?: string;
}

async function keyPair(keyType: ClientKeyType): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(algorithmFor(keyType) as webcrypto.EcKeyGenParams, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

function finish(cert: x509.X509Certificate, keys: webcrypto.CryptoKeyPair, keyType: ClientKeyType): Issued {
  const key = KeyObject.from(keys.privateKey);
  return {
    cert,
    der: new Uint8Array(cert.rawData),
    pem: cert.toString('pem') + '\n',
    keys,
    key,
    keyPem: key.export({ format: 'pem', type: 'pkcs8' }).toString(),
    keyType,
  };
}

function extensionsFor(o: IssueOptions, ca: boolean): x509.Extension[] {
  const ext: x509.Extension[] = [new x509.BasicConstraintsExtension(ca, ca ? o.pathLength : undefined, true)];
  const ku = o.keyUsage === undefined ? (ca ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature) : o.keyUsage;
  if (ku !== null) ext.push(new x509.KeyUsagesExtension(ku, true));
  const eku = o.extendedKeyUsage === undefined ? (ca ? null : [x509.ExtendedKeyUsage.clientAuth]) : o.extendedKeyUsage;
  if (eku !== null) ext.push(new x509.ExtendedKeyUsageExtension(eku, false));
  return [...ext, ...(o.extraExtensions ?? [])];
}

/** A self-signed root CA. */
export async function makeClientCa(o: IssueOptions = {}): Promise<Issued> {
  const keyType = o.keyType ?? 'ecdsa-p256';
  const keys = await keyPair(keyType);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${o.commonName ?? 'client test CA'}`,
    notBefore: o.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: o.notAfter ?? new Date(Date.now() + 30 * 24 * HOUR),
    keys,
    signingAlgorithm: algorithmFor(keyType),
    extensions: [...extensionsFor(o, true), await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)],
  });
  return finish(cert, keys, keyType);
}

/** A certificate issued by `issuer`: a client leaf by default, an intermediate CA with `ca: true`. */
export async function issue(issuer: Issued, o: IssueOptions = {}): Promise<Issued> {
  const keyType = o.keyType ?? 'ecdsa-p256';
  const keys = await keyPair(keyType);
  const ca = o.ca ?? false;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: o.serialNumber ?? serial(),
    subject: `CN=${o.commonName ?? 'client.test'}`,
    issuer: issuer.cert.subject,
    notBefore: o.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: o.notAfter ?? new Date(Date.now() + 7 * 24 * HOUR),
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: algorithmFor(issuer.keyType),
    extensions: [
      ...extensionsFor(o, ca),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
    ],
  });
  return finish(cert, keys, keyType);
}

/** A CRL of `issuer` revoking `revoked`, PEM. */
export async function makeCrl(issuer: Issued, revoked: readonly Issued[], nextUpdate = new Date(Date.now() + 24 * HOUR)): Promise<string> {
  const crl = await x509.X509CrlGenerator.create({
    issuer: issuer.cert.subject,
    thisUpdate: new Date(Date.now() - HOUR),
    nextUpdate,
    entries: revoked.map((r) => ({ serialNumber: r.cert.serialNumber, revocationDate: new Date(Date.now() - HOUR) })),
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: algorithmFor(issuer.keyType),
  });
  return crl.toString('pem') + '\n';
}

/** Writes named PEM files into a fresh temp directory; `remove()` deletes it. */
export function writeFiles(files: Record<string, string>): { dir: string; path: (name: string) => string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'delegator-client-pki-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text, { mode: 0o600 });
  return { dir, path: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) };
}
