import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { fingerprintOf } from './fingerprint.js';

/** The part of keyd's sealed store that provisioning uses (src/keyd store: getSecret / putSecret). */
export interface SecretStore {
  getSecret(name: string): Promise<Buffer | Uint8Array | undefined>;
  putSecret(name: string, bytes: Uint8Array): Promise<unknown>;
}

/** Name of keyd's X25519 provisioning key inside the sealed store (PKCS#8 DER). */
export const PROVISIONING_KEY_SECRET = 'provisioning-x25519';

/**
 * keyd's own provisioning key pair: operators seal private keys to its public half (HPKE),
 * so only this keyd can open them. Created on first run, kept sealed in keyd's store.
 */
export interface ProvisioningKey {
  /** Raw 32-byte X25519 public key (RFC 7748), as HPKE serialises it. */
  readonly publicKey: Uint8Array;
  readonly fingerprint: string;
  /** Raw 32-byte X25519 private scalar, for HPKE's deserializePrivateKey; keep it in keyd only. */
  rawPrivateKey(): Uint8Array;
}

function fromKeyObject(privateKey: KeyObject): ProvisioningKey {
  // JWK export is the cheap way to the raw X25519 bytes (the SPKI/PKCS#8 paths cost more; docs/BENCHMARKS.md).
  const x = createPublicKey(privateKey).export({ format: 'jwk' }).x;
  if (!x) throw new Error('X25519 public key export returned no x');
  const publicKey = new Uint8Array(Buffer.from(x, 'base64url'));
  return {
    publicKey,
    fingerprint: fingerprintOf(publicKey),
    rawPrivateKey: () => {
      const d = privateKey.export({ format: 'jwk' }).d;
      if (!d) throw new Error('X25519 private key export returned no d');
      return new Uint8Array(Buffer.from(d, 'base64url'));
    },
  };
}

/** Loads keyd's provisioning key from the sealed store, creating and storing it on first run. */
export async function loadOrCreateProvisioningKey(
  store: SecretStore,
): Promise<{ key: ProvisioningKey; created: boolean }> {
  const stored = await store.getSecret(PROVISIONING_KEY_SECRET);
  if (stored) {
    const privateKey = createPrivateKey({ key: Buffer.from(stored), format: 'der', type: 'pkcs8' });
    if (privateKey.asymmetricKeyType !== 'x25519') {
      throw new Error(`sealed secret ${PROVISIONING_KEY_SECRET} is not an X25519 key`);
    }
    return { key: fromKeyObject(privateKey), created: false };
  }
  // The key leaves generateKeyPairSync already encoded, and the KeyObject is made from those
  // bytes: exporting (JWK, as fromKeyObject does) from a generated key can deadlock Node 20
  // when a GC during the export collects the generation job (docs/BENCHMARKS.md, "A Node 20
  // deadlock, found under load").
  const der = generateKeyPairSync('x25519', { privateKeyEncoding: { type: 'pkcs8', format: 'der' } }).privateKey as unknown as Buffer;
  try {
    const privateKey = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    await store.putSecret(PROVISIONING_KEY_SECRET, der);
    return { key: fromKeyObject(privateKey), created: true };
  } finally {
    der.fill(0);
  }
}
