/** Reader / Writer: the bounds-checked codec every message is built on (RFC 8446 §3). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { DecodeError, Reader } from '../../src/lib/reader.js';
import { Writer } from '../../src/lib/writer.js';
import { TlsAlert, toAlert } from '../../src/tls/alert.js';
import { CipherSuite, ContentType, ExtensionType, HandshakeType, NamedGroup, ProtocolVersion, PskKeyExchangeMode, SignatureScheme } from '../../src/tls/wire/codepoints.js';
import { assertAlert } from './alerts.js';

/** RFC 8446 §6 alert codes, written out: each assertAlert result is also checked directly. */
const DECODE_ERROR = 50;

test('Writer writes big-endian integers and patches vector lengths', () => {
  const w = new Writer(1); // forces growth
  w.u8(0x01).u16(0x0203).u24(0x040506).u32(0x0708090a);
  w.vec(1, (x) => x.u8(0xaa));
  w.vec(2, (x) => x.bytes(Buffer.from('hi')));
  w.vec(3, (x) => x.vec(2, (y) => y.u16(0xbeef)));
  w.opaque(1, new Uint8Array(0));
  assert.equal(w.length, 1 + 2 + 3 + 4 + 2 + 4 + 7 + 1);
  assert.equal(w.finish().toString('hex'), '01' + '0203' + '040506' + '0708090a' + '01aa' + '00026869' + '0000040002beef' + '00');
});

test('Writer.u32 handles values with the top bit set', () => {
  assert.equal(new Writer().u32(0xfffffffe).finish().toString('hex'), 'fffffffe');
});

test('Writer.vec refuses a body that does not fit its length prefix', () => {
  assert.throws(() => new Writer().vec(1, (w) => w.bytes(Buffer.alloc(256))), RangeError);
  assert.equal(new Writer().vec(1, (w) => w.bytes(Buffer.alloc(255))).length, 256);
});

test('Writer: an empty vector whose length prefix lands past the buffer still gets its prefix; bytes past the initial capacity are all kept', () => {
  assert.equal(new Writer(2).u16(0x0102).vec(1, () => undefined).finish().toString('hex'), '010200');
  assert.equal(new Writer(2).u16(0x0102).vec(3, () => undefined).finish().toString('hex'), '0102000000');
  const big = Buffer.alloc(1000, 0x5a);
  assert.deepEqual(new Writer(3).u8(1).bytes(big).u8(2).finish(), Buffer.concat([Buffer.from([1]), big, Buffer.from([2])]));
  // Control: a vector that fits the initial capacity.
  assert.equal(new Writer(8).u16(0x0102).vec(1, () => undefined).finish().toString('hex'), '010200');
});

test('Writer(0) grows like any other: it used to double a capacity of 0 forever (a hang, so it runs in a child with a time limit)', { timeout: 20_000 }, () => {
  const writerUrl = new URL('../../src/lib/writer.js', import.meta.url).href;
  const script = `import { Writer } from ${JSON.stringify(writerUrl)};
    process.stdout.write(new Writer(0).u8(1).vec(2, (w) => w.u16(0x0203)).finish().toString('hex'));`;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(run.signal, null, 'the child finished instead of being killed at the time limit');
  assert.equal(run.status, 0, run.stderr);
  assert.equal(run.stdout, '0100020203');
  // Control: the same in this process with a capacity of 1.
  assert.equal(new Writer(1).u8(1).vec(2, (w) => w.u16(0x0203)).finish().toString('hex'), '0100020203');
});

test('Writer.finish returns a copy', () => {
  const w = new Writer();
  w.u8(1);
  const a = w.finish();
  w.u8(2);
  assert.equal(a.length, 1);
  assert.equal(w.finish().length, 2);
});

