/**
 * keyd's TLS 1.2 ServerKeyExchange (0x04) and raw handshake content (0x05) operations,
 * end to end through a running keyd: each refusal (the attack) beside a positive control
 * whose signature verifies with node:crypto over content this test builds from the RFCs.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { KeydClient, type KeydIdentity } from '../../src/keyd/client.js';
import type { RunningKeyd } from '../../src/keyd/daemon.js';
import {
  FrameDecoder,
  Opcode,
  decodeError,
  decodeSignature,
  encodeFrame,
  encodeHandshakeContentRequest,
  encodeServerKeyExchangeRequest,
  encodeSignRequest,
} from '../../src/keyd/protocol.js';
import { LOCAL, makeIdentity, scratch, startTestKeyd, verifyCertificateVerify, type TestKeyType } from './fixtures.js';
import {
  CONTENT_REFUSALS,
  GROUP,
  certificateVerifyContentFromRfc,
  ecdhParams,
  nistPoint,
  notOnCurve,
  serverKeyExchangeContentFromRfc,
  serverRandom,
  verifyTlsSignature,
  x25519Point,
} from './handshake-content-fixtures.js';

let s: Awaited<ReturnType<typeof scratch>>;
let keyd: RunningKeyd;
let client: KeydClient;
/** A second keyd whose operator allows TLS 1.2-only servers (no downgrade sentinel). */
let tls12OnlyKeyd: RunningKeyd;
let tls12OnlyClient: KeydClient;

const identities = new Map<TestKeyType, { name: string; identity: KeydIdentity; chain: Uint8Array[] }>();
const KEY_TYPES: TestKeyType[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa2048', 'ed25519'];

before(async () => {
  s = await scratch();
  keyd = await startTestKeyd(s.dir, s.machineIdPath);
  await mkdir(join(s.dir, 'tls12-only'));
  tls12OnlyKeyd = await startTestKeyd(join(s.dir, 'tls12-only'), s.machineIdPath, { config: { allowTls12OnlyServers: true } });
  client = await KeydClient.connect({ socketPath: keyd.socketPath });
  tls12OnlyClient = await KeydClient.connect({ socketPath: tls12OnlyKeyd.socketPath });
  for (const keyType of KEY_TYPES) {
    const name = `${keyType}.ske.test`;
    const id = await makeIdentity(keyType, [name]);
    await keyd.adminService.put(LOCAL, [name], id.privateKey, id.chain);
    await tls12OnlyKeyd.adminService.put(LOCAL, [name], id.privateKey, id.chain);
    identities.set(keyType, { name, identity: (await client.identity(name))!, chain: id.chain });
  }
});

after(async () => {
  client?.close();
  tls12OnlyClient?.close();
  await keyd?.close();
  await tls12OnlyKeyd?.close();
  await s?.cleanup();
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { code: string }).code;
  }
  return 'signed';
}

function key(keyType: TestKeyType) {
  return identities.get(keyType)!;
}

const params = {
  x25519: () => ecdhParams(GROUP.x25519, x25519Point()),
  secp256r1: () => ecdhParams(GROUP.secp256r1, nistPoint('prime256v1')),
  secp384r1: () => ecdhParams(GROUP.secp384r1, nistPoint('secp384r1')),
};

/** Sends one raw frame on a fresh connection; resolves with the reply payload or rejects with the error. */
function rawRequest(path: string, opcode: number, payload: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const sock = connect({ path }, () => sock.write(encodeFrame(opcode, 9, payload)));
    const decoder = new FrameDecoder();
    sock.on('data', (chunk) => {
      for (const frame of decoder.push(chunk)) {
        sock.destroy();
        if (frame.opcode === Opcode.error) reject(decodeError(frame.payload));
        else resolve(decodeSignature(frame.payload));
      }
    });
    sock.on('error', reject);
  });
}

