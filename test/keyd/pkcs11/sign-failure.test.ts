/**
 * A signature the token refuses must not break the token for the keys after it: C_Sign
 * that returns CKR_BUFFER_TOO_SMALL leaves its operation active on the session (PKCS#11
 * v2.40 §5.11), and a session put back as it is refuses every later C_SignInit with
 * CKR_OPERATION_ACTIVE. And an RSA key whose modulus is not a whole number of bytes
 * (checkPrivateKey takes 2048 to 4096 bits, any of them) signs in k = ceil(bits/8) bytes.
 */
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { test } from 'node:test';
import { KeydError } from '../../../src/keyd/errors.js';
import { spkiOf } from '../../../src/keyd/key-handle.js';
import { TokenKeyHandle, TokenKeys, type TokenKeyReference } from '../../../src/keyd/pkcs11/token-keys.js';
import { SignatureScheme } from '../../../src/tls/wire/codepoints.js';
import { makeSoftHsmToken, requireSoftHsm } from './softhsm.js';

const content = Buffer.from('content keyd built');

function pssVerifies(publicKey: KeyObject, signature: Uint8Array): boolean {
  return verify('sha256', content, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature);
}

test('an RSA key of 2050 bits put into the token signs (a 257-byte signature)', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken('keyd-odd-rsa');
  process.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
  const tokens = new TokenKeys([{ label: token.label, module: token.module, pinFile: token.pinFile, sessions: 1 }]);
  try {
    // Control: a whole-byte modulus signs.
    const even = await tokens.importKey(token.uri, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, 'even');
    const evenSignature = await even.sign(SignatureScheme.rsa_pss_rsae_sha256, content);
    assert.equal(evenSignature.length, 256);
    assert.ok(pssVerifies(even.publicKey, evenSignature));

    const odd = await tokens.importKey(token.uri, generateKeyPairSync('rsa', { modulusLength: 2050 }).privateKey, 'odd');
    const oddSignature = await odd.sign(SignatureScheme.rsa_pss_rsae_sha256, content);
    assert.equal(oddSignature.length, 257);
    assert.ok(pssVerifies(odd.publicKey, oddSignature));
  } finally {
    await tokens.close();
    token.cleanup();
  }
});

test('a signature the token refuses (buffer too small) leaves the session usable for the next key', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken('keyd-sign-fail');
  process.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
  // One session: a session left with an operation active would fail every request after.
  const tokens = new TokenKeys([{ label: token.label, module: token.module, pinFile: token.pinFile, sessions: 1 }]);
  try {
    const good = await tokens.generate(token.uri, 'ecdsa-p256', 'good');
    assert.ok(verify('sha256', content, good.publicKey, await good.sign(SignatureScheme.ecdsa_secp256r1_sha256, content)), 'control: the key signs');

    // A reference whose SPKI says 2048 bits while the object with its CKA_ID is a 4096-bit
    // key (an object swapped in the token): keyd offers 256 bytes, C_Sign needs 512.
    const big = await tokens.generate(token.uri, 'rsa4096', 'big');
    const small = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const swapped = tokens.resolve({ ...big.reference, spki: spkiOf(small).toString('base64') });
    await assert.rejects(swapped.sign(SignatureScheme.rsa_pss_rsae_sha256, content), (err: unknown) => {
      assert.ok(err instanceof KeydError);
      assert.match(err.message, /CKR_BUFFER_TOO_SMALL/);
      return true;
    });

    for (let i = 0; i < 3; i++) {
      const signature = await good.sign(SignatureScheme.ecdsa_secp256r1_sha256, content);
      assert.ok(verify('sha256', content, good.publicKey, signature), `signature ${i} after the refused one verifies`);
    }
    assert.ok(pssVerifies(big.publicKey, await big.sign(SignatureScheme.rsa_pss_rsae_sha256, content)), 'the 4096-bit key itself signs');
  } finally {
    await tokens.close();
    token.cleanup();
  }
});

