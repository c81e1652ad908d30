import { createPublicKey, type KeyObject } from 'node:crypto';
import type { KeyType } from '../../tls/signature-schemes.js';
import { KeydError } from '../errors.js';
import { CKA, CKK_EC, CKK_EC_EDWARDS, CKK_RSA, CKM } from './constants.js';

/**
 * Converting keys between node:crypto's forms and PKCS#11 attributes. Only DER
 * encoding and decoding here; every cryptographic operation is node:crypto's or the
 * token's.
 */

/** Key types a token can hold for keyd, with what generating and signing need. */
export interface TokenKeyKind {
  keyType: KeyType;
  pkcs11KeyType: number;
  generateMechanism: number;
  signMechanism: number;
  /** DER of the curve's OID (CKA_EC_PARAMS) for EC and Edwards keys. */
  ecParams?: Buffer;
  /** Bytes of one of r, s (ECDSA) — for the DER conversion. */
  coordinateLength?: number;
}

const P256 = Buffer.from('06082a8648ce3d030107', 'hex'); // 1.2.840.10045.3.1.7
const P384 = Buffer.from('06052b81040022', 'hex'); // 1.3.132.0.34
const ED25519 = Buffer.from('06032b6570', 'hex'); // 1.3.101.112, RFC 8410

export function tokenKeyKind(keyType: KeyType): TokenKeyKind {
  switch (keyType) {
    case 'ecdsa-p256':
      return { keyType, pkcs11KeyType: CKK_EC, generateMechanism: CKM.EC_KEY_PAIR_GEN, signMechanism: CKM.ECDSA, ecParams: P256, coordinateLength: 32 };
    case 'ecdsa-p384':
      return { keyType, pkcs11KeyType: CKK_EC, generateMechanism: CKM.EC_KEY_PAIR_GEN, signMechanism: CKM.ECDSA, ecParams: P384, coordinateLength: 48 };
    case 'rsa':
      return { keyType, pkcs11KeyType: CKK_RSA, generateMechanism: CKM.RSA_PKCS_KEY_PAIR_GEN, signMechanism: CKM.RSA_PKCS_PSS };
    case 'ed25519':
      return { keyType, pkcs11KeyType: CKK_EC_EDWARDS, generateMechanism: CKM.EC_EDWARDS_KEY_PAIR_GEN, signMechanism: CKM.EDDSA, ecParams: ED25519 };
    default:
      throw new KeydError('KEYD_BAD_KEY', `a token key cannot be of type ${keyType}: use ecdsa-p256, ecdsa-p384, rsa or ed25519`);
  }
}

/** One DER TLV: tag, contents, and where the next one starts. */
interface Tlv {
  tag: number;
  value: Buffer;
  end: number;
}

function readTlv(der: Buffer, at: number): Tlv {
  if (at + 2 > der.length) throw new Error('truncated DER');
  const tag = der[at]!;
  let length = der[at + 1]!;
  let start = at + 2;
  if (length & 0x80) {
    const n = length & 0x7f;
    if (n === 0 || n > 3 || start + n > der.length) throw new Error('bad DER length');
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + der[start + i]!;
    start += n;
  }
  if (start + length > der.length) throw new Error('truncated DER');
  return { tag, value: der.subarray(start, start + length), end: start + length };
}

/** The elements of a DER SEQUENCE (views into `der`, no copies). */
function sequence(der: Buffer): Tlv[] {
  const outer = readTlv(der, 0);
  if (outer.tag !== 0x30) throw new Error('not a DER SEQUENCE');
  return elements(outer.value);
}

/** The TLVs that fill `contents` (a constructed value's contents octets). */
function elements(contents: Buffer): Tlv[] {
  const items: Tlv[] = [];
  for (let at = 0; at < contents.length; ) {
    const item = readTlv(contents, at);
    items.push(item);
    at = item.end;
  }
  return items;
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.of(n);
  if (n < 0x100) return Buffer.of(0x81, n);
  return Buffer.of(0x82, n >> 8, n & 0xff);
}

function derInteger(unsigned: Buffer): Buffer {
  let i = 0;
  while (i < unsigned.length - 1 && unsigned[i] === 0) i++;
  let body = unsigned.subarray(i);
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.of(0), body]);
  return Buffer.concat([Buffer.of(0x02), derLength(body.length), body]);
}

