/**
 * `admin put --token` with a multi-prime RSA key (RFC 8017 §A.1.2 version 1: more than two
 * primes in otherPrimeInfos). A PKCS#11 CKK_RSA object holds two primes (CKA_PRIME_1,
 * CKA_PRIME_2); taking the first two of three would give the token an inconsistent key
 * (n ≠ p·q). keyd refuses it before C_CreateObject; a two-prime key goes in and signs.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, verify, constants } from 'node:crypto';
import { test } from 'node:test';
import { KeydError } from '../../../src/keyd/errors.js';
import { TokenKeys } from '../../../src/keyd/pkcs11/token-keys.js';
import { SignatureScheme } from '../../../src/tls/wire/codepoints.js';
import { requireTool } from '../../helpers/tools.js';
import { makeSoftHsmToken, requireSoftHsm } from './softhsm.js';

function opensslRsa(primes: number) {
  return createPrivateKey(execFileSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-pkeyopt', `rsa_keygen_primes:${primes}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
}

test('put --token: a 3-prime RSA key is refused (KEYD_BAD_KEY) and nothing is written to the token; a two-prime key goes in under the same id and signs (control)', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const token = makeSoftHsmToken('keyd-multi-prime');
  // SoftHSM reads its config when the module is loaded, in this process.
  process.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
  const tokens = new TokenKeys([{ label: token.label, module: token.module, pinFile: token.pinFile, sessions: 1 }]);
  try {
    const uri = `${token.uri};id=%4d%50`;
    await assert.rejects(tokens.importKey(uri, opensslRsa(3), 'three primes'), (err: unknown) => {
      assert.ok(err instanceof KeydError, String(err));
      assert.equal(err.code, 'KEYD_BAD_KEY');
      assert.equal(err.message, 'a multi-prime RSA key (3 primes, RFC 8017 §A.1.2 version 1) cannot go into a token: a PKCS#11 CKK_RSA object holds two primes');
      return true;
    });
    // Nothing was created under the id: an id the token holds would be refused (KEYD_BAD_REQUEST).
    const two = opensslRsa(2);
    const handle = await tokens.importKey(uri, two, 'two primes');
    const content = Buffer.from('content keyd built');
    const signature = await handle.sign(SignatureScheme.rsa_pss_rsae_sha256, content);
    assert.ok(verify('sha256', content, { key: handle.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, signature), 'control: the two-prime key signs in the token');
  } finally {
    await tokens.close();
    token.cleanup();
  }
});
