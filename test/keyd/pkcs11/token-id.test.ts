import assert from 'node:assert/strict';
import { generateKeyPairSync, verify } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeydError } from '../../../src/keyd/errors.js';
import { TokenKeys } from '../../../src/keyd/pkcs11/token-keys.js';
import { SignatureScheme } from '../../../src/tls/wire/codepoints.js';
import { makeSoftHsmToken, requireSoftHsm } from './softhsm.js';

/**
 * keyd finds a token key by CKA_ID and needs exactly one object per id. An operator may
 * name the id (`--token 'pkcs11:token=…;id=%01'`): an id already taken must be refused,
 * or the key already serving names stops signing.
 */
test('gen and put --token with an id already in the token are refused; the key holding it keeps signing', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken('keyd-id-test');
  // SoftHSM reads its config when the module is loaded, in this process.
  process.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
  const tokens = new TokenKeys([{ label: token.label, module: token.module, pinFile: token.pinFile, sessions: 1 }]);
  try {
    const uri = `${token.uri};id=%01%02`;
    const first = await tokens.generate(uri, 'ecdsa-p256', 'first');
    const content = Buffer.from('content keyd built');
    const signature = await first.sign(SignatureScheme.ecdsa_secp256r1_sha256, content);
    assert.ok(verify('sha256', content, first.publicKey, signature), 'positive control: the first key signs');

    const refused = (err: unknown) => {
      assert.ok(err instanceof KeydError);
      assert.equal(err.code, 'KEYD_BAD_REQUEST');
      assert.match(err.message, /already holds an object with CKA_ID 0102/);
      return true;
    };
    await assert.rejects(tokens.generate(uri, 'ecdsa-p256', 'second'), refused);
    const software = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
    await assert.rejects(tokens.importKey(uri, software, 'imported'), refused);

    const again = await first.sign(SignatureScheme.ecdsa_secp256r1_sha256, content);
    assert.ok(verify('sha256', content, first.publicKey, again), 'the key that held the id still signs');
    // Control: another id is accepted.
    const other = await tokens.generate(`${token.uri};id=%03`, 'ecdsa-p256', 'other');
    assert.ok(verify('sha256', content, other.publicKey, await other.sign(SignatureScheme.ecdsa_secp256r1_sha256, content)));
  } finally {
    await tokens.close();
    token.cleanup();
  }
});

test('a second private key put into the token under a key\'s CKA_ID (outside keyd) is refused by name, not used', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken('keyd-dup-id');
  process.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
  const config = [{ label: token.label, module: token.module, pinFile: token.pinFile, sessions: 1 }];
  const content = Buffer.from('content keyd built');
  const first = new TokenKeys(config);
  let reference;
  try {
    const key = await first.generate(`${token.uri};id=%01`, 'ecdsa-p256', 'serving');
    const form = key.storedForm();
    assert.equal(form.kind, 'reference');
    reference = form.kind === 'reference' ? form.reference : undefined;
  } finally {
    await first.close();
  }
  // Control: a fresh connection finds the one object under id 01 and signs.
  const before = new TokenKeys(config);
  try {
    const handle = before.resolve(reference!);
    assert.ok(verify('sha256', content, handle.publicKey, await handle.sign(SignatureScheme.ecdsa_secp256r1_sha256, content)));
  } finally {
    await before.close();
  }
  // Someone with the token's PIN imports another key under the same id (softhsm2-util needs --force).
  const intruder = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const pem = join(token.dir, 'intruder.pem');
  writeFileSync(pem, intruder.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  execFileSync('softhsm2-util', ['--import', pem, '--token', token.label, '--label', 'intruder', '--id', '01', '--pin', token.pin, '--force'], { env: token.env, stdio: 'ignore' });
  const after = new TokenKeys(config);
  try {
    const handle = after.resolve(reference!);
    await assert.rejects(handle.sign(SignatureScheme.ecdsa_secp256r1_sha256, content), (err: unknown) => {
      assert.ok(err instanceof KeydError);
      assert.equal(err.code, 'KEYD_TOKEN_KEY_MISSING');
      assert.match(err.message, /has several private keys with CKA_ID 01; keyd needs exactly one/);
      return true;
    });
  } finally {
    await after.close();
    token.cleanup();
  }
});