test('identity lists TLS 1.2 schemes: the TLS 1.3 ones, plus rsa_pkcs1_sha256/384/512 for RSA only; ECDSA with any SHA-2 hash', () => {
  // A TLS 1.2 ECDSA scheme names only its hash (RFC 5246 §7.4.1.4.1): the curve's own hash
  // first, then SHA-384/512 and SHA-224; SHA-1 never (RFC 9155).
  assert.deepEqual(key('ecdsa-p256').identity.tls12Schemes, [0x0403, 0x0503, 0x0603, 0x0303]);
  assert.deepEqual(key('ed25519').identity.tls12Schemes, [0x0807]);
  const rsa = key('rsa2048').identity;
  assert.deepEqual(rsa.schemes, [0x0804, 0x0805, 0x0806], 'no PKCS#1 for TLS 1.3');
  assert.deepEqual([...rsa.tls12Schemes!].sort(), [0x0401, 0x0501, 0x0601, 0x0804, 0x0805, 0x0806]);
});

test('signServerKeyExchange: every key type, TLS 1.2 scheme and group signs exactly client_random + server_random + ServerECDHParams', async () => {
  for (const keyType of KEY_TYPES) {
    const { name, identity } = key(keyType);
    for (const scheme of identity.tls12Schemes!) {
      for (const [group, makeParams] of Object.entries(params)) {
        const clientRandom = randomBytes(32);
        const sr = serverRandom(true);
        const p = makeParams();
        const signature = await client.signServerKeyExchange(identity.keyRef, name, scheme, clientRandom, sr, p);
        const content = serverKeyExchangeContentFromRfc(clientRandom, sr, p);
        const what = `${keyType} 0x${scheme.toString(16)} ${group}`;
        assert.ok(verifyTlsSignature(identity.certificateChain[0]!, scheme, content, signature), what);
        // Not over anything else: the randoms swapped do not verify.
        assert.equal(verifyTlsSignature(identity.certificateChain[0]!, scheme, serverKeyExchangeContentFromRfc(sr, clientRandom, p), signature), false, what);
      }
    }
  }
});

test('the engine-facing Signer maps tls12-server-key-exchange to keyd (0x04) and tls13-certificate-verify to 0x03', async () => {
  const { name, identity } = key('rsa2048');
  const signer = client.signer(identity, name);
  assert.deepEqual(signer.tls12Schemes, identity.tls12Schemes);
  const clientRandom = randomBytes(32);
  const sr = serverRandom(true);
  const p = params.secp256r1();
  const ske = await signer.sign({ kind: 'tls12-server-key-exchange', scheme: 0x0401, clientRandom, serverRandom: sr, serverParams: p });
  assert.ok(verifyTlsSignature(identity.certificateChain[0]!, 0x0401, serverKeyExchangeContentFromRfc(clientRandom, sr, p), ske));
  const hash = createHash('sha256').update('transcript').digest();
  const cv = await signer.sign({ kind: 'tls13-certificate-verify', scheme: 0x0804, transcriptHash: hash });
  assert.ok(verifyCertificateVerify(identity.certificateChain[0]!, 0x0804, hash, cv));
  // PKCS#1 for TLS 1.3 is refused by keyd, whatever the engine asks.
  assert.equal(await code(signer.sign({ kind: 'tls13-certificate-verify', scheme: 0x0401, transcriptHash: hash })), 'KEYD_SCHEME_FORBIDDEN');
});

test('refused: server_random without the downgrade sentinel (policy on); accepted when the operator allows TLS 1.2-only servers', async () => {
  const { name, identity } = key('ecdsa-p256');
  const clientRandom = randomBytes(32);
  const noSentinel = serverRandom(false);
  const p = params.x25519();
  assert.equal(await code(client.signServerKeyExchange(identity.keyRef, name, 0x0403, clientRandom, noSentinel, p)), 'KEYD_NO_DOWNGRADE_SENTINEL');
  // The same request with the sentinel: signed.
  const sr = serverRandom(true);
  const signed = await client.signServerKeyExchange(identity.keyRef, name, 0x0403, clientRandom, sr, p);
  assert.ok(verifyTlsSignature(identity.certificateChain[0]!, 0x0403, serverKeyExchangeContentFromRfc(clientRandom, sr, p), signed));
  // A keyd configured with allowTls12OnlyServers signs the sentinel-less one.
  const other = (await tls12OnlyClient.identity(name))!;
  const allowed = await tls12OnlyClient.signServerKeyExchange(other.keyRef, name, 0x0403, clientRandom, noSentinel, p);
  assert.ok(verifyTlsSignature(identity.certificateChain[0]!, 0x0403, serverKeyExchangeContentFromRfc(clientRandom, noSentinel, p), allowed));
});

