/**
 * TLS 1.2 ServerKeyExchange signatures by keys inside a PKCS#11 token (SoftHSM2, made at
 * test time): RSA PKCS#1 v1.5 with SHA-256/384/512 (CKM_SHA*_RSA_PKCS) and PSS, ECDSA;
 * keyd's content checks apply before the token is asked (a request without the downgrade
 * sentinel never reaches it), and PKCS#1 never signs a TLS 1.3 CertificateVerify.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { LocalAdminTransport } from '../../../src/keyd/admin-client.js';
import { KeydClient } from '../../../src/keyd/client.js';
import { KeydProcess, scratchDir } from '../../edge/system.js';
import { makeIdentity } from '../fixtures.js';
import { GROUP, ecdhParams, nistPoint, serverKeyExchangeContentFromRfc, serverRandom, verifyTlsSignature, x25519Point } from '../handshake-content-fixtures.js';
import { makeSoftHsmToken, requireSoftHsm } from './softhsm.js';

test('token keys sign TLS 1.2 ServerKeyExchange content with every TLS 1.2 scheme, after keyd checked it', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken();
  const scratch = scratchDir('keyd-token-tls12-');
  t.after(() => {
    scratch.remove();
    token.cleanup();
  });
  const keyd = new KeydProcess(scratch.dir);
  await keyd.start({ config: token.config, env: token.env, cwd: scratch.dir });
  t.after(() => keyd.kill());
  const admin = await LocalAdminTransport.connect(keyd.adminSocket);
  t.after(() => admin.close());
  const signer = await KeydClient.connect({ socketPath: keyd.socket }, { requestTimeoutMs: 30_000 });
  t.after(() => signer.close());

  for (const keyType of ['rsa2048', 'ecdsa-p256'] as const) {
    const name = `${keyType}.token-tls12.test`;
    const id = await makeIdentity(keyType, [name]);
    const info = await admin.put([name], id.privateKey, id.chain, { token: token.uri });
    assert.match(info.location, /^pkcs11:/, 'the key lives in the token');
    const identity = (await signer.identity(name))!;
    const expected = keyType === 'rsa2048' ? [0x0401, 0x0501, 0x0601, 0x0804, 0x0805, 0x0806] : [0x0303, 0x0403, 0x0503, 0x0603];
    assert.deepEqual([...identity.tls12Schemes!].sort((a, b) => a - b), expected);
    for (const scheme of identity.tls12Schemes!) {
      const clientRandom = randomBytes(32);
      const sr = serverRandom(true);
      const params = keyType === 'ecdsa-p256' ? ecdhParams(GROUP.secp256r1, nistPoint('prime256v1')) : ecdhParams(GROUP.x25519, x25519Point());
      const signature = await signer.signServerKeyExchange(identity.keyRef, name, scheme, clientRandom, sr, params);
      assert.ok(verifyTlsSignature(id.chain[0]!, scheme, serverKeyExchangeContentFromRfc(clientRandom, sr, params), signature), `${keyType} 0x${scheme.toString(16)}`);
    }
    const params = ecdhParams(GROUP.x25519, x25519Point());
    await assert.rejects(signer.signServerKeyExchange(identity.keyRef, name, expected[0]!, randomBytes(32), serverRandom(false), params), { code: 'KEYD_NO_DOWNGRADE_SENTINEL' });
    if (keyType === 'rsa2048') {
      await assert.rejects(signer.sign(identity.keyRef, name, 0x0401, randomBytes(32)), { code: 'KEYD_SCHEME_FORBIDDEN' });
    }
  }
});
