/**
 * The client CertificateVerify checks (src/tls/handshake/client-certificate-verify.ts) on
 * their own, TLS 1.3 and TLS 1.2: each scheme verifies a signature made here with node:crypto
 * over content built from the RFC text; a flipped bit is decrypt_error; a scheme not offered,
 * or not fitting the key, is illegal_parameter.
 */
import assert from 'node:assert/strict';
import { constants, createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { test } from 'node:test';
import { TlsAlert } from '../../src/tls/alert.js';
import {
  CLIENT_SIGNATURE_SCHEMES,
  CLIENT_SIGNATURE_SCHEMES_12,
  verifyClientCertificateVerify,
  verifyClientCertificateVerify12,
} from '../../src/tls/handshake/client-certificate-verify.js';

const keys = {
  p256: generateKeyPairSync('ec', { namedCurve: 'prime256v1' }),
  p384: generateKeyPairSync('ec', { namedCurve: 'secp384r1' }),
  rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ed25519: generateKeyPairSync('ed25519'),
};

function signAs(scheme: number, key: KeyObject, content: Buffer): Buffer {
  const hash = ['sha256', 'sha384', 'sha512'][(scheme >> 8) - 4] ?? 'sha256';
  if (scheme === 0x0807) return sign(null, content, key);
  if (scheme >= 0x0804 && scheme <= 0x0806) {
    return sign(['sha256', 'sha384', 'sha512'][scheme - 0x0804]!, content, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 + 16 * (scheme - 0x0804) });
  }
  if ((scheme & 0xff) === 0x01) return sign(hash, content, { key, padding: constants.RSA_PKCS1_PADDING });
  return sign(hash, content, key);
}

function alertOf(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(err instanceof TlsAlert, String(err));
    return err.alertName;
  }
}

test('TLS 1.3: every offered scheme verifies over "TLS 1.3, client CertificateVerify"; a flipped bit is decrypt_error', () => {
  const transcriptHash = createHash('sha256').update('transcript').digest();
  const content = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify'), Buffer.of(0), transcriptHash]);
  const cases: [number, KeyObject, KeyObject][] = [
    [0x0403, keys.p256.privateKey, keys.p256.publicKey],
    [0x0503, keys.p384.privateKey, keys.p384.publicKey],
    [0x0804, keys.rsa.privateKey, keys.rsa.publicKey],
    [0x0806, keys.rsa.privateKey, keys.rsa.publicKey],
    [0x0807, keys.ed25519.privateKey, keys.ed25519.publicKey],
  ];
  for (const [scheme, privateKey, publicKey] of cases) {
    const signature = signAs(scheme, privateKey, content);
    const check = (sig: Buffer) => () =>
      verifyClientCertificateVerify({ publicKey, scheme, signature: sig, transcriptHash, offered: CLIENT_SIGNATURE_SCHEMES });
    assert.equal(alertOf(check(signature)), undefined, `scheme 0x${scheme.toString(16)}`);
    const flipped = Buffer.from(signature);
    flipped[10]! ^= 0x04;
    assert.equal(alertOf(check(flipped)), 'decrypt_error');
  }
  // The server context string instead of the client's: decrypt_error.
  const serverContent = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify'), Buffer.of(0), transcriptHash]);
  assert.equal(
    alertOf(() => verifyClientCertificateVerify({ publicKey: keys.p256.publicKey, scheme: 0x0403, signature: signAs(0x0403, keys.p256.privateKey, serverContent), transcriptHash, offered: CLIENT_SIGNATURE_SCHEMES })),
    'decrypt_error',
  );
});

test('TLS 1.3: PKCS#1, a scheme not offered, or a curve that does not fit: illegal_parameter', () => {
  const transcriptHash = randomBytes(32);
  const base = { signature: randomBytes(64), transcriptHash, offered: CLIENT_SIGNATURE_SCHEMES };
  assert.equal(alertOf(() => verifyClientCertificateVerify({ ...base, publicKey: keys.rsa.publicKey, scheme: 0x0401 })), 'illegal_parameter');
  assert.equal(alertOf(() => verifyClientCertificateVerify({ ...base, publicKey: keys.p256.publicKey, scheme: 0x0503 })), 'illegal_parameter');
  assert.equal(alertOf(() => verifyClientCertificateVerify({ ...base, publicKey: keys.p256.publicKey, scheme: 0x0403, offered: [0x0804] })), 'illegal_parameter');
});

