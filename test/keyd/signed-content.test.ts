import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createECDH, createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { KeydError } from '../../src/keyd/errors.js';
import {
  DEFAULT_SIGNED_CONTENT_POLICY,
  certificateVerifyContent,
  checkSchemeForKind,
  schemeFitsKey,
  checkServerKeyExchangeContent,
  classifyHandshakeContent,
} from '../../src/keyd/signed-content.js';
import {
  CONTENT_REFUSALS,
  GROUP,
  certificateVerifyContentFromRfc,
  compressedPoint,
  ecdhParams,
  nistPoint,
  notOnCurve,
  serverKeyExchangeContentFromRfc,
  serverRandom,
  x25519Point,
} from './handshake-content-fixtures.js';

const REQUIRE_SENTINEL = DEFAULT_SIGNED_CONTENT_POLICY;
const ALLOW_TLS12_ONLY = { allowTls12OnlyServers: true };

function refusal(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    assert.ok(err instanceof KeydError, `not a KeydError: ${String(err)}`);
    return err.code;
  }
  return 'accepted';
}

/** An on-curve point in the X9.62 hybrid form: 0x06 or 0x07 (y's parity), x, y. */
function hybridPoint(curve: string): Buffer {
  const ecdh = createECDH(curve);
  ecdh.generateKeys();
  const point = ecdh.getPublicKey(null, 'hybrid');
  assert.ok(point[0] === 0x06 || point[0] === 0x07, 'node:crypto made a hybrid point');
  return point;
}

const clientRandom = randomBytes(32);
const points = {
  x25519: ecdhParams(GROUP.x25519, x25519Point()),
  secp256r1: ecdhParams(GROUP.secp256r1, nistPoint('prime256v1')),
  secp384r1: ecdhParams(GROUP.secp384r1, nistPoint('secp384r1')),
};

test('TLS 1.3 content: the RFC 8446 §4.4.3 bytes for 32- and 48-byte transcript hashes, no other length', () => {
  for (const hash of [createHash('sha256').update('t').digest(), createHash('sha384').update('t').digest()]) {
    assert.deepEqual(certificateVerifyContent(hash), certificateVerifyContentFromRfc(hash));
  }
  for (const length of [0, 20, 31, 33, 47, 49, 64]) {
    assert.equal(refusal(() => certificateVerifyContent(new Uint8Array(length))), 'KEYD_BAD_HASH_LENGTH', `${length}`);
  }
});

test('TLS 1.2 content: each supported group with the sentinel is accepted (positive controls)', () => {
  for (const [name, params] of Object.entries(points)) {
    const content = serverKeyExchangeContentFromRfc(clientRandom, serverRandom(true), params);
    assert.equal(checkServerKeyExchangeContent(content, REQUIRE_SENTINEL), GROUP[name as keyof typeof GROUP], name);
    assert.equal(classifyHandshakeContent(content, REQUIRE_SENTINEL).kind, 'tls12-server-key-exchange', name);
  }
});

test('TLS 1.2 content: server_random without the downgrade sentinel is refused unless TLS 1.2-only servers are allowed', () => {
  const withoutSentinel = serverKeyExchangeContentFromRfc(clientRandom, serverRandom(false), points.secp256r1);
  assert.equal(refusal(() => checkServerKeyExchangeContent(withoutSentinel, REQUIRE_SENTINEL)), 'KEYD_NO_DOWNGRADE_SENTINEL');
  assert.equal(refusal(() => classifyHandshakeContent(withoutSentinel, REQUIRE_SENTINEL)), 'KEYD_NO_DOWNGRADE_SENTINEL');
  assert.equal(checkServerKeyExchangeContent(withoutSentinel, ALLOW_TLS12_ONLY), GROUP.secp256r1);
  // The TLS 1.1-and-below sentinel ("DOWNGRD" 00) is not the TLS 1.2 one.
  const tls11Sentinel = Buffer.concat([randomBytes(24), Buffer.from('DOWNGRD\x00', 'latin1')]);
  assert.equal(refusal(() => checkServerKeyExchangeContent(serverKeyExchangeContentFromRfc(clientRandom, tls11Sentinel, points.x25519), REQUIRE_SENTINEL)), 'KEYD_NO_DOWNGRADE_SENTINEL');
});

