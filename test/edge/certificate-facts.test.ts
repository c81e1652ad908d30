/**
 * serverCertificateFacts (src/edge/certificate-facts.ts): the PROXY v2 SSL_SIG_ALG and
 * SSL_KEY_ALG values (proxy-protocol.txt §2.2.5) in haproxy's spelling, computed from the
 * leaf of the chain, never from the CA after it. The CA of each chain here differs from its
 * leaf in key type, so the leaf's key and the CA's signature algorithm are told apart.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadCertificateFacts, serverCertificateFacts } from '../../src/edge/certificate-facts.js';
import { makeTestPki, type TestKeyType } from '../helpers/pki.js';

const cases: { leaf: TestKeyType; ca: TestKeyType; signatureAlgorithm: string; keyAlgorithm: string }[] = [
  { leaf: 'ecdsa-p256', ca: 'rsa2048', signatureAlgorithm: 'RSA-SHA256', keyAlgorithm: 'EC256' },
  { leaf: 'rsa2048', ca: 'ecdsa-p384', signatureAlgorithm: 'ecdsa-with-SHA384', keyAlgorithm: 'RSA2048' },
  { leaf: 'ecdsa-p384', ca: 'ecdsa-p521', signatureAlgorithm: 'ecdsa-with-SHA512', keyAlgorithm: 'EC384' },
  { leaf: 'ecdsa-p521', ca: 'ecdsa-p256', signatureAlgorithm: 'ecdsa-with-SHA256', keyAlgorithm: 'EC521' },
  { leaf: 'ed25519', ca: 'ed25519', signatureAlgorithm: 'ED25519', keyAlgorithm: 'ED25519' },
];

for (const c of cases) {
  test(`leaf ${c.leaf} signed by a ${c.ca} CA: ${c.signatureAlgorithm}, ${c.keyAlgorithm}`, { timeout: 20_000 }, async () => {
    await loadCertificateFacts();
    const pki = await makeTestPki({ keyType: c.leaf, caKeyType: c.ca });
    const chain = [pki.leafCertDer, pki.caCertDer];
    const facts = serverCertificateFacts(chain);
    assert.deepEqual({ ...facts }, { signatureAlgorithm: c.signatureAlgorithm, keyAlgorithm: c.keyAlgorithm });
    assert.equal(serverCertificateFacts(chain), facts, 'computed once per chain');
  });
}

test('a chain whose leaf does not parse, or an empty chain: no facts (the TLVs are left out), no throw', { timeout: 20_000 }, async () => {
  await loadCertificateFacts();
  assert.deepEqual({ ...serverCertificateFacts([Buffer.from('not a certificate')]) }, { signatureAlgorithm: undefined, keyAlgorithm: undefined });
  assert.deepEqual({ ...serverCertificateFacts([]) }, { signatureAlgorithm: undefined, keyAlgorithm: undefined });
});
