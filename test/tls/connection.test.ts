/**
 * The sans-I/O connection fed hand-made ClientHellos and records: each protocol error gets
 * the alert RFC 8446 names for it, sent as a plaintext alert record, and HelloRetryRequest
 * checks the second ClientHello (§4.1.2, §4.1.4).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createECDH } from 'node:crypto';
import { AlertDescription, type AlertName } from '../../src/tls/alert.js';
import { HELLO_RETRY_REQUEST_RANDOM } from '../../src/tls/messages/server-messages.js';
import { ExtensionType as X, NamedGroup, SignatureScheme } from '../../src/tls/wire/codepoints.js';
import { Reader } from '../../src/lib/reader.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import { encodeClientHello, extensions as E, handshakeRecords, typicalExtensions, x25519Share, type RawExtension } from './client-hello-builder.js';
import { ed25519Identity, makeOptions, run, type Outcome } from './connection-harness.js';

const identity = ed25519Identity();
const options = makeOptions(identity);

function record(type: number, body: Uint8Array, version = 0x0303): Buffer {
  const h = Buffer.alloc(5);
  h[0] = type;
  h.writeUInt16BE(version, 1);
  h.writeUInt16BE(body.length, 3);
  return Buffer.concat([h, body]);
}

function helloRecord(exts: RawExtension[], spec: Parameters<typeof encodeClientHello>[0] = {}): Buffer {
  return handshakeRecords(encodeClientHello({ ...spec, extensions: exts }));
}

/** Asserts the connection failed with `alert` and put exactly that alert on the wire (plaintext, fatal). */
function assertFailedWith(o: Outcome, alert: AlertName): void {
  assert.deepEqual(o.foreignErrors, []);
  const errors = o.events.filter((e) => e.kind === 'error');
  assert.equal(errors.length, 1, `expected one error, got ${JSON.stringify(o.events)}`);
  const e = errors[0]!;
  assert.ok(e.kind === 'error');
  assert.equal(e.code, `TLS_ALERT_${alert.toUpperCase()}`);
  assert.equal(e.internalBug, false);
  const last = o.sent.at(-1)!;
  assert.deepEqual([...last], [21, 3, 3, 0, 2, 2, AlertDescription[alert]], 'a fatal plaintext alert record');
}

/** The extensions with the one of `type` replaced (or removed when `replacement` is undefined). */
function replace(exts: RawExtension[], type: number, replacement?: RawExtension): RawExtension[] {
  const out: RawExtension[] = [];
  for (const e of exts) {
    if (e.type !== type) out.push(e);
    else if (replacement) out.push(replacement);
  }
  return out;
}

const base = typicalExtensions(x25519Share());

function compressedP256(): Buffer {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  return ecdh.getPublicKey(null, 'compressed');
}

test('a valid ClientHello gets ServerHello, CCS and the encrypted flight, no event yet', async () => {
  const o = await run(options, [helloRecord(base)]);
  assert.deepEqual(o.events, []);
  const out = Buffer.concat(o.sent);
  assert.equal(out[0], 22);
  assert.equal(out[5], 2, 'ServerHello');
  const shLen = out.readUInt16BE(3);
  assert.deepEqual([...out.subarray(5 + shLen, 5 + shLen + 6)], [20, 3, 3, 0, 1, 1], 'middlebox compatibility CCS after a non-empty session id');
  assert.equal(out[5 + shLen + 6], 23, 'then protected records');
});

