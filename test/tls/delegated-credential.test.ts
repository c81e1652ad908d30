/**
 * RFC 9345 in the engine: the Credential / DelegatedCredential codecs byte by byte against
 * the §4 structures, the signed content, the ClientHello extension, the Certificate
 * message with the credential in the end-entity entry (§4.1.1), and the engine's choice
 * (scheme fit, expiry on the engine's clock) in memory with the scripted client.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { decodeClientHello } from '../../src/tls/messages/client-hello.js';
import {
  decodeDelegatedCredential,
  decodeDelegatedCredentialExtension,
  delegatedCredentialSignedContent,
  encodeCredential,
  encodeDelegatedCredential,
} from '../../src/tls/messages/delegated-credential.js';
import { encodeCertificate } from '../../src/tls/messages/server-messages.js';
import { resolveOptions } from '../../src/tls/options.js';
import { LocalSigner, type Identity } from '../../src/tls/signer.js';
import { parseCertificateMessage, parseDelegatedCredential } from '../helpers/dc-verifier.js';
import { makeTestPki } from '../helpers/pki.js';
import { Tls13Client, memoryTransport } from '../helpers/tls13-client.js';
import { CipherSuite } from '../../src/tls/wire/codepoints.js';
import { tls12Extensions } from '../helpers/tls12-client.js';
import { assertAlert } from './alerts.js';
import { encodeClientHello, extensions, handshakeRecords, typicalExtensions } from './client-hello-builder.js';
import { makeOptions, run, type Outcome } from './connection-harness.js';

const SPKI = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004' + 'ab'.repeat(64), 'hex');

test('Credential: uint32 valid_time, u16 dc_cert_verify_algorithm, SPKI<1..2^24-1> (§4)', () => {
  const bytes = encodeCredential({ validTime: 0x01020304, dcCertVerifyAlgorithm: 0x0403, subjectPublicKeyInfo: SPKI });
  assert.equal(bytes.subarray(0, 9).toString('hex'), '01020304' + '0403' + '00005b');
  assert.deepEqual(bytes.subarray(9), SPKI);
  assert.equal(bytes.length, 9 + 91);
  assert.throws(() => encodeCredential({ validTime: 1, dcCertVerifyAlgorithm: 0x0403, subjectPublicKeyInfo: new Uint8Array(0) }), /1\.\.2\^24-1/);
  assert.throws(() => encodeCredential({ validTime: 2 ** 32, dcCertVerifyAlgorithm: 0x0403, subjectPublicKeyInfo: SPKI }), /uint32/);
});

test('DelegatedCredential: cred, u16 algorithm, signature<0..2^16-1> (§4); decode is the inverse and keeps the signed cred bytes', () => {
  const signature = Buffer.from('3045' + '11'.repeat(69), 'hex');
  const dc = { credential: { validTime: 3600, dcCertVerifyAlgorithm: 0x0403, subjectPublicKeyInfo: SPKI }, algorithm: 0x0804, signature };
  const bytes = encodeDelegatedCredential(dc);
  const expected = Buffer.concat([Buffer.from('00000e10' + '0403' + '00005b', 'hex'), SPKI, Buffer.from('0804' + '0047', 'hex'), signature]);
  assert.deepEqual(bytes, expected);
  const decoded = decodeDelegatedCredential(bytes);
  assert.equal(decoded.credential.validTime, 3600);
  assert.equal(decoded.credential.dcCertVerifyAlgorithm, 0x0403);
  assert.deepEqual(Buffer.from(decoded.credential.subjectPublicKeyInfo), SPKI);
  assert.equal(decoded.algorithm, 0x0804);
  assert.deepEqual(Buffer.from(decoded.signature), signature);
  assert.deepEqual(Buffer.from(decoded.credentialBytes), bytes.subarray(0, 9 + SPKI.length));
  // The independent parser in the tests reads the same fields.
  const independent = parseDelegatedCredential(bytes);
  assert.equal(independent.validTime, 3600);
  assert.deepEqual(independent.credentialBytes, bytes.subarray(0, 9 + SPKI.length));
  // An empty signature is allowed by the struct (<0..2^16-1>).
  assert.equal(decodeDelegatedCredential(encodeDelegatedCredential({ ...dc, signature: new Uint8Array(0) })).signature.length, 0);
});

test('DelegatedCredential decoding: every truncation and trailing bytes are refused', () => {
  const bytes = encodeDelegatedCredential({ credential: { validTime: 1, dcCertVerifyAlgorithm: 0x0403, subjectPublicKeyInfo: SPKI }, algorithm: 0x0403, signature: Buffer.alloc(8, 7) });
  for (let n = 0; n < bytes.length; n++) assert.throws(() => decodeDelegatedCredential(bytes.subarray(0, n)), /truncated|DelegatedCredential/, `prefix ${n}`);
  assert.throws(() => decodeDelegatedCredential(Buffer.concat([bytes, Buffer.of(0)])), /DelegatedCredential/);
  // A zero-length SPKI violates <1..2^24-1>.
  assert.throws(() => decodeDelegatedCredential(Buffer.from('00000001' + '0403' + '000000' + '0403' + '0000', 'hex')));
});

test('signed content (§4): 64 × 0x20, "TLS, server delegated credentials", 0x00, certificate, cred, algorithm', () => {
  const cert = Buffer.from('30820102deadbeef', 'hex');
  const cred = encodeCredential({ validTime: 60, dcCertVerifyAlgorithm: 0x0403, subjectPublicKeyInfo: SPKI });
  const content = delegatedCredentialSignedContent(cert, cred, 0x0804);
  const expected = Buffer.concat([
    Buffer.from(' '.repeat(64), 'ascii'),
    Buffer.from('544c532c207365727665722064656c6567617465642063726564656e7469616c73', 'hex'), // "TLS, server delegated credentials"
    Buffer.of(0),
    cert,
    cred,
    Buffer.of(0x08, 0x04),
  ]);
  assert.deepEqual(content, expected);
});

/** Malformed delegated_credential bodies (RFC 9345 §4.1.1: SignatureScheme supported_signature_algorithm<2..2^16-2>). */
const MALFORMED_DC_BODIES: readonly (readonly [string, string])[] = [
  ['zero-length extension', ''],
  ['empty list', '0000'],
  ['odd list length', '0003040308'],
  ['length field longer than the body', '0006' + '0403' + '0807'],
  ['length field shorter than the body', '0002' + '0403' + '0807'],
  ['trailing bytes after the list', '0004' + '0403' + '0807' + 'ff'],
  ['a single byte', '00'],
];

