/**
 * Server message encoders (RFC 8446 §4.1.3–§4.6.3), decoded back here with the Reader
 * following the RFC's struct definitions, field by field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  encodeCertificate,
  encodeCertificateVerify,
  encodeEncryptedExtensions,
  encodeFinished,
  encodeHelloRetryRequest,
  encodeKeyUpdate,
  encodeNewSessionTicket,
  encodeServerHello,
  HELLO_RETRY_REQUEST_RANDOM,
} from '../../src/tls/messages/server-messages.js';
import { Reader } from '../../src/lib/reader.js';
import { ExtensionType as X, HandshakeType } from '../../src/tls/wire/codepoints.js';

/** Handshake header (§4): type, u24 length that matches the body; returns a reader over the body. */
function body(message: Buffer, type: number): Reader {
  const r = new Reader(message);
  assert.equal(r.u8(), type, 'msg_type');
  const length = r.u24();
  assert.equal(length, message.length - 4, 'handshake length');
  return new Reader(message, 'body', 4);
}

/** Extensions block as [type, data] pairs, in order. */
function readExtensions(r: Reader): [number, Buffer][] {
  const list = r.sub(2, 0, 0xffff, 'extensions');
  const out: [number, Buffer][] = [];
  while (list.remaining > 0) out.push([list.u16(), Buffer.from(list.vec(2, 0, 0xffff, 'ext'))]);
  return out;
}

test('ServerHello (§4.1.3) round trip, with and without a PSK', () => {
  const random = randomBytes(32);
  const sessionId = randomBytes(32);
  const share = randomBytes(32);
  for (const selectedIdentity of [undefined, 0, 3]) {
    const msg = encodeServerHello({ random, legacySessionIdEcho: sessionId, cipherSuite: 0x1302, keyShare: { group: 0x1d, keyExchange: share }, selectedIdentity });
    const r = body(msg, HandshakeType.server_hello);
    assert.equal(r.u16(), 0x0303, 'legacy_version');
    assert.deepEqual(Buffer.from(r.bytesN(32)), random);
    assert.deepEqual(Buffer.from(r.vec(1, 0, 32, 'session')), sessionId);
    assert.equal(r.u16(), 0x1302, 'cipher_suite');
    assert.equal(r.u8(), 0, 'legacy_compression_method');
    const exts = readExtensions(r);
    r.end();
    const types = exts.map(([t]) => t);
    assert.deepEqual(types.slice(0, 2), [X.supported_versions, X.key_share]);
    assert.equal(new Set(types).size, types.length, 'no duplicate extensions');
    assert.equal(exts[0]![1].toString('hex'), '0304', 'supported_versions selects TLS 1.3');
    const ks = new Reader(exts[1]![1]);
    assert.equal(ks.u16(), 0x1d);
    assert.deepEqual(Buffer.from(ks.vec(2, 1, 0xffff, 'key_exchange')), share);
    ks.end();
    if (selectedIdentity === undefined) {
      assert.equal(exts.length, 2);
    } else {
      assert.deepEqual(exts[2], [X.pre_shared_key, Buffer.from([0, selectedIdentity])]);
    }
  }
});

test('ServerHello echoes an empty legacy_session_id', () => {
  const msg = encodeServerHello({ random: Buffer.alloc(32), legacySessionIdEcho: new Uint8Array(0), cipherSuite: 0x1301, keyShare: { group: 0x17, keyExchange: Buffer.alloc(65, 4) } });
  const r = body(msg, HandshakeType.server_hello);
  r.u16();
  r.bytesN(32);
  assert.equal(r.vec(1, 0, 32, 'session').length, 0);
});

test('HelloRetryRequest (§4.1.4): special random, selected group, cookie', () => {
  assert.deepEqual(HELLO_RETRY_REQUEST_RANDOM, createHash('sha256').update('HelloRetryRequest').digest());
  const cookie = randomBytes(100);
  const sessionId = randomBytes(32);
  const msg = encodeHelloRetryRequest({ legacySessionIdEcho: sessionId, cipherSuite: 0x1303, selectedGroup: 0x18, cookie });
  const r = body(msg, HandshakeType.server_hello);
  assert.equal(r.u16(), 0x0303);
  assert.deepEqual(Buffer.from(r.bytesN(32)), HELLO_RETRY_REQUEST_RANDOM);
  assert.deepEqual(Buffer.from(r.vec(1, 0, 32, 'session')), sessionId);
  assert.equal(r.u16(), 0x1303);
  assert.equal(r.u8(), 0);
  const exts = new Map(readExtensions(r));
  r.end();
  assert.equal(exts.get(X.supported_versions)!.toString('hex'), '0304');
  assert.equal(exts.get(X.key_share)!.toString('hex'), '0018', 'KeyShareHelloRetryRequest: selected_group only');
  const c = new Reader(exts.get(X.cookie)!);
  assert.deepEqual(Buffer.from(c.vec(2, 1, 0xffff, 'cookie')), cookie);
  c.end();
  // Without a group (cookie only).
  const noGroup = new Map(readExtensions(skipHelloPrefix(body(encodeHelloRetryRequest({ legacySessionIdEcho: new Uint8Array(0), cipherSuite: 0x1301, cookie }), HandshakeType.server_hello))));
  assert.equal(noGroup.has(X.key_share), false);
  assert.ok(noGroup.has(X.cookie));
});

