import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { KeyObject, X509Certificate as NodeX509, createHash, webcrypto, verify, constants, type KeyObject as KO } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startKeyd, type KeydOptions, type RunningKeyd } from '../../src/keyd/daemon.js';
import { SCHEMES } from '../../src/tls/signature-schemes.js';
import assert from 'node:assert/strict';
import { AUDIT_FIELD_LIMITS, type AuditReply } from '../../src/keyd/audit.js';

x509.cryptoProvider.set(webcrypto as never);

export type TestKeyType = 'ecdsa-p256' | 'ecdsa-p384' | 'ecdsa-p521' | 'rsa2048' | 'rsa3072' | 'ed25519';

const ALGORITHMS: Record<TestKeyType, { generate: object; sign: object }> = {
  'ecdsa-p256': { generate: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
  'ecdsa-p384': { generate: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
  'ecdsa-p521': { generate: { name: 'ECDSA', namedCurve: 'P-521' }, sign: { name: 'ECDSA', hash: 'SHA-512' } },
  rsa2048: rsa(2048),
  rsa3072: rsa(3072),
  ed25519: { generate: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
};

function rsa(bits: number) {
  const alg = { name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
  return { generate: alg, sign: alg };
}

export interface TestIdentity {
  privateKey: KO;
  keys: webcrypto.CryptoKeyPair;
  chain: Uint8Array[];
  cert: x509.X509Certificate;
}

let serial = 1;

/** A key pair and a certificate for `names` (issued by `issuer`, else self-signed). */
export async function makeIdentity(keyType: TestKeyType, names: string[], issuer?: TestIdentity, opts: { ca?: boolean; subject?: string } = {}): Promise<TestIdentity> {
  const alg = ALGORITHMS[keyType];
  const keys = (await webcrypto.subtle.generateKey(alg.generate as never, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const subject = opts.subject ?? `CN=${names[0] ?? 'test'}`;
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(!!opts.ca, undefined, true)];
  const dns = names.filter((n) => !/^\d+\.\d+\.\d+\.\d+$/.test(n));
  const ips = names.filter((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n));
  if (names.length > 0) {
    extensions.push(new x509.SubjectAlternativeNameExtension([...dns.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))]));
  }
  if (opts.ca) extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true));
  const common = {
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    extensions,
  };
  const cert = issuer
    ? await x509.X509CertificateGenerator.create({
        ...common,
        subject,
        issuer: issuer.cert.subject,
        publicKey: keys.publicKey as never,
        signingKey: issuer.keys.privateKey as never,
        signingAlgorithm: signingAlgorithmOf(issuer) as never,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({ ...common, name: subject, keys: keys as never, signingAlgorithm: alg.sign as never });
  const chain = [new Uint8Array(cert.rawData), ...(issuer ? issuer.chain : [])];
  return { privateKey: KeyObject.from(keys.privateKey), keys, chain, cert };
}

function signingAlgorithmOf(id: TestIdentity): object {
  const alg = id.keys.privateKey.algorithm as { name: string; namedCurve?: string };
  if (alg.name === 'ECDSA') return { name: 'ECDSA', hash: alg.namedCurve === 'P-384' ? 'SHA-384' : 'SHA-256' };
  return alg;
}

/** A certificate for a CSR (PEM), signed by `ca`. */
export async function issueFromCsr(csrPem: string, ca: TestIdentity): Promise<Uint8Array[]> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    subject: csr.subject,
    issuer: ca.cert.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    publicKey: csr.publicKey,
    signingKey: ca.keys.privateKey as never,
    signingAlgorithm: signingAlgorithmOf(ca) as never,
    extensions: csr.extensions,
  });
  return [new Uint8Array(cert.rawData), ...ca.chain];
}

export function pem(der: Uint8Array, label = 'CERTIFICATE'): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}

const publicKeys = new Map<string, KO>();

