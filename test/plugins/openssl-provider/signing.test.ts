/**
 * The provider driven directly with `openssl pkeyutl` (docs/OPENSSL-PROVIDER.md): keyd stays
 * a non-oracle. Arbitrary data is refused by keyd (KEYD_NOT_HANDSHAKE_CONTENT, counted as a
 * refusal); a digest is refused by the provider before keyd; a TLS 1.3 server
 * CertificateVerify content is signed, and node:crypto verifies that signature with the
 * certificate's key (the positive control, by an oracle outside the provider). A keyd that
 * never answers fails the operation after the configured timeout, naming it.
 */
import assert from 'node:assert/strict';
import { randomBytes, verify, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { main as adminMain } from '../../../src/cli/admin.js';
import { requireTool, runTool } from '../../helpers/tools.js';
import { scratchDir } from '../../edge/system.js';
import { buildProvider, opensslConf, PROVIDER_SO, setUpKeyAndReference } from './harness.js';

/** RFC 8446 §4.4.3: 64 spaces, the server context string, 0x00, the transcript hash. */
function certificateVerifyContent(hash: Buffer): Buffer {
  return Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify'), Buffer.from([0]), hash]);
}

test('pkeyutl through the provider: keyd refuses arbitrary data and digests, signs a CertificateVerify content', { timeout: 120_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-pkeyutl-');
  t.after(() => scratch.remove());
  const setup = await setUpKeyAndReference(scratch.dir, 'ecdsa-p256');
  t.after(() => setup.keyd.kill());
  const sign = (input: string, extra: string[]) =>
    runTool('openssl', ['pkeyutl', '-sign', '-inkey', setup.refFile, '-in', input, '-out', join(scratch.dir, 'sig.bin'), ...extra], '', { env: setup.env });

  const arbitrary = join(scratch.dir, 'arbitrary.bin');
  writeFileSync(arbitrary, 'transfer 1000 EUR to account 42, signed by a.test\n');
  const before = await setup.counts();
  const refused = await sign(arbitrary, ['-rawin', '-digest', 'sha256']);
  assert.notEqual(refused.code, 0, 'arbitrary data is not signed');
  assert.match(refused.stderr, /keyd refused .* for a\.test: KEYD_NOT_HANDSHAKE_CONTENT/, refused.stderr);
  const afterRefusal = await setup.counts();
  assert.deepEqual(afterRefusal, { signatures: before.signatures, refusals: before.refusals + 1 }, 'keyd counted the refusal and signed nothing');

  // A 32-byte "digest" handed to EVP_PKEY_sign: refused in the provider, keyd never asked.
  const digest = join(scratch.dir, 'digest.bin');
  writeFileSync(digest, randomBytes(32));
  const digestRefused = await sign(digest, []);
  assert.notEqual(digestRefused.code, 0);
  assert.match(digestRefused.stderr, /never a digest/, digestRefused.stderr);
  assert.deepEqual(await setup.counts(), afterRefusal, 'keyd saw no request for a digest');

  // Positive control: the exact content a TLS 1.3 server signs is signed, and verifies.
  const content = certificateVerifyContent(randomBytes(32));
  const cv = join(scratch.dir, 'cv.bin');
  writeFileSync(cv, content);
  const signed = await sign(cv, ['-rawin', '-digest', 'sha256']);
  assert.equal(signed.code, 0, signed.stderr);
  const signature = readFileSync(join(scratch.dir, 'sig.bin'));
  assert.ok(verify('sha256', content, new X509Certificate(setup.pki.leafCertPem).publicKey, signature), 'node:crypto verifies keyd\'s signature with the certificate');
  assert.deepEqual(await setup.counts(), { signatures: afterRefusal.signatures + 1, refusals: afterRefusal.refusals });
});

test('a malformed reference file is no key (and a well-formed one gives the certificate\'s public key)', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-badref-');
  t.after(() => scratch.remove());
  const conf = join(scratch.dir, 'openssl.cnf');
  writeFileSync(conf, opensslConf(PROVIDER_SO));
  const bad = join(scratch.dir, 'bad.ref');
  // A SEQUENCE { INTEGER 2 }: our label, wrong content.
  writeFileSync(bad, `-----BEGIN DELEGATOR KEY REFERENCE-----\n${Buffer.from([0x30, 0x03, 0x02, 0x01, 0x02]).toString('base64')}\n-----END DELEGATOR KEY REFERENCE-----\n`);
  const env = { ...process.env, OPENSSL_CONF: conf };
  const r = await runTool('openssl', ['pkey', '-in', bad, '-pubout'], '', { env });
  // OpenSSL's file store keeps only its own "unsupported" error, not the decoder's reason.
  assert.notEqual(r.code, 0);
  assert.doesNotMatch(r.stdout, /BEGIN PUBLIC KEY/);

  // Control: a reference export-ref wrote decodes to exactly the certificate's public key.
  const setup = await setUpKeyAndReference(scratch.dir, 'rsa2048');
  t.after(() => setup.keyd.kill());
  const good = await runTool('openssl', ['pkey', '-in', setup.refFile, '-pubout'], '', { env });
  assert.equal(good.code, 0, good.stderr);
  assert.equal(good.stdout, new X509Certificate(setup.pki.leafCertPem).publicKey.export({ type: 'spki', format: 'pem' }));
});

test('a keyd that never answers: the signature fails after timeout_ms, naming the timeout', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-timeout-');
  t.after(() => scratch.remove());
  const setup = await setUpKeyAndReference(scratch.dir, 'ecdsa-p256');
  t.after(() => setup.keyd.kill());
  // A socket that accepts and reads, and never answers.
  const silentPath = join(scratch.dir, 'silent.sock');
  const silent = createServer((socket) => socket.resume());
  await new Promise<void>((resolve) => silent.listen(silentPath, resolve));
  t.after(() => silent.close());
  const ref = join(scratch.dir, 'silent.ref');
  const io = { out: () => {}, err: (s: string) => assert.fail(s) };
  assert.equal(await adminMain(['--socket', setup.keyd.adminSocket, 'export-ref', 'a.test', '--out', ref, '--keyd-socket', silentPath], io), 0);
  const conf = join(scratch.dir, 'timeout.cnf');
  writeFileSync(conf, opensslConf(PROVIDER_SO).replace('timeout_ms = 5000', 'timeout_ms = 700'));
  const cv = join(scratch.dir, 'cv.bin');
  writeFileSync(cv, certificateVerifyContent(randomBytes(32)));
  const r = await runTool('openssl', ['pkeyutl', '-sign', '-rawin', '-digest', 'sha256', '-inkey', ref, '-in', cv, '-out', join(scratch.dir, 'sig.bin')], '', {
    env: { ...process.env, OPENSSL_CONF: conf },
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /keyd did not answer in time.*did not answer within 700 ms/, r.stderr);
});