/**
 * PKCS#11 returns ECDSA signatures as r ‖ s (PKCS#11 Mechanisms §2.3.1); TLS carries the
 * DER ECDSA-Sig-Value SEQUENCE { r INTEGER, s INTEGER } (RFC 8446 §4.2.3).
 */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new Error(`ECDSA r ‖ s of ${raw.length} bytes is not two halves`);
  const half = raw.length / 2;
  const body = Buffer.concat([derInteger(raw.subarray(0, half)), derInteger(raw.subarray(half))]);
  return Buffer.concat([Buffer.of(0x30), derLength(body.length), body]);
}

/**
 * The inverse, for WebCrypto callers (a CSR signer wants r ‖ s). Its input is node's
 * signer's today; it is still read strictly, since a lenient reading turns bad input into
 * another signature: exactly one Ecdsa-Sig-Value (RFC 3279 §2.2.3, SEQUENCE { r INTEGER,
 * s INTEGER }) with nothing after it, each INTEGER positive and minimal (X.690 §8.3.2),
 * not 0 (SEC 1 §4.1.4: r, s in [1, n-1]) and at most coordinateLength bytes — never cut to fit.
 */
export function ecdsaDerToRaw(der: Uint8Array, coordinateLength: number): Buffer {
  const bytes = Buffer.from(der.buffer, der.byteOffset, der.byteLength); // a view: read only
  const outer = readTlv(bytes, 0);
  if (outer.tag !== 0x30 || outer.end !== bytes.length) throw new Error('ECDSA signature is not one DER SEQUENCE with nothing after it');
  const items = elements(outer.value);
  if (items.length !== 2 || items[0]!.tag !== 0x02 || items[1]!.tag !== 0x02) throw new Error('ECDSA signature is not a SEQUENCE of two INTEGERs (r, s)');
  const raw = Buffer.alloc(2 * coordinateLength);
  for (const [i, name] of ['r', 's'].entries()) {
    const v = items[i]!.value;
    if (v.length === 0 || v[0]! & 0x80) throw new Error(`ECDSA signature's ${name} is not a positive INTEGER`);
    if (v.length > 1 && v[0] === 0 && !(v[1]! & 0x80)) throw new Error(`ECDSA signature's ${name} is not minimally encoded`);
    const magnitude = v[0] === 0 ? v.subarray(1) : v;
    if (magnitude.length === 0) throw new Error(`ECDSA signature's ${name} is 0`);
    if (magnitude.length > coordinateLength) throw new Error(`ECDSA signature's ${name} is ${magnitude.length} bytes, longer than the curve's ${coordinateLength}`);
    magnitude.copy(raw, (i + 1) * coordinateLength - magnitude.length);
  }
  return raw;
}

/** CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 §2.3.3); some tokens omit the wrapper. */
function unwrapEcPoint(point: Buffer, expectedLength: number): Buffer {
  if (point.length === expectedLength) return point;
  const tlv = readTlv(point, 0);
  if (tlv.tag !== 0x04 || tlv.value.length !== expectedLength) throw new Error(`CKA_EC_POINT of ${point.length} bytes is not a ${expectedLength}-byte point`);
  return tlv.value;
}

/** The public key of a token key pair, from the public object's attributes. */
export function publicKeyFromAttributes(kind: TokenKeyKind, attrs: { ecPoint?: Buffer; modulus?: Buffer; publicExponent?: Buffer }): KeyObject {
  switch (kind.keyType) {
    case 'ecdsa-p256':
    case 'ecdsa-p384': {
      const n = kind.coordinateLength!;
      const point = unwrapEcPoint(attrs.ecPoint!, 1 + 2 * n);
      if (point[0] !== 0x04) throw new Error('CKA_EC_POINT is not an uncompressed point');
      return createPublicKey({
        key: { kty: 'EC', crv: kind.keyType === 'ecdsa-p256' ? 'P-256' : 'P-384', x: point.subarray(1, 1 + n).toString('base64url'), y: point.subarray(1 + n).toString('base64url') },
        format: 'jwk',
      });
    }
    case 'ed25519':
      return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: unwrapEcPoint(attrs.ecPoint!, 32).toString('base64url') }, format: 'jwk' });
    case 'rsa':
      return createPublicKey({ key: { kty: 'RSA', n: attrs.modulus!.toString('base64url'), e: attrs.publicExponent!.toString('base64url') }, format: 'jwk' });
    default:
      throw new Error(`no public key form for ${kind.keyType}`);
  }
}

