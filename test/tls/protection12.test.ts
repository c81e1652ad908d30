/**
 * TLS 1.2 AEAD record protection (RFC 5246 §6.2.3.3) and the record layer's TLS 1.2 rules.
 * The records are opened here with node:crypto directly, the nonce and additional data
 * built by the test from the RFC text (RFC 5288 §3 for GCM, RFC 7905 §2 for ChaCha20):
 * an oracle independent of src/tls/record/protection12.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv, randomBytes, type DecipherGCM } from 'node:crypto';
import { TlsAlert } from '../../src/tls/alert.js';
import { SUITES12 } from '../../src/tls/crypto/suites12.js';
import { RecordProtection12 } from '../../src/tls/record/protection12.js';
import { RecordLayer, type ReceivePolicy } from '../../src/tls/record/record-layer.js';
import { CipherSuite, ContentType } from '../../src/tls/wire/codepoints.js';

const gcm = SUITES12.get(CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)!;
const chacha = SUITES12.get(CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)!;

function additionalData(seq: number, type: number, length: number): Buffer {
  const ad = Buffer.alloc(13);
  ad.writeBigUInt64BE(BigInt(seq), 0);
  ad[8] = type;
  ad.writeUInt16BE(0x0303, 9);
  ad.writeUInt16BE(length, 11);
  return ad;
}

function openIndependently(aead: string, key: Buffer, nonce: Buffer, ad: Buffer, ciphertext: Buffer, tag: Buffer): Buffer {
  const d = createDecipheriv(aead as 'aes-128-gcm', key, nonce, { authTagLength: 16 }) as DecipherGCM;
  d.setAAD(ad);
  d.setAuthTag(tag);
  return Buffer.concat([d.update(ciphertext), d.final()]);
}

test('AES-GCM (RFC 5288 §3): real type in the header, 8-byte explicit nonce = sequence number, salt from the key block', () => {
  const key = randomBytes(16);
  const salt = randomBytes(4);
  const p = new RecordProtection12(gcm, key, salt);
  for (let seq = 0; seq < 3; seq++) {
    const content = randomBytes(100 + seq);
    const record = p.seal(ContentType.application_data, content);
    assert.equal(record[0], ContentType.application_data);
    assert.equal(record.readUInt16BE(1), 0x0303);
    assert.equal(record.readUInt16BE(3), 8 + content.length + 16);
    const explicit = record.subarray(5, 13);
    assert.equal(explicit.readBigUInt64BE(0), BigInt(seq), 'explicit nonce is the sequence number (never repeats)');
    const opened = openIndependently('aes-128-gcm', key, Buffer.concat([salt, explicit]), additionalData(seq, 23, content.length), record.subarray(13, record.length - 16), record.subarray(record.length - 16));
    assert.deepEqual(opened, content);
  }
});

test('ChaCha20-Poly1305 (RFC 7905 §2): nonce = IV xor sequence number, nothing sent in front', () => {
  const key = randomBytes(32);
  const iv = randomBytes(12);
  const p = new RecordProtection12(chacha, key, iv);
  for (let seq = 0; seq < 3; seq++) {
    const content = randomBytes(50);
    const record = p.seal(ContentType.handshake, content);
    assert.equal(record[0], ContentType.handshake);
    assert.equal(record.readUInt16BE(3), content.length + 16);
    const nonce = Buffer.from(iv);
    nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ seq) >>> 0, 8);
    const opened = openIndependently('chacha20-poly1305', key, nonce, additionalData(seq, 22, content.length), record.subarray(5, record.length - 16), record.subarray(record.length - 16));
    assert.deepEqual(opened, content);
  }
});

test('tryOpen: round trip in order; a flipped bit, a wrong type in the header or a record shorter than the tag fails', () => {
  for (const suite of [gcm, chacha]) {
    const key = randomBytes(suite.keyLength);
    const iv = randomBytes(suite.fixedIvLength);
    const writer = new RecordProtection12(suite, key, iv);
    const reader = new RecordProtection12(suite, key, iv);
    const r1 = writer.seal(23, Buffer.from('one'));
    assert.deepEqual(reader.tryOpen(r1.subarray(0, 5), r1.subarray(5))?.content.toString(), 'one');
    const r2 = writer.seal(23, Buffer.from('two'));
    const flipped = Buffer.from(r2);
    flipped[flipped.length - 1]! ^= 1;
    assert.equal(reader.tryOpen(flipped.subarray(0, 5), flipped.subarray(5)), null);
    const retyped = Buffer.from(r2);
    retyped[0] = 21;
    assert.equal(reader.tryOpen(retyped.subarray(0, 5), retyped.subarray(5)), null, 'the type is authenticated');
    assert.equal(reader.tryOpen(r2.subarray(0, 5), Buffer.alloc(suite === gcm ? 23 : 15)), null);
    assert.deepEqual(reader.tryOpen(r2.subarray(0, 5), r2.subarray(5))?.content.toString(), 'two', 'a failed open does not advance the sequence');
  }
});

function policy(overrides: Partial<ReceivePolicy> = {}): ReceivePolicy {
  return { acceptsChangeCipherSpec: false, acceptsPlaintextAlert: false, skipsPlaintextEarlyData: false, acceptsApplicationData: false, checkHandshakeHeader: () => {}, ...overrides };
}

test('record layer in TLS 1.2 mode: ChangeCipherSpec is delivered where allowed, then every record must open', () => {
  const records = new RecordLayer(2 ** 14 + 1, 4, () => {});
  records.useTls12();
  records.push(Buffer.of(20, 3, 3, 0, 1, 1));
  assert.throws(() => records.next(policy()), (e: unknown) => e instanceof TlsAlert && e.alertName === 'unexpected_message');

  const ok = new RecordLayer(2 ** 14 + 1, 4, () => {});
  ok.useTls12();
  ok.push(Buffer.of(20, 3, 3, 0, 1, 1));
  assert.deepEqual(ok.next(policy({ acceptsChangeCipherSpec: true })), { kind: 'changeCipherSpec' });
  const key = randomBytes(16);
  const salt = randomBytes(4);
  ok.installKeys12('read', new RecordProtection12(gcm, key, salt));
  const writer = new RecordProtection12(gcm, key, salt);
  ok.push(writer.seal(ContentType.alert, Buffer.of(1, 100)));
  assert.deepEqual(ok.next(policy()), { kind: 'alert', level: 1, description: 100 });
  ok.push(Buffer.of(21, 3, 3, 0, 2, 2, 40));
  assert.throws(() => ok.next(policy()), (e: unknown) => e instanceof TlsAlert && e.alertName === 'bad_record_mac', 'a plaintext alert after the keys is not authentic');
});

test('record layer in TLS 1.2 mode: a record that decrypts to 2^14 + 1 bytes is record_overflow (RFC 5246 §6.2.1); 2^14 bytes are delivered', () => {
  const key = randomBytes(16);
  const salt = randomBytes(4);
  const reader = () => {
    const records = new RecordLayer(2 ** 14 + 1, 4, () => {});
    records.useTls12();
    records.installKeys12('read', new RecordProtection12(gcm, key, salt));
    return records;
  };
  // 2^14 + 1 + 24 bytes of TLSCiphertext: within the deframer's 2^14 + 256, so only the plaintext check catches it.
  const over = reader();
  over.push(new RecordProtection12(gcm, key, salt).seal(ContentType.application_data, Buffer.alloc(2 ** 14 + 1, 0x61)));
  assert.throws(() => over.next(policy({ acceptsApplicationData: true })), (e: unknown) => e instanceof TlsAlert && e.alertName === 'record_overflow');
  const ok = reader();
  ok.push(new RecordProtection12(gcm, key, salt).seal(ContentType.application_data, Buffer.alloc(2 ** 14, 0x61)));
  const got = ok.next(policy({ acceptsApplicationData: true }));
  assert.equal(got?.kind === 'applicationData' && got.data.length, 2 ** 14);
});

test('record layer in TLS 1.2 mode: a ChangeCipherSpec between the fragments of a handshake message is unexpected_message; after the whole message it is delivered', () => {
  const finished = Buffer.concat([Buffer.of(20, 0, 0, 12), randomBytes(12)]);
  const fragment = (b: Buffer) => Buffer.concat([Buffer.of(22, 3, 3, 0, b.length), b]);
  const ccs = Buffer.of(20, 3, 3, 0, 1, 1);
  const inside = new RecordLayer(2 ** 14 + 1, 4, () => {});
  inside.useTls12();
  inside.push(Buffer.concat([fragment(finished.subarray(0, 6)), ccs]));
  assert.throws(() => inside.next(policy({ acceptsChangeCipherSpec: true })), (e: unknown) => e instanceof TlsAlert && e.alertName === 'unexpected_message');
  const control = new RecordLayer(2 ** 14 + 1, 4, () => {});
  control.useTls12();
  control.push(Buffer.concat([fragment(finished.subarray(0, 6)), fragment(finished.subarray(6)), ccs]));
  assert.equal(control.next(policy({ acceptsChangeCipherSpec: true }))?.kind, 'handshake');
  assert.deepEqual(control.next(policy({ acceptsChangeCipherSpec: true })), { kind: 'changeCipherSpec' });
});