test('ClientHello: delegated_credential (34) is a SignatureSchemeList; every malformed body is decode_error', () => {
  const schemes = (body: string) => decodeDelegatedCredentialExtension(Buffer.from(body, 'hex'));
  assert.deepEqual(schemes('0004' + '0403' + '0807'), [0x0403, 0x0807]);
  for (const [what, body] of MALFORMED_DC_BODIES) assertAlert(() => schemes(body), 'decode_error', what);
  // The ClientHello decoder keeps the body raw: it is read only once TLS 1.3 is negotiated
  // (§4.1.1: a server MUST ignore the extension below TLS 1.3).
  const hello = decodeClientHello(encodeClientHello({ cipherSuites: [0x1301], extensions: [...typicalExtensions(), { type: 34, data: Buffer.of(0xff) }] }));
  assert.deepEqual(Buffer.from(hello.extensions.get(34)!), Buffer.of(0xff));
});

/** An ECDSA P-256 identity with opaque chain bytes (the engine never parses certificates). */
function ecdsaIdentity(): Identity {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { certificateChain: [randomBytes(300)], signer: new LocalSigner(privateKey) };
}

const DECODE_ERROR = 50; // RFC 8446 §6
const serverHelloSent = (o: Outcome) => Buffer.concat(o.sent)[0] === 22 && Buffer.concat(o.sent)[5] === 2;