const alertCases: [string, Buffer, AlertName][] = [
  ['TLS 1.3-only server: no supported_versions (TLS 1.2 client)', helloRecord(replace(base, X.supported_versions)), 'protocol_version'],
  ['TLS 1.3-only server: supported_versions without TLS 1.3', helloRecord(replace(base, X.supported_versions, E.supportedVersions([0x0303]))), 'protocol_version'],
  ['legacy_version below TLS 1.2', helloRecord(base, { legacyVersion: 0x0301 }), 'protocol_version'],
  // The boundary: TLS 1.1 (0x0302) is below TLS 1.2 too; 0x0303 is the valid ClientHello above.
  ['legacy_version TLS 1.1 (0x0302)', helloRecord(base, { legacyVersion: 0x0302 }), 'protocol_version'],
  ['compression methods other than [null]', helloRecord(base, { compressionMethods: [1, 0] }), 'illegal_parameter'],
  // §4.1.2: exactly one byte, zero; null first and another method after it is not that.
  ['compression methods [null, deflate]', helloRecord(base, { compressionMethods: [0, 1] }), 'illegal_parameter'],
  ['no common cipher suite', helloRecord(base, { cipherSuites: [0xc02f, 0x1304] }), 'handshake_failure'],
  ['no common group', helloRecord(replace(replace(base, X.supported_groups, E.supportedGroups([0x11ec])), X.key_share, E.keyShare([{ group: 0x11ec, keyExchange: Buffer.alloc(1216, 1) }]))), 'handshake_failure'],
  ['key_share without supported_groups', helloRecord(replace(base, X.supported_groups)), 'missing_extension'],
  ['supported_groups without key_share', helloRecord(replace(base, X.key_share)), 'missing_extension'],
  ['key share for a group not in supported_groups', helloRecord(replace(base, X.supported_groups, E.supportedGroups([NamedGroup.secp256r1]))), 'illegal_parameter'],
  ['no signature_algorithms', helloRecord(replace(base, X.signature_algorithms)), 'missing_extension'],
  ['no signature scheme in common with the key', helloRecord(replace(base, X.signature_algorithms, E.signatureAlgorithms([SignatureScheme.rsa_pss_rsae_sha256]))), 'handshake_failure'],
  ['pre_shared_key without psk_key_exchange_modes', helloRecord([...replace(base, X.psk_key_exchange_modes), E.preSharedKey([{ identity: Buffer.alloc(16), age: 0 }], [Buffer.alloc(32)])]), 'missing_extension'],
  ['cookie in a first ClientHello', helloRecord([...base, E.cookie(Buffer.from('never sent'))]), 'illegal_parameter'],
  ['x25519 share of 31 bytes', helloRecord(replace(base, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: Buffer.alloc(31, 9) }]))), 'illegal_parameter'],
  ['x25519 share that is a small-order point (all zeros)', helloRecord(replace(base, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: Buffer.alloc(32) }]))), 'illegal_parameter'],
  ['empty x25519 share', helloRecord(replace(base, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: Buffer.alloc(0) }]))), 'illegal_parameter'],
  ['secp256r1 share in compressed form', helloRecord([
    ...replace(replace(base, X.supported_groups, E.supportedGroups([NamedGroup.secp256r1])), X.key_share, E.keyShare([{ group: NamedGroup.secp256r1, keyExchange: compressedP256() }])),
  ]), 'illegal_parameter'],
  ['secp256r1 point not on the curve', helloRecord([
    ...replace(replace(base, X.supported_groups, E.supportedGroups([NamedGroup.secp256r1])), X.key_share, E.keyShare([{ group: NamedGroup.secp256r1, keyExchange: Buffer.concat([Buffer.of(4), Buffer.alloc(64, 1)]) }])),
  ]), 'illegal_parameter'],
  ['ALPN with no protocol in common', helloRecord(replace(base, X.application_layer_protocol_negotiation, E.alpn(['spdy/1']))), 'no_application_protocol'],
  ['a truncated extension (decode_error reaches the wire)', helloRecord([...base, { type: X.cookie, data: Buffer.of(0, 9, 1) }]), 'decode_error'],
  ['duplicate extension', helloRecord([...base, E.pskModes([1])]), 'illegal_parameter'],
];

const alpnOptions = makeOptions(identity, { alpnProtocols: ['h2'] });
const tls13OnlyOptions = makeOptions(identity, { tls12: false });
for (const [what, input, alert] of alertCases) {
  test(`ClientHello: ${what} → ${alert}`, async () => {
    const chosen = what.startsWith('ALPN') ? alpnOptions : what.startsWith('TLS 1.3-only') ? tls13OnlyOptions : options;
    assertFailedWith(await run(chosen, [input]), alert);
  });
}

