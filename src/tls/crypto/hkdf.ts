import { createHash, createHmac } from 'node:crypto';

/**
 * HKDF (RFC 5869) and the TLS 1.3 labels on top of it (RFC 8446 §7.1).
 *
 * Every output TLS 1.3 asks for is at most one hash long, so HKDF-Expand is a single
 * HMAC: T(1) = HMAC(PRK, info || 0x01). That is several times cheaper than
 * `hkdfSync` on the handshake path (see docs/BENCHMARKS.md).
 */
export type HashName = 'sha256' | 'sha384';

export function hmac(hash: HashName, key: Uint8Array, data: Uint8Array): Buffer {
  return createHmac(hash, key).update(data).digest();
}

export function hkdfExtract(hash: HashName, salt: Uint8Array, ikm: Uint8Array): Buffer {
  return hmac(hash, salt, ikm);
}

const LABEL_PREFIX = Buffer.from('tls13 ', 'latin1');

/** HKDF-Expand-Label(Secret, Label, Context, Length), for Length ≤ hash length. */
export function hkdfExpandLabel(hash: HashName, secret: Uint8Array, label: string, context: Uint8Array, length: number): Buffer {
  const labelBytes = Buffer.from(label, 'latin1');
  const fullLabelLength = LABEL_PREFIX.length + labelBytes.length;
  const info = Buffer.allocUnsafe(2 + 1 + fullLabelLength + 1 + context.length + 1);
  let o = info.writeUInt16BE(length, 0);
  o = info.writeUInt8(fullLabelLength, o);
  o += LABEL_PREFIX.copy(info, o);
  o += labelBytes.copy(info, o);
  o = info.writeUInt8(context.length, o);
  info.set(context, o);
  o += context.length;
  info[o] = 0x01; // HKDF-Expand counter for T(1)
  const out = hmac(hash, secret, info);
  if (length > out.length) throw new RangeError('HKDF-Expand-Label longer than one hash is not needed by TLS 1.3');
  return length === out.length ? out : out.subarray(0, length);
}

const emptyHashes = new Map<HashName, Buffer>();

/** Hash of the empty string, for Derive-Secret(., "derived", "") and binder keys. */
export function emptyHash(hash: HashName): Buffer {
  let h = emptyHashes.get(hash);
  if (!h) {
    h = createHash(hash).digest();
    emptyHashes.set(hash, h);
  }
  return h;
}

/** Derive-Secret(Secret, Label, Messages) given Transcript-Hash(Messages). */
export function deriveSecret(hash: HashName, secret: Uint8Array, label: string, transcriptHash: Uint8Array): Buffer {
  return hkdfExpandLabel(hash, secret, label, transcriptHash, transcriptHash.length);
}
