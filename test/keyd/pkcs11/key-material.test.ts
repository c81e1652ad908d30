/**
 * src/keyd/pkcs11/key-material.ts on bytes a token or a malformed key could present: the
 * DER reader refuses what runs past its buffer, token public points are taken only as
 * the uncompressed point of the key's size (PKCS#11 §2.3.3, SEC 1 §2.3.3), private-key
 * structures only with every field where RFC 5915 / RFC 8410 / RFC 8017 §A.1.2 put it,
 * and ECDSA r ‖ s becomes minimal DER (X.690 §8.3.2) whatever its leading bytes.
 * Each refusal has its positive control on the well-formed form.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { test } from 'node:test';
import { KeydError } from '../../../src/keyd/errors.js';
import { CKA } from '../../../src/keyd/pkcs11/constants.js';
import { ecdsaDerToRaw, ecdsaRawToDer, privateKeyAttributes, publicKeyFromAttributes, tokenKeyKind } from '../../../src/keyd/pkcs11/key-material.js';
import { detachedPrivateKey, detachedPublicKey } from '../../helpers/detached-keys.js';
import { requireTool } from '../../helpers/tools.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('ECDSA r ‖ s with leading zero bytes: minimal DER INTEGERs, byte for byte node:crypto\'s own encoding', { timeout: 20_000 }, () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  // Sign until r (then s) starts with a zero byte in the fixed-width form: 1 in 256 each.
  let sawR = false;
  let sawS = false;
  for (let i = 0; i < 20_000 && !(sawR && sawS); i++) {
    const data = Buffer.from(`message ${i}`);
    const der = sign('sha256', data, privateKey);
    const raw = ecdsaDerToRaw(der, 32);
    if (raw[0] !== 0 && raw[32] !== 0) continue;
    sawR ||= raw[0] === 0;
    sawS ||= raw[32] === 0;
    assert.deepEqual(ecdsaRawToDer(raw), der, 'the same DER as node:crypto (OpenSSL) writes');
    assert.ok(verify('sha256', data, publicKey, ecdsaRawToDer(raw)));
  }
  assert.ok(sawR && sawS, 'signatures with a leading zero in r and in s were met');
  // Constructed: r = 0x00…0001, s with its top bit set: 02 01 01 and 02 21 00 ff….
  const raw = Buffer.concat([Buffer.alloc(31), Buffer.of(1), Buffer.alloc(32, 0xff)]);
  assert.deepEqual(ecdsaRawToDer(raw), Buffer.concat([hex('3026 020101 022100'), Buffer.alloc(32, 0xff)]));
});

test('DER reader: a length past the end of the buffer or in more than 3 bytes is refused; the exact length is read (control)', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const der = sign('sha256', Buffer.from('x'), privateKey);
  assert.equal(ecdsaDerToRaw(der, 32).length, 64, 'control: the whole signature');
  assert.ok(verify('sha256', Buffer.from('x'), { key: publicKey, dsaEncoding: 'ieee-p1363' }, ecdsaDerToRaw(der, 32)));
  // The outer SEQUENCE's length one more than the bytes that follow.
  const long = Buffer.from(der);
  long[1] = long[1]! + 1;
  assert.throws(() => ecdsaDerToRaw(long, 32), /^Error: truncated DER$/);
  // The last INTEGER cut by a byte (outer length adjusted): its own length runs past the end.
  const cut = Buffer.from(der.subarray(0, der.length - 1));
  cut[1] = cut[1]! - 1;
  assert.throws(() => ecdsaDerToRaw(cut, 32), /^Error: truncated DER$/);
  // A PKCS#8 cut short is refused, not read as far as it goes.
  const pkcs8 = detachedPrivateKey(generateKeyPairSync('ed25519').privateKey).export({ format: 'der', type: 'pkcs8' });
  assert.throws(() => privateKeyAttributes(tokenKeyKind('ed25519'), pkcs8.subarray(0, pkcs8.length - 1)), /truncated DER/);
  // A 4-byte length (0x84): refused even though its value (the real one) would fit.
  const body = der.subarray(2);
  const four = Buffer.concat([Buffer.of(0x30, 0x84, 0, 0, 0, body.length), body]);
  assert.throws(() => ecdsaDerToRaw(four, 32), /^Error: bad DER length$/);
  const three = Buffer.concat([Buffer.of(0x30, 0x83, 0, 0, body.length), body]);
  assert.equal(ecdsaDerToRaw(three, 32).length, 64, 'control: up to 3 length bytes are read');
});

test('token EC public point: only the uncompressed point of the curve\'s size, wrapped or bare; the hybrid form and other sizes are refused precisely', () => {
  for (const [keyType, namedCurve, n] of [['ecdsa-p256', 'prime256v1', 32], ['ecdsa-p384', 'secp384r1', 48]] as const) {
    const publicKey = detachedPublicKey(generateKeyPairSync('ec', { namedCurve }).privateKey);
    const point = publicKey.export({ format: 'der', type: 'spki' }).subarray(-(1 + 2 * n));
    assert.equal(point[0], 0x04);
    const kind = tokenKeyKind(keyType);
    const wrapped = Buffer.concat([Buffer.of(0x04, point.length), point]);
    for (const ecPoint of [point, wrapped]) {
      assert.ok(publicKeyFromAttributes(kind, { ecPoint }).equals(publicKey), 'control: the token key\'s public key');
    }
    // Hybrid (X9.62: 0x06/0x07 ‖ x ‖ y): the same coordinates, a form PKCS#11 tokens never use for keyd's keys.
    for (const prefix of [0x06, 0x07]) {
      const hybrid = Buffer.from(point);
      hybrid[0] = prefix;
      assert.throws(() => publicKeyFromAttributes(kind, { ecPoint: hybrid }), /^Error: CKA_EC_POINT is not an uncompressed point$/);
    }
    // A wrapped point one byte short: refused with the sizes, not as whatever node makes of it.
    const short = Buffer.concat([Buffer.of(0x04, point.length - 1), point.subarray(0, -1)]);
    assert.throws(() => publicKeyFromAttributes(kind, { ecPoint: short }), new RegExp(`^Error: CKA_EC_POINT of ${short.length} bytes is not a ${1 + 2 * n}-byte point$`));
    const otherTag = Buffer.concat([Buffer.of(0x03, point.length), point]);
    assert.throws(() => publicKeyFromAttributes(kind, { ecPoint: otherTag }), /is not a \d+-byte point/);
  }
  // Ed25519: 32 bytes, wrapped or bare; 31 wrapped refused.
  const ed = detachedPublicKey(generateKeyPairSync('ed25519').privateKey);
  const x = ed.export({ format: 'der', type: 'spki' }).subarray(-32);
  assert.ok(publicKeyFromAttributes(tokenKeyKind('ed25519'), { ecPoint: Buffer.concat([Buffer.of(0x04, 32), x]) }).equals(ed));
  assert.throws(() => publicKeyFromAttributes(tokenKeyKind('ed25519'), { ecPoint: Buffer.concat([Buffer.of(0x04, 31), x.subarray(1)]) }), /^Error: CKA_EC_POINT of 33 bytes is not a 32-byte point$/);
});

/** PKCS#8 (RFC 5208) around `privateKey` (the OCTET STRING's contents), with `algorithm`'s DER. */
function pkcs8Of(algorithm: Buffer, privateKey: Buffer): Buffer {
  const tlv = (tag: number, v: Buffer) => Buffer.concat([Buffer.of(tag), v.length < 0x80 ? Buffer.of(v.length) : Buffer.of(0x82, v.length >> 8, v.length & 0xff), v]);
  return tlv(0x30, Buffer.concat([hex('020100'), algorithm, tlv(0x04, privateKey)]));
}

