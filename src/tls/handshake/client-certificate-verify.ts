import { constants, createVerify, verify, type KeyObject } from 'node:crypto';
import { TlsAlert } from '../alert.js';
import { SCHEMES } from '../signature-schemes.js';
import { keyTypeOf } from '../signer.js';
import { SignatureScheme } from '../wire/codepoints.js';

/**
 * Checking the client's CertificateVerify (RFC 8446 §4.4.3): the scheme must be one our
 * CertificateRequest offered and one the certificate's key can make (illegal_parameter
 * otherwise, §4.4.3 "MUST be one of those present in ... the CertificateRequest"), and the
 * signature must verify over the client's content (decrypt_error otherwise, §6.2).
 */

/**
 * The schemes our CertificateRequest offers by default: those TLS 1.3 allows for
 * CertificateVerify that node:crypto verifies here (RSA only as PSS with an rsaEncryption
 * key, §4.2.3; ECDSA bound to its curve). No SHA-1, no PKCS#1 v1.5.
 */
export const CLIENT_SIGNATURE_SCHEMES: readonly number[] = [
  SignatureScheme.ecdsa_secp256r1_sha256,
  SignatureScheme.ecdsa_secp384r1_sha384,
  SignatureScheme.ecdsa_secp521r1_sha512,
  SignatureScheme.ed25519,
  SignatureScheme.rsa_pss_rsae_sha256,
  SignatureScheme.rsa_pss_rsae_sha384,
  SignatureScheme.rsa_pss_rsae_sha512,
];

const CLIENT_CONTEXT = Buffer.from('TLS 1.3, client CertificateVerify', 'latin1');
const CONTENT_PREFIX = Buffer.alloc(64, 0x20);

/** §4.4.3: 64 spaces, "TLS 1.3, client CertificateVerify", 0, Transcript-Hash(… client Certificate). */
export function clientCertificateVerifyContent(transcriptHash: Uint8Array): Buffer {
  return Buffer.concat([CONTENT_PREFIX, CLIENT_CONTEXT, Buffer.of(0), transcriptHash]);
}