function skipHelloPrefix(r: Reader): Reader {
  r.u16();
  r.bytesN(32);
  r.vec(1, 0, 32, 'session');
  r.u16();
  r.u8();
  return r;
}

test('EncryptedExtensions (§4.3.1): server_name ack, ALPN, record_size_limit', () => {
  const empty = body(encodeEncryptedExtensions({ serverNameAcknowledged: false }), HandshakeType.encrypted_extensions);
  assert.deepEqual(readExtensions(empty), []);
  empty.end();

  const r = body(encodeEncryptedExtensions({ serverNameAcknowledged: true, alpnProtocol: 'http/1.1', recordSizeLimit: 16385 }), HandshakeType.encrypted_extensions);
  const exts = readExtensions(r);
  r.end();
  assert.deepEqual(exts.map(([t]) => t), [X.server_name, X.application_layer_protocol_negotiation, X.record_size_limit]);
  assert.equal(exts[0]![1].length, 0, 'server_name is empty in EncryptedExtensions (RFC 6066 §3)');
  const alpn = new Reader(exts[1]![1]);
  const list = alpn.sub(2, 2, 0xffff, 'protocol_name_list');
  assert.equal(Buffer.from(list.vec(1, 1, 255, 'name')).toString(), 'http/1.1');
  list.end();
  alpn.end();
  assert.equal(exts[2]![1].readUInt16BE(0), 16385);
  assert.equal(exts[2]![1].length, 2);
});

test('Certificate (§4.4.2): empty context, each DER entry with empty extensions', () => {
  const chain = [randomBytes(700), randomBytes(1), randomBytes(70_000)];
  const r = body(encodeCertificate(chain), HandshakeType.certificate);
  assert.equal(r.vec(1, 0, 255, 'certificate_request_context').length, 0);
  const list = r.sub(3, 0, 0xffffff, 'certificate_list');
  r.end();
  const got: Buffer[] = [];
  while (list.remaining > 0) {
    got.push(Buffer.from(list.vec(3, 1, 0xffffff, 'cert_data')));
    assert.equal(list.vec(2, 0, 0xffff, 'extensions').length, 0);
  }
  assert.deepEqual(got, chain);
});

test('CertificateVerify (§4.4.3): scheme and signature', () => {
  const signature = randomBytes(256);
  const r = body(encodeCertificateVerify(0x0804, signature), HandshakeType.certificate_verify);
  assert.equal(r.u16(), 0x0804);
  assert.deepEqual(Buffer.from(r.vec(2, 0, 0xffff, 'signature')), signature);
  r.end();
});

test('Finished (§4.4.4): verify_data only', () => {
  for (const n of [32, 48]) {
    const verify = randomBytes(n);
    const r = body(encodeFinished(verify), HandshakeType.finished);
    assert.deepEqual(Buffer.from(r.rest()), verify);
  }
});

test('NewSessionTicket (§4.6.1): lifetime, age_add, nonce, ticket, no extensions', () => {
  const ticket = randomBytes(150);
  const r = body(encodeNewSessionTicket({ lifetime: 7200, ageAdd: 0xfedcba98, nonce: Buffer.of(1), ticket }), HandshakeType.new_session_ticket);
  assert.equal(r.u32(), 7200);
  assert.equal(r.u32(), 0xfedcba98);
  assert.deepEqual([...r.vec(1, 0, 255, 'nonce')], [1]);
  assert.deepEqual(Buffer.from(r.vec(2, 1, 0xffff, 'ticket')), ticket);
  assert.equal(r.vec(2, 0, 0xfffe, 'extensions').length, 0, 'no early_data: 0-RTT is never offered');
  r.end();
});

test('KeyUpdate (§4.6.3): one byte request_update', () => {
  for (const requested of [false, true]) {
    const r = body(encodeKeyUpdate(requested), HandshakeType.key_update);
    assert.equal(r.u8(), requested ? 1 : 0);
    r.end();
  }
});