test('PKCS#8 → token attributes: a malformed private key structure is refused, never handed to the token as other bytes', () => {
  // Ed25519 (RFC 8410 §7): CurvePrivateKey ::= OCTET STRING of 32 bytes.
  const edAlg = hex('300506032b6570');
  const seed = Buffer.alloc(32, 7);
  const good = privateKeyAttributes(tokenKeyKind('ed25519'), pkcs8Of(edAlg, Buffer.concat([Buffer.of(0x04, 32), seed])));
  assert.deepEqual(good.find((a) => a.type === CKA.VALUE)!.value, seed, 'control: the 32-byte seed');
  for (const length of [31, 33, 64]) {
    assert.throws(() => privateKeyAttributes(tokenKeyKind('ed25519'), pkcs8Of(edAlg, Buffer.concat([Buffer.of(0x04, length), Buffer.alloc(length, 7)]))), /^Error: CurvePrivateKey is not a 32-byte OCTET STRING$/, `${length} bytes`);
  }

  // EC (RFC 5915): ECPrivateKey ::= SEQUENCE { version INTEGER 1, privateKey OCTET STRING, … }.
  const ecAlg = hex('301306072a8648ce3d020106082a8648ce3d030107');
  const d = Buffer.alloc(32, 9);
  const ecKey = (tag: number) => Buffer.concat([Buffer.of(0x30, 3 + 2 + 32), hex('020101'), Buffer.of(tag, 32), d]);
  const ec = privateKeyAttributes(tokenKeyKind('ecdsa-p256'), pkcs8Of(ecAlg, ecKey(0x04)));
  assert.deepEqual(ec.find((a) => a.type === CKA.VALUE)!.value, d, 'control: the scalar d');
  // The same 32 bytes as an INTEGER or a BIT STRING are not the privateKey field.
  for (const tag of [0x02, 0x03]) {
    assert.throws(() => privateKeyAttributes(tokenKeyKind('ecdsa-p256'), pkcs8Of(ecAlg, ecKey(tag))), /^Error: ECPrivateKey without the privateKey OCTET STRING$/);
  }

  // RSA (RFC 8017 §A.1.2): nine INTEGERs; one missing is refused, not an undefined attribute.
  const rsa = detachedPrivateKey(generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey);
  const rsaDer = rsa.export({ format: 'der', type: 'pkcs8' });
  assert.equal(privateKeyAttributes(tokenKeyKind('rsa'), rsaDer).length, 8, 'control: the eight components');
  const rsaAlg = hex('300d06092a864886f70d0101010500');
  // Re-encode the RSAPrivateKey without its last INTEGER (qInv).
  const inner = rsaDer.subarray(rsaDer.length - rsaDer.readUInt16BE(rsaDer.indexOf(Buffer.of(0x04, 0x82), 20) + 2));
  const items: Buffer[] = [];
  for (let at = 4; at < inner.length; ) {
    const len = inner[at + 1]! < 0x80 ? inner[at + 1]! : inner[at + 1] === 0x81 ? inner[at + 2]! : inner.readUInt16BE(at + 2);
    const head = inner[at + 1]! < 0x80 ? 2 : inner[at + 1] === 0x81 ? 3 : 4;
    items.push(inner.subarray(at, at + head + len));
    at += head + len;
  }
  assert.equal(items.length, 9, 'version and eight components');
  const withoutLast = Buffer.concat(items.slice(0, 8));
  const truncatedKey = Buffer.concat([Buffer.of(0x30, 0x82, withoutLast.length >> 8, withoutLast.length & 0xff), withoutLast]);
  assert.throws(() => privateKeyAttributes(tokenKeyKind('rsa'), pkcs8Of(rsaAlg, truncatedKey)), /^Error: RSAPrivateKey is missing a component$/);
  const whole = Buffer.concat(items);
  assert.equal(privateKeyAttributes(tokenKeyKind('rsa'), pkcs8Of(rsaAlg, Buffer.concat([Buffer.of(0x30, 0x82, whole.length >> 8, whole.length & 0xff), whole]))).length, 8, 'control: the re-encoded whole key');
  assert.ok(createPublicKey(rsa));
});

