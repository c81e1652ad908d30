import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, diffieHellman } from 'node:crypto';
import { TlsAlert } from '../../src/tls/alert.js';
import { generateEphemeralKey, keyExchange } from '../../src/tls/crypto/key-exchange.js';
import { NamedGroup } from '../../src/tls/wire/codepoints.js';
import { montgomeryKeyPair } from '../helpers/montgomery-keys.js';

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
