import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, KeyObject, webcrypto, X509Certificate } from 'node:crypto';
import { keyTypeOf } from '../tls/signer.js';
import type { KeyType } from '../tls/signature-schemes.js';
import { KeydError } from './errors.js';

x509.cryptoProvider.set(webcrypto as never);

/** Key types `generate` can create (RSA sizes named, as the CLI takes them). */
export const GENERATE_KEY_TYPES = ['ecdsa-p256', 'ecdsa-p384', 'rsa2048', 'rsa3072', 'rsa4096', 'ed25519'] as const;
export type GenerateKeyType = (typeof GENERATE_KEY_TYPES)[number];

/** Checks that a private key is one TLS 1.3 can use here; returns its key type. */
export function checkPrivateKey(key: KeyObject): KeyType {
  if (key.type !== 'private') throw new KeydError('KEYD_BAD_KEY', `expected a private key, got a ${key.type} key`);
  const keyType = keyTypeOf(key);
  if (!keyType) {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    throw new KeydError('KEYD_BAD_KEY', `unsupported key type ${key.asymmetricKeyType}${curve ? ` (${curve})` : ''}: use ECDSA P-256/P-384/P-521, RSA 2048-4096 or Ed25519`);
  }
  if (keyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048 || bits > 4096) throw new KeydError('KEYD_BAD_KEY', `RSA key of ${bits} bits: keyd takes 2048 to 4096`);
  }
  return keyType;
}

/**
 * Parses DER certificates (leaf first); KEYD_BAD_CHAIN when empty, unparsable, or an entry
 * is not exactly one DER certificate. node's X509Certificate also reads PEM text and ignores
 * bytes after the certificate, but keyd serves the bytes it stores, and a TLS Certificate
 * entry must be one DER certificate (RFC 8446 §4.4.2: cert_data, "DER-encoded X.509v3").
 * `exactDer: false` is for records already stored (an older keyd took such entries): they
 * still load, so that their key can be given a new chain.
 */
export function parseChain(chainDer: readonly Uint8Array[], opts: { exactDer?: boolean } = {}): X509Certificate[] {
  if (chainDer.length === 0) throw new KeydError('KEYD_BAD_CHAIN', 'certificate chain is empty');
  return chainDer.map((der, i) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(Buffer.from(der));
    } catch (err) {
      throw new KeydError('KEYD_BAD_CHAIN', `certificate ${i + 1} of the chain does not parse (${(err as Error).message})`);
    }
    if (opts.exactDer !== false && !cert.raw.equals(der)) {
      throw new KeydError(
        'KEYD_BAD_CHAIN',
        `certificate ${i + 1} of the chain is not exactly one DER certificate (${der.length} bytes, the certificate ${cert.raw.length}): PEM text, trailing bytes or two certificates in one entry`,
      );
    }
    return cert;
  });
}

/** Refuses a leaf whose public key is not the key's (compared as SubjectPublicKeyInfo DER). */
export function checkLeafMatchesKey(leaf: X509Certificate, publicKey: KeyObject): void {
  const leafSpki = leaf.publicKey.export({ format: 'der', type: 'spki' });
  if (!leafSpki.equals(publicKey.export({ format: 'der', type: 'spki' }))) {
    throw new KeydError('KEYD_KEY_MISMATCH', `the private key does not match the leaf certificate (${leaf.subject.replace(/\n/g, ', ')})`);
  }
}

/** Subject key identifier, RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING. */
export function subjectKeyIdentifier(publicKey: KeyObject): string {
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  return createHash('sha1').update(spkiBitString(spki)).digest('hex');
}

/** The contents (after the unused-bits byte) of the BIT STRING in a DER SubjectPublicKeyInfo. */
function spkiBitString(spki: Buffer): Buffer {
  let at = 0;
  const readHeader = (): { tag: number; length: number } => {
    const tag = spki[at++]!;
    let length = spki[at++]!;
    if (length & 0x80) {
      const n = length & 0x7f;
      length = 0;
      for (let i = 0; i < n; i++) length = (length << 8) | spki[at++]!;
    }
    return { tag, length };
  };
  readHeader(); // SEQUENCE
  const alg = readHeader(); // AlgorithmIdentifier
  at += alg.length;
  const bits = readHeader();
  if (bits.tag !== 0x03) throw new Error('SubjectPublicKeyInfo without a BIT STRING');
  return spki.subarray(at + 1, at + bits.length);
}

/**
 * Creates a key pair inside keyd and a PKCS#10 CSR for it (SAN: the name). The private
 * key never leaves as bytes: it becomes a KeyObject here and is sealed by the store.
 */
export async function generateKeyAndCsr(keyType: GenerateKeyType, name: string, subject: string): Promise<{ privateKey: KeyObject; csrPem: string }> {
  let dn: x509.Name;
  try {
    dn = new x509.Name(subject);
    if (dn.toJSON().length === 0) throw new Error('empty subject');
  } catch (err) {
    throw new KeydError('KEYD_BAD_REQUEST', `subject ${JSON.stringify(subject)} is not a distinguished name like "CN=example.com, O=Org" (${(err as Error).message})`);
  }
  const { generate, signing } = webCryptoAlgorithms(keyType);
  const keys = (await webcrypto.subtle.generateKey(generate as never, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: dn,
    keys: keys as never,
    signingAlgorithm: signing,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }])],
  });
  return { privateKey: KeyObject.from(keys.privateKey), csrPem: csr.toString('pem') };
}

function webCryptoAlgorithms(keyType: GenerateKeyType): { generate: object; signing: object } {
  const rsa = (bits: number) => {
    // The CSR is signed PKCS#1 v1.5 (what CAs expect); the same RSA key signs PSS in TLS 1.3.
    const alg = { name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
    return { generate: alg, signing: alg };
  };
  switch (keyType) {
    case 'ecdsa-p256':
      return { generate: { name: 'ECDSA', namedCurve: 'P-256' }, signing: { name: 'ECDSA', hash: 'SHA-256' } };
    case 'ecdsa-p384':
      return { generate: { name: 'ECDSA', namedCurve: 'P-384' }, signing: { name: 'ECDSA', hash: 'SHA-384' } };
    case 'rsa2048':
      return rsa(2048);
    case 'rsa3072':
      return rsa(3072);
    case 'rsa4096':
      return rsa(4096);
    case 'ed25519':
      return { generate: { name: 'Ed25519' }, signing: { name: 'Ed25519' } };
  }
}
