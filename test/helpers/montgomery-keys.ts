import { generateKeyPairSync, type KeyObject } from 'node:crypto';

/**
 * A fresh X25519 or X448 key pair for tests, with the raw public key (RFC 7748 §5: the
 * u-coordinate). The public key leaves generateKeyPairSync already encoded (SPKI DER; the raw
 * key is its tail) instead of being exported as a JWK afterwards: Node 20 can deadlock when
 * a GC during that export collects the job that generated the key (docs/BENCHMARKS.md, "A
 * Node 20 deadlock, found under load"), and a test run hung on exactly that.
 */
export function montgomeryKeyPair(kind: 'x25519' | 'x448' = 'x25519'): { privateKey: KeyObject; publicRaw: Buffer } {
  const publicKeyEncoding = { type: 'spki', format: 'der' } as const;
  const pair = kind === 'x25519' ? generateKeyPairSync('x25519', { publicKeyEncoding }) : generateKeyPairSync('x448', { publicKeyEncoding });
  const spki = pair.publicKey as unknown as Buffer;
  return { privateKey: pair.privateKey, publicRaw: Buffer.from(spki.subarray(spki.length - rawLength(kind))) };
}

/** The same, with the raw private key too (PKCS#8 DER, its tail), for code that takes raw keys. */
export function rawMontgomeryKeyPair(kind: 'x25519' | 'x448' = 'x25519'): { publicRaw: Buffer; privateRaw: Buffer } {
  const publicKeyEncoding = { type: 'spki', format: 'der' } as const;
  const privateKeyEncoding = { type: 'pkcs8', format: 'der' } as const;
  const pair = kind === 'x25519' ? generateKeyPairSync('x25519', { publicKeyEncoding, privateKeyEncoding }) : generateKeyPairSync('x448', { publicKeyEncoding, privateKeyEncoding });
  const spki = pair.publicKey as unknown as Buffer;
  const pkcs8 = pair.privateKey as unknown as Buffer;
  const length = rawLength(kind);
  return { publicRaw: Buffer.from(spki.subarray(spki.length - length)), privateRaw: Buffer.from(pkcs8.subarray(pkcs8.length - length)) };
}

function rawLength(kind: 'x25519' | 'x448'): number {
  return kind === 'x25519' ? 32 : 56;
}
