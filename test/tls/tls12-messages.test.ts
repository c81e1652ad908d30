/**
 * The TLS 1.2-only parts of the ClientHello and the ClientKeyExchange decoder on their own
 * (src/tls/messages/tls12-messages.ts): each malformed body gets the alert its RFC names
 * (RFC 5746 §3.6, RFC 7627 §5.1, RFC 8422 §5.1.2, §5.7), next to the well-formed body.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeClientHello } from '../../src/tls/messages/client-hello.js';
import { decodeClientHello12Extensions, decodeClientKeyExchange } from '../../src/tls/messages/tls12-messages.js';
import { assertAlert } from './alerts.js';
import { encodeClientHello, extensions as E, type RawExtension } from './client-hello-builder.js';

/** IANA numbers written out (not the engine's table). */
const RENEGOTIATION_INFO = 0xff01;
const EXTENDED_MASTER_SECRET = 23;
const EC_POINT_FORMATS = 11;
const TLS_EMPTY_RENEGOTIATION_INFO_SCSV = 0x00ff;
const ECDHE_ECDSA_AES_128_GCM = 0xc02b;

function tls12(exts: RawExtension[], cipherSuites = [ECDHE_ECDSA_AES_128_GCM]) {
  return decodeClientHello12Extensions(decodeClientHello(encodeClientHello({ cipherSuites, extensions: exts })));
}

test('renegotiation_info (RFC 5746 §3.6): empty renegotiated_connection signals secure renegotiation; bytes after it are decode_error; a non-empty one is handshake_failure', () => {
  assert.equal(tls12([E.raw(RENEGOTIATION_INFO, Buffer.of(0))]).secureRenegotiation, true);
  assertAlert(() => tls12([E.raw(RENEGOTIATION_INFO, Buffer.of(0, 0))]), 'decode_error', 'trailing byte');
  assertAlert(() => tls12([E.raw(RENEGOTIATION_INFO, Buffer.of(1, 5))]), 'handshake_failure', 'renegotiated_connection of one byte');
});

test('TLS_EMPTY_RENEGOTIATION_INFO_SCSV alone signals secure renegotiation (RFC 5746 §3.3); without it or the extension, none', () => {
  assert.equal(tls12([], [ECDHE_ECDSA_AES_128_GCM, TLS_EMPTY_RENEGOTIATION_INFO_SCSV]).secureRenegotiation, true);
  assert.equal(tls12([]).secureRenegotiation, false);
});

test('ec_point_formats (RFC 8422 §5.1.2): [uncompressed] decodes; an empty list or bytes after it are decode_error; a list without uncompressed is illegal_parameter', () => {
  assert.equal(tls12([E.raw(EC_POINT_FORMATS, Buffer.of(1, 0))]).ecPointFormats, true);
  assert.equal(tls12([E.raw(EC_POINT_FORMATS, Buffer.of(2, 1, 0))]).ecPointFormats, true, 'uncompressed after another format');
  assertAlert(() => tls12([E.raw(EC_POINT_FORMATS, Buffer.of(0))]), 'decode_error', 'empty list');
  assertAlert(() => tls12([E.raw(EC_POINT_FORMATS, Buffer.of(1, 0, 0))]), 'decode_error', 'trailing byte');
  assertAlert(() => tls12([E.raw(EC_POINT_FORMATS, Buffer.of(1, 1))]), 'illegal_parameter', 'ansiX962_compressed_prime only');
});

test('extended_master_secret (RFC 7627 §5.1): empty decodes, a body is decode_error', () => {
  assert.equal(tls12([E.raw(EXTENDED_MASTER_SECRET)]).extendedMasterSecret, true);
  assert.equal(tls12([]).extendedMasterSecret, false);
  assertAlert(() => tls12([E.raw(EXTENDED_MASTER_SECRET, Buffer.of(0))]), 'decode_error');
});

test('ClientKeyExchange (RFC 8422 §5.7): the point<1..255> decodes; an empty point or bytes after it are decode_error', () => {
  const point = Buffer.alloc(65, 4);
  const cke = (body: Buffer) => Buffer.concat([Buffer.of(16, 0, 0, body.length), body]);
  assert.deepEqual(Buffer.from(decodeClientKeyExchange(cke(Buffer.concat([Buffer.of(65), point])))), point);
  assertAlert(() => decodeClientKeyExchange(cke(Buffer.concat([Buffer.of(65), point, Buffer.of(0)]))), 'decode_error', 'trailing byte');
  assertAlert(() => decodeClientKeyExchange(cke(Buffer.of(0))), 'decode_error', 'empty point');
});
