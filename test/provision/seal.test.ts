import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, createPrivateKey, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Aes256Gcm, CipherSuite, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';
import { fingerprintOf } from '../../src/provision/fingerprint.js';
import { openSealedKey, parseSealedKey, sealPrivateKey, type SealedKey } from '../../src/provision/hpke-seal.js';
import { rawMontgomeryKeyPair } from '../helpers/montgomery-keys.js';

function keydKeyPair(): { publicKey: Uint8Array; privateKey: () => Uint8Array } {
  const { publicRaw, privateRaw } = rawMontgomeryKeyPair('x25519');
  return { publicKey: new Uint8Array(publicRaw), privateKey: () => new Uint8Array(privateRaw) };
}

const operator = 'O=Example Ops, CN=alice';
const names = ['www.example.com', 'example.com'];
const chainDer = [new Uint8Array([1, 2, 3, 4]), new Uint8Array([5, 6])];

async function fixture() {
  const keyd = keydKeyPair();
  const serverKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const pkcs8 = serverKey.export({ format: 'der', type: 'pkcs8' });
  const sealed = await sealPrivateKey({ keydPublicKey: keyd.publicKey, operator, binding: { names, chainDer }, privateKeyPkcs8: pkcs8 });
  return { keyd, pkcs8, sealed };
}

async function open(keyd: ReturnType<typeof keydKeyPair>, sealed: SealedKey, overrides: Partial<{ operator: string; names: string[]; chainDer: Uint8Array[] }> = {}) {
  return openSealedKey({
    sealed,
    keydPublicKey: keyd.publicKey,
    keydPrivateKey: keyd.privateKey(),
    operator: overrides.operator ?? operator,
    binding: { names: overrides.names ?? names, chainDer: overrides.chainDer ?? chainDer },
  });
}

async function assertCode(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: Error & { code?: string }) => {
    assert.equal(err.code, code, err.message);
    return true;
  });
}

