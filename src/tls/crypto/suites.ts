import { CipherSuite } from '../wire/codepoints.js';

/** TLS 1.3 cipher suites (RFC 8446 §B.4): the AEAD and the HKDF hash each one fixes. */
export interface SuiteInfo {
  readonly id: number;
  readonly name: string;
  /** node:crypto cipher name. */
  readonly aead: 'aes-128-gcm' | 'aes-256-gcm' | 'chacha20-poly1305';
  readonly keyLength: number;
  readonly hash: 'sha256' | 'sha384';
  readonly hashLength: number;
}

const list: SuiteInfo[] = [
  { id: CipherSuite.TLS_AES_128_GCM_SHA256, name: 'TLS_AES_128_GCM_SHA256', aead: 'aes-128-gcm', keyLength: 16, hash: 'sha256', hashLength: 32 },
  { id: CipherSuite.TLS_AES_256_GCM_SHA384, name: 'TLS_AES_256_GCM_SHA384', aead: 'aes-256-gcm', keyLength: 32, hash: 'sha384', hashLength: 48 },
  { id: CipherSuite.TLS_CHACHA20_POLY1305_SHA256, name: 'TLS_CHACHA20_POLY1305_SHA256', aead: 'chacha20-poly1305', keyLength: 32, hash: 'sha256', hashLength: 32 },
];

export const SUITES: ReadonlyMap<number, SuiteInfo> = new Map(list.map((s) => [s.id, s]));

export const DEFAULT_CIPHER_SUITES: readonly number[] = list.map((s) => s.id);

export function suiteByName(name: string): SuiteInfo | undefined {
  return list.find((s) => s.name === name);
}
