/**
 * ClientHello codec (RFC 8446 §4.1.2, §4.2): every extension the server acts on is
 * decoded, and every malformed input fails with the alert §6 / §4.2 names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeClientHello } from '../../src/tls/messages/client-hello.js';
import { ExtensionType as X, NamedGroup, SignatureScheme } from '../../src/tls/wire/codepoints.js';
import { Writer } from '../../src/lib/writer.js';
import { assertAlert } from './alerts.js';

/** RFC 8446 §6 alert codes, written out: each assertAlert result is also checked directly. */
const DECODE_ERROR = 50;
const ILLEGAL_PARAMETER = 47;
import { encodeClientHello, ext, extensions as E, typicalExtensions, x25519Share, type RawExtension } from './client-hello-builder.js';

/** Re-frames a handshake body with a consistent header, as the connection would hand it over. */
function frame(body: Uint8Array): Buffer {
  const out = Buffer.alloc(4 + body.length);
  out[0] = 1;
  out.writeUIntBE(body.length, 1, 3);
  out.set(body, 4);
  return out;
}

function decodeWith(exts: RawExtension[]) {
  return decodeClientHello(encodeClientHello({ extensions: exts }));
}

const share = x25519Share();
const valid = encodeClientHello({ extensions: typicalExtensions(share) });

test('a typical ClientHello decodes every field', () => {
  const ch = decodeClientHello(valid);
  assert.equal(ch.legacyVersion, 0x0303);
  assert.deepEqual(Buffer.from(ch.random), Buffer.alloc(32, 0x11));
  assert.deepEqual(Buffer.from(ch.legacySessionId), Buffer.alloc(32, 0x22));
  assert.deepEqual(ch.cipherSuites, [0x1301, 0x1302, 0x1303]);
  assert.deepEqual([...ch.compressionMethods], [0]);
  assert.equal(ch.serverName, 'example.test');
  assert.deepEqual(ch.supportedVersions, [0x0304, 0x0303]);
  assert.deepEqual(ch.supportedGroups, [NamedGroup.x25519, NamedGroup.secp256r1]);
  assert.equal(ch.keyShares?.length, 1);
  assert.equal(ch.keyShares![0]!.group, NamedGroup.x25519);
  assert.deepEqual(Buffer.from(ch.keyShares![0]!.keyExchange), share);
  assert.deepEqual(ch.signatureAlgorithms, [SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.ed25519]);
  assert.deepEqual(ch.alpnProtocols, ['h2', 'http/1.1']);
  assert.deepEqual(ch.pskKeyExchangeModes, [1]);
  assert.equal(ch.preSharedKey, undefined);
  assert.equal(ch.earlyData, false);
  assert.equal(ch.cookie, undefined);
  assert.equal(ch.recordSizeLimit, undefined);
  assert.deepEqual(ch.extensionOrder, [X.server_name, X.supported_versions, X.supported_groups, X.key_share, X.signature_algorithms, X.application_layer_protocol_negotiation, X.psk_key_exchange_modes]);
  assert.equal(ch.raw, valid, 'raw is the whole message, for the transcript');
});

test('every strict prefix of a valid ClientHello fails with decode_error', () => {
  const body = valid.subarray(4);
  // The one prefix that is a well-formed message is the one that stops right before the
  // extensions block: a legacy (pre-TLS 1.3) ClientHello, which the caller rejects with
  // protocol_version because supported_versions is missing.
  const beforeExtensions = 2 + 32 + 1 + 32 + 2 + 6 + 1 + 1;
  let checked = 0;
  for (let len = 0; len < body.length; len++) {
    const message = frame(body.subarray(0, len));
    if (len === beforeExtensions) {
      const legacy = decodeClientHello(message);
      assert.equal(legacy.extensions.size, 0);
      assert.equal(legacy.supportedVersions, undefined);
      continue;
    }
    assert.equal(assertAlert(() => decodeClientHello(message), 'decode_error', `prefix of ${len} bytes`).alert, DECODE_ERROR);
    checked++;
  }
  assert.equal(checked, body.length - 1);
});