test('TLS 1.2 content: wrong point lengths, points off the curve, compressed and hybrid points', () => {
  const sr = serverRandom(true);
  const content = (params: Buffer) => serverKeyExchangeContentFromRfc(clientRandom, sr, params);
  const p256 = nistPoint('prime256v1');
  const cases: Array<[string, Buffer]> = [
    ['x25519 point of 31 bytes', ecdhParams(GROUP.x25519, x25519Point().subarray(1))],
    ['x25519 point of 33 bytes', ecdhParams(GROUP.x25519, Buffer.concat([x25519Point(), Buffer.of(0)]))],
    ['secp256r1 point of 64 bytes', ecdhParams(GROUP.secp256r1, p256.subarray(0, 64))],
    ['secp256r1 point of secp384r1 size', ecdhParams(GROUP.secp256r1, nistPoint('secp384r1'))],
    ['secp384r1 point of secp256r1 size', ecdhParams(GROUP.secp384r1, p256)],
    ['secp256r1 point off the curve', ecdhParams(GROUP.secp256r1, notOnCurve(p256))],
    ['secp384r1 point off the curve', ecdhParams(GROUP.secp384r1, notOnCurve(nistPoint('secp384r1')))],
    ['secp256r1 compressed point', ecdhParams(GROUP.secp256r1, compressedPoint())],
    ['secp256r1 point with a 0x02 prefix at full length', ecdhParams(GROUP.secp256r1, Buffer.concat([Buffer.of(0x02), p256.subarray(1)]))],
    // The hybrid form (0x06 / 0x07 with the parity of y, X9.62): a full-length point that
    // OpenSSL decodes onto the curve, so only the 0x04 check refuses it (RFC 8422 §5.1.2).
    ['secp256r1 hybrid point', ecdhParams(GROUP.secp256r1, hybridPoint('prime256v1'))],
    ['secp384r1 hybrid point', ecdhParams(GROUP.secp384r1, hybridPoint('secp384r1'))],
    ['point length byte larger than what follows', Buffer.concat([ecdhParams(GROUP.secp256r1, p256).subarray(0, 3), Buffer.of(65), p256.subarray(0, 40)])],
  ];
  // Positive control for the hybrid cases: the same kind of point, uncompressed, is signed.
  for (const [curve, group] of [['prime256v1', GROUP.secp256r1], ['secp384r1', GROUP.secp384r1]] as const) {
    const ecdh = createECDH(curve);
    ecdh.generateKeys();
    assert.equal(checkServerKeyExchangeContent(content(ecdhParams(group, ecdh.getPublicKey(null, 'uncompressed'))), ALLOW_TLS12_ONLY), group, curve);
  }
  for (const [what, params] of cases) {
    assert.equal(refusal(() => checkServerKeyExchangeContent(content(params), ALLOW_TLS12_ONLY)), 'KEYD_BAD_ECDH_PARAMS', what);
    assert.equal(refusal(() => classifyHandshakeContent(content(params), ALLOW_TLS12_ONLY)), 'KEYD_BAD_ECDH_PARAMS', what);
  }
});