describe('HPKE sealing of a private key to keyd', () => {
  it('round-trips the PKCS#8 key and never carries it in the clear', async () => {
    const { keyd, pkcs8, sealed } = await fixture();
    assert.equal(sealed.sealedTo, fingerprintOf(keyd.publicKey));
    assert.equal(sealed.operator, operator);
    assert.equal(Buffer.from(sealed.nonce, 'base64').length, 16);
    assert.ok(Math.abs(sealed.issuedAt - Date.now()) < 5000);
    const wire = JSON.stringify(sealed);
    assert.ok(!wire.includes(pkcs8.toString('base64')), 'PKCS#8 base64 must not appear');
    assert.ok(!Buffer.from(wire).includes(pkcs8.subarray(-32)), 'raw private bytes must not appear');
    const opened = await open(keyd, sealed);
    assert.deepEqual(opened, pkcs8);
    const key = createPrivateKey({ key: opened, format: 'der', type: 'pkcs8' });
    assert.equal(key.asymmetricKeyType, 'ec');
  });

  it('two seals of the same key differ (fresh ephemeral key and nonce)', async () => {
    const { keyd, pkcs8, sealed } = await fixture();
    const again = await sealPrivateKey({ keydPublicKey: keyd.publicKey, operator, binding: { names, chainDer }, privateKeyPkcs8: pkcs8 });
    assert.notEqual(again.enc, sealed.enc);
    assert.notEqual(again.nonce, sealed.nonce);
    assert.notEqual(again.ciphertext, sealed.ciphertext);
  });

  it('refuses a payload sealed to another keyd, by its header', async () => {
    const { sealed } = await fixture();
    await assertCode(open(keydKeyPair(), sealed), 'PROVISION_SEALED_TO_OTHER_KEYD');
  });

  it('refuses a payload sealed to another keyd whose header was relabelled', async () => {
    const { sealed } = await fixture();
    const other = keydKeyPair();
    await assertCode(open(other, { ...sealed, sealedTo: fingerprintOf(other.publicKey) }), 'PROVISION_PAYLOAD_TAMPERED');
  });

  it('refuses a payload presented by another operator', async () => {
    const { keyd, sealed } = await fixture();
    await assertCode(open(keyd, sealed, { operator: 'CN=mallory' }), 'PROVISION_OPERATOR_MISMATCH');
    // … and one whose operator field was rewritten to match the connection.
    await assertCode(open(keyd, { ...sealed, operator: 'CN=mallory' }, { operator: 'CN=mallory' }), 'PROVISION_PAYLOAD_TAMPERED');
  });

  it('binds names, chain, nonce, time, enc and ciphertext: any change fails authentication', async () => {
    const { keyd, sealed } = await fixture();
    const flip = (b64: string): string => {
      const bytes = Buffer.from(b64, 'base64');
      bytes[bytes.length - 1]! ^= 0x01;
      return bytes.toString('base64');
    };
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['other names', () => open(keyd, sealed, { names: ['evil.example'] })],
      ['names reordered', () => open(keyd, sealed, { names: [...names].reverse() })],
      ['other chain', () => open(keyd, sealed, { chainDer: [new Uint8Array([9])] })],
      // The same bytes cut into other certificates: each one's length is hashed with it.
      ['chain re-cut', () => open(keyd, sealed, { chainDer: [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5, 6])] })],
      ['nonce', () => open(keyd, { ...sealed, nonce: flip(sealed.nonce) })],
      ['time', () => open(keyd, { ...sealed, issuedAt: sealed.issuedAt + 1 })],
      ['enc', () => open(keyd, { ...sealed, enc: flip(sealed.enc) })],
      ['ciphertext', () => open(keyd, { ...sealed, ciphertext: flip(sealed.ciphertext) })],
      ['truncated ciphertext', () => open(keyd, { ...sealed, ciphertext: Buffer.from(sealed.ciphertext, 'base64').subarray(1).toString('base64') })],
    ];
    for (const [what, attempt] of cases) {
      await assert.rejects(attempt(), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'PROVISION_PAYLOAD_TAMPERED', what);
        assert.match(err.message, /failed authentication/);
        return true;
      });
    }
  });

  it('zeroes the keyd private key bytes it was given', async () => {
    const { keyd, sealed } = await fixture();
    const raw = keyd.privateKey();
    await openSealedKey({ sealed, keydPublicKey: keyd.publicKey, keydPrivateKey: raw, operator, binding: { names, chainDer } });
    assert.ok(raw.every((b) => b === 0));
  });

  it('refuses a sealed object that is not the documented shape: nonce not 16 bytes, another suite, a fractional time or one out of range', async () => {
    const { sealed } = await fixture();
    assert.deepEqual(parseSealedKey(JSON.parse(JSON.stringify(sealed))), sealed, 'control: a sealed key from the wire parses');
    const cases: Array<[string, unknown, RegExp]> = [
      ['8-byte nonce', { ...sealed, nonce: randomBytes(8).toString('base64') }, /nonce must be 16 bytes/],
      ['empty nonce', { ...sealed, nonce: '' }, /nonce must be 16 bytes/],
      ['17-byte nonce', { ...sealed, nonce: randomBytes(17).toString('base64') }, /nonce must be 16 bytes/],
      ['another suite', { ...sealed, suite: 'DHKEM(P-256,HKDF-SHA256)/HKDF-SHA256/AES-128-GCM' }, /unsupported HPKE suite/],
      ['fractional time', { ...sealed, issuedAt: sealed.issuedAt + 0.5 }, /not a version 1 sealed key/],
      ['a time past the Date range', { ...sealed, issuedAt: Number.MAX_SAFE_INTEGER }, /"issuedAt" 9007199254740991 is not a time/],
      ['a time before the Date range', { ...sealed, issuedAt: -8.64e15 - 1 }, /"issuedAt" -8640000000000001 is not a time/],
    ];
    for (const [what, value, message] of cases) {
      assert.throws(() => parseSealedKey(value), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'PROVISION_BAD_REQUEST', what);
        assert.match(err.message, message, what);
        return true;
      });
    }
  });

  it('interoperates with a sealer written from docs/PROVISIONING.md alone (info, AAD, chain hash, fingerprint)', async () => {
    const keyd = keydKeyPair();
    const hpke = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
    const pkcs8 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'der', type: 'pkcs8' });
    const sealedTo = 'SHA256:' + createHash('sha256').update(keyd.publicKey).digest('base64').replace(/=+$/, '');
    const nonce = randomBytes(16).toString('base64');
    const issuedAt = Date.now();
    const chainHash = createHash('sha256');
    for (const cert of chainDer) chainHash.update(Buffer.from([cert.length >>> 24, (cert.length >>> 16) & 0xff, (cert.length >>> 8) & 0xff, cert.length & 0xff])).update(cert);
    const aad = Buffer.from(JSON.stringify({ v: 1, op: 'put', sealedTo, operator, names, chainSha256: chainHash.digest('hex'), nonce, issuedAt }));
    const label = Buffer.from('tls-sign-delegator provisioning v1\0', 'latin1');
    const info = Buffer.concat([label, keyd.publicKey]);
    const sealWith = async (withInfo: Buffer): Promise<SealedKey> => {
      const { ct, enc } = await hpke.seal({ recipientPublicKey: await hpke.kem.deserializePublicKey(keyd.publicKey), info: withInfo }, pkcs8, aad);
      const b64 = (b: ArrayBuffer) => Buffer.from(b).toString('base64');
      return { v: 1, suite: 'DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM', sealedTo, operator, nonce, issuedAt, enc: b64(enc), ciphertext: b64(ct) };
    };
    // keyd opens the documented payload …
    assert.deepEqual(await open(keyd, await sealWith(info)), pkcs8);
    // … and the documented opener opens what the CLI seals.
    const ours = await sealPrivateKey({ keydPublicKey: keyd.publicKey, operator, binding: { names, chainDer }, privateKeyPkcs8: pkcs8, nonce: Buffer.from(nonce, 'base64'), now: issuedAt });
    assert.equal(ours.sealedTo, sealedTo);
    const recipientKey = await hpke.kem.deserializePrivateKey(keyd.privateKey());
    const opened = await hpke.open({ recipientKey, enc: Buffer.from(ours.enc, 'base64'), info }, Buffer.from(ours.ciphertext, 'base64'), aad);
    assert.deepEqual(Buffer.from(opened), pkcs8);
    // Sealed with the label alone as info (keyd's key left out): not the documented binding, refused.
    await assertCode(open(keyd, await sealWith(label)), 'PROVISION_PAYLOAD_TAMPERED');
  });
});