test('engine, TLS 1.3: a malformed delegated_credential ends the handshake with decode_error (RFC 8446 §6.2), a well-formed one proceeds', async () => {
  const options = makeOptions(ecdsaIdentity());
  const hello = (body: string) =>
    handshakeRecords(encodeClientHello({ cipherSuites: [0x1301], extensions: [...typicalExtensions(), { type: 34, data: Buffer.from(body, 'hex') }] }));
  for (const [what, body] of MALFORMED_DC_BODIES) {
    const o = await run(options, [hello(body)]);
    assert.deepEqual(o.foreignErrors, [], what);
    assert.deepEqual(o.events.map((e) => (e.kind === 'error' ? e.alert : e.kind)), [DECODE_ERROR], what);
    assert.ok(!serverHelloSent(o), `${what}: no ServerHello`);
    assert.deepEqual(Buffer.concat(o.sent), Buffer.from([21, 3, 3, 0, 2, 2, DECODE_ERROR]), `${what}: a plaintext fatal decode_error alert`);
  }
  // Positive control: the same ClientHello with a well-formed list gets the server flight.
  const ok = await run(options, [hello('0004' + '0403' + '0807')]);
  assert.deepEqual(ok.events, [], 'no error');
  assert.ok(serverHelloSent(ok), 'ServerHello');
  // A ClientHello that needs a HelloRetryRequest (no key share) is refused before the HRR.
  const noShare = (body: string) =>
    handshakeRecords(
      encodeClientHello({
        cipherSuites: [0x1301],
        extensions: [...typicalExtensions().map((e) => (e.type === 51 ? extensions.keyShare([]) : e)), { type: 34, data: Buffer.from(body, 'hex') }],
      }),
    );
  const refusedBeforeRetry = await run(options, [noShare('0003040308')]);
  assert.deepEqual(refusedBeforeRetry.events.map((e) => (e.kind === 'error' ? e.alert : e.kind)), [DECODE_ERROR]);
  assert.deepEqual(Buffer.concat(refusedBeforeRetry.sent), Buffer.from([21, 3, 3, 0, 2, 2, DECODE_ERROR]), 'no HelloRetryRequest, only the alert');
  const retried = await run(options, [noShare('0004' + '0403' + '0807')]);
  assert.deepEqual(retried.events, [], 'well-formed: no error');
  assert.ok(serverHelloSent(retried), 'HelloRetryRequest (a ServerHello with the HRR random)');
});

test('engine, TLS 1.2: the delegated_credential extension is ignored whatever its body (RFC 9345 §4.1.1)', async () => {
  const options = makeOptions(ecdsaIdentity());
  const hello = (body: string | undefined) =>
    handshakeRecords(
      encodeClientHello({
        cipherSuites: [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256],
        extensions: [...tls12Extensions(), ...(body === undefined ? [] : [{ type: 34, data: Buffer.from(body, 'hex') }])],
      }),
    );
  const baseline = await run(options, [hello(undefined)]);
  assert.deepEqual(baseline.events, [], 'no error without the extension');
  assert.ok(serverHelloSent(baseline));
  for (const [what, body] of [...MALFORMED_DC_BODIES, ['well-formed', '0004' + '0403' + '0807'] as const]) {
    const o = await run(options, [hello(body)]);
    assert.deepEqual(o.foreignErrors, [], what);
    assert.deepEqual(o.events, [], `${what}: no error`);
    assert.ok(serverHelloSent(o), `${what}: ServerHello`);
  }
});

test('Certificate message: the credential rides in the end-entity entry only (§4.1.1)', () => {
  const leaf = Buffer.from('aaaa', 'hex');
  const ca = Buffer.from('bbbbbb', 'hex');
  const dc = Buffer.from('0102030405', 'hex');
  const message = encodeCertificate([leaf, ca], [{ type: 34, data: dc }]);
  const expected = Buffer.from(
    '0b' + '00001c' + '00' + '000018' + '000002' + 'aaaa' + '0009' + '0022' + '0005' + '0102030405' + '000003' + 'bbbbbb' + '0000',
    'hex',
  );
  assert.deepEqual(message, expected);
  const entries = parseCertificateMessage(message);
  assert.deepEqual(entries[0]!.extensions.get(34), dc);
  assert.equal(entries[1]!.extensions.size, 0);
});

/**
 * The credential's two schemes (§4: dc_cert_verify_algorithm, the credential key's; algorithm,
 * the certificate key's signature over it) and its key type: by default a P-256 credential
 * (0x0403) signed with 0x0403 by the P-256 certificate; `signerKey` replaces the key its
 * signer holds (one that does not fit the credential).
 */
interface CredentialShape {
  dcCertVerifyAlgorithm: number;
  algorithm: number;
  key: 'p256' | 'ed25519';
  signerKey?: 'p256' | 'ed25519';
}

const keyPair = (type: 'p256' | 'ed25519') => (type === 'p256' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('ed25519'));

async function engineWithCredential(now: () => number, notAfter: number, shape: CredentialShape = { dcCertVerifyAlgorithm: 0x0403, algorithm: 0x0403, key: 'p256' }) {
  const pki = await makeTestPki({ delegationUsage: 'non-critical' });
  const credentialKey = keyPair(shape.key);
  // The engine reads the schemes from the bytes; the signature need not verify for the engine's choice.
  const credential = encodeDelegatedCredential({
    credential: { validTime: 3600, dcCertVerifyAlgorithm: shape.dcCertVerifyAlgorithm, subjectPublicKeyInfo: credentialKey.publicKey.export({ format: 'der', type: 'spki' }) },
    algorithm: shape.algorithm,
    signature: Buffer.alloc(70, 1),
  });
  let certificateSigns = 0;
  const certificateSigner = new LocalSigner(pki.leafKey);
  const signerKey = shape.signerKey && shape.signerKey !== shape.key ? keyPair(shape.signerKey).privateKey : credentialKey.privateKey;
  const identity: Identity = {
    certificateChain: pki.chainDer,
    signer: { schemes: certificateSigner.schemes, sign: (r) => (certificateSigns++, certificateSigner.sign(r)) },
    delegatedCredential: { credential, signer: new LocalSigner(signerKey), notAfter },
  };
  const options = resolveOptions({ resolveIdentity: () => identity, ticketCount: 0 });
  return { options, now, credentialKey, pki, signs: () => certificateSigns };
}