test('every strict prefix of the extension data of each extension fails with decode_error', () => {
  const exts = [
    ...typicalExtensions(share),
    E.signatureAlgorithmsCert([SignatureScheme.ecdsa_secp256r1_sha256]),
    E.cookie(Buffer.from('cookie')),
    E.recordSizeLimit(1000),
    E.preSharedKey([{ identity: Buffer.alloc(10, 1), age: 7 }], [Buffer.alloc(32, 2)]),
  ];
  for (let i = 0; i < exts.length; i++) {
    const e = exts[i]!;
    for (let len = 0; len < e.data.length; len++) {
      const broken = exts.map((x, j) => (j === i ? { type: x.type, data: x.data.subarray(0, len) } : x));
      assert.equal(assertAlert(() => decodeWith(broken), 'decode_error', `extension ${e.type} cut to ${len} bytes`).alert, DECODE_ERROR);
    }
  }
});

test('trailing bytes after the extensions block, or inside an extension, are decode_error', () => {
  assert.equal(assertAlert(() => decodeClientHello(frame(Buffer.concat([valid.subarray(4), Buffer.of(0)]))), 'decode_error', 'after extensions').alert, DECODE_ERROR);
  const withTrailing = (e: RawExtension): RawExtension => ({ type: e.type, data: Buffer.concat([e.data, Buffer.of(0, 0)]) });
  const exts = typicalExtensions(share);
  for (let i = 0; i < exts.length; i++) {
    const broken = exts.map((x, j) => (j === i ? withTrailing(x) : x));
    assert.equal(assertAlert(() => decodeWith(broken), 'decode_error', `trailing bytes in extension ${exts[i]!.type}`).alert, DECODE_ERROR);
  }
  assert.equal(assertAlert(() => decodeWith([E.raw(X.early_data, Buffer.of(0))]), 'decode_error', 'early_data with a body').alert, DECODE_ERROR);
});

test('bad vector lengths in the fixed part are decode_error', () => {
  assert.equal(assertAlert(() => decodeClientHello(encodeClientHello({ sessionId: Buffer.alloc(33), extensions: [] })), 'decode_error', 'session id > 32').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => decodeClientHello(encodeClientHello({ cipherSuites: [], extensions: [] })), 'decode_error', 'no cipher suites').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => decodeClientHello(encodeClientHello({ compressionMethods: [], extensions: [] })), 'decode_error', 'no compression methods').alert, DECODE_ERROR);
  // Odd cipher_suites length: patch the length byte of a valid message.
  const odd = Buffer.from(encodeClientHello({ cipherSuites: [0x1301, 0x1302], extensions: [] }));
  const at = 4 + 2 + 32 + 1 + 32;
  assert.equal(odd.readUInt16BE(at), 4);
  odd.writeUInt16BE(3, at);
  assert.equal(assertAlert(() => decodeClientHello(odd), 'decode_error', 'odd cipher_suites length').alert, DECODE_ERROR);
  // Extensions block length larger than what follows.
  const long = Buffer.from(valid);
  const extAt = 4 + 2 + 32 + 1 + 32 + 2 + 6 + 1 + 1;
  long.writeUInt16BE(long.readUInt16BE(extAt) + 1, extAt);
  assert.equal(assertAlert(() => decodeClientHello(long), 'decode_error', 'extensions length too long').alert, DECODE_ERROR);
});

test('bad vector lengths inside extensions are decode_error', () => {
  const cases: [string, RawExtension][] = [
    ['empty supported_versions list', ext(X.supported_versions, (w) => w.u8(0))],
    ['odd supported_versions list', ext(X.supported_versions, (w) => w.u8(3).u16(0x0304).u8(3))],
    ['supported_groups list longer than data', ext(X.supported_groups, (w) => w.u16(6).u16(0x1d).u16(0x17))],
    ['empty supported_groups list', ext(X.supported_groups, (w) => w.u16(0))],
    ['signature_algorithms empty', E.signatureAlgorithms([])],
    ['ALPN with an empty protocol name', E.alpn([''])],
    ['ALPN list empty', ext(X.application_layer_protocol_negotiation, (w) => w.u16(0))],
    ['psk modes empty', E.pskModes([])],
    ['cookie empty', E.cookie(new Uint8Array(0))],
    ['server_name list empty', ext(X.server_name, (w) => w.u16(0))],
    ['server_name with an empty host_name', ext(X.server_name, (w) => w.vec(2, (l) => l.u8(0).u16(0)))],
    ['record_size_limit of one byte', ext(X.record_size_limit, (w) => w.u8(64))],
    ['pre_shared_key with no identities', E.preSharedKey([], [Buffer.alloc(32)])],
    ['pre_shared_key with an empty identity', E.preSharedKey([{ identity: new Uint8Array(0), age: 0 }], [Buffer.alloc(32)])],
    ['pre_shared_key with a 31-byte binder', E.preSharedKey([{ identity: Buffer.alloc(8), age: 0 }], [Buffer.alloc(31)])],
    ['pre_shared_key with no binders', E.preSharedKey([{ identity: Buffer.alloc(8), age: 0 }], [])],
  ];
  for (const [what, e] of cases) assert.equal(assertAlert(() => decodeWith([e]), 'decode_error', what).alert, DECODE_ERROR);
});

