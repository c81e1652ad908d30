import { createHash } from 'node:crypto';

/**
 * Fingerprint of keyd's X25519 provisioning public key, in the style of OpenSSH
 * (`SHA256:` + unpadded base64 of the SHA-256 of the raw 32-byte key), so operators
 * can compare it by eye with what keyd logs at start.
 */
export function fingerprintOf(rawPublicKey: Uint8Array): string {
  if (rawPublicKey.length !== 32) throw new RangeError(`an X25519 public key is 32 bytes, got ${rawPublicKey.length}`);
  return 'SHA256:' + createHash('sha256').update(rawPublicKey).digest('base64').replace(/=+$/, '');
}

const FINGERPRINT_PATTERN = /^SHA256:[A-Za-z0-9+/]{43}$/;

export function isFingerprint(value: string): boolean {
  return FINGERPRINT_PATTERN.test(value);
}