test('Reader reads what Writer wrote (property)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xff }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.uint8Array({ maxLength: 300 }),
      fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 20 }),
      (a, b, c, d, bytes, list) => {
        const w = new Writer(4);
        w.u8(a).u16(b).u24(c).u32(d).opaque(2, bytes).vec(1, (x) => list.forEach((v) => x.u16(v)));
        const r = new Reader(w.finish());
        assert.equal(r.u8(), a);
        assert.equal(r.u16(), b);
        assert.equal(r.u24(), c);
        assert.equal(r.u32(), d);
        assert.deepEqual(Buffer.from(r.vec(2, 0, 0xffff, 'bytes')), Buffer.from(bytes));
        assert.deepEqual(r.u16List(1, 2, 254, 'list'), list);
        r.end();
      },
    ),
  );
});

test('Reader: every short read is decode_error', () => {
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(0)).u8(), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(1)).u16(), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(2)).u24(), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(3)).u32(), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.alloc(3)).bytesN(4), 'decode_error').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(5, 1, 2)).vec(1, 0, 255, 'v'), 'decode_error', 'vector longer than input').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(0, 5, 1, 2)).sub(2, 0, 255, 'v'), 'decode_error', 'sub longer than input').alert, DECODE_ERROR);
});

test('Reader: vector lengths outside [min, max] fail with decode_error', () => {
  assert.equal(assertAlert(() => new Reader(Buffer.of(0)).vec(1, 1, 10, 'v'), 'decode_error', 'below min').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(3, 1, 2, 3)).vec(1, 0, 2, 'v'), 'decode_error', 'above max').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(0, 0)).sub(2, 1, 10, 'v'), 'decode_error', 'sub below min').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => new Reader(Buffer.of(0, 3, 1, 2, 3)).u16List(2, 0, 10, 'l'), 'decode_error', 'odd u16 list').alert, DECODE_ERROR);
});

test('Reader.end: trailing bytes are decode_error', () => {
  const r = new Reader(Buffer.of(1, 2));
  r.u8();
  assert.equal(assertAlert(() => r.end(), 'decode_error').alert, DECODE_ERROR);
  r.u8();
  r.end();
});

test('Reader.sub bounds the nested reader to its vector', () => {
  const r = new Reader(Buffer.of(0, 2, 0xaa, 0xbb, 0xcc));
  const s = r.sub(2, 0, 10, 'inner');
  assert.equal(s.remaining, 2);
  assert.equal(s.u16(), 0xaabb);
  assert.equal(assertAlert(() => s.u8(), 'decode_error', 'cannot read past the vector').alert, DECODE_ERROR);
  s.end();
  assert.equal(r.u8(), 0xcc);
  r.end();
});

test('Reader honours start/end offsets and returns views, not copies', () => {
  const buf = Buffer.of(9, 9, 1, 2, 3, 9);
  const r = new Reader(buf, 'm', 2, 5);
  assert.equal(r.position, 2);
  assert.equal(r.remaining, 3);
  const view = r.bytesN(2);
  buf[2] = 7;
  assert.equal(view[0], 7, 'a view into the input');
  assert.deepEqual([...r.rest()], [3]);
  r.end();
});

test('Reader.u32 returns unsigned values', () => {
  assert.equal(new Reader(Buffer.of(0xff, 0xff, 0xff, 0xff)).u32(), 0xffffffff);
});

test('Reader: arbitrary bytes never throw anything but DecodeError (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        const r = new Reader(bytes);
        r.u16List(1, 2, 254, 'a');
        r.sub(2, 0, 0xffff, 'b').vec(1, 1, 255, 'c');
        r.u24();
        r.end();
      } catch (err) {
        assert.ok(err instanceof DecodeError, String(err));
      }
    }),
  );
});

test('Reader throws a neutral DecodeError, which the engine sends as decode_error and not as a bug', () => {
  let thrown: unknown;
  try {
    new Reader(Buffer.of(1), 'Example').u16('field');
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof DecodeError, 'a DecodeError');
  assert.ok(!(thrown instanceof TlsAlert), 'not a TLS alert: keyd and its store use the same reader');
  assert.equal(thrown.message, 'Example: truncated field');
  const alert = toAlert(thrown);
  assert.equal(alert.alertName, 'decode_error');
  assert.equal(alert.message, 'tls: Example: truncated field');
  assert.equal((alert as Error & { cause?: unknown }).cause, undefined, 'a decode failure is the peer\'s, not an internal bug');
  const bug = toAlert(new RangeError('oops'));
  assert.equal(bug.alertName, 'internal_error');
  assert.ok((bug as Error & { cause?: unknown }).cause instanceof RangeError);
});