/** An RSA key of `primes` primes (more than 2: RFC 8017 §A.1.2 version 1, otherPrimeInfos) made by OpenSSL; node imports it. */
function multiPrimeRsa(bits: number, primes: number): KeyObject {
  const pemText = execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', `rsa_keygen_bits:${bits}`, '-pkeyopt', `rsa_keygen_primes:${primes}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return createPrivateKey(pemText);
}

test('PKCS#8 → token attributes: a multi-prime RSA key (RFC 8017 §A.1.2 version 1) is refused by name, not cut to its first two primes; two-prime keys still convert (control)', { timeout: 60_000 }, (t) => {
  if (!requireTool(t, 'openssl', 'openssl')) return;
  // OpenSSL allows 3 primes from 1024 bits, 4 from 4096.
  for (const [bits, primes] of [[2048, 3], [4096, 4]] as const) {
    const key = multiPrimeRsa(bits, primes);
    const der = key.export({ format: 'der', type: 'pkcs8' });
    assert.throws(
      () => privateKeyAttributes(tokenKeyKind('rsa'), der),
      (err: unknown) => {
        assert.ok(err instanceof KeydError, String(err));
        assert.equal(err.code, 'KEYD_BAD_KEY');
        assert.equal(err.message, `a multi-prime RSA key (${primes} primes, RFC 8017 §A.1.2 version 1) cannot go into a token: a PKCS#11 CKK_RSA object holds two primes`);
        return true;
      },
      `${primes} primes`,
    );
  }
  // Control: OpenSSL's two-prime key (version 0), the same tool and size.
  const two = multiPrimeRsa(2048, 2);
  const attrs = new Map(privateKeyAttributes(tokenKeyKind('rsa'), two.export({ format: 'der', type: 'pkcs8' })).map((a) => [a.type, a.value as Buffer]));
  const jwk = two.export({ format: 'jwk' });
  assert.deepEqual([attrs.get(CKA.PRIME_1)!.toString('base64url'), attrs.get(CKA.PRIME_2)!.toString('base64url')], [jwk.p, jwk.q], 'control: p and q of a two-prime key');
  // Version 1 without otherPrimeInfos is neither form: refused, not read as two-prime.
  const relabelled = two.export({ format: 'der', type: 'pkcs8' });
  assert.deepEqual(relabelled.subarray(30, 33), hex('020100'), 'RSAPrivateKey version 0 where expected');
  relabelled[32] = 1;
  assert.throws(() => privateKeyAttributes(tokenKeyKind('rsa'), relabelled), /^Error: RSAPrivateKey is neither version 0 with two primes nor version 1 with otherPrimeInfos$/);
});

