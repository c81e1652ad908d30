/**
 * Handshake content built from the RFC text, independently of src/keyd/signed-content.ts
 * (an oracle that is not the code under test): RFC 8446 §4.4.3 for TLS 1.3 and RFC 5246
 * §7.4.3 with RFC 8422 §5.4 for the TLS 1.2 ECDHE ServerKeyExchange.
 */
import { X509Certificate, constants, createECDH, randomBytes, verify } from 'node:crypto';
import { montgomeryKeyPair } from '../helpers/montgomery-keys.js';

/** NamedGroup codepoints (RFC 8446 §4.2.7, RFC 8422 §5.1.1). */
export const GROUP = { x25519: 0x001d, secp256r1: 0x0017, secp384r1: 0x0018 } as const;

/** Every code keyd refuses a content with (docs/PROTOCOL.md). */
export const CONTENT_REFUSALS: readonly string[] = [
  'KEYD_NOT_HANDSHAKE_CONTENT',
  'KEYD_BAD_HASH_LENGTH',
  'KEYD_BAD_ECDH_PARAMS',
  'KEYD_UNSUPPORTED_GROUP',
  'KEYD_NO_DOWNGRADE_SENTINEL',
];

/** RFC 8446 §4.4.3: 64 octets of 0x20, "TLS 1.3, server CertificateVerify", 0x00, the hash. */
export function certificateVerifyContentFromRfc(transcriptHash: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(' '.repeat(64), 'ascii'), Buffer.from('TLS 1.3, server CertificateVerify', 'ascii'), Buffer.of(0), transcriptHash]);
}

/** RFC 8446 §4.1.3: a TLS 1.3 server negotiating TLS 1.2 ends ServerHello.random with 44 4F 57 4E 47 52 44 01. */
export function serverRandom(withSentinel: boolean): Buffer {
  const random = randomBytes(32);
  if (withSentinel) Buffer.from([0x44, 0x4f, 0x57, 0x4e, 0x47, 0x52, 0x44, 0x01]).copy(random, 24);
  else if (random.subarray(24, 31).toString('latin1') === 'DOWNGRD') random[24] ^= 0xff;
  return random;
}

/** RFC 8422 §5.4 ServerECDHParams: curve_type named_curve (3), the NamedCurve, then ECPoint point<1..2^8-1>. */
export function ecdhParams(namedCurve: number, point: Uint8Array): Buffer {
  return Buffer.concat([Buffer.of(3, namedCurve >> 8, namedCurve & 0xff, point.length), point]);
}

/** RFC 5246 §7.4.3 signed_params: client_random, server_random, ServerECDHParams. */
export function serverKeyExchangeContentFromRfc(clientRandom: Uint8Array, serverRandomBytes: Uint8Array, params: Uint8Array): Buffer {
  return Buffer.concat([clientRandom, serverRandomBytes, params]);
}

export function x25519Point(): Buffer {
  return montgomeryKeyPair('x25519').publicRaw;
}

/** An uncompressed point (0x04 || x || y) on `curve`. */
export function nistPoint(curve: 'prime256v1' | 'secp384r1'): Buffer {
  const ecdh = createECDH(curve);
  ecdh.generateKeys();
  return ecdh.getPublicKey();
}

/** A secp256r1 point in the compressed form (0x02/0x03 || x, 33 bytes). */
export function compressedPoint(): Buffer {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  return ecdh.getPublicKey(null, 'compressed');
}

/** The same point with the lowest bit of y flipped: not on the curve (only y and p − y are). */
export function notOnCurve(point: Buffer): Buffer {
  const bad = Buffer.from(point);
  bad[bad.length - 1]! ^= 0x01;
  return bad;
}

/**
 * Verifies a TLS signature under `scheme` over `content` with the leaf's public key, the
 * way a TLS 1.2 or 1.3 client does: ECDSA DER over the scheme's hash, RSA PSS (salt =
 * hash length) or PKCS#1 v1.5, Ed25519 pure.
 */
export function verifyTlsSignature(leafDer: Uint8Array, scheme: number, content: Uint8Array, signature: Uint8Array): boolean {
  const key = new X509Certificate(Buffer.from(leafDer)).publicKey;
  const hash = { 0x03: 'sha224', 0x04: 'sha256', 0x05: 'sha384', 0x06: 'sha512' }[scheme >> 8];
  switch (scheme) {
    case 0x0807:
      return verify(null, content, key, signature);
    case 0x0303: // ecdsa_sha224: TLS 1.2 only (RFC 5246 §7.4.1.4.1 hash + signature pair)
    case 0x0403:
    case 0x0503:
    case 0x0603:
      return verify(hash!, content, key, signature);
    case 0x0401:
    case 0x0501:
    case 0x0601:
      return verify(hash!, content, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
    case 0x0804:
    case 0x0805:
    case 0x0806: {
      const pssHash = { 0x0804: 'sha256', 0x0805: 'sha384', 0x0806: 'sha512' }[scheme]!;
      return verify(pssHash, content, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
    }
    default:
      throw new Error(`test cannot verify scheme 0x${scheme.toString(16)}`);
  }
}
