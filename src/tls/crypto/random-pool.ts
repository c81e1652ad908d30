import { randomFillSync } from 'node:crypto';

/**
 * Cryptographically secure random bytes in small pieces, from one larger
 * `randomFillSync` call: a handshake needs a dozen small random values (server random,
 * ticket age_add, AEAD IVs), and each call into OpenSSL's RNG costs more than the bytes.
 * Every byte is handed out once; the pool is refilled, never reused.
 */
const POOL_SIZE = 8192;
let pool = Buffer.alloc(0);
let offset = 0;

export function randomBytesFromPool(n: number): Buffer {
  if (n > POOL_SIZE) return randomFillSync(Buffer.allocUnsafe(n));
  if (offset + n > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(POOL_SIZE));
    offset = 0;
  }
  const out = pool.subarray(offset, offset + n);
  offset += n;
  return out;
}