test('ECDSA DER → r ‖ s: only one SEQUENCE of two positive minimal INTEGERs that fit the curve, nothing after; never truncated into another signature', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const data = Buffer.from('x');
  const der = sign('sha256', data, privateKey);
  const raw = ecdsaDerToRaw(der, 32);
  assert.ok(verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, raw), 'control: node\'s signature converts and verifies');
  const tlv = (tag: number, v: Buffer) => Buffer.concat([Buffer.of(tag, v.length), v]);
  const int = (v: Buffer) => tlv(0x02, v);
  const r = raw.subarray(0, 32);
  const s = raw.subarray(32);
  const signed = (v: Buffer) => (v[0]! & 0x80 ? Buffer.concat([Buffer.of(0), v]) : v);
  const seq = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
  assert.deepEqual(ecdsaDerToRaw(seq(int(signed(r)), int(signed(s))), 32), raw, 'control: the same signature re-encoded here');
  // A view into a larger buffer (as WebCrypto hands a Uint8Array): read where it starts.
  const padded = Buffer.concat([Buffer.of(0xaa), der, Buffer.of(0xbb)]);
  assert.deepEqual(ecdsaDerToRaw(new Uint8Array(padded.buffer, padded.byteOffset + 1, der.length), 32), raw, 'control: a Uint8Array view');

  const refused: [string, Buffer, RegExp][] = [
    ['a byte after the SEQUENCE', Buffer.concat([der, Buffer.of(0)]), /^Error: ECDSA signature is not one DER SEQUENCE with nothing after it$/],
    ['a second SEQUENCE after it', Buffer.concat([der, der]), /^Error: ECDSA signature is not one DER SEQUENCE with nothing after it$/],
    ['a SET instead of a SEQUENCE', Buffer.concat([Buffer.of(0x31), der.subarray(1)]), /^Error: ECDSA signature is not one DER SEQUENCE with nothing after it$/],
    ['r only', seq(int(signed(r))), /^Error: ECDSA signature is not a SEQUENCE of two INTEGERs \(r, s\)$/],
    ['a third INTEGER', seq(int(signed(r)), int(signed(s)), int(Buffer.of(1))), /^Error: ECDSA signature is not a SEQUENCE of two INTEGERs \(r, s\)$/],
    ['r as an OCTET STRING', seq(tlv(0x04, r), int(signed(s))), /^Error: ECDSA signature is not a SEQUENCE of two INTEGERs \(r, s\)$/],
    ['an empty s', seq(int(signed(r)), int(Buffer.alloc(0))), /^Error: ECDSA signature's s is not a positive INTEGER$/],
    ['a negative r', seq(int(Buffer.concat([Buffer.of(0x80), r.subarray(1)])), int(signed(s))), /^Error: ECDSA signature's r is not a positive INTEGER$/],
    ['r with a needless zero byte', seq(int(Buffer.of(0, 0x01, ...r.subarray(1))), int(signed(s))), /^Error: ECDSA signature's r is not minimally encoded$/],
    ['s = 0', seq(int(signed(r)), int(Buffer.of(0))), /^Error: ECDSA signature's s is 0$/],
    // 33 significant bytes whose last 32 are s: cutting them off would give a valid-looking s.
    ['s one byte longer than P-256\'s', seq(int(signed(r)), int(Buffer.concat([Buffer.of(0x01), s]))), /^Error: ECDSA signature's s is 33 bytes, longer than the curve's 32$/],
    ['a P-384 signature read as P-256', sign('sha384', data, generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey), /^Error: ECDSA signature's r is 4\d bytes, longer than the curve's 32$/],
  ];
  for (const [what, bad, error] of refused) assert.throws(() => ecdsaDerToRaw(bad, 32), error, what);

  // r ‖ s → DER: an odd or empty length has no halves.
  for (const length of [0, 63, 65]) assert.throws(() => ecdsaRawToDer(Buffer.alloc(length, 1)), new RegExp(`^Error: ECDSA r ‖ s of ${length} bytes is not two halves$`));
});