test('TLS 1.2 content: unknown curves, curve_type other than named_curve, trailing bytes, every prefix', () => {
  const sr = serverRandom(true);
  for (const group of [0x0019 /* secp521r1 */, 0x001e /* x448 */, 0x0100 /* ffdhe2048 */, 0x11ec /* X25519MLKEM768 */, 0x0000]) {
    const params = ecdhParams(group, nistPoint('prime256v1'));
    assert.equal(refusal(() => checkServerKeyExchangeContent(serverKeyExchangeContentFromRfc(clientRandom, sr, params), ALLOW_TLS12_ONLY)), 'KEYD_UNSUPPORTED_GROUP', `0x${group.toString(16)}`);
  }
  for (const curveType of [0, 1 /* explicit_prime */, 2 /* explicit_char2 */, 4, 255]) {
    const params = Buffer.from(points.secp256r1);
    params[0] = curveType;
    assert.equal(refusal(() => checkServerKeyExchangeContent(serverKeyExchangeContentFromRfc(clientRandom, sr, params), ALLOW_TLS12_ONLY)), 'KEYD_BAD_ECDH_PARAMS', `curve_type ${curveType}`);
  }
  for (const [name, params] of Object.entries(points)) {
    const valid = serverKeyExchangeContentFromRfc(clientRandom, sr, params);
    for (const extra of [Buffer.of(0), Buffer.from(params)]) {
      assert.equal(refusal(() => checkServerKeyExchangeContent(Buffer.concat([valid, extra]), REQUIRE_SENTINEL)), 'KEYD_BAD_ECDH_PARAMS', `${name} + ${extra.length} trailing bytes`);
      assert.equal(refusal(() => classifyHandshakeContent(Buffer.concat([valid, extra]), REQUIRE_SENTINEL)), 'KEYD_BAD_ECDH_PARAMS', `${name} + ${extra.length} trailing bytes`);
    }
    for (let n = 0; n < valid.length; n++) {
      assert.ok(CONTENT_REFUSALS.includes(refusal(() => checkServerKeyExchangeContent(valid.subarray(0, n), REQUIRE_SENTINEL))), `${name} prefix ${n}`);
      assert.ok(CONTENT_REFUSALS.includes(refusal(() => classifyHandshakeContent(valid.subarray(0, n), REQUIRE_SENTINEL))), `${name} prefix ${n}`);
    }
    assert.equal(checkServerKeyExchangeContent(valid, REQUIRE_SENTINEL), GROUP[name as keyof typeof GROUP], `${name} whole (control)`);
  }
});

test('raw content: only the two handshake shapes classify; digests, messages and the client context do not', () => {
  const hash32 = createHash('sha256').update('x').digest();
  const hash48 = createHash('sha384').update('x').digest();
  for (const hash of [hash32, hash48]) {
    const checked = classifyHandshakeContent(certificateVerifyContentFromRfc(hash), REQUIRE_SENTINEL);
    assert.equal(checked.kind, 'tls13-certificate-verify');
    assert.deepEqual(checked.content, certificateVerifyContentFromRfc(hash));
  }
  const tls12 = serverKeyExchangeContentFromRfc(clientRandom, serverRandom(true), points.x25519);
  assert.deepEqual(classifyHandshakeContent(tls12, REQUIRE_SENTINEL), { kind: 'tls12-server-key-exchange', content: tls12 });

  // 100 random bytes whose byte 64 is not a curve_type of 3; then the same with byte 64 = 3.
  const random100 = randomBytes(100);
  random100[64] = 0x7f;
  assert.equal(refusal(() => classifyHandshakeContent(random100, REQUIRE_SENTINEL)), 'KEYD_NOT_HANDSHAKE_CONTENT');
  random100[64] = 3;
  assert.ok(CONTENT_REFUSALS.includes(refusal(() => classifyHandshakeContent(random100, ALLOW_TLS12_ONLY))));
  assert.equal(refusal(() => classifyHandshakeContent(hash32, REQUIRE_SENTINEL)), 'KEYD_NOT_HANDSHAKE_CONTENT');
  assert.equal(refusal(() => classifyHandshakeContent(hash48, REQUIRE_SENTINEL)), 'KEYD_NOT_HANDSHAKE_CONTENT');
  assert.equal(refusal(() => classifyHandshakeContent(Buffer.from('GET / HTTP/1.1\r\n'), REQUIRE_SENTINEL)), 'KEYD_NOT_HANDSHAKE_CONTENT');
  const clientContext = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify', 'latin1'), Buffer.of(0), hash32]);
  assert.equal(refusal(() => classifyHandshakeContent(clientContext, REQUIRE_SENTINEL)), 'KEYD_NOT_HANDSHAKE_CONTENT');
  // The server prefix with a hash of the wrong length is the TLS 1.3 kind, refused for its length.
  for (const length of [0, 20, 64]) {
    assert.equal(refusal(() => classifyHandshakeContent(certificateVerifyContentFromRfc(new Uint8Array(length)), REQUIRE_SENTINEL)), 'KEYD_BAD_HASH_LENGTH', `${length}`);
  }
  // A TLS 1.3 content with a TLS 1.2 tail, and a TLS 1.2 content with a hash appended.
  assert.equal(refusal(() => classifyHandshakeContent(Buffer.concat([certificateVerifyContentFromRfc(hash32), points.x25519]), REQUIRE_SENTINEL)), 'KEYD_BAD_HASH_LENGTH');
  assert.equal(refusal(() => classifyHandshakeContent(Buffer.concat([tls12, hash32]), REQUIRE_SENTINEL)), 'KEYD_BAD_ECDH_PARAMS');
});

