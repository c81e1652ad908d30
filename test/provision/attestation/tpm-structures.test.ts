import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { detachedPublicKey } from '../../helpers/detached-keys.js';
import { parseAkPublic, parseQuote, TPMA } from '../../../src/provision/attestation/tpm-structures.js';

/** TPM2B_PUBLIC of an ECC P-256 ECDSA-SHA256 restricted signing key (TPM 2.0 Part 2 §12.2.4), built here. */
function akPublic(x: Buffer, y: Buffer, attributes = TPMA.fixedTPM | TPMA.fixedParent | TPMA.sensitiveDataOrigin | 0x40 | TPMA.restricted | TPMA.sign): Buffer {
  const u16 = (v: number) => Buffer.from([v >> 8, v & 0xff]);
  const u32 = (v: number) => Buffer.from([(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff]);
  const area = Buffer.concat([u16(0x0023), u16(0x000b), u32(attributes), u16(0), u16(0x0010), u16(0x0018), u16(0x000b), u16(0x0003), u16(0x0010), u16(x.length), x, u16(y.length), y]);
  return Buffer.concat([u16(area.length), area]);
}

function quote(extraData: Buffer, pcrDigest: Buffer, magic = 0xff544347): Buffer {
  const u16 = (v: number) => Buffer.from([v >> 8, v & 0xff]);
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; };
  const name = Buffer.concat([u16(0x000b), Buffer.alloc(32, 7)]);
  return Buffer.concat([
    u32(magic), u16(0x8018), u16(name.length), name, u16(extraData.length), extraData,
    Buffer.alloc(8, 0), u32(5), u32(0), Buffer.from([1]), Buffer.alloc(8, 0),
    u32(1), u16(0x000b), Buffer.from([3, 0x81, 0x00, 0x01]), u16(pcrDigest.length), pcrDigest,
  ]);
}

test('TPM2B_PUBLIC of an attestation key: public key, attributes and Name; every prefix refused', () => {
  // Detached from its generation job before the JWK export (test/helpers/detached-keys.ts).
  const publicKey = detachedPublicKey(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey);
  const jwk = publicKey.export({ format: 'jwk' });
  const bytes = akPublic(Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url'));
  const ak = parseAkPublic(bytes);
  assert.ok(ak.publicKey.equals(createPublicKey(publicKey.export({ format: 'pem', type: 'spki' }))));
  assert.equal(ak.attributes & TPMA.restricted, TPMA.restricted);
  assert.deepEqual(ak.name, Buffer.concat([Buffer.from([0, 0x0b]), createHash('sha256').update(bytes.subarray(2)).digest()]));
  for (let n = 0; n < bytes.length; n++) assert.throws(() => parseAkPublic(bytes.subarray(0, n)), /ak-binding: the attestation key does not decode/);
  assert.throws(() => parseAkPublic(Buffer.concat([bytes, Buffer.from([0])])), /does not decode/);
  const rsaType = Buffer.from(bytes);
  rsaType.writeUInt16BE(0x0001, 2);
  assert.throws(() => parseAkPublic(rsaType), /type 0x1 is not ECC/);
});

test('TPMS_ATTEST quote: fields decoded; wrong magic, wrong type and every prefix refused', () => {
  const extra = Buffer.alloc(32, 0xaa);
  const digest = Buffer.alloc(32, 0xbb);
  const bytes = quote(extra, digest);
  const q = parseQuote(bytes);
  assert.deepEqual(q.extraData, extra);
  assert.deepEqual(q.pcrDigest, digest);
  assert.deepEqual(q.selection, [{ hashAlg: 0x000b, pcrs: [0, 7, 16] }]);
  assert.equal(q.resetCount, 5);
  assert.throws(() => parseQuote(quote(extra, digest, 0x12345678)), /magic 0x12345678 is not TPM_GENERATED_VALUE/);
  const certify = Buffer.from(bytes);
  certify.writeUInt16BE(0x8017, 4);
  assert.throws(() => parseQuote(certify), /is not a quote/);
  for (let n = 0; n < bytes.length; n++) assert.throws(() => parseQuote(bytes.subarray(0, n)), /quote-signature: the quote is not a TPM-generated TPMS_ATTEST quote/);
});

test('TPM2B_PUBLIC: a nameAlg other than SHA-256 (the Name would be wrong), an ECDSA scheme hash other than SHA-256, a curve other than P-256 are refused; the ECDSA-SHA256 P-256 key is the control', () => {
  const publicKey = detachedPublicKey(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey);
  const jwk = publicKey.export({ format: 'jwk' });
  const bytes = akPublic(Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url'));
  assert.ok(parseAkPublic(bytes).publicKey.equals(publicKey));
  // Offsets in the TPM2B_PUBLIC built by akPublic: size(2), type(2), nameAlg(2), attributes(4),
  // authPolicy size(2) = 0, symmetric(2), scheme(2), scheme hash(2), curveID(2) (Part 2 §12.2.3.6).
  const patched = (offset: number, value: number) => {
    const b = Buffer.from(bytes);
    b.writeUInt16BE(value, offset);
    return b;
  };
  assert.throws(() => parseAkPublic(patched(4, 0x000c)), /nameAlg 0xc is not SHA-256/);
  assert.throws(() => parseAkPublic(patched(16, 0x000c)), /not ECDSA with SHA-256/);
  assert.throws(() => parseAkPublic(patched(14, 0x001a)), /not ECDSA with SHA-256/, 'ECDAA is not ECDSA');
  assert.throws(() => parseAkPublic(patched(18, 0x0004)), /curve 0x4 is not NIST P-256/);
  // The unchanged bytes still decode: each refusal above is the patched field's.
  assert.ok(parseAkPublic(patched(4, 0x000b)).publicKey.equals(publicKey));
});

test('TPMS_ATTEST quote: extraData over 64 bytes (TPM2B_DATA holds a TPMU_HA) and bytes after pcrDigest are refused; 64 bytes of extraData are the control', () => {
  const digest = Buffer.alloc(32, 0xbb);
  assert.deepEqual(parseQuote(quote(Buffer.alloc(64, 1), digest)).extraData, Buffer.alloc(64, 1));
  assert.throws(() => parseQuote(quote(Buffer.alloc(65, 1), digest)), /quote-signature: the quote is not a TPM-generated TPMS_ATTEST quote/);
  assert.throws(() => parseQuote(Buffer.concat([quote(Buffer.alloc(32), digest), Buffer.from([0])])), /quote-signature: the quote is not a TPM-generated TPMS_ATTEST quote/);
});