/** A PKCS#11 attribute as the binding takes it. */
export interface TemplateAttribute {
  type: number;
  value?: number | boolean | string | Buffer;
}

/**
 * The key-specific attributes of a private key object made from PKCS#8 DER (for
 * C_CreateObject). The Buffers are views into `pkcs8`: the caller wipes `pkcs8` once the
 * token holds the key, which wipes them too.
 *  - EC: RFC 5915 ECPrivateKey inside PKCS#8 (RFC 5208): CKA_VALUE = the scalar d.
 *  - Ed25519: RFC 8410 CurvePrivateKey (an OCTET STRING of the 32-byte seed).
 *  - RSA: RFC 8017 §A.1.2 RSAPrivateKey: n, e, d, p, q, dP, dQ, qInv; two primes only
 *    (a multi-prime key is refused, KEYD_BAD_KEY: see refuseMultiPrime).
 */
export function privateKeyAttributes(kind: TokenKeyKind, pkcs8: Buffer): TemplateAttribute[] {
  const [, , privateKey] = sequence(pkcs8);
  if (!privateKey || privateKey.tag !== 0x04) throw new Error('PKCS#8 without a privateKey OCTET STRING');
  switch (kind.keyType) {
    case 'ecdsa-p256':
    case 'ecdsa-p384': {
      const [, d] = sequence(privateKey.value);
      if (!d || d.tag !== 0x04) throw new Error('ECPrivateKey without the privateKey OCTET STRING');
      return [
        { type: CKA.EC_PARAMS, value: kind.ecParams! },
        { type: CKA.VALUE, value: d.value },
      ];
    }
    case 'ed25519': {
      const seed = readTlv(privateKey.value, 0);
      if (seed.tag !== 0x04 || seed.value.length !== 32) throw new Error('CurvePrivateKey is not a 32-byte OCTET STRING');
      return [
        { type: CKA.EC_PARAMS, value: kind.ecParams! },
        { type: CKA.VALUE, value: seed.value },
      ];
    }
    case 'rsa': {
      const fields = sequence(privateKey.value);
      refuseMultiPrime(fields);
      const [, n, e, d, p, q, dp, dq, qinv] = fields.map((t) => stripSign(t.value));
      const types = [CKA.MODULUS, CKA.PUBLIC_EXPONENT, CKA.PRIVATE_EXPONENT, CKA.PRIME_1, CKA.PRIME_2, CKA.EXPONENT_1, CKA.EXPONENT_2, CKA.COEFFICIENT];
      const values = [n, e, d, p, q, dp, dq, qinv];
      if (values.some((v) => v === undefined)) throw new Error('RSAPrivateKey is missing a component');
      return types.map((type, i) => ({ type, value: values[i]! }));
    }
    default:
      throw new Error(`cannot import ${kind.keyType}`);
  }
}

/**
 * RFC 8017 §A.1.2: version 0 is a two-prime key of exactly nine INTEGERs; version 1
 * ("multi") adds otherPrimeInfos, a SEQUENCE of the third and further primes. A PKCS#11
 * CKK_RSA object has CKA_PRIME_1 and CKA_PRIME_2 only (PKCS#11 Mechanisms v2.40 §2.1.3), so
 * such a key cannot go in whole, and its first two primes alone would make a token
 * object whose n is not p·q.
 */
function refuseMultiPrime(fields: Tlv[]): void {
  const version = fields[0];
  const multi = fields[9];
  if (version?.tag === 0x02 && version.value.length === 1 && version.value[0] === 0 && !multi) return;
  if (version?.tag === 0x02 && version.value.length === 1 && version.value[0] === 1 && multi?.tag === 0x30 && fields.length === 10) {
    const primes = 2 + elements(multi.value).length;
    throw new KeydError('KEYD_BAD_KEY', `a multi-prime RSA key (${primes} primes, RFC 8017 §A.1.2 version 1) cannot go into a token: a PKCS#11 CKK_RSA object holds two primes`);
  }
  throw new Error('RSAPrivateKey is neither version 0 with two primes nor version 1 with otherPrimeInfos');
}

/** DER INTEGERs carry a 0x00 sign byte when the top bit is set; PKCS#11 big integers do not. */
function stripSign(v: Buffer): Buffer {
  return v.length > 1 && v[0] === 0 ? v.subarray(1) : v;
}