test('record layer: record longer than 2^14 + 256 → record_overflow (§5.2)', async () => {
  assertFailedWith(await run(options, [Buffer.from([22, 3, 3, 0x41, 0x01])]), 'record_overflow');
});

test('record layer: plaintext record longer than 2^14 → record_overflow (§5.1)', async () => {
  assertFailedWith(await run(options, [record(22, Buffer.alloc(2 ** 14 + 1, 1))]), 'record_overflow');
});

test('record layer: unknown content type → unexpected_message', async () => {
  assertFailedWith(await run(options, [record(24, Buffer.of(1))]), 'unexpected_message');
});

test('record layer: application data before the handshake → unexpected_message', async () => {
  assertFailedWith(await run(options, [record(23, Buffer.alloc(20))]), 'unexpected_message');
});

test('record layer: zero-length handshake record → unexpected_message (§5.1)', async () => {
  assertFailedWith(await run(options, [record(22, Buffer.alloc(0))]), 'unexpected_message');
});

test('record layer: change_cipher_spec before the ClientHello → unexpected_message (§5)', async () => {
  assertFailedWith(await run(options, [record(20, Buffer.of(1))]), 'unexpected_message');
});

test('handshake layer: a message other than ClientHello first → unexpected_message', async () => {
  assertFailedWith(await run(options, [record(22, Buffer.from([20, 0, 0, 32, ...Buffer.alloc(32)]))]), 'unexpected_message');
});

test('handshake layer: ClientHello followed by more handshake data in the same record → unexpected_message (§5.1)', async () => {
  const hello = encodeClientHello({ extensions: base });
  assertFailedWith(await run(options, [record(22, Buffer.concat([hello, Buffer.from([20, 0, 0, 32])]))]), 'unexpected_message');
});

test('handshake layer: a ClientHello fragmented over many records is accepted', async () => {
  const o = await run(options, [handshakeRecords(encodeClientHello({ extensions: base }), 5)]);
  assert.deepEqual(o.events, []);
  assert.equal(Buffer.concat(o.sent)[5], 2, 'ServerHello');
});

test('handshake layer: a handshake message over the configured cap fails as soon as its header arrives', async () => {
  const small = makeOptions(identity, { maxHandshakeMessageSize: 1000 });
  const header = Buffer.from([1, 0, 0x10, 0]); // ClientHello of 4096 bytes
  assertFailedWith(await run(small, [record(22, header)]), 'decode_error');
});

test('alerts: a fatal alert from the client ends the connection silently with TlsPeerAlert', async () => {
  const o = await run(options, [record(21, Buffer.of(2, 40))]);
  assert.deepEqual(o.events.map((e) => (e.kind === 'error' ? e.code : e.kind)), ['TLS_PEER_ALERT_HANDSHAKE_FAILURE']);
  assert.deepEqual(o.sent, [], 'no answer to a fatal alert');
});

test('alerts: close_notify before the handshake is answered with close_notify', async () => {
  const o = await run(options, [record(21, Buffer.of(1, 0))]);
  assert.deepEqual(o.events, [{ kind: 'peerClose' }]);
  assert.deepEqual(o.sent, [Buffer.from([21, 3, 3, 0, 2, 1, 0])]);
});

test('alerts: an alert record of 3 bytes → decode_error', async () => {
  assertFailedWith(await run(options, [record(21, Buffer.of(2, 40, 0))]), 'decode_error');
});

test('nothing is processed after a fatal error', async () => {
  const o = await run(options, [record(24, Buffer.of(1)), helloRecord(base)]);
  assert.equal(o.sent.length, 1, 'only the alert');
});

// ---- HelloRetryRequest ------------------------------------------------------------------

/** A ClientHello that supports x25519 but sends no share: the server must retry. */
const retryExts = replace(base, X.key_share, E.keyShare([]));