test('refused: points of the wrong length or off the curve, unknown curves, curve_type not 3, trailing bytes', async () => {
  const { name, identity } = key('ecdsa-p256');
  const clientRandom = randomBytes(32);
  const sr = serverRandom(true);
  const p256 = nistPoint('prime256v1');
  const explicitCurve = params.secp256r1();
  explicitCurve[0] = 1;
  const cases: Array<[string, Buffer, string]> = [
    ['secp256r1 point of 64 bytes', ecdhParams(GROUP.secp256r1, p256.subarray(0, 64)), 'KEYD_BAD_ECDH_PARAMS'],
    ['x25519 point of 65 bytes', ecdhParams(GROUP.x25519, p256), 'KEYD_BAD_ECDH_PARAMS'],
    ['secp384r1 point off the curve', ecdhParams(GROUP.secp384r1, notOnCurve(nistPoint('secp384r1'))), 'KEYD_BAD_ECDH_PARAMS'],
    ['secp256r1 point off the curve', ecdhParams(GROUP.secp256r1, notOnCurve(p256)), 'KEYD_BAD_ECDH_PARAMS'],
    ['secp521r1 (unknown curve)', ecdhParams(0x0019, p256), 'KEYD_UNSUPPORTED_GROUP'],
    ['x448 (unknown curve)', ecdhParams(0x001e, x25519Point()), 'KEYD_UNSUPPORTED_GROUP'],
    ['curve_type explicit_prime', explicitCurve, 'KEYD_BAD_ECDH_PARAMS'],
    ['one trailing byte', Buffer.concat([ecdhParams(GROUP.secp256r1, p256), Buffer.of(0)]), 'KEYD_BAD_ECDH_PARAMS'],
    ['a second point', Buffer.concat([ecdhParams(GROUP.x25519, x25519Point()), ecdhParams(GROUP.x25519, x25519Point())]), 'KEYD_BAD_ECDH_PARAMS'],
  ];
  const refusals = async () => (await keyd.adminService.stats(LOCAL)).local?.keys[identity.keyRef]?.refusals ?? 0;
  const refusalsBefore = await refusals();
  for (const [what, bad, expected] of cases) {
    assert.equal(await code(client.signServerKeyExchange(identity.keyRef, name, 0x0403, clientRandom, sr, bad)), expected, what);
  }
  // Positive control: the same request with a valid point is signed.
  const good = ecdhParams(GROUP.secp256r1, p256);
  const signature = await client.signServerKeyExchange(identity.keyRef, name, 0x0403, clientRandom, sr, good);
  assert.ok(verifyTlsSignature(identity.certificateChain[0]!, 0x0403, serverKeyExchangeContentFromRfc(clientRandom, sr, good), signature));
  // Every refusal is counted against this client and key, as for signCertificateVerify.
  assert.equal((await refusals()) - refusalsBefore, cases.length, 'each refusal counted against the local principal and this key');
});

test('refused: SHA-1 schemes for the ServerKeyExchange, rsa_pkcs1 for a TLS 1.3 CertificateVerify (0x03)', async () => {
  const rsa = key('rsa2048');
  const ec = key('ecdsa-p256');
  const clientRandom = randomBytes(32);
  const sr = serverRandom(true);
  const p = params.secp256r1();
  assert.equal(await code(client.signServerKeyExchange(rsa.identity.keyRef, rsa.name, 0x0201, clientRandom, sr, p)), 'KEYD_SCHEME_FORBIDDEN', 'rsa_pkcs1_sha1');
  assert.equal(await code(client.signServerKeyExchange(ec.identity.keyRef, ec.name, 0x0203, clientRandom, sr, p)), 'KEYD_SCHEME_FORBIDDEN', 'ecdsa_sha1');
  assert.equal(await code(client.signServerKeyExchange(ec.identity.keyRef, ec.name, 0x0401, clientRandom, sr, p)), 'KEYD_SCHEME_UNSUPPORTED', 'PKCS#1 for an EC key');
  const hash = createHash('sha256').update('t').digest();
  for (const scheme of [0x0401, 0x0501, 0x0601]) {
    assert.equal(await code(client.sign(rsa.identity.keyRef, rsa.name, scheme, hash)), 'KEYD_SCHEME_FORBIDDEN', `0x${scheme.toString(16)} via 0x03`);
  }
  assert.equal(await code(client.sign(rsa.identity.keyRef, rsa.name, 0x0201, hash)), 'KEYD_SCHEME_FORBIDDEN');
  // Controls: rsa_pkcs1_sha256 signs the TLS 1.2 content; PSS signs the TLS 1.3 one.
  const ske = await client.signServerKeyExchange(rsa.identity.keyRef, rsa.name, 0x0401, clientRandom, sr, p);
  assert.ok(verifyTlsSignature(rsa.identity.certificateChain[0]!, 0x0401, serverKeyExchangeContentFromRfc(clientRandom, sr, p), ske));
  const cv = await client.sign(rsa.identity.keyRef, rsa.name, 0x0804, hash);
  assert.ok(verifyCertificateVerify(rsa.identity.certificateChain[0]!, 0x0804, hash, cv));
});

