import { Reader } from '../../lib/reader.js';
import { Writer } from '../../lib/writer.js';
import { SignatureScheme } from '../wire/codepoints.js';

/**
 * Delegated credentials for TLS (RFC 9345 §4): the Credential and DelegatedCredential
 * structures and the content the certificate's key signs. Pure bytes: keyd builds and
 * signs the content, the edge decodes what keyd issued, the engine sends it untouched in
 * the end-entity CertificateEntry (§4.1.1).
 *
 *   struct { uint32 valid_time; SignatureScheme dc_cert_verify_algorithm;
 *            opaque ASN1_subjectPublicKeyInfo<1..2^24-1>; } Credential;
 *   struct { Credential cred; SignatureScheme algorithm; opaque signature<0..2^16-1>; } DelegatedCredential;
 */

export interface Credential {
  /** Seconds after the delegation certificate's notBefore at which the credential expires. */
  readonly validTime: number;
  /** The scheme the credential's key signs CertificateVerify with. */
  readonly dcCertVerifyAlgorithm: number;
  /** DER SubjectPublicKeyInfo of the credential's key. */
  readonly subjectPublicKeyInfo: Uint8Array;
}

export interface DelegatedCredential {
  readonly credential: Credential;
  /** The scheme the certificate's key signed the credential with. */
  readonly algorithm: number;
  readonly signature: Uint8Array;
}

/** §4: the extension's OID in the end-entity certificate (id-pe-delegationUsage, Cloudflare's arc). */
export const DELEGATION_USAGE_OID = '1.3.6.1.4.1.44363.44';

/** §4, §4.1.3: by default a credential may not expire more than 7 days from now. */
export const MAX_DELEGATED_CREDENTIAL_SECONDS = 7 * 24 * 3600;

const SERVER_CONTEXT = Buffer.from('TLS, server delegated credentials', 'latin1');
const CONTENT_PREFIX = Buffer.alloc(64, 0x20);

/**
 * dc_cert_verify_algorithm values this implementation issues and serves: the CertificateVerify
 * schemes (RFC 8446 §11) whose key is not an rsaEncryption key (§4 forbids rsa_pss_rsae_*),
 * that node:crypto signs with. rsa_pss_pss_* are allowed by the RFC but not produced here.
 */
export const DELEGATED_CREDENTIAL_SCHEMES: readonly number[] = [
  SignatureScheme.ecdsa_secp256r1_sha256,
  SignatureScheme.ecdsa_secp384r1_sha384,
  SignatureScheme.ecdsa_secp521r1_sha512,
  SignatureScheme.ed25519,
];

/** RSASSA-PKCS1-v1_5 codepoints: never a TLS 1.3 signature (RFC 8446 §4.2.3), so never a credential's. */
export const RSA_PKCS1_SCHEMES: readonly number[] = [
  SignatureScheme.rsa_pkcs1_sha1,
  SignatureScheme.rsa_pkcs1_sha256,
  SignatureScheme.rsa_pkcs1_sha384,
  SignatureScheme.rsa_pkcs1_sha512,
];

/** §4: the Credential as it is signed and sent. */
export function encodeCredential(credential: Credential): Buffer {
  const spki = credential.subjectPublicKeyInfo;
  if (spki.length < 1 || spki.length > 0xffffff) throw new RangeError('ASN1_subjectPublicKeyInfo must be 1..2^24-1 bytes');
  if (!Number.isInteger(credential.validTime) || credential.validTime < 0 || credential.validTime > 0xffffffff) {
    throw new RangeError('valid_time must be a uint32');
  }
  return new Writer(spki.length + 9).u32(credential.validTime).u16(credential.dcCertVerifyAlgorithm).opaque(3, spki).finish();
}

/** §4: the DelegatedCredential, as carried in the CertificateEntry extension. */
export function encodeDelegatedCredential(dc: DelegatedCredential): Buffer {
  if (dc.signature.length > 0xffff) throw new RangeError('signature must be at most 2^16-1 bytes');
  const credential = encodeCredential(dc.credential);
  return new Writer(credential.length + dc.signature.length + 4).bytes(credential).u16(dc.algorithm).opaque(2, dc.signature).finish();
}

/** Decodes a DelegatedCredential; `credentialBytes` is the encoded `cred`, as it was signed. */
export function decodeDelegatedCredential(bytes: Uint8Array): DelegatedCredential & { readonly credentialBytes: Uint8Array } {
  const r = new Reader(bytes, 'DelegatedCredential');
  const start = r.position;
  const validTime = r.u32('valid_time');
  const dcCertVerifyAlgorithm = r.u16('dc_cert_verify_algorithm');
  const subjectPublicKeyInfo = r.vec(3, 1, 0xffffff, 'ASN1_subjectPublicKeyInfo');
  const credentialBytes = bytes.subarray(start, r.position);
  const algorithm = r.u16('algorithm');
  const signature = r.vec(2, 0, 0xffff, 'signature');
  r.end();
  return { credential: { validTime, dcCertVerifyAlgorithm, subjectPublicKeyInfo }, algorithm, signature, credentialBytes };
}

/**
 * §4: what the end-entity certificate's key signs: 64 × 0x20, "TLS, server delegated
 * credentials", 0x00, the DER certificate, the encoded Credential, the algorithm (u16).
 */
export function delegatedCredentialSignedContent(certificateDer: Uint8Array, credential: Uint8Array, algorithm: number): Buffer {
  const algorithmBytes = Buffer.of((algorithm >>> 8) & 0xff, algorithm & 0xff);
  return Buffer.concat([CONTENT_PREFIX, SERVER_CONTEXT, Buffer.of(0), certificateDer, credential, algorithmBytes]);
}

/**
 * The body of the ClientHello's delegated_credential extension (§4.1.1): a
 * SignatureSchemeList, `SignatureScheme supported_signature_algorithm<2..2^16-2>`, and
 * nothing after it. Anything else throws DecodeError, which the engine sends as
 * decode_error (RFC 8446 §6.2).
 */
export function decodeDelegatedCredentialExtension(data: Uint8Array): number[] {
  const r = new Reader(data, 'delegated_credential');
  const schemes = r.u16List(2, 2, 0xfffe, 'supported_signature_algorithm');
  r.end();
  return schemes;
}