function parseHrr(out: Buffer): { cookie: Buffer; group: number; suite: number } {
  assert.equal(out[0], 22);
  const len = out.readUInt16BE(3);
  const r = new Reader(out, 'hrr', 5, 5 + len);
  assert.equal(r.u8(), 2);
  r.u24();
  r.u16();
  assert.deepEqual(Buffer.from(r.bytesN(32)), HELLO_RETRY_REQUEST_RANDOM);
  r.vec(1, 0, 32, 'sid');
  const suite = r.u16();
  r.u8();
  const exts = r.sub(2, 0, 0xffff, 'exts');
  let cookie: Buffer | undefined;
  let group = -1;
  while (exts.remaining > 0) {
    const type = exts.u16();
    const data = new Reader(exts.vec(2, 0, 0xffff, 'ext'));
    if (type === X.cookie) cookie = Buffer.from(data.vec(2, 1, 0xffff, 'cookie'));
    if (type === X.key_share) group = data.u16();
  }
  assert.ok(cookie, 'HelloRetryRequest carries a cookie');
  return { cookie, group, suite };
}

async function retryThen(second: (cookie: Buffer) => Buffer): Promise<{ first: Outcome; both: Outcome }> {
  const first = await run(options, [helloRecord(retryExts)]);
  assert.deepEqual(first.events, []);
  const hrr = parseHrr(Buffer.concat(first.sent));
  assert.equal(hrr.group, NamedGroup.x25519);
  // The server keeps no state: the retry is answered by a fresh connection fed both ClientHellos.
  const both = await run(options, [helloRecord(retryExts), Buffer.from([20, 3, 3, 0, 1, 1]), second(hrr.cookie)]);
  return { first, both };
}

const goodSecond = (cookie: Buffer) =>
  helloRecord([...replace(retryExts, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }])), E.cookie(cookie)]);

test('HRR: a correct second ClientHello completes the server flight', async () => {
  const { both } = await retryThen(goodSecond);
  assert.deepEqual(both.events, []);
  const out = Buffer.concat(both.sent);
  const hrrLen = out.readUInt16BE(3);
  const rest = out.subarray(5 + hrrLen + 6); // after HRR and the compatibility CCS
  assert.equal(rest[0], 22);
  assert.equal(rest[5], 2);
  assert.notDeepEqual(Buffer.from(rest.subarray(11, 43)), HELLO_RETRY_REQUEST_RANDOM, 'a real ServerHello this time');
});

test('HRR: the cookie from one connection works on a fresh one (stateless server)', async () => {
  // retryThen already replays on a new connection; here the first connection is gone entirely.
  const first = await run(options, [helloRecord(retryExts)]);
  const { cookie } = parseHrr(Buffer.concat(first.sent));
  const fresh = await run(options, [helloRecord(retryExts), goodSecond(cookie)]);
  assert.deepEqual(fresh.events, []);
});

// §4.1.4: the ServerHello after a HelloRetryRequest must carry the HRR's cipher suite. Servers
// that share cookie keys (or one reloaded between the two ClientHellos) may choose another
// suite for the same ClientHello: the cookie's suite is checked, illegal_parameter.
test('HRR: a cookie from a server that chose TLS_AES_128_GCM_SHA256, answered by one that chooses TLS_AES_256_GCM_SHA384 → illegal_parameter', async () => {
  const ticketKeys = new TicketKeyRing();
  const sha256First = makeOptions(identity, { ticketKeys, cipherSuites: [0x1301, 0x1302] });
  const sha384First = makeOptions(identity, { ticketKeys, cipherSuites: [0x1302, 0x1301] });
  const first = await run(sha256First, [helloRecord(retryExts)]);
  const { cookie, suite } = parseHrr(Buffer.concat(first.sent));
  assert.equal(suite, 0x1301);
  assertFailedWith(await run(sha384First, [helloRecord(retryExts), goodSecond(cookie)]), 'illegal_parameter');
  // Control: a server of the first one's configuration, sharing its keys, completes the retry.
  const same = await run(makeOptions(identity, { ticketKeys, cipherSuites: [0x1301, 0x1302] }), [helloRecord(retryExts), goodSecond(cookie)]);
  assert.deepEqual(same.events, []);
});