test('engine: a credential is used only for a fitting offer and before notAfter on the engine clock', async () => {
  let clock = 1_000_000;
  const e = await engineWithCredential(() => clock, 1_000_000 + 60_000);
  const run = async (dc: number[] | undefined) => {
    const transport = memoryTransport(e.options, e.now);
    const client = new Tls13Client(transport, { serverName: 'localhost', ...(dc ? { delegatedCredentialSchemes: dc } : {}) });
    await client.handshake();
    return { entries: parseCertificateMessage(client.authentication!.certificate), server: transport.server };
  };
  const used = await run([0x0403]);
  assert.ok(used.entries[0]!.extensions.has(34));
  assert.equal(used.server.conn.info.delegatedCredential, true);
  assert.equal(e.signs(), 0, 'the certificate signer was not asked');
  const noOffer = await run(undefined);
  assert.equal(noOffer.entries[0]!.extensions.size, 0);
  assert.equal(noOffer.server.conn.info.delegatedCredential, false);
  const otherScheme = await run([0x0807]);
  assert.equal(otherScheme.entries[0]!.extensions.size, 0);
  assert.equal(e.signs(), 2);
  clock += 60_000; // notAfter reached
  const expired = await run([0x0403]);
  assert.equal(expired.entries[0]!.extensions.size, 0, 'an expired credential is not sent');
  assert.equal(e.signs(), 3);
});



/** A handshake with the scripted client; whether the server sent its credential (§4.1.1). */
async function credentialSent(e: Awaited<ReturnType<typeof engineWithCredential>>, dc: number[], signatureAlgorithms?: number[]): Promise<boolean> {
  const transport = memoryTransport(e.options, e.now);
  const client = new Tls13Client(transport, { serverName: 'localhost', delegatedCredentialSchemes: dc, ...(signatureAlgorithms ? { signatureAlgorithms } : {}) });
  await client.handshake();
  assert.equal(transport.server.error, undefined);
  const sent = parseCertificateMessage(client.authentication!.certificate)[0]!.extensions.has(34);
  assert.equal(transport.server.conn.info.delegatedCredential, sent);
  return sent;
}

test("engine: an Ed25519 credential certified with 0x0403 is not sent to a client whose delegated_credential list has 0x0403 but not 0x0807 (§4.1.1: the credential's scheme must be offered)", async () => {
  const e = await engineWithCredential(() => 1_000_000, 1_000_000 + 60_000, { dcCertVerifyAlgorithm: 0x0807, algorithm: 0x0403, key: 'ed25519' });
  assert.equal(await credentialSent(e, [0x0403]), false);
  assert.equal(await credentialSent(e, [0x0807, 0x0403]), true, 'control: with 0x0807 offered it is sent');
});

test("engine: a credential certified with 0x0503 is not sent to a client whose signature_algorithms lacks 0x0503 (§4.1.1)", async () => {
  // The certificate's own scheme (0x0403) stays in signature_algorithms, so the handshake can fall back to it.
  const e = await engineWithCredential(() => 1_000_000, 1_000_000 + 60_000, { dcCertVerifyAlgorithm: 0x0403, algorithm: 0x0503, key: 'p256' });
  assert.equal(await credentialSent(e, [0x0403, 0x0503], [0x0403, 0x0807]), false);
  assert.equal(await credentialSent(e, [0x0403, 0x0503], [0x0403, 0x0503]), true, 'control: with 0x0503 in signature_algorithms it is sent');
});

test("engine: a credential whose signer cannot sign the credential's scheme (an Ed25519 credential, a P-256 signer) is not used", async () => {
  const e = await engineWithCredential(() => 1_000_000, 1_000_000 + 60_000, { dcCertVerifyAlgorithm: 0x0807, algorithm: 0x0403, key: 'ed25519', signerKey: 'p256' });
  assert.equal(await credentialSent(e, [0x0807, 0x0403]), false);
  // Control: the same offer with a fitting signer is the first test's control.
});
