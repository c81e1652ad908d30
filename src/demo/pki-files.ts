import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { writeFileDurably } from '../lib/durable-file.js';
import { dirname, join } from 'node:path';
import {
  createDemoCa,
  DEFAULT_LEAF_NAMES,
  exportDemoCa,
  generateLeafKeyPair,
  importDemoCa,
  issueLeaf,
  leafKeyTypeOf,
  type DemoCa,
  type LeafKeyType,
} from './pki.js';

/**
 * The demo PKI on disk: a CA created on first start and reused afterwards, and one
 * in-process leaf key + certificate per key type. Used by `delegator serve` only; the
 * product path (`delegator demo`) keeps leaf keys inside keyd.
 *
 *   DIR/ca.pem                 demo CA certificate (give it to curl --cacert)
 *   DIR/ca-key.pem             demo CA private key, mode 0600
 *   DIR/leaf-<type>.pem        localhost certificate
 *   DIR/leaf-<type>-key.pem    its private key, mode 0600
 */

/** A leaf this close to expiry is replaced on start. */
const RENEW_BEFORE_MS = 7 * 24 * 60 * 60 * 1000;

export interface DemoPkiPaths {
  readonly caCertificate: string;
  readonly caPrivateKey: string;
  leafCertificate(keyType: LeafKeyType): string;
  leafPrivateKey(keyType: LeafKeyType): string;
}

export function demoPkiPaths(dir: string): DemoPkiPaths {
  return {
    caCertificate: join(dir, 'ca.pem'),
    caPrivateKey: join(dir, 'ca-key.pem'),
    leafCertificate: (keyType) => join(dir, `leaf-${keyType}.pem`),
    leafPrivateKey: (keyType) => join(dir, `leaf-${keyType}-key.pem`),
  };
}

export interface LoadedCa {
  readonly ca: DemoCa;
  readonly created: boolean;
}

/** Loads DIR's demo CA, or creates it when neither file exists. A half-present or broken CA is an error, not overwritten. */
export async function loadOrCreateCa(dir: string): Promise<LoadedCa> {
  const paths = demoPkiPaths(dir);
  const certificatePem = await readIfExists(paths.caCertificate);
  const privateKeyPem = await readIfExists(paths.caPrivateKey);
  if (certificatePem !== undefined && privateKeyPem !== undefined) {
    return { ca: await importDemoCa(certificatePem, privateKeyPem), created: false };
  }
  if (certificatePem !== undefined || privateKeyPem !== undefined) {
    const missing = certificatePem === undefined ? paths.caCertificate : paths.caPrivateKey;
    throw new Error(`demo CA is incomplete: ${missing} is missing (delete ${dir} to start over)`);
  }
  const ca = await createDemoCa();
  const exported = await exportDemoCa(ca);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Key first: a crash between the two writes leaves "incomplete", never a certificate without its key.
  await writeFileAtomic(paths.caPrivateKey, exported.privateKeyPem, 0o600);
  await writeFileAtomic(paths.caCertificate, exported.certificatePem, 0o644);
  return { ca, created: true };
}

export interface LoadedLeaf {
  readonly privateKey: KeyObject;
  /** DER, leaf first (the CA is not sent: clients are given it with --cacert). */
  readonly certificateChain: readonly Uint8Array[];
  readonly certificatePath: string;
  readonly notAfter: Date;
  readonly created: boolean;
}

/**
 * Loads the leaf of `keyType` from DIR, or (re)issues it when it is missing, broken, from
 * another CA, near expiry, or does not cover every requested name.
 */
export async function loadOrCreateLeaf(
  dir: string,
  ca: DemoCa,
  keyType: LeafKeyType,
  names: readonly string[] = DEFAULT_LEAF_NAMES,
  now = new Date(),
): Promise<LoadedLeaf> {
  const paths = demoPkiPaths(dir);
  const certificatePath = paths.leafCertificate(keyType);
  const existing = await loadLeaf(certificatePath, paths.leafPrivateKey(keyType), ca, keyType, names, now);
  if (existing) return { ...existing, certificatePath, created: false };

  const { privateKey, publicKey } = generateLeafKeyPair(keyType);
  const issued = await issueLeaf(ca, publicKey, names, { now });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFileAtomic(paths.leafPrivateKey(keyType), privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), 0o600);
  await writeFileAtomic(certificatePath, issued.pem, 0o644);
  return { privateKey, certificateChain: [issued.der], certificatePath, notAfter: issued.notAfter, created: true };
}

async function loadLeaf(
  certificatePath: string,
  privateKeyPath: string,
  ca: DemoCa,
  keyType: LeafKeyType,
  names: readonly string[],
  now: Date,
): Promise<Omit<LoadedLeaf, 'certificatePath' | 'created'> | undefined> {
  const certificatePem = await readIfExists(certificatePath);
  const privateKeyPem = await readIfExists(privateKeyPath);
  if (certificatePem === undefined || privateKeyPem === undefined) return undefined;
  try {
    const certificate = new x509.X509Certificate(certificatePem);
    const privateKey = createPrivateKey(privateKeyPem);
    if (leafKeyTypeOf(privateKey) !== keyType) return undefined;
    const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    if (!Buffer.from(certificate.publicKey.rawData).equals(spki)) return undefined;
    if (!(await certificate.verify({ publicKey: ca.certificate.publicKey, signatureOnly: true }))) return undefined;
    if (certificate.notAfter.getTime() - now.getTime() < RENEW_BEFORE_MS) return undefined;
    if (!coversNames(certificate, names)) return undefined;
    return { privateKey, certificateChain: [new Uint8Array(certificate.rawData)], notAfter: certificate.notAfter };
  } catch {
    return undefined; // unreadable files are replaced, like missing ones
  }
}

function coversNames(certificate: x509.X509Certificate, names: readonly string[]): boolean {
  const san = certificate.getExtension(x509.SubjectAlternativeNameExtension);
  if (!san) return false;
  const present = new Set(san.names.items.map((item) => `${item.type}:${item.value.toLowerCase()}`));
  return names.every((name) => present.has(`dns:${name.toLowerCase()}`) || present.has(`ip:${name.toLowerCase()}`));
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Readers see the old or the new file, never half of one (src/lib/durable-file.ts), with exactly `mode` whatever the umask. */
export async function writeFileAtomic(path: string, data: string, mode: number): Promise<void> {
  await writeFileDurably(path, Buffer.from(data), mode);
  await chmod(path, mode);
}
