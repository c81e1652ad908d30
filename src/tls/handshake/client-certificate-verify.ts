import { constants, verify, type KeyObject } from 'node:crypto';
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