test('duplicate extensions are illegal_parameter (§4.2)', () => {
  for (const e of typicalExtensions(share)) {
    assert.equal(assertAlert(() => decodeWith([...typicalExtensions(share), e]), 'illegal_parameter', `duplicate ${e.type}`).alert, ILLEGAL_PARAMETER);
  }
  // Unknown extensions too: the rule is about any type.
  assert.equal(assertAlert(() => decodeWith([E.raw(0x1a1a), E.raw(0x1a1a)]), 'illegal_parameter', 'duplicate GREASE').alert, ILLEGAL_PARAMETER);
});

test('pre_shared_key must be the last extension (§4.2.11)', () => {
  const psk = E.preSharedKey([{ identity: Buffer.alloc(16, 3), age: 1 }], [Buffer.alloc(32, 4)]);
  assert.equal(assertAlert(() => decodeWith([...typicalExtensions(share), psk, E.raw(0x0a0a)]), 'illegal_parameter', 'unknown after psk').alert, ILLEGAL_PARAMETER);
  assert.equal(assertAlert(() => decodeWith([psk, ...typicalExtensions(share)]), 'illegal_parameter', 'psk first').alert, ILLEGAL_PARAMETER);
  assert.ok(decodeWith([...typicalExtensions(share), psk]).preSharedKey, 'psk last is fine');
});

test('pre_shared_key: a 31-byte binder is decode_error even when another binder makes the list long enough (§4.2.11: PskBinderEntry<32..255>)', () => {
  const ids = [
    { identity: Buffer.alloc(16, 3), age: 1 },
    { identity: Buffer.alloc(20, 5), age: 2 },
  ];
  assert.equal(assertAlert(() => decodeWith([E.preSharedKey(ids, [Buffer.alloc(31), Buffer.alloc(32)])]), 'decode_error', '31 + 32').alert, DECODE_ERROR);
  assert.equal(assertAlert(() => decodeWith([E.preSharedKey(ids, [Buffer.alloc(32), Buffer.alloc(31)])]), 'decode_error', '32 + 31').alert, DECODE_ERROR);
  // Control: 32 + 32 decodes.
  assert.equal(decodeWith([E.preSharedKey(ids, [Buffer.alloc(32), Buffer.alloc(32)])]).preSharedKey?.binders.length, 2);
});

test('pre_shared_key identities and binders must pair up', () => {
  const ids = [
    { identity: Buffer.alloc(16, 3), age: 1 },
    { identity: Buffer.alloc(20, 5), age: 2 },
  ];
  assert.equal(assertAlert(() => decodeWith([E.preSharedKey(ids, [Buffer.alloc(32)])]), 'illegal_parameter', '2 ids, 1 binder').alert, ILLEGAL_PARAMETER);
  assert.equal(assertAlert(() => decodeWith([E.preSharedKey(ids.slice(0, 1), [Buffer.alloc(32), Buffer.alloc(48)])]), 'illegal_parameter', '1 id, 2 binders').alert, ILLEGAL_PARAMETER);
});

test('pre_shared_key decodes identities, ages, binders and the binder truncation offset', () => {
  const ids = [
    { identity: Buffer.from('first ticket'), age: 0xfffffffe },
    { identity: Buffer.from('second'), age: 12345 },
  ];
  const binders = [Buffer.alloc(32, 0xaa), Buffer.alloc(48, 0xbb)];
  const raw = encodeClientHello({ extensions: [...typicalExtensions(share), E.preSharedKey(ids, binders)] });
  const ch = decodeClientHello(raw);
  const psk = ch.preSharedKey!;
  assert.deepEqual(psk.identities.map((i) => Buffer.from(i.identity).toString()), ['first ticket', 'second']);
  assert.deepEqual(psk.identities.map((i) => i.obfuscatedTicketAge), [0xfffffffe, 12345]);
  assert.deepEqual(psk.binders.map((b) => Buffer.from(b)), binders);
  // §4.2.11.2: the binders vector (length prefix included) runs from bindersOffset to the end.
  const tail = raw.subarray(psk.bindersOffset);
  assert.equal(tail.readUInt16BE(0), tail.length - 2);
  assert.equal(tail.length, 2 + 1 + 32 + 1 + 48);
});

