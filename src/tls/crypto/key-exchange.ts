import { createECDH, createPublicKey, diffieHellman, generateKeyPairSync } from 'node:crypto';
import { TlsAlert } from '../alert.js';
import { NamedGroup } from '../wire/codepoints.js';

/**
 * Server side of the (EC)DHE groups (RFC 8446 §4.2.8.2, §7.4).
 *
 * X25519/X448 keys are imported from JWK, not SPKI DER: the OpenSSL 3.0 DER decoder
 * costs ~10x more per call (DESIGN.md). NIST curves use createECDH, which takes the
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
      const { privateKey, publicKey: ours } = generateKeyPairSync(name as 'x25519');
      const sharedSecret = diffieHellman({ privateKey, publicKey });
      // §7.4.2: an all-zero X25519/X448 result means a small-order point; abort.
      if (sharedSecret.every((b) => b === 0)) {
        throw new TlsAlert('illegal_parameter', `${name} shared secret is all zeros (small-order key share)`);
      }
      const x = ours.export({ format: 'jwk' }).x!;
      return { serverShare: Buffer.from(x, 'base64url'), sharedSecret };
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

const GROUPS: ReadonlyMap<number, GroupImpl> = new Map([
  [NamedGroup.x25519, montgomery('x25519', 'X25519', 32)],
  [NamedGroup.x448, montgomery('x448', 'X448', 56)],
  [NamedGroup.secp256r1, nist('secp256r1', 'prime256v1', 32)],
  [NamedGroup.secp384r1, nist('secp384r1', 'secp384r1', 48)],
  [NamedGroup.secp521r1, nist('secp521r1', 'secp521r1', 66)],
]);

export const SUPPORTED_GROUPS: readonly number[] = [...GROUPS.keys()];
export const DEFAULT_GROUPS: readonly number[] = [NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1];

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