/** Parsing a certificate costs about a millisecond: cache leaf public keys for the load tests. */
function leafPublicKey(leafDer: Uint8Array): KO {
  const k = createHash('sha256').update(leafDer).digest('hex');
  let key = publicKeys.get(k);
  if (!key) publicKeys.set(k, (key = new NodeX509(Buffer.from(leafDer)).publicKey));
  return key;
}

/** RFC 8446 §4.4.3 context strings, written out here rather than taken from src/ (an independent oracle). */
export const SERVER_CONTEXT = 'TLS 1.3, server CertificateVerify';
export const CLIENT_CONTEXT = 'TLS 1.3, client CertificateVerify';

/**
 * The signed content of §4.4.3, built from the RFC's text: 64 octets of 0x20, the context
 * string, one 0x00 separator, then the transcript hash. Deliberately not the function under
 * test (src/tls/signer.ts certificateVerifyContent), which could be wrong in the same way.
 */
export function expectedCertificateVerifyContent(transcriptHash: Uint8Array, context = SERVER_CONTEXT): Buffer {
  return Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from(context, 'ascii'), Buffer.of(0x00), transcriptHash]);
}

/** Verifies a CertificateVerify signature the way a TLS client does (RFC 8446 §4.4.3). */
export function verifyCertificateVerify(
  leafDer: Uint8Array,
  scheme: number,
  transcriptHash: Uint8Array,
  signature: Uint8Array,
  context = SERVER_CONTEXT,
): boolean {
  const info = SCHEMES.get(scheme)!;
  const publicKey = leafPublicKey(leafDer);
  const content = expectedCertificateVerifyContent(transcriptHash, context);
  if (info.keyType === 'rsa') {
    return verify(info.hash, content, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
  }
  return verify(info.hash, content, publicKey, signature);
}

/** A scratch directory with a fake machine-id; removed by `cleanup`. */
export async function scratch(prefix = 'keyd-test-'): Promise<{ dir: string; machineIdPath: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const machineIdPath = join(dir, 'machine-id');
  await writeFile(machineIdPath, 'a1b2c3d4e5f60718293a4b5c6d7e8f90\n');
  return { dir, machineIdPath, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Starts a keyd in `dir` with silent logs. */
export async function startTestKeyd(dir: string, machineIdPath: string, extra: Partial<KeydOptions> = {}): Promise<RunningKeyd> {
  return startKeyd({
    data: join(dir, 'data'),
    rootKey: join(dir, 'root.key'),
    socket: join(dir, 'sign.sock'),
    adminSocket: join(dir, 'admin.sock'),
    machineIdPath,
    logger: pino({ level: 'silent' }),
    ...extra,
  });
}

export const LOCAL = { kind: 'local' as const, id: 'test' };

/** The longest message an audit entry keeps: 600 such entries are about 1.3 MB of JSON, beyond one frame. */
export const LONG_AUDIT_MESSAGE = 'm'.repeat(AUDIT_FIELD_LIMITS.message);

/** Records `count` refusals peer-0 … peer-(count-1), each with LONG_AUDIT_MESSAGE. */
export async function fillAuditLog(admin: RunningKeyd['adminService'], count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    await admin.recordAudit({ op: 'refused', caller: { kind: 'client', id: `peer-${i}` }, ok: false, code: 'KEYD_TEST', message: LONG_AUDIT_MESSAGE });
  }
}

/**
 * A reply to an audit of fillAuditLog's `count` entries that did not fit one frame: marked
 * truncated, every entry returned or counted as omitted, and those returned whole and the
 * newest, peer-(count-n) … peer-(count-1).
 */
export function assertNewestWhole(reply: AuditReply, count: number): void {
  assert.equal(reply.truncated, true);
  const { entries, omitted } = reply;
  assert.ok(entries.length > count / 2 && entries.length < count, `${entries.length} entries`);
  assert.equal(omitted! + entries.length, count, 'every entry asked for is returned or counted as omitted');
  entries.forEach((e, i) => {
    assert.equal(e.caller.id, `peer-${count - entries.length + i}`);
    assert.equal(e.message, LONG_AUDIT_MESSAGE);
    assert.equal(e.code, 'KEYD_TEST');
  });
}
