import { createDiffieHellman, createECDH, createPrivateKey, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';
import { FFDHE_PRIMES } from './ffdhe-primes.js';
import { randomBytesFromPool } from './random-pool.js';
import { TlsAlert } from '../alert.js';
import { NamedGroup } from '../wire/codepoints.js';

/**
 * Server side of the (EC)DHE groups (RFC 8446 §4.2.8.2, §7.4).
 *
 * X25519/X448 keys are imported from JWK, not SPKI DER: the OpenSSL 3.0 DER decoder
 * costs ~10x more per call (docs/BENCHMARKS.md). NIST curves use createECDH, which takes the
 * raw uncompressed point directly.
 */
export interface KeyExchangeResult {
  readonly serverShare: Buffer;
  readonly sharedSecret: Buffer;
}

interface GroupImpl {
  readonly name: string;
  /** Exact size of a valid client key_exchange field. */
  readonly shareLength: number;
  exchange(clientShare: Uint8Array): KeyExchangeResult;
}

/**
 * A fresh X25519/X448 key pair, its public half as raw bytes (RFC 7748 §5).
 *
 * The private key is imported from random bytes (JWK "d") and the public key computed by
 * OpenSSL at import, then exported as JWK "x". Why not `generateKeyPairSync`:
 * - asking it for the public key encoded (SPKI DER, through OpenSSL 3's encoder) costs
 *   ≈ 3× the whole key generation (≈ 125 against ≈ 40 µs per handshake, `npm run
 *   bench:crypto`);
 * - exporting from a *generated* key can deadlock Node 20: the JWK export holds the key's
 *   mutex while it allocates, and a GC that then collects the generation job (whose
 *   destructor takes the same mutex) never returns (docs/BENCHMARKS.md, "A Node 20
 *   deadlock"). An imported key has no generation job, so nothing else holds its mutex.
 * Node's OKP JWK import reads only "d" for a private key ("x" is checked to be a string
 * and not used); test/tls/key-exchange.test.ts pins that the public key comes out right.
 */
function montgomeryKeyPair(crv: 'X25519' | 'X448', length: number): { privateKey: KeyObject; publicKey: Buffer } {
  // Any `length` random bytes are a private key: X25519/X448 clamp the scalar (RFC 7748 §5).
  const scalar = randomBytesFromPool(length);
  const d = scalar.toString('base64url');
  scalar.fill(0); // the pool's copy; every pool byte is handed out once
  const privateKey = createPrivateKey({ key: { kty: 'OKP', crv, d, x: '' }, format: 'jwk' });
  const x = createPublicKey(privateKey).export({ format: 'jwk' }).x!;
  return { privateKey, publicKey: Buffer.from(x, 'base64url') };
}

function montgomery(name: 'x25519' | 'x448', crv: 'X25519' | 'X448', length: number): GroupImpl {
  return {
    name,
    shareLength: length,
    exchange(clientShare) {
      let publicKey;
      try {
        publicKey = createPublicKey({ key: { kty: 'OKP', crv, x: Buffer.from(clientShare).toString('base64url') }, format: 'jwk' });
      } catch {
        throw new TlsAlert('illegal_parameter', `${name} key share is not a valid public key`);
      }
      const ours = montgomeryKeyPair(crv, length);
      let sharedSecret: Buffer;
      try {
        sharedSecret = diffieHellman({ privateKey: ours.privateKey, publicKey });
      } catch {
        // OpenSSL refuses to derive from a small-order point (all-zero result).
        throw new TlsAlert('illegal_parameter', `${name} key share is a small-order point`);
      }
      // §7.4.2: an all-zero X25519/X448 result means a small-order point; abort.
      if (sharedSecret.every((b) => b === 0)) {
        throw new TlsAlert('illegal_parameter', `${name} shared secret is all zeros (small-order key share)`);
      }
      return { serverShare: ours.publicKey, sharedSecret };
    },
  };
}

function nist(name: string, curve: string, coordinateLength: number): GroupImpl {
  const shareLength = 1 + 2 * coordinateLength;
  return {
    name,
    shareLength,
    exchange(clientShare) {
      // §4.2.8.2: only the uncompressed point form is allowed in TLS 1.3.
      if (clientShare[0] !== 0x04) {
        throw new TlsAlert('illegal_parameter', `${name} key share is not an uncompressed point`);
      }
      const ecdh = createECDH(curve);
      const serverShare = ecdh.generateKeys();
      let sharedSecret: Buffer;
      try {
        sharedSecret = ecdh.computeSecret(clientShare);
      } catch {
        throw new TlsAlert('illegal_parameter', `${name} key share is not a point on the curve`);
      }
      return { serverShare, sharedSecret };
    },
  };
}

/**
 * RFC 7919 finite-field groups (§4.2.8.1): shares and the shared secret are left-padded
 * to the size of the prime, and the peer's value must satisfy 1 < Y < p - 1.
 */
function ffdhe(name: keyof typeof FFDHE_PRIMES): GroupImpl {
  const prime = Buffer.from(FFDHE_PRIMES[name], 'hex');
  const pMinusOne = BigInt('0x' + FFDHE_PRIMES[name]) - 1n;
  const pad = (b: Buffer) => (b.length === prime.length ? b : Buffer.concat([Buffer.alloc(prime.length - b.length), b]));
  return {
    name,
    shareLength: prime.length,
    exchange(clientShare) {
      const y = BigInt('0x' + Buffer.from(clientShare).toString('hex'));
      if (y <= 1n || y >= pMinusOne) {
        throw new TlsAlert('illegal_parameter', `${name} key share is outside 1 < Y < p - 1`);
      }
      const dh = createDiffieHellman(prime, 2);
      const serverShare = pad(dh.generateKeys());
      return { serverShare, sharedSecret: pad(dh.computeSecret(clientShare)) };
    },
  };
}

const GROUPS: ReadonlyMap<number, GroupImpl> = new Map([
  [NamedGroup.x25519, montgomery('x25519', 'X25519', 32)],
  [NamedGroup.x448, montgomery('x448', 'X448', 56)],
  [NamedGroup.secp256r1, nist('secp256r1', 'prime256v1', 32)],
  [NamedGroup.secp384r1, nist('secp384r1', 'secp384r1', 48)],
  [NamedGroup.secp521r1, nist('secp521r1', 'secp521r1', 66)],
  [0x0100, ffdhe('ffdhe2048')],
  [0x0101, ffdhe('ffdhe3072')],
  [0x0102, ffdhe('ffdhe4096')],
  [0x0103, ffdhe('ffdhe6144')],
  [0x0104, ffdhe('ffdhe8192')],
]);

export const SUPPORTED_GROUPS: readonly number[] = [...GROUPS.keys()];
/**
 * Server preference: the fast elliptic curves first; finite-field groups only for clients
 * that offer nothing else, and only the two whose exchange costs about what a handshake
 * does. The client picks the group by offering only it, so each group is the price a
 * stranger can make a handshake cost: one exchange takes 0.6 ms of CPU (ffdhe2048), 1.5
 * (3072), 3.1 (4096), 6.2 (6144) and 12.9 ms (8192), against 0.08 ms for X25519 and
 * ≈ 0.7 ms for a whole ECDHE handshake (docs/BENCHMARKS.md, "Key exchange groups").
 * ffdhe4096 and above stay supported for a server that lists them in `groups`.
 */
export const DEFAULT_GROUPS: readonly number[] = [
  NamedGroup.x25519,
  NamedGroup.secp256r1,
  NamedGroup.secp384r1,
  NamedGroup.secp521r1,
  NamedGroup.x448,
  0x0100, // ffdhe2048
  0x0101, // ffdhe3072
];

export function groupName(group: number): string {
  return GROUPS.get(group)?.name ?? `0x${group.toString(16).padStart(4, '0')}`;
}

export function groupByName(name: string): number | undefined {
  for (const [id, g] of GROUPS) if (g.name === name) return id;
  return undefined;
}

/** Checks the client's share for `group` and completes the exchange. */
export function keyExchange(group: number, clientShare: Uint8Array): KeyExchangeResult {
  const impl = GROUPS.get(group);
  if (!impl) throw new TlsAlert('internal_error', `group ${groupName(group)} is not implemented`);
  if (clientShare.length !== impl.shareLength) {
    throw new TlsAlert('illegal_parameter', `${impl.name} key share has ${clientShare.length} bytes, expected ${impl.shareLength}`);
  }
  return impl.exchange(clientShare);
}

/**
 * An ephemeral key whose peer share arrives later: TLS 1.2 sends our ECDHE share in
 * ServerKeyExchange and receives the client's in ClientKeyExchange (RFC 8422 §5.4, §5.7).
 */
export interface EphemeralKey {
  readonly group: number;
  readonly publicKey: Buffer;
  /** The shared secret with the peer's share; illegal_parameter when the share is not a valid point (RFC 8422 §5.7). */
  deriveSharedSecret(peerShare: Uint8Array): Buffer;
}

/** The ECDHE groups TLS 1.2 offers (RFC 8422 §5.1.1, RFC 7748 via RFC 8422 §5.1.1). */
export const TLS12_GROUPS: readonly number[] = [NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1];

const NIST_CURVES: ReadonlyMap<number, { curve: string; shareLength: number }> = new Map([
  [NamedGroup.secp256r1, { curve: 'prime256v1', shareLength: 65 }],
  [NamedGroup.secp384r1, { curve: 'secp384r1', shareLength: 97 }],
]);

export function generateEphemeralKey(group: number): EphemeralKey {
  if (group === NamedGroup.x25519) {
    const { privateKey, publicKey } = montgomeryKeyPair('X25519', 32);
    return {
      group,
      publicKey,
      deriveSharedSecret(peerShare) {
        // RFC 8422 §5.11 / RFC 7748 §5: a 32-byte u-coordinate; a wrong length is not an X25519 key.
        if (peerShare.length !== 32) throw new TlsAlert('illegal_parameter', `x25519 key share has ${peerShare.length} bytes, expected 32`);
        let peer;
        try {
          peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(peerShare).toString('base64url') }, format: 'jwk' });
        } catch {
          throw new TlsAlert('illegal_parameter', 'x25519 key share is not a valid public key');
        }
        let secret: Buffer;
        try {
          secret = diffieHellman({ privateKey, publicKey: peer });
        } catch {
          throw new TlsAlert('illegal_parameter', 'x25519 key share is a small-order point');
        }
        // RFC 8422 §5.11: an all-zero X25519 result must be refused.
        if (secret.every((b) => b === 0)) throw new TlsAlert('illegal_parameter', 'x25519 shared secret is all zeros (small-order key share)');
        return secret;
      },
    };
  }
  const nistCurve = NIST_CURVES.get(group);
  if (!nistCurve) throw new TlsAlert('internal_error', `group ${groupName(group)} is not a TLS 1.2 ECDHE group here`);
  const ecdh = createECDH(nistCurve.curve);
  const publicKey = ecdh.generateKeys();
  return {
    group,
    publicKey,
    deriveSharedSecret(peerShare) {
      // RFC 8422 §5.1.2: only the uncompressed point form; §5.10: the shared secret is the x-coordinate, zeros kept.
      if (peerShare.length !== nistCurve.shareLength || peerShare[0] !== 0x04) {
        throw new TlsAlert('illegal_parameter', `${groupName(group)} key share is not an uncompressed point of ${nistCurve.shareLength} bytes`);
      }
      try {
        return ecdh.computeSecret(peerShare);
      } catch {
        throw new TlsAlert('illegal_parameter', `${groupName(group)} key share is not a point on the curve`);
      }
    },
  };
}