test('refused: a TLS 1.3 transcript hash sent as TLS 1.2 content (0x04) and TLS 1.2 content sent as a transcript hash (0x03)', async () => {
  const { name, identity } = key('ecdsa-p256');
  for (const hash of [createHash('sha256').update('t').digest(), createHash('sha384').update('t').digest()]) {
    const asSke = encodeServerKeyExchangeRequest(identity.keyRef, name, 0x0403, hash);
    assert.equal(await code(rawRequest(keyd.socketPath, Opcode.signServerKeyExchange, asSke)), 'KEYD_BAD_ECDH_PARAMS', `${hash.length}-byte hash via 0x04`);
    // The whole TLS 1.3 content via 0x04 is not TLS 1.2 content either.
    const asSkeContent = encodeServerKeyExchangeRequest(identity.keyRef, name, 0x0403, certificateVerifyContentFromRfc(hash));
    assert.ok(CONTENT_REFUSALS.includes(await code(rawRequest(keyd.socketPath, Opcode.signServerKeyExchange, asSkeContent))), 'TLS 1.3 content via 0x04');
    // Control: the same hash via 0x03 is signed.
    const signature = await rawRequest(keyd.socketPath, Opcode.signCertificateVerify, encodeSignRequest(identity.keyRef, name, 0x0403, hash));
    assert.ok(verifyCertificateVerify(identity.certificateChain[0]!, 0x0403, hash, signature));
  }
  const content = serverKeyExchangeContentFromRfc(randomBytes(32), serverRandom(true), params.x25519());
  assert.equal(await code(rawRequest(keyd.socketPath, Opcode.signCertificateVerify, encodeSignRequest(identity.keyRef, name, 0x0403, content))), 'KEYD_BAD_HASH_LENGTH', 'TLS 1.2 content via 0x03');
  // Control: that content via 0x04 is signed.
  const signature = await rawRequest(keyd.socketPath, Opcode.signServerKeyExchange, encodeServerKeyExchangeRequest(identity.keyRef, name, 0x0403, content));
  assert.ok(verifyTlsSignature(identity.certificateChain[0]!, 0x0403, content, signature));
});

