/**
 * TLS 1.2 AEAD record protection (RFC 5246 §6.2.3.3) and the record layer's TLS 1.2 rules.
 * The records are opened here with node:crypto directly, the nonce and additional data
 * built by the test from the RFC text (RFC 5288 §3 for GCM, RFC 7905 §2 for ChaCha20):
 * an oracle independent of src/tls/record/protection12.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCM, type DecipherGCM } from 'node:crypto';
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

/**
 * The sequence number is private and 2^32 or 2^64 records cannot be sent in a test: these
 * tests set it directly, then check what goes out against the RFC text as above.
 */
function atSequence(p: RecordProtection12, seq: bigint): RecordProtection12 {
  (p as unknown as { sequence: bigint }).sequence = seq;
  return p;
}

test('ChaCha20-Poly1305 (RFC 7905 §2): the whole 64-bit sequence number is xored into the nonce, its high 32 bits included', () => {
  const key = randomBytes(32);
  const iv = randomBytes(12);
  for (const seq of [2n ** 32n + 5n, 2n ** 63n + 1n, 5n]) {
    const content = randomBytes(20);
    const record = atSequence(new RecordProtection12(chacha, key, iv), seq).seal(ContentType.application_data, content);
    const nonce = Buffer.from(iv);
    nonce.writeBigUInt64BE(nonce.readBigUInt64BE(4) ^ seq, 4);
    const ad = additionalData(0, 23, content.length);
    ad.writeBigUInt64BE(seq, 0);
    const opened = openIndependently('chacha20-poly1305', key, nonce, ad, record.subarray(5, record.length - 16), record.subarray(record.length - 16));
    assert.deepEqual(opened, content, `sequence ${seq}`);
  }
});

test('the sequence number never wraps (RFC 5246 §6.1): at 2^64 - 1 sealing and opening stop with internal_error; 2^64 - 2 is still used', () => {
  for (const suite of [gcm, chacha]) {
    const key = randomBytes(suite.keyLength);
    const iv = randomBytes(suite.fixedIvLength);
    const last = atSequence(new RecordProtection12(suite, key, iv), 2n ** 64n - 2n);
    const record = last.seal(23, Buffer.from('last'));
    if (suite === gcm) assert.equal(record.readBigUInt64BE(5), 2n ** 64n - 2n);
    const reader = atSequence(new RecordProtection12(suite, key, iv), 2n ** 64n - 2n);
    assert.equal(reader.tryOpen(record.subarray(0, 5), record.subarray(5))?.content.toString(), 'last');
    const exhausted = (e: unknown) => e instanceof TlsAlert && e.alertName === 'internal_error';
    assert.throws(() => last.seal(23, Buffer.from('one more')), exhausted);
    assert.throws(() => last.sealParts(23, Buffer.from('one more')), exhausted);
    assert.throws(() => reader.tryOpen(record.subarray(0, 5), record.subarray(5)), exhausted);
  }
});

test('tryOpen: an empty fragment (explicit nonce and tag only; RFC 5246 §6.2.1 allows empty application data) opens to no bytes', () => {
  for (const suite of [gcm, chacha]) {
    const key = randomBytes(suite.keyLength);
    const iv = randomBytes(suite.fixedIvLength);
    const record = new RecordProtection12(suite, key, iv).seal(23, Buffer.alloc(0));
    assert.equal(record.length, 5 + (suite === gcm ? 8 : 0) + 16);
    const opened = new RecordProtection12(suite, key, iv).tryOpen(record.subarray(0, 5), record.subarray(5));
    assert.equal(opened?.content.length, 0);
  }
});

test('tryOpen (RFC 5288 §3): the GCM nonce is the salt and the explicit nonce the peer sent, whatever value the peer chose', () => {
  const key = randomBytes(16);
  const salt = randomBytes(4);
  const content = Buffer.from('chosen by the peer');
  for (const explicit of [randomBytes(8), Buffer.alloc(8)]) {
    const cipher = createCipheriv('aes-128-gcm', key, Buffer.concat([salt, explicit]), { authTagLength: 16 }) as CipherGCM;
    cipher.setAAD(additionalData(0, 23, content.length));
    const body = Buffer.concat([explicit, cipher.update(content), cipher.final(), cipher.getAuthTag()]);
    const opened = new RecordProtection12(gcm, key, salt).tryOpen(Buffer.of(23, 3, 3, body.length >> 8, body.length & 0xff), body);
    assert.deepEqual(opened?.content, content);
  }
});

test('sealParts (the record layer\'s path for large application data): header with the explicit nonce counted, then the ciphertext and the tag, as the RFC 5288 §3 / RFC 7905 §2 nonce', () => {
  for (const suite of [gcm, chacha]) {
    const key = randomBytes(suite.keyLength);
    const iv = randomBytes(suite.fixedIvLength);
    const p = new RecordProtection12(suite, key, iv);
    for (let seq = 0; seq < 3; seq++) {
      const content = randomBytes(5000 + seq);
      const [header, ciphertext, tag] = p.sealParts(ContentType.application_data, content);
      const explicitLength = suite === gcm ? 8 : 0;
      assert.equal(header.length, 5 + explicitLength);
      assert.equal(header[0], ContentType.application_data);
      assert.equal(header.readUInt16BE(1), 0x0303);
      assert.equal(header.readUInt16BE(3), explicitLength + content.length + 16);
      let nonce: Buffer;
      if (suite === gcm) {
        assert.equal(header.readBigUInt64BE(5), BigInt(seq), 'explicit nonce is the sequence number');
        nonce = Buffer.concat([iv, header.subarray(5)]);
      } else {
        nonce = Buffer.from(iv);
        nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ seq) >>> 0, 8);
      }
      const opened = openIndependently(suite.aead, key, nonce, additionalData(seq, 23, content.length), ciphertext, tag);
      assert.deepEqual(opened, content);
    }
  }
});