test('the codepoint tables hold the IANA numbers (RFC 8446 §4.1.2, §4.2, §4.2.3, §4.2.7, §B.4; RFC 5246, 5746, 7507, 7627, 7919, 8422, 8449, 9345, 5077)', () => {
  // Written out from the RFCs and the IANA TLS registries, not from the engine: most tests
  // build their messages with the same tables (client-hello-builder.ts), so a wrong number
  // there would be read back as right.
  assert.deepEqual({ ...ContentType }, { invalid: 0, change_cipher_spec: 20, alert: 21, handshake: 22, application_data: 23 });
  assert.deepEqual({ ...HandshakeType }, {
    hello_request: 0, client_hello: 1, server_hello: 2, new_session_ticket: 4, end_of_early_data: 5, encrypted_extensions: 8,
    certificate: 11, server_key_exchange: 12, certificate_request: 13, server_hello_done: 14, certificate_verify: 15,
    client_key_exchange: 16, finished: 20, key_update: 24, message_hash: 254,
  });
  assert.deepEqual({ ...ExtensionType }, {
    server_name: 0, max_fragment_length: 1, status_request: 5, supported_groups: 10, ec_point_formats: 11, signature_algorithms: 13,
    use_srtp: 14, heartbeat: 15, application_layer_protocol_negotiation: 16, signed_certificate_timestamp: 18,
    client_certificate_type: 19, server_certificate_type: 20, padding: 21, encrypt_then_mac: 22, extended_master_secret: 23,
    record_size_limit: 28, delegated_credential: 34, session_ticket: 35, pre_shared_key: 41, early_data: 42,
    supported_versions: 43, cookie: 44, psk_key_exchange_modes: 45, certificate_authorities: 47, oid_filters: 48,
    post_handshake_auth: 49, signature_algorithms_cert: 50, key_share: 51, renegotiation_info: 0xff01,
  });
  assert.deepEqual({ ...NamedGroup }, { secp256r1: 0x0017, secp384r1: 0x0018, secp521r1: 0x0019, x25519: 0x001d, x448: 0x001e, ffdhe2048: 0x0100, X25519MLKEM768: 0x11ec });
  assert.deepEqual({ ...CipherSuite }, {
    TLS_AES_128_GCM_SHA256: 0x1301, TLS_AES_256_GCM_SHA384: 0x1302, TLS_CHACHA20_POLY1305_SHA256: 0x1303,
    TLS_AES_128_CCM_SHA256: 0x1304, TLS_AES_128_CCM_8_SHA256: 0x1305,
    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: 0xc02b, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: 0xc02c,
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: 0xc02f, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: 0xc030,
    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: 0xcca8, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: 0xcca9,
    TLS_EMPTY_RENEGOTIATION_INFO_SCSV: 0x00ff, TLS_FALLBACK_SCSV: 0x5600,
  });
  assert.deepEqual({ ...SignatureScheme }, {
    rsa_pkcs1_sha256: 0x0401, rsa_pkcs1_sha384: 0x0501, rsa_pkcs1_sha512: 0x0601,
    ecdsa_secp256r1_sha256: 0x0403, ecdsa_secp384r1_sha384: 0x0503, ecdsa_secp521r1_sha512: 0x0603,
    rsa_pss_rsae_sha256: 0x0804, rsa_pss_rsae_sha384: 0x0805, rsa_pss_rsae_sha512: 0x0806,
    ed25519: 0x0807, ed448: 0x0808, rsa_pss_pss_sha256: 0x0809, rsa_pss_pss_sha384: 0x080a, rsa_pss_pss_sha512: 0x080b,
    rsa_pkcs1_sha1: 0x0201, ecdsa_sha1: 0x0203, ecdsa_sha224: 0x0303,
  });
  assert.deepEqual({ ...ProtocolVersion }, { TLS12: 0x0303, TLS13: 0x0304 });
  assert.deepEqual({ ...PskKeyExchangeMode }, { psk_ke: 0, psk_dhe_ke: 1 });
});