test('signHandshakeContent: both legal shapes are signed; a digest, random bytes and the client context are refused', async () => {
  const ec = key('ecdsa-p256');
  const rsa = key('rsa2048');
  const hash = createHash('sha384').update('transcript').digest();
  const tls13 = certificateVerifyContentFromRfc(hash);
  const tls12 = serverKeyExchangeContentFromRfc(randomBytes(32), serverRandom(true), params.secp384r1());
  const sign = (k: typeof ec, scheme: number, content: Uint8Array) => client.signHandshakeContent(k.identity.keyRef, k.name, scheme, content);

  assert.ok(verifyCertificateVerify(ec.identity.certificateChain[0]!, 0x0403, hash, await sign(ec, 0x0403, tls13)), 'TLS 1.3 content, ECDSA');
  assert.ok(verifyCertificateVerify(rsa.identity.certificateChain[0]!, 0x0805, hash, await sign(rsa, 0x0805, tls13)), 'TLS 1.3 content, RSA-PSS');
  assert.ok(verifyTlsSignature(ec.identity.certificateChain[0]!, 0x0403, tls12, await sign(ec, 0x0403, tls12)), 'TLS 1.2 content, ECDSA');
  assert.ok(verifyTlsSignature(rsa.identity.certificateChain[0]!, 0x0601, tls12, await sign(rsa, 0x0601, tls12)), 'TLS 1.2 content, RSA PKCS#1');

  const digest = createHash('sha256').update('anything').digest();
  const random100 = randomBytes(100);
  random100[64] = 0x30; // not curve_type 3: this content is not even shaped like TLS 1.2
  assert.equal(await code(sign(ec, 0x0403, digest)), 'KEYD_NOT_HANDSHAKE_CONTENT', '32-byte digest');
  assert.equal(await code(sign(ec, 0x0403, random100)), 'KEYD_NOT_HANDSHAKE_CONTENT', '100 random bytes');
  random100[64] = 3; // shaped like TLS 1.2 at byte 64, but not a valid content
  assert.ok(CONTENT_REFUSALS.includes(await code(sign(ec, 0x0403, random100))), '100 random bytes with curve_type 3');
  const clientContext = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify', 'ascii'), Buffer.of(0), hash]);
  assert.equal(await code(sign(ec, 0x0403, clientContext)), 'KEYD_NOT_HANDSHAKE_CONTENT', 'client CertificateVerify content');
  assert.equal(await code(sign(ec, 0x0403, Buffer.concat([tls13, Buffer.of(0)]))), 'KEYD_BAD_HASH_LENGTH', 'TLS 1.3 content + 1 byte');
  assert.equal(await code(sign(ec, 0x0403, Buffer.concat([tls12, Buffer.of(0)]))), 'KEYD_BAD_ECDH_PARAMS', 'TLS 1.2 content + 1 byte');
  // A transcript hash where the TLS 1.2 parameters belong, and TLS 1.2 content where the TLS 1.3 hash belongs.
  const randoms = Buffer.concat([randomBytes(32), serverRandom(true)]);
  for (const h of [createHash('sha256').update('t').digest(), hash]) {
    assert.ok(CONTENT_REFUSALS.includes(await code(sign(ec, 0x0403, Buffer.concat([randoms, h])))), `randoms + ${h.length}-byte hash`);
  }
  assert.equal(await code(sign(ec, 0x0403, Buffer.concat([certificateVerifyContentFromRfc(new Uint8Array(0)), tls12]))), 'KEYD_BAD_HASH_LENGTH', 'TLS 1.3 prefix + TLS 1.2 content');
  const noSentinel = serverKeyExchangeContentFromRfc(randomBytes(32), serverRandom(false), params.x25519());
  assert.equal(await code(sign(ec, 0x0403, noSentinel)), 'KEYD_NO_DOWNGRADE_SENTINEL');
  // Scheme rules follow the kind found: PKCS#1 for the TLS 1.2 content only.
  assert.equal(await code(sign(rsa, 0x0401, tls13)), 'KEYD_SCHEME_FORBIDDEN', 'PKCS#1 over TLS 1.3 content');
  assert.equal(await code(sign(rsa, 0x0201, tls12)), 'KEYD_SCHEME_FORBIDDEN', 'SHA-1 over TLS 1.2 content');
  // Through the raw opcode, an empty content does not even decode.
  assert.equal(await code(rawRequest(keyd.socketPath, Opcode.signHandshakeContent, encodeHandshakeContentRequest(ec.identity.keyRef, ec.name, 0x0403, new Uint8Array(0)))), 'KEYD_BAD_REQUEST');
});

test('signHandshakeContent and signServerKeyExchange obey the grants: a key reference is not a capability', async () => {
  const ec = key('ecdsa-p256');
  const other = key('ed25519');
  const content = serverKeyExchangeContentFromRfc(randomBytes(32), serverRandom(true), params.x25519());
  // ecdsa-p256's key for ed25519's name: refused before any content is looked at.
  assert.equal(await code(client.signHandshakeContent(ec.identity.keyRef, other.name, 0x0403, content)), 'KEYD_NOT_AUTHORISED');
  assert.equal(await code(client.signServerKeyExchange(ec.identity.keyRef, other.name, 0x0403, content.subarray(0, 32), content.subarray(32, 64), content.subarray(64))), 'KEYD_NOT_AUTHORISED');
  assert.equal(await code(client.signHandshakeContent('no-such-key', ec.name, 0x0403, content)), 'KEYD_UNKNOWN_KEY');
  // Control.
  assert.ok(verifyTlsSignature(ec.identity.certificateChain[0]!, 0x0403, content, await client.signHandshakeContent(ec.identity.keyRef, ec.name, 0x0403, content)));
});
