/**
 * The key schedule, Finished, resumption PSK, binder and record protection checked
 * against the traces of RFC 8448 (data in test/vectors/rfc8448-*.json).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPrivateKey, createPublicKey, diffieHellman } from 'node:crypto';
import { deriveSecret, emptyHash, hkdfExpandLabel, hkdfExtract } from '../../src/tls/crypto/hkdf.js';
import {
  EarlySecrets,
  finishedVerifyData,
  resumptionPsk,
  trafficKeys,
} from '../../src/tls/handshake/key-schedule.js';
import { Transcript } from '../../src/tls/handshake/transcript.js';
import { RecordProtection } from '../../src/tls/record/protection.js';
import { suiteByName } from '../../src/tls/crypto/suites.js';
import { decodeClientHello } from '../../src/tls/messages/client-hello.js';
import { ContentType, ExtensionType, NamedGroup } from '../../src/tls/wire/codepoints.js';
import { hex, loadVectors } from './vectors.js';

type Hex = string;
interface OneRtt {
  messages: Record<'clientHello' | 'serverHello' | 'encryptedExtensions' | 'certificate' | 'certificateVerify' | 'serverFinished' | 'clientFinished' | 'newSessionTicket', Hex>;
  records: { clientFinished: Hex; clientApplicationData: Hex; clientApplicationDataPlaintext: Hex };
  [k: string]: unknown;
}
const v = loadVectors<OneRtt & Record<string, Hex>>('rfc8448-1rtt.json');
const r = loadVectors<{ messages: Record<string, Hex>; obfuscatedTicketAge: number } & Record<string, Hex>>('rfc8448-resumed-0rtt.json');
const suite = suiteByName('TLS_AES_128_GCM_SHA256')!;

function sha256(...parts: Buffer[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

function assertHex(actual: Uint8Array, expected: string, what: string): void {
  assert.equal(Buffer.from(actual).toString('hex'), expected, what);
}

function x25519Shared(privateHex: string, ownPublicHex: string, peerPublicHex: string): Buffer {
  // RFC 7748 keys as JWK (d = private scalar, x = public u-coordinate).
  const privateKey = createPrivateKey({
    key: { kty: 'OKP', crv: 'X25519', d: hex(privateHex).toString('base64url'), x: hex(ownPublicHex).toString('base64url') },
    format: 'jwk',
  });
  const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: hex(peerPublicHex).toString('base64url') }, format: 'jwk' });
  return diffieHellman({ privateKey, publicKey });
}

const m = v.messages;
const helloHash = sha256(hex(m.clientHello), hex(m.serverHello));
const beforeServerFinished = sha256(hex(m.clientHello), hex(m.serverHello), hex(m.encryptedExtensions), hex(m.certificate), hex(m.certificateVerify));
const serverFinishedHash = sha256(
  hex(m.clientHello), hex(m.serverHello), hex(m.encryptedExtensions), hex(m.certificate), hex(m.certificateVerify), hex(m.serverFinished),
);
const clientFinishedHash = sha256(
  hex(m.clientHello), hex(m.serverHello), hex(m.encryptedExtensions), hex(m.certificate), hex(m.certificateVerify), hex(m.serverFinished), hex(m.clientFinished),
);

test('RFC 8448 §3: the (EC)DHE input is the X25519 shared secret of the trace keys', () => {
  // Sanity check of the data file itself: both sides agree on the printed shared secret.
  assertHex(x25519Shared(v.clientX25519Private, v.clientX25519Public, v.serverX25519Public), v.sharedSecret, 'client side');
  assertHex(x25519Shared(v.serverX25519Private, v.serverX25519Public, v.clientX25519Public), v.sharedSecret, 'server side');
});

test('RFC 8448 §3: HKDF primitives give early secret and "derived" secrets', () => {
  const early = hkdfExtract('sha256', Buffer.alloc(32), Buffer.alloc(32));
  assertHex(early, v.earlySecret, 'early secret');
  assertHex(deriveSecret('sha256', early, 'derived', emptyHash('sha256')), v.derivedForHandshake, 'derived (early)');
  const handshake = hkdfExtract('sha256', hex(v.derivedForHandshake), hex(v.sharedSecret));
  assertHex(handshake, v.handshakeSecret, 'handshake secret');
  assertHex(deriveSecret('sha256', handshake, 'derived', emptyHash('sha256')), v.derivedForMaster, 'derived (handshake)');
  assertHex(hkdfExtract('sha256', hex(v.derivedForMaster), Buffer.alloc(32)), v.masterSecret, 'master secret');
  assertHex(hkdfExpandLabel('sha256', hex(v.serverHandshakeTrafficSecret), 'finished', Buffer.alloc(0), 32), v.serverFinishedKey, 'finished key');
});

test('RFC 8448 §3: key schedule stages give every traffic secret of the 1-RTT trace', () => {
  const early = new EarlySecrets('sha256');
  assertHex(early.earlySecret, v.earlySecret, 'early secret');
  const handshake = early.withSharedSecret(hex(v.sharedSecret));
  assertHex(handshake.clientHandshakeTrafficSecret(helloHash), v.clientHandshakeTrafficSecret, 'c hs traffic');
  assertHex(handshake.serverHandshakeTrafficSecret(helloHash), v.serverHandshakeTrafficSecret, 's hs traffic');
  const master = handshake.master();
  assertHex(master.clientApplicationTrafficSecret(serverFinishedHash), v.clientApplicationTrafficSecret, 'c ap traffic');
  assertHex(master.serverApplicationTrafficSecret(serverFinishedHash), v.serverApplicationTrafficSecret, 's ap traffic');
  assertHex(master.exporterMasterSecret(serverFinishedHash), v.exporterMasterSecret, 'exp master');
  assertHex(master.resumptionMasterSecret(clientFinishedHash), v.resumptionMasterSecret, 'res master');
});

test('RFC 8448 §3: traffic keys and IVs', () => {
  const pairs: [string, string, string][] = [
    [v.serverHandshakeTrafficSecret, v.serverHandshakeKey, v.serverHandshakeIv],
    [v.clientHandshakeTrafficSecret, v.clientHandshakeKey, v.clientHandshakeIv],
    [v.serverApplicationTrafficSecret, v.serverApplicationKey, v.serverApplicationIv],
    [v.clientApplicationTrafficSecret, v.clientApplicationKey, v.clientApplicationIv],
  ];
  for (const [secret, key, iv] of pairs) {
    const keys = trafficKeys('sha256', hex(secret), 16);
    assertHex(keys.key, key, `key of ${secret.slice(0, 8)}`);
    assertHex(keys.iv, iv, `iv of ${secret.slice(0, 8)}`);
  }
});

test('RFC 8448 §3: server and client Finished verify_data (and the messages carry them)', () => {
  const server = finishedVerifyData('sha256', hex(v.serverHandshakeTrafficSecret), beforeServerFinished);
  assertHex(server, v.serverFinishedVerifyData, 'server Finished');
  assertHex(hex(m.serverFinished).subarray(4), v.serverFinishedVerifyData, 'server Finished message body');
  const client = finishedVerifyData('sha256', hex(v.clientHandshakeTrafficSecret), serverFinishedHash);
  assertHex(client, v.clientFinishedVerifyData, 'client Finished');
  assertHex(hex(m.clientFinished).subarray(4), v.clientFinishedVerifyData, 'client Finished message body');
});

test('RFC 8448 §3: the Transcript class hashes what the trace hashes', () => {
  const t = new Transcript();
  t.add(hex(m.clientHello)); // before the suite is known: held back
  t.start('sha256');
  t.add(hex(m.serverHello));
  assert.deepEqual(t.current(), helloHash);
  assert.deepEqual(t.peekWith(hex(m.encryptedExtensions)), sha256(hex(m.clientHello), hex(m.serverHello), hex(m.encryptedExtensions)));
  assert.deepEqual(t.current(), helloHash, 'peekWith does not add');
});

test('RFC 8448 §3: resumption PSK from the NewSessionTicket nonce', () => {
  assertHex(resumptionPsk('sha256', hex(v.resumptionMasterSecret), hex(v.ticketNonce)), v.resumptionPsk, 'PSK');
  // The nonce in the trace's NewSessionTicket is the one used above.
  const nst = hex(m.newSessionTicket);
  assert.equal(nst[12], 2, 'ticket_nonce length');
  assert.deepEqual(nst.subarray(13, 15), hex(v.ticketNonce));
});

test('RFC 8448 §3: RecordProtection opens the client Finished and application data records', () => {
  const finishedRecord = hex(v.records.clientFinished);
  const hs = new RecordProtection(suite, hex(v.clientHandshakeTrafficSecret));
  const opened = hs.tryOpen(finishedRecord.subarray(0, 5), finishedRecord.subarray(5));
  assert.ok(opened, 'client Finished record authenticates');
  assert.equal(opened.type, ContentType.handshake);
  assertHex(opened.content, m.clientFinished, 'plaintext');

  const appRecord = hex(v.records.clientApplicationData);
  const ap = new RecordProtection(suite, hex(v.clientApplicationTrafficSecret));
  const data = ap.tryOpen(appRecord.subarray(0, 5), appRecord.subarray(5));
  assert.ok(data, 'application data record authenticates');
  assert.equal(data.type, ContentType.application_data);
  assertHex(data.content, v.records.clientApplicationDataPlaintext, 'application data');
});

test('RFC 8448 §3: RecordProtection.seal reproduces the protected client Finished byte for byte', () => {
  const p = new RecordProtection(suite, hex(v.clientHandshakeTrafficSecret));
  assertHex(p.seal(ContentType.handshake, hex(m.clientFinished)), v.records.clientFinished, 'record');
});

test('RFC 8448 §3: a record opened under the wrong sequence number or with one bit flipped fails', () => {
  const record = hex(v.records.clientFinished);
  const p = new RecordProtection(suite, hex(v.clientHandshakeTrafficSecret));
  assert.ok(p.tryOpen(record.subarray(0, 5), record.subarray(5)));
  // Sequence number is now 1: the same record no longer authenticates (§5.3 nonce).
  assert.equal(p.tryOpen(record.subarray(0, 5), record.subarray(5)), null);
  for (const at of [0, 3, 4, 5, 20, record.length - 1]) {
    const fresh = new RecordProtection(suite, hex(v.clientHandshakeTrafficSecret));
    const bad = Buffer.from(record);
    bad[at]! ^= 0x01;
    assert.equal(fresh.tryOpen(bad.subarray(0, 5), bad.subarray(5)), null, `flipped byte ${at}`);
  }
});

test('RFC 8448 §4: early secret, binder key and binder of the resumed ClientHello', () => {
  const early = new EarlySecrets('sha256', hex(r.psk));
  assertHex(early.earlySecret, r.earlySecret, 'early secret');
  const binderKey = early.resumptionBinderKey();
  assertHex(binderKey, r.binderKey, 'res binder key');
  const truncatedHash = sha256(hex(r.truncatedClientHello));
  assertHex(truncatedHash, r.truncatedClientHelloHash, 'truncated ClientHello hash');
  assertHex(hkdfExpandLabel('sha256', binderKey, 'finished', Buffer.alloc(0), 32), r.binderFinishedKey, 'binder finished key');
  assertHex(finishedVerifyData('sha256', binderKey, truncatedHash), r.binder, 'binder');
});

test('RFC 8448 §4: decodeClientHello finds the PSK offer and the binder truncation point', () => {
  const raw = hex(r.clientHello);
  const ch = decodeClientHello(raw);
  assert.equal(ch.serverName, 'server');
  assert.ok(ch.earlyData);
  assert.deepEqual(ch.supportedVersions, [0x0304]);
  assert.deepEqual(ch.keyShares?.map((s) => s.group), [NamedGroup.x25519]);
  assertHex(ch.keyShares![0]!.keyExchange, r.clientX25519Public, 'key share');
  assert.deepEqual(ch.pskKeyExchangeModes, [1]);
  assert.equal(ch.recordSizeLimit, 0x4001);
  assert.equal(ch.extensionOrder.at(-1), ExtensionType.pre_shared_key);
  const psk = ch.preSharedKey!;
  assert.equal(psk.identities.length, 1);
  assertHex(psk.identities[0]!.identity, r.ticket, 'ticket');
  assert.equal(psk.identities[0]!.obfuscatedTicketAge, r.obfuscatedTicketAge);
  assert.equal(psk.binders.length, 1);
  assertHex(psk.binders[0]!, r.binder, 'binder');
  // §4.2.11.2: the binder covers the ClientHello up to (not including) the binders list.
  assertHex(raw.subarray(0, psk.bindersOffset), r.truncatedClientHello, 'truncated ClientHello');
});

test('RFC 8448 §4: resumed handshake secrets and Finished', () => {
  const ch = hex(r.clientHello);
  const sh = hex(r.messages.serverHello!);
  const ee = hex(r.messages.encryptedExtensions!);
  const sf = hex(r.messages.serverFinished!);
  const hs = new EarlySecrets('sha256', hex(r.psk)).withSharedSecret(hex(r.sharedSecret));
  const helloHash1 = sha256(ch, sh);
  assertHex(hs.clientHandshakeTrafficSecret(helloHash1), r.clientHandshakeTrafficSecret, 'c hs traffic');
  assertHex(hs.serverHandshakeTrafficSecret(helloHash1), r.serverHandshakeTrafficSecret, 's hs traffic');
  assertHex(finishedVerifyData('sha256', hex(r.serverHandshakeTrafficSecret), sha256(ch, sh, ee)), r.serverFinishedVerifyData, 'server Finished');
  const afterServerFinished = sha256(ch, sh, ee, sf);
  const master = hs.master();
  assertHex(master.clientApplicationTrafficSecret(afterServerFinished), r.clientApplicationTrafficSecret, 'c ap traffic');
  assertHex(master.serverApplicationTrafficSecret(afterServerFinished), r.serverApplicationTrafficSecret, 's ap traffic');
  // The client's Finished covers EndOfEarlyData too (0-RTT accepted in the trace).
  const eoed = hex(r.messages.endOfEarlyData!);
  assertHex(finishedVerifyData('sha256', hex(r.clientHandshakeTrafficSecret), sha256(ch, sh, ee, sf, eoed)), r.clientFinishedVerifyData, 'client Finished');
  const cf = hex(r.messages.clientFinished!);
  assertHex(master.resumptionMasterSecret(sha256(ch, sh, ee, sf, eoed, cf)), r.resumptionMasterSecret, 'res master');
});

test('RFC 8448 §3: decodeClientHello reads the 1-RTT ClientHello', () => {
  const ch = decodeClientHello(hex(m.clientHello));
  assert.equal(ch.legacyVersion, 0x0303);
  assert.equal(ch.legacySessionId.length, 0);
  assert.deepEqual(ch.cipherSuites, [0x1301, 0x1303, 0x1302]);
  assert.equal(ch.serverName, 'server');
  assert.deepEqual(ch.supportedGroups, [0x001d, 0x0017, 0x0018, 0x0019, 0x0100, 0x0101, 0x0102, 0x0103, 0x0104]);
  assertHex(ch.keyShares![0]!.keyExchange, v.clientX25519Public, 'key share');
  assert.equal(ch.signatureAlgorithms?.length, 15);
  assert.equal(ch.preSharedKey, undefined);
  assert.equal(ch.earlyData, false);
  assert.ok(ch.extensions.has(ExtensionType.session_ticket), 'unknown-to-TLS-1.3 extension kept raw');
});