test('raw content: arbitrary bytes are refused with a content code (property)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), (bytes) => {
      const code = refusal(() => classifyHandshakeContent(bytes, REQUIRE_SENTINEL));
      return CONTENT_REFUSALS.includes(code);
    }),
    { numRuns: 2000 },
  );
});

test('schemes: rsa_pkcs1 and ecdsa_sha224 only for TLS 1.2, SHA-1 / MD5 never, unknown schemes unsupported', () => {
  const forbidden = (kind: Parameters<typeof checkSchemeForKind>[0], scheme: number) => refusal(() => checkSchemeForKind(kind, scheme));
  for (const scheme of [0x0401, 0x0501, 0x0601]) {
    assert.equal(forbidden('tls13-certificate-verify', scheme), 'KEYD_SCHEME_FORBIDDEN', `0x${scheme.toString(16)} TLS 1.3`);
    assert.equal(checkSchemeForKind('tls12-server-key-exchange', scheme).rsaPadding, 'pkcs1', `0x${scheme.toString(16)} TLS 1.2`);
  }
  assert.equal(forbidden('tls13-certificate-verify', 0x0303), 'KEYD_SCHEME_FORBIDDEN', 'ecdsa_sha224 TLS 1.3');
  assert.equal(checkSchemeForKind('tls12-server-key-exchange', 0x0303).hash, 'sha224', 'ecdsa_sha224 TLS 1.2');
  for (const scheme of [0x0201, 0x0202, 0x0203, 0x0101, 0x0102, 0x0103]) {
    for (const kind of ['tls13-certificate-verify', 'tls12-server-key-exchange'] as const) {
      assert.equal(forbidden(kind, scheme), 'KEYD_SCHEME_FORBIDDEN', `0x${scheme.toString(16)} ${kind}`);
    }
  }
  for (const scheme of [0x0808, 0x0809, 0x0402, 0x0301, 0x0000, 0xffff]) {
    assert.equal(forbidden('tls12-server-key-exchange', scheme), 'KEYD_SCHEME_UNSUPPORTED', `0x${scheme.toString(16)}`);
  }
  for (const scheme of [0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0807]) {
    for (const kind of ['tls13-certificate-verify', 'tls12-server-key-exchange'] as const) {
      assert.equal(checkSchemeForKind(kind, scheme).scheme, scheme, `0x${scheme.toString(16)} ${kind}`);
    }
  }
});

test('scheme and key: TLS 1.2 ECDSA schemes name only the hash (any ECDSA key); TLS 1.3 binds the curve', () => {
  const p384 = checkSchemeForKind('tls12-server-key-exchange', 0x0503);
  assert.equal(schemeFitsKey('tls12-server-key-exchange', p384, 'ecdsa-p256'), true);
  assert.equal(schemeFitsKey('tls13-certificate-verify', checkSchemeForKind('tls13-certificate-verify', 0x0503), 'ecdsa-p256'), false);
  assert.equal(schemeFitsKey('tls12-server-key-exchange', p384, 'rsa'), false);
  assert.equal(schemeFitsKey('tls12-server-key-exchange', checkSchemeForKind('tls12-server-key-exchange', 0x0804), 'ecdsa-p256'), false);
  assert.equal(schemeFitsKey('tls12-server-key-exchange', checkSchemeForKind('tls12-server-key-exchange', 0x0401), 'rsa'), true);
});