test('TLS 1.3: PKCS#1 and ecdsa_sha224 are illegal_parameter even when offered and correctly signed (§4.2.3)', () => {
  const transcriptHash = randomBytes(32);
  const content = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify', 'latin1'), Buffer.of(0), transcriptHash]);
  const offered = [...CLIENT_SIGNATURE_SCHEMES, 0x0401, 0x0303];
  const sha224 = sign('sha224', content, keys.p256.privateKey);
  const pkcs1 = sign('sha256', content, { key: keys.rsa.privateKey, padding: constants.RSA_PKCS1_PADDING });
  assert.equal(alertOf(() => verifyClientCertificateVerify({ publicKey: keys.p256.publicKey, scheme: 0x0303, signature: sha224, transcriptHash, offered })), 'illegal_parameter');
  assert.equal(alertOf(() => verifyClientCertificateVerify({ publicKey: keys.rsa.publicKey, scheme: 0x0401, signature: pkcs1, transcriptHash, offered })), 'illegal_parameter');
  // Control: the same keys with TLS 1.3 schemes, same list.
  const p256 = sign('sha256', content, keys.p256.privateKey);
  assert.equal(alertOf(() => verifyClientCertificateVerify({ publicKey: keys.p256.publicKey, scheme: 0x0403, signature: p256, transcriptHash, offered })), undefined);
  const pss = sign('sha256', content, { key: keys.rsa.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  assert.equal(alertOf(() => verifyClientCertificateVerify({ publicKey: keys.rsa.publicKey, scheme: 0x0804, signature: pss, transcriptHash, offered })), undefined);
});

test('TLS 1.2: every offered scheme verifies over the handshake messages; ECDSA is not bound to a curve; flips are decrypt_error', () => {
  const messages = [randomBytes(300), randomBytes(1200), randomBytes(90)];
  const content = Buffer.concat(messages);
  const cases: [number, KeyObject, KeyObject][] = [
    [0x0403, keys.p256.privateKey, keys.p256.publicKey],
    [0x0503, keys.p256.privateKey, keys.p256.publicKey], // SHA-384 with a P-256 key: fine in TLS 1.2
    [0x0603, keys.p384.privateKey, keys.p384.publicKey],
    [0x0401, keys.rsa.privateKey, keys.rsa.publicKey],
    [0x0601, keys.rsa.privateKey, keys.rsa.publicKey],
    [0x0805, keys.rsa.privateKey, keys.rsa.publicKey],
    [0x0807, keys.ed25519.privateKey, keys.ed25519.publicKey],
  ];
  for (const [scheme, privateKey, publicKey] of cases) {
    const signature = signAs(scheme, privateKey, content);
    const check = (sig: Buffer, msgs = messages) => () =>
      verifyClientCertificateVerify12({ publicKey, scheme, signature: sig, handshakeMessages: msgs, offered: CLIENT_SIGNATURE_SCHEMES_12 });
    assert.equal(alertOf(check(signature)), undefined, `scheme 0x${scheme.toString(16)}`);
    const flipped = Buffer.from(signature);
    flipped[12]! ^= 0x01;
    assert.equal(alertOf(check(flipped)), 'decrypt_error', `scheme 0x${scheme.toString(16)} flipped`);
    assert.equal(alertOf(check(signature, messages.slice(0, 2))), 'decrypt_error', 'a message left out');
  }
});

test('TLS 1.2: SHA-1, a scheme not offered, or one of another key type: illegal_parameter', () => {
  const base = { signature: randomBytes(64), handshakeMessages: [randomBytes(10)], offered: CLIENT_SIGNATURE_SCHEMES_12 };
  assert.equal(alertOf(() => verifyClientCertificateVerify12({ ...base, publicKey: keys.rsa.publicKey, scheme: 0x0201 })), 'illegal_parameter');
  assert.equal(alertOf(() => verifyClientCertificateVerify12({ ...base, publicKey: keys.p256.publicKey, scheme: 0x0203 })), 'illegal_parameter');
  assert.equal(alertOf(() => verifyClientCertificateVerify12({ ...base, publicKey: keys.p256.publicKey, scheme: 0x0401 })), 'illegal_parameter');
  assert.equal(alertOf(() => verifyClientCertificateVerify12({ ...base, publicKey: keys.rsa.publicKey, scheme: 0x0403 })), 'illegal_parameter');
  // §7.4.8: a scheme this verifier knows but the CertificateRequest did not list, correctly
  // signed: illegal_parameter; control: the same signature when the request listed it.
  const messages = [randomBytes(40)];
  const signature = signAs(0x0403, keys.p256.privateKey, Buffer.concat(messages));
  const p256 = { publicKey: keys.p256.publicKey, scheme: 0x0403, signature, handshakeMessages: messages };
  assert.equal(alertOf(() => verifyClientCertificateVerify12({ ...p256, offered: [0x0804, 0x0503] })), 'illegal_parameter');
  assert.equal(alertOf(() => verifyClientCertificateVerify12({ ...p256, offered: [0x0804, 0x0403] })), undefined);
});
