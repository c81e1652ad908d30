import { createHmac } from 'node:crypto';
import type { HashName } from './hkdf.js';

/**
 * The TLS 1.2 pseudorandom function and the secrets made with it (RFC 5246 §5, §8.1,
 * §6.3, §7.4.9; RFC 7627 §4). Every HMAC is node:crypto's; only the P_hash chaining
 * of §5 is written here.
 *
 *   P_hash(secret, seed) = HMAC(secret, A(1) + seed) + HMAC(secret, A(2) + seed) + ...
 *   A(0) = seed, A(i) = HMAC(secret, A(i-1))
 *   PRF(secret, label, seed) = P_<hash>(secret, label + seed)
 *
 * The hash is the cipher suite's PRF hash: SHA-256 for every suite of this server
 * except the SHA-384 ones (RFC 5289 §3).
 */
export function prf12(hash: HashName, secret: Uint8Array, label: string, seed: Uint8Array, length: number): Buffer {
  const labelSeed = Buffer.concat([Buffer.from(label, 'latin1'), seed]);
  const out = Buffer.allocUnsafe(length);
  let a: Buffer = createHmac(hash, secret).update(labelSeed).digest();
  let written = 0;
  while (written < length) {
    const block = createHmac(hash, secret).update(a).update(labelSeed).digest();
    written += block.copy(out, written, 0, Math.min(block.length, length - written));
    if (written < length) a = createHmac(hash, secret).update(a).digest();
  }
  return out;
}

/** §8.1: master_secret = PRF(pre_master_secret, "master secret", ClientHello.random + ServerHello.random)[0..47]. */
export function masterSecret(hash: HashName, preMasterSecret: Uint8Array, clientRandom: Uint8Array, serverRandom: Uint8Array): Buffer {
  return prf12(hash, preMasterSecret, 'master secret', Buffer.concat([clientRandom, serverRandom]), 48);
}

/**
 * RFC 7627 §4: master_secret = PRF(pre_master_secret, "extended master secret", session_hash)[0..47],
 * where session_hash is the transcript hash up to and including the ClientKeyExchange. Binding the
 * master secret to the whole handshake is what defeats the triple-handshake attack (§1).
 */
export function extendedMasterSecret(hash: HashName, preMasterSecret: Uint8Array, sessionHash: Uint8Array): Buffer {
  return prf12(hash, preMasterSecret, 'extended master secret', sessionHash, 48);
}

/** The keys of one TLS 1.2 AEAD connection (§6.3): no MAC keys for AEAD suites (RFC 5246 §6.3, RFC 5288 §3). */
export interface KeyBlock12 {
  readonly clientWriteKey: Buffer;
  readonly serverWriteKey: Buffer;
  readonly clientWriteIv: Buffer;
  readonly serverWriteIv: Buffer;
}

/**
 * §6.3: key_block = PRF(master_secret, "key expansion", server_random + client_random), cut
 * into client key, server key, client IV, server IV. The IV is the implicit part of the
 * nonce: 4 bytes for AES-GCM (RFC 5288 §3), 12 for ChaCha20-Poly1305 (RFC 7905 §2).
 */
export function keyBlock12(
  hash: HashName,
  master: Uint8Array,
  clientRandom: Uint8Array,
  serverRandom: Uint8Array,
  keyLength: number,
  ivLength: number,
): KeyBlock12 {
  const block = prf12(hash, master, 'key expansion', Buffer.concat([serverRandom, clientRandom]), 2 * keyLength + 2 * ivLength);
  let o = 0;
  const take = (n: number) => block.subarray(o, (o += n));
  return { clientWriteKey: take(keyLength), serverWriteKey: take(keyLength), clientWriteIv: take(ivLength), serverWriteIv: take(ivLength) };
}

/** §7.4.9: verify_data = PRF(master_secret, finished_label, Hash(handshake_messages))[0..11]. */
export function finishedVerifyData12(hash: HashName, master: Uint8Array, sender: 'client' | 'server', transcriptHash: Uint8Array): Buffer {
  return prf12(hash, master, `${sender} finished`, transcriptHash, 12);
}
