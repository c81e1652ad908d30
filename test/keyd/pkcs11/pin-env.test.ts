/**
 * A token PIN given in an environment variable ("pinEnv") must not reach the processes
 * keyd starts: tpm2-tools (src/keyd/tpm/tools.ts) run with keyd's environment. keyd takes
 * the variable out of its environment when it reads its config; the PIN still logs in.
 */
import assert from 'node:assert/strict';
import { randomBytes, verify } from 'node:crypto';
import { test } from 'node:test';
import { TokenKeys } from '../../../src/keyd/pkcs11/token-keys.js';
import { tpm } from '../../../src/keyd/tpm/tools.js';
import { SignatureScheme } from '../../../src/tls/wire/codepoints.js';
import { makeSoftHsmToken, requireSoftHsm } from './softhsm.js';

test('a PIN from pinEnv is not in the environment of the child processes keyd starts; it still logs in', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken('keyd-pin-env');
  process.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
  const suffix = randomBytes(4).toString('hex').toUpperCase();
  const pinVariable = `KEYD_TEST_TOKEN_PIN_${suffix}`;
  const marker = `KEYD_TEST_MARKER_${suffix}`;
  process.env[pinVariable] = token.pin;
  process.env[marker] = 'inherited';
  const tokens = new TokenKeys([{ label: token.label, module: token.module, pinEnv: pinVariable, sessions: 1 }]);
  try {
    // The runner keyd uses for tpm2-tools, here running env(1).
    const childEnv = (await tpm({}, 'env', [])).toString('utf8');
    assert.match(childEnv, new RegExp(`^${marker}=inherited$`, 'm'), 'control: the child does get keyd\'s environment');
    assert.ok(!childEnv.includes(token.pin), 'the PIN is not in the child\'s environment');
    assert.ok(!childEnv.includes(pinVariable), 'nor its variable');

    // Control: the PIN keyd took still opens the token.
    const key = await tokens.generate(token.uri, 'ecdsa-p256', 'pin-env');
    const content = Buffer.from('content keyd built');
    assert.ok(verify('sha256', content, key.publicKey, await key.sign(SignatureScheme.ecdsa_secp256r1_sha256, content)));
    assert.ok(!(await tpm({}, 'env', [])).toString('utf8').includes(token.pin), 'nor after the token logged in');
  } finally {
    delete process.env[pinVariable];
    delete process.env[marker];
    await tokens.close();
    token.cleanup();
  }
});
