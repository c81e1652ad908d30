import assert from 'node:assert/strict';
import { generateKeyPairSync, createPrivateKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { fingerprintOf } from '../../src/provision/fingerprint.js';
import { openSealedKey, sealPrivateKey, type SealedKey } from '../../src/provision/hpke-seal.js';
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
});