test('an object in the token whose key is not the stored one (same CKA_ID): its signatures are refused, for every key type', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken('keyd-swapped');
  process.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
  const tokens = new TokenKeys([{ label: token.label, module: token.module, pinFile: token.pinFile, sessions: 2 }]);
  try {
    const cases = [
      { type: 'ecdsa-p256', scheme: SignatureScheme.ecdsa_secp256r1_sha256 },
      { type: 'ecdsa-p384', scheme: SignatureScheme.ecdsa_secp384r1_sha384 },
      { type: 'rsa2048', scheme: SignatureScheme.rsa_pss_rsae_sha256 },
      { type: 'rsa2048', scheme: SignatureScheme.rsa_pkcs1_sha256 },
      { type: 'ed25519', scheme: SignatureScheme.ed25519 },
    ] as const;
    for (const { type, scheme } of cases) {
      const stored = await tokens.generate(token.uri, type, `stored ${type}`);
      const other = await tokens.generate(token.uri, type, `other ${type}`);
      // Control: the key signs for what keyd stored.
      const signature = await stored.sign(scheme, content);
      const hash = type === 'ed25519' ? null : type === 'ecdsa-p384' ? 'sha384' : 'sha256';
      const padding = scheme === SignatureScheme.rsa_pss_rsae_sha256 ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } : {};
      assert.ok(verify(hash, content, { key: stored.publicKey, ...padding }, signature), `${type} 0x${scheme.toString(16)}: control signature verifies`);
      // The stored reference, its CKA_ID now holding another key of the same type and size.
      const swapped = tokens.resolve({ ...stored.reference, id: other.reference.id as string });
      await assert.rejects(swapped.sign(scheme, content), (err: unknown) => {
        assert.ok(err instanceof KeydError, String(err));
        assert.equal(err.code, 'KEYD_TOKEN_KEY_MISMATCH', `${type} 0x${scheme.toString(16)}: ${err.message}`);
        assert.match(err.message, new RegExp(`CKA_ID ${other.reference.id as string}`));
        return true;
      });
    }
  } finally {
    await tokens.close();
    token.cleanup();
  }
});

test('which token signatures keyd verifies: every RSA one, and the first from each ECDSA object found; an r ‖ s of the wrong length is refused', async () => {
  // A stand-in for the token: returns what the test sets, as Pkcs11Token.sign does (the
  // signature, and the object handle that made it).
  let next: { signature: Buffer; object: object } | undefined;
  const tokens = { token: async () => ({ sign: async () => next! }) } as unknown as TokenKeys;
  const reference = (keyType: 'rsa' | 'ecdsa-p256', publicKey: KeyObject): TokenKeyReference => ({ backend: 'pkcs11', keyType, spki: spkiOf(publicKey).toString('base64'), token: 'stand-in', id: '01', object: 'o' });
  const object = {};

  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const pss = (key: KeyObject) => sign('sha256', content, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  const rsaHandle = new TokenKeyHandle(reference('rsa', rsa.publicKey), tokens);
  next = { signature: pss(rsa.privateKey), object };
  assert.deepEqual(Buffer.from(await rsaHandle.sign(SignatureScheme.rsa_pss_rsae_sha256, content)), next.signature, 'control: a good signature goes out');
  // The same object, a faulty signature (as RSA-CRT with a fault would give): refused.
  next = { signature: pss(otherRsa), object };
  await assert.rejects(rsaHandle.sign(SignatureScheme.rsa_pss_rsae_sha256, content), { code: 'KEYD_TOKEN_KEY_MISMATCH' });

  const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const otherEc = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const raw = (key: KeyObject) => sign('sha256', content, { key, dsaEncoding: 'ieee-p1363' });
  const ecHandle = new TokenKeyHandle(reference('ecdsa-p256', ec.publicKey), tokens);
  next = { signature: raw(ec.privateKey), object };
  assert.ok(verify('sha256', content, ec.publicKey, await ecHandle.sign(SignatureScheme.ecdsa_secp256r1_sha256, content)), 'control: the object signs');
  // Found again (a reconnection), the object is another key: its first signature is checked.
  next = { signature: raw(otherEc), object: {} };
  await assert.rejects(ecHandle.sign(SignatureScheme.ecdsa_secp256r1_sha256, content), { code: 'KEYD_TOKEN_KEY_MISMATCH' });
  await assert.rejects(ecHandle.sign(SignatureScheme.ecdsa_secp256r1_sha256, content), { code: 'KEYD_TOKEN_KEY_MISMATCH' }, 'and stays refused');
  next = { signature: raw(ec.privateKey).subarray(0, 63), object };
  await assert.rejects(ecHandle.sign(SignatureScheme.ecdsa_secp256r1_sha256, content), (err: unknown) => err instanceof KeydError && err.code === 'KEYD_TOKEN_ERROR' && /returned 63 bytes/.test(err.message));
});