export function verifyClientCertificateVerify(p: {
  publicKey: KeyObject;
  scheme: number;
  signature: Uint8Array;
  transcriptHash: Uint8Array;
  offered: readonly number[];
}): void {
  const info = SCHEMES.get(p.scheme);
  if (!p.offered.includes(p.scheme) || !info) {
    throw new TlsAlert('illegal_parameter', `client CertificateVerify uses scheme 0x${p.scheme.toString(16)}, which the CertificateRequest did not offer`);
  }
  // §4.2.3: RSASSA-PKCS1-v1_5 (and TLS 1.2's ecdsa_sha224) never sign a TLS 1.3 handshake
  // message, even when a configured signature_algorithms lists them (for certificates).
  if (!info.tls13) {
    throw new TlsAlert('illegal_parameter', `client CertificateVerify uses ${info.name}, which is not a TLS 1.3 CertificateVerify scheme (RFC 8446 §4.2.3)`);
  }
  const keyType = keyTypeOf(p.publicKey);
  if (keyType !== info.keyType) {
    throw new TlsAlert(
      'illegal_parameter',
      `client CertificateVerify scheme ${info.name} does not fit the certificate's ${keyType ?? p.publicKey.asymmetricKeyType} key`,
    );
  }
  const content = clientCertificateVerifyContent(p.transcriptHash);
  let ok: boolean;
  try {
    ok =
      info.keyType === 'rsa'
        ? verify(info.hash, content, { key: p.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, p.signature)
        : verify(info.hash, content, p.publicKey, p.signature);
  } catch {
    ok = false; // e.g. an ECDSA signature that is not DER: it does not verify either
  }
  if (!ok) throw new TlsAlert('decrypt_error', `client CertificateVerify (${info.name}) does not verify`);
}

/** TLS 1.2 (hash, signature) pair sha224+ecdsa (RFC 5246 §7.4.1.4.1): no TLS 1.3 name. */
const ECDSA_SHA224 = 0x0303;

/**
 * TLS 1.2 CertificateRequest schemes (RFC 5246 §7.4.4; RFC 8446 §4.2.3 names for RSA-PSS):
 * ECDSA with SHA-256/384/512 (any curve in TLS 1.2), Ed25519, RSA-PSS and RSA PKCS#1 v1.5
 * with SHA-256/384/512, and ECDSA with SHA-224, which TLS 1.2 clients still use (OpenSSL
 * offers it too). No SHA-1 (RFC 9155), no MD5.
 */
export const CLIENT_SIGNATURE_SCHEMES_12: readonly number[] = [
  // The TLS 1.3 list, in the same order; then what only TLS 1.2 allows.
  ...CLIENT_SIGNATURE_SCHEMES,
  SignatureScheme.rsa_pkcs1_sha256,
  SignatureScheme.rsa_pkcs1_sha384,
  SignatureScheme.rsa_pkcs1_sha512,
  ECDSA_SHA224,
];

type Verify12 = { readonly key: 'ec' | 'rsa' | 'ed25519'; readonly hash: 'sha224' | 'sha256' | 'sha384' | 'sha512' | null; readonly padding?: number };

const SCHEMES_12 = new Map<number, Verify12>([
  [SignatureScheme.ecdsa_secp256r1_sha256, { key: 'ec', hash: 'sha256' }],
  [SignatureScheme.ecdsa_secp384r1_sha384, { key: 'ec', hash: 'sha384' }],
  [SignatureScheme.ecdsa_secp521r1_sha512, { key: 'ec', hash: 'sha512' }],
  [ECDSA_SHA224, { key: 'ec', hash: 'sha224' }],
  [SignatureScheme.ed25519, { key: 'ed25519', hash: null }],
  [SignatureScheme.rsa_pss_rsae_sha256, { key: 'rsa', hash: 'sha256', padding: constants.RSA_PKCS1_PSS_PADDING }],
  [SignatureScheme.rsa_pss_rsae_sha384, { key: 'rsa', hash: 'sha384', padding: constants.RSA_PKCS1_PSS_PADDING }],
  [SignatureScheme.rsa_pss_rsae_sha512, { key: 'rsa', hash: 'sha512', padding: constants.RSA_PKCS1_PSS_PADDING }],
  [SignatureScheme.rsa_pkcs1_sha256, { key: 'rsa', hash: 'sha256', padding: constants.RSA_PKCS1_PADDING }],
  [SignatureScheme.rsa_pkcs1_sha384, { key: 'rsa', hash: 'sha384', padding: constants.RSA_PKCS1_PADDING }],
  [SignatureScheme.rsa_pkcs1_sha512, { key: 'rsa', hash: 'sha512', padding: constants.RSA_PKCS1_PADDING }],
]);

/**
 * RFC 5246 §7.4.8: the client's signature over every handshake message from ClientHello up
 * to (not including) the CertificateVerify, with a scheme our CertificateRequest offered that
 * fits the key (illegal_parameter otherwise, as for TLS 1.3), else decrypt_error.
 */
export function verifyClientCertificateVerify12(p: {
  publicKey: KeyObject;
  scheme: number;
  signature: Uint8Array;
  handshakeMessages: readonly Uint8Array[];
  offered: readonly number[];
}): void {
  const info = SCHEMES_12.get(p.scheme);
  if (!p.offered.includes(p.scheme) || !info) {
    throw new TlsAlert('illegal_parameter', `client CertificateVerify uses scheme 0x${p.scheme.toString(16)}, which the CertificateRequest did not offer`);
  }
  if (p.publicKey.asymmetricKeyType !== info.key) {
    throw new TlsAlert('illegal_parameter', `client CertificateVerify scheme 0x${p.scheme.toString(16)} does not fit the certificate's ${p.publicKey.asymmetricKeyType} key`);
  }
  let ok: boolean;
  try {
    if (info.hash === null) {
      ok = verify(null, Buffer.concat(p.handshakeMessages), p.publicKey, p.signature);
    } else {
      // A streaming verifier: the messages are hashed in place, not copied into one buffer.
      const verifier = createVerify(info.hash);
      for (const m of p.handshakeMessages) verifier.update(m);
      const key =
        info.padding === undefined
          ? p.publicKey
          : { key: p.publicKey, padding: info.padding, saltLength: constants.RSA_PSS_SALTLEN_DIGEST };
      ok = verifier.verify(key, p.signature);
    }
  } catch {
    ok = false;
  }
  if (!ok) throw new TlsAlert('decrypt_error', `client CertificateVerify (0x${p.scheme.toString(16)}) does not verify`);
}