const secondCases: [string, (cookie: Buffer) => Buffer, AlertName][] = [
  ['without the cookie', () => helloRecord(replace(retryExts, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }]))), 'missing_extension'],
  ['with a forged cookie', (c) => helloRecord([...replace(retryExts, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }])), E.cookie(Buffer.concat([c.subarray(0, -1), Buffer.of(c.at(-1)! ^ 1)]))]), 'illegal_parameter'],
  ['still without a key share', (c) => helloRecord([...retryExts, E.cookie(c)]), 'illegal_parameter'],
  ['with a share for another group', (c) => helloRecord([...replace(replace(retryExts, X.supported_groups, E.supportedGroups([NamedGroup.x25519, NamedGroup.secp256r1])), X.key_share, E.keyShare([{ group: NamedGroup.secp256r1, keyExchange: createECDH('prime256v1').generateKeys() }])), E.cookie(c)]), 'illegal_parameter'],
  ['with different cipher suites', (c) => handshakeRecords(encodeClientHello({ cipherSuites: [0x1303], extensions: [...replace(retryExts, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }])), E.cookie(c)] })), 'illegal_parameter'],
  ['with another legacy_session_id', (c) => handshakeRecords(encodeClientHello({ sessionId: Buffer.alloc(32, 0x44), extensions: [...replace(retryExts, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }])), E.cookie(c)] })), 'illegal_parameter'],
  ['with a different random', (c) => handshakeRecords(encodeClientHello({ random: Buffer.alloc(32, 0x33), extensions: [...replace(retryExts, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }])), E.cookie(c)] })), 'illegal_parameter'],
  // §4.1.2: the list of shares is replaced by a single share for the retry group; the right share first and another after it is not that.
  ['with two key shares, the first for the retry group', (c) => helloRecord([...replace(retryExts, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }, { group: NamedGroup.secp256r1, keyExchange: createECDH('prime256v1').generateKeys() }])), E.cookie(c)]), 'illegal_parameter'],
  ['with early_data', (c) => helloRecord([...replace(retryExts, X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }])), E.earlyData(), E.cookie(c)]), 'illegal_parameter'],
  // §4.1.4: the version is settled by the HelloRetryRequest; a second ClientHello that falls back to
  // TLS 1.2 (no supported_versions) on a server that speaks TLS 1.2 is still refused.
  ['as TLS 1.2 (supported_versions removed)', (c) => helloRecord([...replace(replace(retryExts, X.supported_versions), X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }])), E.cookie(c)]), 'protocol_version'],
  ['with ALPN removed', (c) => helloRecord([...replace(replace(retryExts, X.application_layer_protocol_negotiation), X.key_share, E.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }])), E.cookie(c)]), 'illegal_parameter'],
];
for (const [what, second, alert] of secondCases) {
  test(`HRR: second ClientHello ${what} → ${alert}`, async () => {
    const { both } = await retryThen(second);
    assertFailedWith(both, alert);
  });
}

test('record_size_limit (RFC 8449 §4): protected records toward a client with limit 64 carry at most 63 bytes of content', async () => {
  const o = await run(options, [helloRecord([...base, E.recordSizeLimit(64)])]);
  assert.deepEqual(o.events, []);
  const out = Buffer.concat(o.sent);
  let off = 0;
  let protectedRecords = 0;
  while (off < out.length) {
    const type = out[off]!;
    const len = out.readUInt16BE(off + 3);
    if (type === 23) {
      protectedRecords++;
      assert.ok(len <= 64 + 16, `protected record of ${len} bytes (limit 64 + 16-byte tag)`);
    }
    off += 5 + len;
  }
  assert.equal(off, out.length);
  assert.ok(protectedRecords > 5, 'the flight was split into many small records');
});