test('record_size_limit below 64 is illegal_parameter (RFC 8449 §4); 64 and up decode', () => {
  for (const limit of [0, 1, 63]) assert.equal(assertAlert(() => decodeWith([E.recordSizeLimit(limit)]), 'illegal_parameter', `limit ${limit}`).alert, ILLEGAL_PARAMETER);
  for (const limit of [64, 16385, 65535]) assert.equal(decodeWith([E.recordSizeLimit(limit)]).recordSizeLimit, limit);
});

test('each extension decodes to its value', () => {
  const cookie = Buffer.from('an opaque cookie');
  const secp = Buffer.concat([Buffer.of(4), Buffer.alloc(64, 7)]);
  const ch = decodeWith([
    E.serverName('WWW.Example.TEST'),
    E.supportedVersions([0x7a7a, 0x0304]),
    E.supportedGroups([0x11ec, NamedGroup.x25519, NamedGroup.secp256r1]),
    E.keyShare([
      { group: 0x11ec, keyExchange: Buffer.alloc(1216, 1) },
      { group: NamedGroup.secp256r1, keyExchange: secp },
    ]),
    E.signatureAlgorithms([SignatureScheme.ed25519, 0x0a0a]),
    E.signatureAlgorithmsCert([SignatureScheme.rsa_pkcs1_sha256]),
    E.alpn(['x', 'http/1.1']),
    E.pskModes([0, 1]),
    E.earlyData(),
    E.cookie(cookie),
    E.recordSizeLimit(0x4001),
    E.raw(0xfafa, Buffer.from('grease')),
  ]);
  assert.equal(ch.serverName, 'www.example.test', 'host names compare case-insensitively (RFC 6066 §3)');
  assert.deepEqual(ch.supportedVersions, [0x7a7a, 0x0304]);
  assert.deepEqual(ch.supportedGroups, [0x11ec, 0x1d, 0x17]);
  assert.deepEqual(ch.keyShares?.map((s) => [s.group, s.keyExchange.length]), [[0x11ec, 1216], [0x17, 65]]);
  assert.deepEqual(Buffer.from(ch.keyShares![1]!.keyExchange), secp);
  assert.deepEqual(ch.signatureAlgorithms, [0x0807, 0x0a0a]);
  assert.deepEqual(ch.signatureAlgorithmsCert, [0x0401]);
  assert.deepEqual(ch.alpnProtocols, ['x', 'http/1.1']);
  assert.deepEqual(ch.pskKeyExchangeModes, [0, 1]);
  assert.equal(ch.earlyData, true);
  assert.deepEqual(Buffer.from(ch.cookie!), cookie);
  assert.equal(ch.recordSizeLimit, 0x4001);
  assert.deepEqual(Buffer.from(ch.extensions.get(0xfafa)!).toString(), 'grease', 'unknown extension kept raw');
});

test('server_name: non-host_name entries are skipped, two host_names or non-ASCII are illegal_parameter', () => {
  const sni = (entries: [number, string][]) =>
    ext(X.server_name, (w) => w.vec(2, (l) => entries.forEach(([t, n]) => l.u8(t).opaque(2, Buffer.from(n, 'latin1')))));
  assert.equal(decodeWith([sni([[7, 'other'], [0, 'a.test']])]).serverName, 'a.test');
  assert.equal(decodeWith([sni([[7, 'other']])]).serverName, undefined);
  assert.equal(assertAlert(() => decodeWith([sni([[0, 'a.test'], [0, 'b.test']])]), 'illegal_parameter', 'two host names').alert, ILLEGAL_PARAMETER);
  assert.equal(assertAlert(() => decodeWith([sni([[0, 'bad name']])]), 'illegal_parameter', 'space').alert, ILLEGAL_PARAMETER);
  assert.equal(assertAlert(() => decodeWith([sni([[0, 'caf\u00e9.test']])]), 'illegal_parameter', 'non-ASCII').alert, ILLEGAL_PARAMETER);
  assert.equal(assertAlert(() => decodeWith([sni([[0, 'a\u0000b']])]), 'illegal_parameter', 'NUL').alert, ILLEGAL_PARAMETER);
});

