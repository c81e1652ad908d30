/**
 * RFC 9345 in the engine: the Credential / DelegatedCredential codecs byte by byte against
 * the §4 structures, the signed content, the ClientHello extension, the Certificate
 * message with the credential in the end-entity entry (§4.1.1), and the engine's choice
 * (scheme fit, expiry on the engine's clock) in memory with the scripted client.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { decodeClientHello } from '../../src/tls/messages/client-hello.js';
import {
  decodeDelegatedCredential,
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
import { encodeClientHello, typicalExtensions } from './client-hello-builder.js';

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

test('ClientHello: delegated_credential (34) is a SignatureSchemeList; a malformed one is ignored as if absent', () => {
  const withDc = (body: Buffer) => encodeClientHello({ cipherSuites: [0x1301], extensions: [...typicalExtensions(), { type: 34, data: body }] });
  const hello = decodeClientHello(withDc(Buffer.from('0004' + '0403' + '0807', 'hex')));
  assert.deepEqual(hello.delegatedCredentialSchemes, [0x0403, 0x0807]);
  assert.equal(decodeClientHello(encodeClientHello({ cipherSuites: [0x1301], extensions: typicalExtensions() })).delegatedCredentialSchemes, undefined);
  for (const bad of ['', '0000', '0003040308', '000404030807ff']) {
    // Conformance suites send 34 as an unassigned extension with any body and expect it ignored.
    assert.equal(decodeClientHello(withDc(Buffer.from(bad, 'hex'))).delegatedCredentialSchemes, undefined, `body ${bad || '(empty)'}`);
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

async function engineWithCredential(now: () => number, notAfter: number) {
  const pki = await makeTestPki({ delegationUsage: 'non-critical' });
  const credentialKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  // The engine reads the schemes from the bytes; the signature need not verify for the engine's choice.
  const credential = encodeDelegatedCredential({
    credential: { validTime: 3600, dcCertVerifyAlgorithm: 0x0403, subjectPublicKeyInfo: credentialKey.publicKey.export({ format: 'der', type: 'spki' }) },
    algorithm: 0x0403,
    signature: Buffer.alloc(70, 1),
  });
  let certificateSigns = 0;
  const certificateSigner = new LocalSigner(pki.leafKey);
  const identity: Identity = {
    certificateChain: pki.chainDer,
    signer: { schemes: certificateSigner.schemes, sign: (r) => (certificateSigns++, certificateSigner.sign(r)) },
    delegatedCredential: { credential, signer: new LocalSigner(credentialKey.privateKey), notAfter },
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


