import { SignatureScheme } from './wire/codepoints.js';

/**
 * What each signature scheme means for node:crypto (RFC 8446 §4.2.3).
 * In TLS 1.3 RSA signs only with PSS (salt length = hash length); ECDSA is bound to
 * its curve; Ed25519 signs the message itself (no pre-hash). The RSA PKCS#1 v1.5
 * schemes exist only for the TLS 1.2 ServerKeyExchange (RFC 8446 §4.2.3 forbids them in
 * a TLS 1.3 CertificateVerify); SHA-1 schemes are absent (RFC 9155).
 */
export type KeyType = 'ecdsa-p256' | 'ecdsa-p384' | 'ecdsa-p521' | 'rsa' | 'ed25519';

export interface SchemeInfo {
  readonly scheme: number;
  readonly name: string;
  readonly keyType: KeyType;
  /** Digest for node:crypto `sign`; null for Ed25519. */
  readonly hash: 'sha224' | 'sha256' | 'sha384' | 'sha512' | null;
  /** RSA padding: PSS (TLS 1.3 and 1.2) or PKCS#1 v1.5 (TLS 1.2 only); null for non-RSA keys. */
  readonly rsaPadding: 'pss' | 'pkcs1' | null;
  /** False for schemes a TLS 1.3 CertificateVerify must never use (RSA PKCS#1 v1.5). */
  readonly tls13: boolean;
}

export const SCHEMES: ReadonlyMap<number, SchemeInfo> = new Map(
  (
    [
      [SignatureScheme.ecdsa_secp256r1_sha256, 'ecdsa_secp256r1_sha256', 'ecdsa-p256', 'sha256'],
      [SignatureScheme.ecdsa_secp384r1_sha384, 'ecdsa_secp384r1_sha384', 'ecdsa-p384', 'sha384'],
      [SignatureScheme.ecdsa_secp521r1_sha512, 'ecdsa_secp521r1_sha512', 'ecdsa-p521', 'sha512'],
      [SignatureScheme.rsa_pss_rsae_sha256, 'rsa_pss_rsae_sha256', 'rsa', 'sha256'],
      [SignatureScheme.rsa_pss_rsae_sha384, 'rsa_pss_rsae_sha384', 'rsa', 'sha384'],
      [SignatureScheme.rsa_pss_rsae_sha512, 'rsa_pss_rsae_sha512', 'rsa', 'sha512'],
      [SignatureScheme.ed25519, 'ed25519', 'ed25519', null],
      [SignatureScheme.rsa_pkcs1_sha256, 'rsa_pkcs1_sha256', 'rsa', 'sha256'],
      [SignatureScheme.rsa_pkcs1_sha384, 'rsa_pkcs1_sha384', 'rsa', 'sha384'],
      [SignatureScheme.rsa_pkcs1_sha512, 'rsa_pkcs1_sha512', 'rsa', 'sha512'],
      // TLS 1.2 only (RFC 5246 §7.4.1.4.1: ECDSA with SHA-224, any curve); never a TLS 1.3 scheme.
      [SignatureScheme.ecdsa_sha224, 'ecdsa_sha224', 'ecdsa-p256', 'sha224'],
    ] as const
  ).map(([scheme, name, keyType, hash]) => {
    const pkcs1 = name.startsWith('rsa_pkcs1_');
    const tls12Only = pkcs1 || scheme === SignatureScheme.ecdsa_sha224;
    const rsaPadding = keyType === 'rsa' ? (pkcs1 ? 'pkcs1' : 'pss') : null;
    return [scheme, { scheme, name, keyType, hash, rsaPadding, tls13: !tls12Only }];
  }),
);

/** TLS 1.3 CertificateVerify schemes a key of this type can produce, in our order of preference. */
export function schemesForKeyType(keyType: KeyType): number[] {
  return [...SCHEMES.values()].filter((s) => s.keyType === keyType && s.tls13).map((s) => s.scheme);
}

/**
 * TLS 1.2 ServerKeyExchange schemes a key of this type can produce (RFC 5246 §7.4.1.4.1 as
 * updated by RFC 8446 §4.2.3): the TLS 1.3 ones, then, for RSA, PKCS#1 v1.5 for clients
 * that offer no PSS scheme.
 */
export function tls12SchemesForKeyType(keyType: KeyType): number[] {
  const own = [...SCHEMES.values()].filter((s) => s.keyType === keyType && s.tls13).map((s) => s.scheme);
  if (keyType.startsWith('ecdsa-')) {
    // RFC 8446 §4.2.3: in TLS 1.2 an ECDSA scheme names only the hash, not the curve, so any
    // ECDSA key signs with any of them (the key's own curve's hash first).
    return [...own, ...TLS12_ECDSA_SCHEMES.filter((s) => !own.includes(s))];
  }
  return [...own, ...[...SCHEMES.values()].filter((s) => s.keyType === keyType && !s.tls13).map((s) => s.scheme)];
}

/** TLS 1.2 ECDSA schemes by hash, strongest last so that a key's own curve's scheme stays first. */
const TLS12_ECDSA_SCHEMES: readonly number[] = [
  SignatureScheme.ecdsa_secp256r1_sha256,
  SignatureScheme.ecdsa_secp384r1_sha384,
  SignatureScheme.ecdsa_secp521r1_sha512,
  SignatureScheme.ecdsa_sha224,
];

/** Transcript hash lengths allowed by the TLS 1.3 cipher suites (SHA-256, SHA-384). */
export const TRANSCRIPT_HASH_LENGTHS: readonly number[] = [32, 48];