test('server_name: the characters next to the allowed ranges are illegal_parameter; every allowed one decodes', () => {
  const sni = (name: string) => ext(X.server_name, (w) => w.vec(2, (l) => l.u8(0).opaque(2, Buffer.from(name, 'latin1'))));
  // The neighbours of 0-9, A-Z, a-z, '-', '.', '_' and '*': a path ('/'), a port (':'), '@', '[', '^', '`', '{', ',', '+', ')'.
  for (const c of ['/', ':', '@', '[', '^', '`', '{', ',', '+', ')']) {
    assert.equal(assertAlert(() => decodeWith([sni(`a${c}b.test`)]), 'illegal_parameter', JSON.stringify(c)).alert, ILLEGAL_PARAMETER);
  }
  // Control: each edge of each allowed range.
  assert.equal(decodeWith([sni('09.AZ.az-_.*.test')]).serverName, '09.az.az-_.*.test');
});

test('key_share: two entries for one group are illegal_parameter (§4.2.8)', () => {
  assert.equal(assertAlert(
    () => decodeWith([E.keyShare([{ group: 0x1d, keyExchange: share }, { group: 0x1d, keyExchange: share }])]),
    'illegal_parameter',
  ).alert, ILLEGAL_PARAMETER);
});

test('an empty key_exchange decodes (the group rejects it with illegal_parameter when used)', () => {
  const ch = decodeWith([E.keyShare([{ group: 0x1d, keyExchange: new Uint8Array(0) }])]);
  assert.equal(ch.keyShares?.[0]?.keyExchange.length, 0);
});

test('oid_filters in a ClientHello is illegal_parameter (§4.2)', () => {
  assert.equal(assertAlert(() => decodeWith([E.raw(X.oid_filters, Buffer.of(0, 0))]), 'illegal_parameter').alert, ILLEGAL_PARAMETER);
  // The same by its §4.2 number (48), not the engine's table; control: its neighbour 49
  // (post_handshake_auth, allowed in a ClientHello) decodes.
  assert.equal(assertAlert(() => decodeWith([E.raw(48, Buffer.of(0, 0))]), 'illegal_parameter', 'extension 48').alert, ILLEGAL_PARAMETER);
  assert.equal(decodeWith([E.raw(49)]).extensions.size, 1);
});

test('an empty extensions block decodes with nothing set', () => {
  const ch = decodeWith([]);
  assert.equal(ch.extensions.size, 0);
  assert.equal(ch.supportedVersions, undefined);
});

test('Writer-built extension bodies are what the decoder reads (cross-check of the builder)', () => {
  const w = new Writer();
  w.vec(2, (l) => l.u8(0).opaque(2, Buffer.from('x.test')));
  assert.deepEqual(E.serverName('x.test').data, w.finish());
});

test('server_name: an IPv4 or IPv6 literal is read as no server name (RFC 6066 §3 forbids them); a name that only looks numeric is kept', () => {
  const sni = (entries: [number, string][]) =>
    ext(X.server_name, (w) => w.vec(2, (l) => entries.forEach(([t, n]) => l.u8(t).opaque(2, Buffer.from(n, 'latin1')))));
  assert.equal(decodeWith([sni([[0, '192.0.2.1']])]).serverName, undefined, 'IPv4 literal');
  assert.equal(decodeWith([sni([[0, '2001:db8::1']])]).serverName, undefined, 'IPv6 literal');
  assert.equal(decodeWith([sni([[0, '::ffff:192.0.2.1']])]).serverName, undefined, 'IPv4-mapped IPv6 literal');
  // Controls: host names made of digits and dots, or a dotted quad with a label after it, are names.
  assert.equal(decodeWith([sni([[0, '192.0.2.1.example']])]).serverName, '192.0.2.1.example');
  assert.equal(decodeWith([sni([[0, '123']])]).serverName, '123');
  // Still one host_name only: an address and a name together are two.
  assert.equal(assertAlert(() => decodeWith([sni([[0, '192.0.2.1'], [0, 'a.test']])]), 'illegal_parameter', 'address + name').alert, ILLEGAL_PARAMETER);
  // A colon outside an address is still not a host name.
  assert.equal(assertAlert(() => decodeWith([sni([[0, 'a.test:443']])]), 'illegal_parameter', 'name:port').alert, ILLEGAL_PARAMETER);
});
