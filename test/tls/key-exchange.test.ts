import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDiffieHellman, createECDH, createPublicKey, diffieHellman } from 'node:crypto';
import { TlsAlert } from '../../src/tls/alert.js';
import { FFDHE_PRIMES } from '../../src/tls/crypto/ffdhe-primes.js';
import { generateEphemeralKey, keyExchange } from '../../src/tls/crypto/key-exchange.js';
import { NamedGroup } from '../../src/tls/wire/codepoints.js';
import { montgomeryKeyPair } from '../helpers/montgomery-keys.js';
import { assertAlert } from './alerts.js';

/** A client key pair from node:crypto and its raw public share (RFC 7748 §5: the u-coordinate). */
function client(kind: 'x25519' | 'x448') {
  const pair = montgomeryKeyPair(kind);
  return { privateKey: pair.privateKey, share: pair.publicRaw };
}

/** The shared secret the client computes from the server's raw share. */
function clientSecret(kind: 'x25519' | 'x448', clientPrivate: ReturnType<typeof client>['privateKey'], serverShare: Buffer): Buffer {
  const crv = kind === 'x25519' ? 'X25519' : 'X448';
  const serverPublic = createPublicKey({ key: { kty: 'OKP', crv, x: serverShare.toString('base64url') }, format: 'jwk' });
  return diffieHellman({ privateKey: clientPrivate, publicKey: serverPublic });
}

for (const [kind, group, length] of [['x25519', NamedGroup.x25519, 32], ['x448', NamedGroup.x448, 56]] as const) {
  test(`${kind}: the server's share is the public key of the private key it derived with (client computes the same secret)`, () => {
    for (let i = 0; i < 20; i++) {
      const c = client(kind);
      const { serverShare, sharedSecret } = keyExchange(group, c.share);
      assert.equal(serverShare.length, length);
      assert.equal(sharedSecret.length, length);
      assert.deepEqual(clientSecret(kind, c.privateKey, serverShare), sharedSecret);
    }
  });

  test(`${kind}: every exchange uses a fresh server key`, () => {
    const c = client(kind);
    const shares = new Set<string>();
    for (let i = 0; i < 50; i++) shares.add(keyExchange(group, c.share).serverShare.toString('hex'));
    assert.equal(shares.size, 50);
  });

  test(`${kind}: a small-order client share (u = 0) is refused with illegal_parameter`, () => {
    assert.throws(() => keyExchange(group, Buffer.alloc(length)), (err: unknown) => err instanceof TlsAlert && err.alertName === 'illegal_parameter');
  });
}

test('TLS 1.2 x25519 ephemeral key: its public key is the one it derives with; shares are fresh', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const key = generateEphemeralKey(NamedGroup.x25519);
    assert.equal(key.publicKey.length, 32);
    seen.add(key.publicKey.toString('hex'));
    const c = client('x25519');
    assert.deepEqual(clientSecret('x25519', c.privateKey, key.publicKey), key.deriveSharedSecret(c.share));
  }
  assert.equal(seen.size, 20);
  assert.throws(() => generateEphemeralKey(NamedGroup.x25519).deriveSharedSecret(Buffer.alloc(32)), (err: unknown) => err instanceof TlsAlert && err.alertName === 'illegal_parameter');
});

/** A P-256 client key and its public point in the given form (SEC 1 §2.3.3: 0x04 uncompressed, 0x06/0x07 hybrid). */
function p256Client(form: 'uncompressed' | 'hybrid') {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  return { ecdh, share: ecdh.getPublicKey(null, form) };
}

test('secp256r1 (TLS 1.3): a 65-byte hybrid point (0x06/0x07) is illegal_parameter (RFC 8446 §4.2.8.2: uncompressed only); the same key uncompressed works', () => {
  const hybrid = p256Client('hybrid');
  assert.equal(hybrid.share.length, 65);
  assert.ok(hybrid.share[0] === 0x06 || hybrid.share[0] === 0x07);
  // node:crypto itself accepts the hybrid form, so only our check refuses it.
  assertAlert(() => keyExchange(NamedGroup.secp256r1, hybrid.share), 'illegal_parameter');
  const control = hybrid.ecdh.getPublicKey(null, 'uncompressed');
  const { serverShare, sharedSecret } = keyExchange(NamedGroup.secp256r1, control);
  assert.deepEqual(hybrid.ecdh.computeSecret(serverShare), sharedSecret);
});

test('secp256r1 (TLS 1.2 ClientKeyExchange): a hybrid point is illegal_parameter (RFC 8422 §5.1.2); the same key uncompressed works', () => {
  const hybrid = p256Client('hybrid');
  assertAlert(() => generateEphemeralKey(NamedGroup.secp256r1).deriveSharedSecret(hybrid.share), 'illegal_parameter');
  const key = generateEphemeralKey(NamedGroup.secp256r1);
  assert.deepEqual(key.deriveSharedSecret(hybrid.ecdh.getPublicKey(null, 'uncompressed')), hybrid.ecdh.computeSecret(key.publicKey));
});

const FFDHE2048 = 0x0100;
const ffdhe2048Prime = Buffer.from(FFDHE_PRIMES.ffdhe2048, 'hex');
const p2048 = BigInt('0x' + FFDHE_PRIMES.ffdhe2048);
const asShare = (y: bigint) => Buffer.from(y.toString(16).padStart(512, '0'), 'hex');

test('ffdhe2048: a share shorter than the prime is illegal_parameter (RFC 8446 §4.2.8.1: left-padded to 256 bytes); padded, the same value works', () => {
  // A client value with a leading zero byte (1 in 256 keys), so that the unpadded form is shorter.
  let client = createDiffieHellman(ffdhe2048Prime, 2);
  for (let i = 0; i < 5000 && client.generateKeys().length === 256; i++) client = createDiffieHellman(ffdhe2048Prime, 2);
  assert.ok(client.getPublicKey().length < 256, 'no client key with a leading zero byte in 5000 tries');
  const unpadded = client.getPublicKey();
  assertAlert(() => keyExchange(FFDHE2048, unpadded), 'illegal_parameter');
  const padded = Buffer.concat([Buffer.alloc(256 - unpadded.length), unpadded]);
  const { serverShare, sharedSecret } = keyExchange(FFDHE2048, padded);
  assert.equal(serverShare.length, 256);
  const expected = client.computeSecret(serverShare);
  assert.deepEqual(sharedSecret, Buffer.concat([Buffer.alloc(256 - expected.length), expected]));
});

test('ffdhe2048: Y of 0, 1, p - 1 and p are illegal_parameter (RFC 8446 §4.2.8.1: 1 < Y < p - 1); 2 and p - 2 are accepted', () => {
  for (const [what, y] of [['0', 0n], ['1', 1n], ['p - 1', p2048 - 1n], ['p', p2048]] as const) {
    assertAlert(() => keyExchange(FFDHE2048, asShare(y)), 'illegal_parameter', `Y = ${what}`);
  }
  for (const y of [2n, p2048 - 2n]) assert.equal(keyExchange(FFDHE2048, asShare(y)).sharedSecret.length, 256);
});
