/**
 * The record layer on its own (RFC 8446 §5), driven without a connection: what it
 * delivers, what it refuses under a given receive policy, and the records it writes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { TlsAlert } from '../../src/tls/alert.js';
import { suiteByName } from '../../src/tls/crypto/suites.js';
import { RecordLayer, type ReceivePolicy } from '../../src/tls/record/record-layer.js';
import { RecordProtection } from '../../src/tls/record/protection.js';
import { ContentType, HandshakeType } from '../../src/tls/wire/codepoints.js';
import { assertAlert } from './alerts.js';

const suite = suiteByName('TLS_AES_128_GCM_SHA256')!;

function policy(overrides: Partial<ReceivePolicy> = {}): ReceivePolicy {
  return {
    acceptsChangeCipherSpec: false,
    acceptsPlaintextAlert: false,
    skipsPlaintextEarlyData: false,
    acceptsApplicationData: false,
    checkHandshakeHeader: () => {},
    ...overrides,
  };
}

function layer(recordSizeLimit = 2 ** 14 + 1): { records: RecordLayer; sent: Buffer[] } {
  const sent: Buffer[] = [];
  return { records: new RecordLayer(recordSizeLimit, 4, (b) => sent.push(Buffer.from(b))), sent };
}

function record(type: number, body: Buffer): Buffer {
  const h = Buffer.of(type, 3, 3, 0, 0);
  h.writeUInt16BE(body.length, 3);
  return Buffer.concat([h, body]);
}

const finished = Buffer.concat([Buffer.of(HandshakeType.finished, 0, 0, 32), randomBytes(32)]);

test('a handshake message split over records comes out whole, its header checked before its body arrives', () => {
  const { records } = layer();
  const headers: number[][] = [];
  const p = policy({ checkHandshakeHeader: (type, length) => headers.push([type, length]) });
  records.push(record(ContentType.handshake, finished.subarray(0, 10)));
  assert.equal(records.next(p), undefined);
  assert.deepEqual(headers, [[HandshakeType.finished, 32]], 'checked as soon as the 4 header bytes were there');
  records.push(record(ContentType.handshake, finished.subarray(10)));
  const got = records.next(p);
  assert.equal(got?.kind, 'handshake');
  assert.deepEqual(got.kind === 'handshake' && got.raw, finished);
  // The header check refuses before the body is buffered.
  const { records: other } = layer();
  other.push(record(ContentType.handshake, finished.subarray(0, 4)));
  const refuse = () => {
    throw new TlsAlert('unexpected_message', 'not expected here');
  };
  assertAlert(() => other.next(policy({ checkHandshakeHeader: refuse })), 'unexpected_message');
});

test('change_cipher_spec: refused unless the phase allows it; one byte 0x01, once, not inside a handshake message', () => {
  const ccs = record(ContentType.change_cipher_spec, Buffer.of(1));
  const refused = layer().records;
  refused.push(ccs);
  assertAlert(() => refused.next(policy()), 'unexpected_message');

  const { records } = layer();
  records.push(ccs);
  assert.equal(records.next(policy({ acceptsChangeCipherSpec: true })), undefined, 'accepted and consumed');
  records.push(ccs);
  assertAlert(() => records.next(policy({ acceptsChangeCipherSpec: true })), 'unexpected_message');

  const bad = layer().records;
  bad.push(record(ContentType.change_cipher_spec, Buffer.of(2)));
  assertAlert(() => bad.next(policy({ acceptsChangeCipherSpec: true })), 'unexpected_message');

  const inside = layer().records;
  inside.push(Buffer.concat([record(ContentType.handshake, finished.subarray(0, 6)), ccs]));
  assertAlert(() => inside.next(policy({ acceptsChangeCipherSpec: true })), 'unexpected_message');
});

test('alert records: exactly two bytes; empty is unexpected_message, longer is decode_error', () => {
  const { records } = layer();
  records.push(record(ContentType.alert, Buffer.of(2, 40)));
  assert.deepEqual(records.next(policy()), { kind: 'alert', level: 2, description: 40 });
  const empty = layer().records;
  empty.push(record(ContentType.alert, Buffer.alloc(0)));
  assertAlert(() => empty.next(policy()), 'unexpected_message');
  const long = layer().records;
  long.push(record(ContentType.alert, Buffer.of(2, 40, 0)));
  assertAlert(() => long.next(policy()), 'decode_error');
});

test('with read keys installed: protected records open; a plaintext alert only when the phase allows; a bad tag is bad_record_mac', () => {
  const secret = randomBytes(32);
  const peer = new RecordProtection(suite, secret);
  const { records } = layer();
  records.installKeys('read', suite, secret);
  records.push(peer.seal(ContentType.application_data, Buffer.from('hello')));
  const got = records.next(policy({ acceptsApplicationData: true }));
  assert.equal(got?.kind, 'applicationData');
  assert.equal(got.kind === 'applicationData' && got.data.toString(), 'hello');

  records.push(record(ContentType.alert, Buffer.of(2, 48)));
  assert.deepEqual(records.next(policy({ acceptsPlaintextAlert: true })), { kind: 'alert', level: 2, description: 48 });
  records.push(record(ContentType.alert, Buffer.of(2, 48)));
  assertAlert(() => records.next(policy()), 'unexpected_message');

  const tampered = layer().records;
  tampered.installKeys('read', suite, secret);
  const sealed = new RecordProtection(suite, secret).seal(ContentType.application_data, Buffer.from('x'));
  sealed[sealed.length - 1]! ^= 1;
  tampered.push(sealed);
  assertAlert(() => tampered.next(policy({ acceptsApplicationData: true })), 'bad_record_mac');
});

test('empty application data records count toward the limit of records without data', () => {
  const secret = randomBytes(32);
  const peer = new RecordProtection(suite, secret);
  const { records } = layer();
  records.installKeys('read', suite, secret);
  const p = policy({ acceptsApplicationData: true });
  for (let i = 0; i < 4; i++) {
    records.push(peer.seal(ContentType.application_data, Buffer.alloc(0)));
    assert.equal(records.next(p), undefined);
  }
  records.push(peer.seal(ContentType.application_data, Buffer.alloc(0)));
  assertAlert(() => records.next(p), 'unexpected_message');
});

test('sending: alerts in plaintext before write keys, protected after; the compatibility CCS once; handshake packed to the peer limit', () => {
  const { records, sent } = layer();
  records.sendAlert(2, 40);
  assert.deepEqual(sent.pop(), record(ContentType.alert, Buffer.of(2, 40)));
  assert.deepEqual(records.compatibilityCcs(), record(ContentType.change_cipher_spec, Buffer.of(1)));
  assert.equal(records.compatibilityCcs(), undefined, 'only once');

  const secret = randomBytes(32);
  records.installKeys('write', suite, secret);
  records.sendAlert(2, 40);
  const reader = new RecordProtection(suite, secret);
  const alert = sent.pop()!;
  assert.equal(alert[0], ContentType.application_data, 'outer type of a protected record');
  assert.deepEqual(reader.tryOpen(alert.subarray(0, 5), alert.subarray(5)), { type: ContentType.alert, content: Buffer.of(2, 40) });

  records.limitPeerRecords(65); // 64 bytes of plaintext per record
  const messages = [Buffer.alloc(100, 1), Buffer.alloc(30, 2)];
  const protectedRecords = records.protectHandshake(messages);
  assert.equal(protectedRecords.length, 3, '130 bytes in records of at most 64');
  const inner = protectedRecords.map((r) => reader.tryOpen(r.subarray(0, 5), r.subarray(5))!);
  assert.ok(inner.every((r) => r.type === ContentType.handshake));
  assert.deepEqual(Buffer.concat(inner.map((r) => r.content)), Buffer.concat(messages));
});

test('a key-changing message must end its record (requireRecordBoundary)', () => {
  const { records } = layer();
  records.push(record(ContentType.handshake, Buffer.concat([finished, Buffer.of(HandshakeType.key_update)])));
  const got = records.next(policy());
  assert.equal(got?.kind, 'handshake');
  assertAlert(() => records.requireRecordBoundary('Finished'), 'unexpected_message');
  const clean = layer().records;
  clean.push(record(ContentType.handshake, finished));
  clean.next(policy());
  clean.requireRecordBoundary('Finished');
});

test('plaintext records (§5.1): 2^14 bytes are accepted, 2^14 + 1 are record_overflow', () => {
  // The start of a handshake message longer than one record: the layer buffers it.
  const body = Buffer.alloc(2 ** 14 + 1, 0);
  body.set([HandshakeType.certificate, 0x01, 0x00, 0x00]);
  const { records } = layer();
  records.push(record(ContentType.handshake, body.subarray(0, 2 ** 14)));
  assert.equal(records.next(policy()), undefined, '2^14 bytes: accepted, waiting for the rest of the message');
  const over = layer().records;
  over.push(record(ContentType.handshake, body));
  assertAlert(() => over.next(policy()), 'record_overflow');
});

test('TLSInnerPlaintext (§5.4): all its zero padding is removed; zeros only (no content type) is unexpected_message', () => {
  const secret = randomBytes(32);
  const peer = new RecordProtection(suite, secret);
  const { records } = layer();
  records.installKeys('read', suite, secret);
  const p = policy({ acceptsApplicationData: true });
  for (const padding of [1, 2, 200]) {
    records.push(peer.seal(ContentType.application_data, Buffer.from('hello'), padding));
    const got = records.next(p);
    assert.equal(got?.kind === 'applicationData' && got.data.toString(), 'hello', `${padding} bytes of padding`);
  }
  // Content type 0 with padding: the whole TLSInnerPlaintext is zeros.
  records.push(peer.seal(0, Buffer.alloc(0), 5));
  assertAlert(() => records.next(p), 'unexpected_message');
});

test('change_cipher_spec of two bytes 0x01 0x01 is unexpected_message (§5: the single byte 0x01); the one byte is accepted', () => {
  const { records } = layer();
  records.push(record(ContentType.change_cipher_spec, Buffer.of(1, 1)));
  assertAlert(() => records.next(policy({ acceptsChangeCipherSpec: true })), 'unexpected_message');
  const control = layer().records;
  control.push(record(ContentType.change_cipher_spec, Buffer.of(1)));
  assert.equal(control.next(policy({ acceptsChangeCipherSpec: true })), undefined);
});

test('an alert between the fragments of a handshake message is unexpected_message (§5.1); after the whole message it is delivered', () => {
  const { records } = layer();
  records.push(Buffer.concat([record(ContentType.handshake, finished.subarray(0, 10)), record(ContentType.alert, Buffer.of(1, 0))]));
  assertAlert(() => records.next(policy()), 'unexpected_message');
  const control = layer().records;
  control.push(Buffer.concat([record(ContentType.handshake, finished.subarray(0, 10)), record(ContentType.handshake, finished.subarray(10)), record(ContentType.alert, Buffer.of(1, 0))]));
  assert.equal(control.next(policy())?.kind, 'handshake');
  assert.deepEqual(control.next(policy()), { kind: 'alert', level: 1, description: 0 });
});

test('our record_size_limit binds protected records only once announced (RFC 8449 §4): 2^14 bytes pass before, 1024 bytes are record_overflow after', () => {
  const secret = randomBytes(32);
  const peer = new RecordProtection(suite, secret);
  const { records } = layer(1024);
  records.installKeys('read', suite, secret);
  const p = policy({ acceptsApplicationData: true });
  records.push(peer.seal(ContentType.application_data, Buffer.alloc(2 ** 14, 1)));
  const got = records.next(p);
  assert.equal(got?.kind === 'applicationData' && got.data.length, 2 ** 14, 'not announced: the protocol limit');
  records.announceRecordLimit();
  records.push(peer.seal(ContentType.application_data, Buffer.alloc(1023, 1)));
  assert.equal(records.next(p)?.kind, 'applicationData', '1023 bytes + the type: at the limit');
  records.push(peer.seal(ContentType.application_data, Buffer.alloc(1024, 1)));
  assertAlert(() => records.next(p), 'record_overflow');
});
