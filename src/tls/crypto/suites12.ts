import { CipherSuite } from '../wire/codepoints.js';
import type { HashName } from './hkdf.js';

/**
 * TLS 1.2 cipher suites of this server: ECDHE key exchange with an AEAD only (RFC 5289
 * AES-GCM, RFC 7905 ChaCha20-Poly1305), authenticated by an ECDSA or RSA certificate.
 * No static RSA (it would need a decryption oracle in keyd), no DHE, no CBC.
 */
export interface Suite12Info {
  readonly id: number;
  readonly name: string;
  /** node:crypto cipher name. */
  readonly aead: 'aes-128-gcm' | 'aes-256-gcm' | 'chacha20-poly1305';
  readonly keyLength: number;
  /**
   * The implicit nonce part from the key block: 4 bytes of salt for GCM, whose other 8 are
   * sent with each record (RFC 5288 §3); 12 for ChaCha20-Poly1305, none sent (RFC 7905 §2).
   */
  readonly fixedIvLength: 4 | 12;
  /** The PRF hash (RFC 5246 §5; RFC 5289 §3: SHA-384 for the AES-256 suites). */
  readonly hash: HashName;
  /** The certificate key type the suite authenticates with (RFC 8422 §2). */
  readonly auth: 'ecdsa' | 'rsa';
}

const list: Suite12Info[] = [
  { id: CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, name: 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256', aead: 'aes-128-gcm', keyLength: 16, fixedIvLength: 4, hash: 'sha256', auth: 'ecdsa' },
  { id: CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, name: 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256', aead: 'aes-128-gcm', keyLength: 16, fixedIvLength: 4, hash: 'sha256', auth: 'rsa' },
  { id: CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, name: 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384', aead: 'aes-256-gcm', keyLength: 32, fixedIvLength: 4, hash: 'sha384', auth: 'ecdsa' },
  { id: CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, name: 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384', aead: 'aes-256-gcm', keyLength: 32, fixedIvLength: 4, hash: 'sha384', auth: 'rsa' },
  { id: CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, name: 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256', aead: 'chacha20-poly1305', keyLength: 32, fixedIvLength: 12, hash: 'sha256', auth: 'ecdsa' },
  { id: CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, name: 'TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256', aead: 'chacha20-poly1305', keyLength: 32, fixedIvLength: 12, hash: 'sha256', auth: 'rsa' },
];

export const SUITES12: ReadonlyMap<number, Suite12Info> = new Map(list.map((s) => [s.id, s]));

/** Server preference (Mozilla "intermediate" order): AES-128-GCM, AES-256-GCM, then ChaCha20-Poly1305. */
export const DEFAULT_CIPHER_SUITES12: readonly number[] = list.map((s) => s.id);

export function suite12ByName(name: string): Suite12Info | undefined {
  return list.find((s) => s.name === name);
}
