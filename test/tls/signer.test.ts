import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { LocalSigner, type SignRequest } from '../../src/tls/index.js';
import { certificateVerifyContent } from '../../src/tls/signer.js';
import { SignatureScheme } from '../../src/tls/wire/codepoints.js';

const SERVER_CONTEXT = 'TLS 1.3, server CertificateVerify';

/** RFC 8446 §4.4.3 content, written here from the RFC's text (not the engine's helper). */
function tls13Content(hash: Buffer): Buffer {
  return Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from(SERVER_CONTEXT, 'latin1'), Buffer.of(0), hash]);
}

function ecdheParams(): Buffer {
  // RFC 8422 §5.4: curve_type named_curve(3), secp256r1 (23), a 65-byte uncompressed point.
  return Buffer.concat([Buffer.of(3, 0, 23, 65, 4), randomBytes(64)]);
}

test('LocalSigner: TLS 1.3 CertificateVerify is signed over the §4.4.3 content; PKCS#1 is refused there', async () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signer = new LocalSigner(privateKey);
  assert.ok(!signer.schemes.includes(SignatureScheme.rsa_pkcs1_sha256), 'no PKCS#1 in TLS 1.3 schemes');
  assert.ok(signer.tls12Schemes.includes(SignatureScheme.rsa_pkcs1_sha256), 'PKCS#1 offered for TLS 1.2');
  const hash = randomBytes(32);
  const sig = await signer.sign({ kind: 'tls13-certificate-verify', scheme: SignatureScheme.rsa_pss_rsae_sha256, transcriptHash: hash });
  assert.ok(verify('sha256', tls13Content(hash), { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig));
  await assert.rejects(
    signer.sign({ kind: 'tls13-certificate-verify', scheme: SignatureScheme.rsa_pkcs1_sha256, transcriptHash: hash }),
    /cannot sign a TLS 1.3 CertificateVerify/,
  );
});

test('LocalSigner: TLS 1.2 ServerKeyExchange is signed over client_random || server_random || params (RFC 5246 §7.4.3)', async () => {
  for (const [type, scheme] of [
    ['rsa', SignatureScheme.rsa_pkcs1_sha256],
    ['rsa', SignatureScheme.rsa_pss_rsae_sha384],
    ['ec', SignatureScheme.ecdsa_secp256r1_sha256],
  ] as const) {
    const { privateKey, publicKey } =
      type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signer = new LocalSigner(privateKey);
    const clientRandom = randomBytes(32);
    const serverRandom = randomBytes(32);
    const serverParams = ecdheParams();
    const request: SignRequest = { kind: 'tls12-server-key-exchange', scheme, clientRandom, serverRandom, serverParams };
    const sig = await signer.sign(request);
    const content = Buffer.concat([clientRandom, serverRandom, serverParams]);
    const hash = scheme === SignatureScheme.rsa_pss_rsae_sha384 ? 'sha384' : 'sha256';
    const key =
      scheme === SignatureScheme.rsa_pkcs1_sha256
        ? { key: publicKey, padding: constants.RSA_PKCS1_PADDING }
        : scheme === SignatureScheme.rsa_pss_rsae_sha384
          ? { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }
          : publicKey;
    assert.ok(verify(hash, content, key, sig), `scheme 0x${scheme.toString(16)}`);
    // Positive control's negative: the same signature does not cover other randoms.
    assert.ok(!verify(hash, Buffer.concat([serverRandom, clientRandom, serverParams]), key, sig));
  }
  const ec = new LocalSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
  await assert.rejects(
    ec.sign({ kind: 'tls12-server-key-exchange', scheme: SignatureScheme.ecdsa_secp256r1_sha256, clientRandom: randomBytes(31), serverRandom: randomBytes(32), serverParams: ecdheParams() }),
    /32 bytes each/,
  );
  await assert.rejects(
    ec.sign({ kind: 'tls12-server-key-exchange', scheme: SignatureScheme.rsa_pkcs1_sha256, clientRandom: randomBytes(32), serverRandom: randomBytes(32), serverParams: ecdheParams() }),
    /cannot sign a TLS 1.2 ServerKeyExchange/,
  );
});

test('CertificateVerify content (RFC 8446 §4.4.3): a transcript hash of a length no TLS 1.3 suite produces is refused; 32 and 48 bytes are signed', async () => {
  for (const length of [1, 20, 31, 33, 47, 49, 64]) {
    assert.throws(() => certificateVerifyContent(Buffer.alloc(length)), RangeError, `${length} bytes`);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const signer = new LocalSigner(privateKey);
  await assert.rejects(
    signer.sign({ kind: 'tls13-certificate-verify', scheme: SignatureScheme.ecdsa_secp384r1_sha384, transcriptHash: randomBytes(64) }),
    /transcript hash must be 32 or 48 bytes, got 64/,
  );
  for (const length of [32, 48]) {
    const hash = randomBytes(length);
    assert.deepEqual(certificateVerifyContent(hash), tls13Content(hash));
    const sig = await signer.sign({ kind: 'tls13-certificate-verify', scheme: SignatureScheme.ecdsa_secp384r1_sha384, transcriptHash: hash });
    assert.ok(verify('sha384', tls13Content(hash), publicKey, sig));
  }
});

test('LocalSigner: a public key is refused when the signer is made, not at the first handshake; its private key is taken', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  assert.throws(() => new LocalSigner(publicKey), TypeError);
  assert.ok(new LocalSigner(privateKey).schemes.includes(SignatureScheme.ecdsa_secp256r1_sha256));
});
