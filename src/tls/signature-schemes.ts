import { SignatureScheme } from './wire/codepoints.js';

/**
 * What each TLS 1.3 signature scheme means for node:crypto (RFC 8446 §4.2.3).
 * In TLS 1.3 RSA signs only with PSS (salt length = hash length); ECDSA is bound to
 * its curve; Ed25519 signs the message itself (no pre-hash).
 */
export type KeyType = 'ecdsa-p256' | 'ecdsa-p384' | 'ecdsa-p521' | 'rsa' | 'ed25519';

export interface SchemeInfo {
  readonly scheme: number;
  readonly name: string;
  readonly keyType: KeyType;
  /** Digest for node:crypto `sign`; null for Ed25519. */
  readonly hash: 'sha256' | 'sha384' | 'sha512' | null;
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
    ] as const
  ).map(([scheme, name, keyType, hash]) => [scheme, { scheme, name, keyType, hash }]),
);

/** Schemes a key of this type can produce, in our order of preference. */
export function schemesForKeyType(keyType: KeyType): number[] {
  return [...SCHEMES.values()].filter((s) => s.keyType === keyType).map((s) => s.scheme);
}

/** Transcript hash lengths allowed by the TLS 1.3 cipher suites (SHA-256, SHA-384). */
export const TRANSCRIPT_HASH_LENGTHS: readonly number[] = [32, 48];
