/**
 * The decoders of the client's Certificate and CertificateVerify on their own (RFC 8446
 * §4.4.2, §4.4.3; RFC 5246 §7.4.6, §7.4.8): the framing rules each check, next to the
 * well-formed message that passes. The handshake-level tests (client-auth.test.ts) send only
 * well-framed messages.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writer } from '../../src/lib/writer.js';
import { decodeCertificateVerify, decodeClientCertificate12, decodeClientCertificate13, MAX_CLIENT_CHAIN_LENGTH } from '../../src/tls/messages/client-authentication.js';
import { HandshakeType } from '../../src/tls/wire/codepoints.js';
import { assertAlert } from './alerts.js';

/** A handshake message: type, 24-bit length, body (the decoders take the header too). */
function message(type: number, body: (w: Writer) => void, trailing: Uint8Array = new Uint8Array(0)): Buffer {
  const w = new Writer();
  w.u8(type).vec(3, (b) => {
    body(b);
    b.bytes(trailing);
  });
  return Buffer.from(w.finish());
}

/** Placeholder certificate bytes: the decoders frame them, the chain verifier parses them. */
const cert = (i: number) => Buffer.alloc(20 + i, i + 1);

function certificate13(certs: Uint8Array[], trailing?: Uint8Array): Buffer {
  return message(HandshakeType.certificate, (w) => w.opaque(1, new Uint8Array(0)).vec(3, (l) => certs.forEach((c) => l.opaque(3, c).u16(0))), trailing);
}

function certificate12(certs: Uint8Array[], trailing?: Uint8Array): Buffer {
  return message(HandshakeType.certificate, (w) => w.vec(3, (l) => certs.forEach((c) => l.opaque(3, c))), trailing);
}

test(`a client chain of ${MAX_CLIENT_CHAIN_LENGTH} certificates decodes; one more is bad_certificate (TLS 1.3 and 1.2)`, () => {
  assert.equal(MAX_CLIENT_CHAIN_LENGTH, 10);
  const ten = Array.from({ length: 10 }, (_, i) => cert(i));
  const eleven = [...ten, cert(10)];
  assert.deepEqual(decodeClientCertificate13(certificate13(ten)).chain.map((c) => Buffer.from(c)), ten);
  assert.deepEqual(decodeClientCertificate12(certificate12(ten)).map((c) => Buffer.from(c)), ten);
  assertAlert(() => decodeClientCertificate13(certificate13(eleven)), 'bad_certificate', 'TLS 1.3, 11 certificates');
  assertAlert(() => decodeClientCertificate12(certificate12(eleven)), 'bad_certificate', 'TLS 1.2, 11 certificates');
});

test('a zero-length certificate in a client chain is decode_error (ASN.1Cert<1..2^24-1>); control: one byte decodes', () => {
  assertAlert(() => decodeClientCertificate13(certificate13([cert(0), new Uint8Array(0)])), 'decode_error', 'TLS 1.3');
  assertAlert(() => decodeClientCertificate12(certificate12([cert(0), new Uint8Array(0)])), 'decode_error', 'TLS 1.2');
  assert.equal(decodeClientCertificate13(certificate13([cert(0), Buffer.of(1)])).chain.length, 2);
  assert.equal(decodeClientCertificate12(certificate12([cert(0), Buffer.of(1)])).length, 2);
});

test('bytes after the certificate_list are decode_error (TLS 1.3 and 1.2); control: without them the message decodes', () => {
  assertAlert(() => decodeClientCertificate13(certificate13([cert(0)], Buffer.of(0))), 'decode_error', 'TLS 1.3');
  assertAlert(() => decodeClientCertificate12(certificate12([cert(0)], Buffer.of(0))), 'decode_error', 'TLS 1.2');
  assert.equal(decodeClientCertificate13(certificate13([])).chain.length, 0, 'an empty Certificate (no client certificate)');
  assert.equal(decodeClientCertificate12(certificate12([])).length, 0);
});

test('CertificateVerify: bytes after the signature are decode_error; control: scheme and signature decode', () => {
  const signature = Buffer.alloc(64, 7);
  const cv = (trailing?: Uint8Array) => message(HandshakeType.certificate_verify, (w) => w.u16(0x0403).opaque(2, signature), trailing);
  assert.deepEqual(decodeCertificateVerify(cv()), { scheme: 0x0403, signature });
  assertAlert(() => decodeCertificateVerify(cv(Buffer.of(0))), 'decode_error');
});
