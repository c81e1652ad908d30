/**
 * OSSL_PARAM parameters an application hands the provider (provider-signature(7)
 * OSSL_FUNC_signature_set_ctx_params, provider-keymgmt(7) OSSL_FUNC_keymgmt_import), built
 * as OSSL_PARAM(3) allows: a UTF8_STRING with NULL data (a template) or one whose data_size,
 * not a NUL, ends it. The provider runs inside the application's process, so each must be
 * refused with the provider's error or read within data_size, never crash it or be read past.
 * set-params.c prints what each EVP_PKEY_CTX_set_params / EVP_PKEY_fromdata call returned.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { encodeKeyReferencePem } from '../../../src/keyd/key-reference.js';
import { requireTool, runTool } from '../../helpers/tools.js';
import { scratchDir } from '../../edge/system.js';
import { buildProvider, compileTestProgram, opensslConf, PROVIDER_SO } from './harness.js';
import { answerWithSignature, fakeKeyd, signer } from './fake-keyd.js';

test('UTF8 string parameters with NULL data or no NUL after data_size: refused or read within data_size, never a crash', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t)) return;
  const scratch = scratchDir('provider-params-');
  t.after(() => scratch.remove());
  const program = compileTestProgram('set-params', scratch.dir);
  // An RSA key (padding and PSS parameters apply to RSA only); no keyd: nothing is signed.
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ref = join(scratch.dir, 'rsa.ref');
  writeFileSync(ref, encodeKeyReferencePem({ socketPath: join(scratch.dir, 'none.sock'), serverName: 'a.test', keyRef: 'k-rsa', spki: publicKey.export({ type: 'spki', format: 'der' }) }));
  const conf = join(scratch.dir, 'openssl.cnf');
  writeFileSync(conf, opensslConf(PROVIDER_SO));
  const env = { ...process.env, OPENSSL_CONF: conf };

  // [argument, what the call must return]: NAME alone has NULL data; VALUE/SIZE has data_size SIZE and no NUL there.
  const signCases: Array<[string, number]> = [
    ['digest', 0], // was taken as "no digest" (the key's default) instead of refused
    ['digest=SHA256', 1], // control
    ['pad-mode', 0], // crashed (strcmp on NULL)
    ['pad-mode=pss', 1], // control
    ['pad-mode=pssXX/3', 1], // "pss": was read up to the NUL past data_size ("pssXXX3") and refused
    ['saltlen', 0], // crashed
    ['saltlen=digest', 1], // control
    ['mgf1-digest', 0], // crashed
    ['mgf1-digest=SHA256', 1], // control
    ['mgf1-digest=SHA256XYZ/6', 1], // "SHA256"
    [`digest=${'S'.repeat(64)}`, 0], // longer than any name: refused, not truncated
  ];
  const sign = await runTool(program, ['sign', ref, ...signCases.map(([arg]) => arg)], '', { env, timeoutMs: 30_000 });
  assert.equal(sign.signal, null, `killed by ${sign.signal} (stdout so far:\n${sign.stdout}): ${sign.stderr}`);
  assert.equal(sign.code, 0, sign.stderr);
  assert.deepEqual(sign.stdout.trimEnd().split('\n'), signCases.map(([arg, r]) => `${arg.split('=')[0]} -> ${r}`), sign.stderr);
  assert.match(sign.stderr, /delegator:dlg_param_get_name:.*parameter pad-mode: not a UTF8 string of at most 63 bytes/, sign.stderr);

  // The EC key manager's import of a group name (EVP_PKEY_fromdata with provider=delegator).
  const importCases: Array<[string, number]> = [
    ['group', 0], // crashed (OBJ_sn2nid on NULL)
    ['group=P-256', 1], // control
    ['group=P-256zz/5', 1], // "P-256": was read as "P-256zzX5" and refused
    ['group=P-521', 0], // control: a group keyd's keys never have
  ];
  const imported = await runTool(program, ['import', ...importCases.map(([arg]) => arg)], '', { env, timeoutMs: 30_000 });
  assert.equal(imported.signal, null, `killed by ${imported.signal} (stdout so far:\n${imported.stdout}): ${imported.stderr}`);
  assert.equal(imported.code, 0, imported.stderr);
  assert.deepEqual(imported.stdout.trimEnd().split('\n'), importCases.map(([arg, r]) => `${arg.split('=')[0]} -> ${r}`), imported.stderr);
});

test('a refused parameter leaves the signature as it was: the scheme keyd is asked for is the one last accepted', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-params-kept-');
  t.after(() => scratch.remove());
  const program = compileTestProgram('set-params', scratch.dir);
  const path = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, path); // P-256
  const keyd = await fakeKeyd(t, path, answerWithSignature(s));
  const env = { ...process.env, OPENSSL_CONF: s.conf };
  const run = async (ref: string, cases: Array<[string, number]>) => {
    const r = await runTool(program, ['sign', ref, ...cases.map(([arg]) => arg)], '', { env, timeoutMs: 30_000 });
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trimEnd().split('\n'), cases.map(([arg, n]) => `${arg.split('=')[0]} -> ${n}`), r.stderr);
  };

  // P-256 signs with SHA-256 only: a refused SHA-384 used to stay, and keyd was asked for
  // ecdsa_secp384r1_sha384 (0x0503) with a P-256 key. Control: SHA-256 set again is accepted.
  await run(s.refFile, [['digest=SHA384', 0], ['SIGN', 1], ['digest=SHA256', 1], ['SIGN', 1]]);
  assert.deepEqual(keyd.requests.map((r) => r.scheme), [0x0403, 0x0403]);

  // RSA: a refused padding ("none") or PSS salt length ("auto") made every later signature
  // fail ("no TLS signature scheme"); now the PKCS#1 v1.5 of the init, then PSS, stay.
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsaRef = join(scratch.dir, 'rsa.ref');
  writeFileSync(rsaRef, encodeKeyReferencePem({ socketPath: path, serverName: 'a.test', keyRef: 'k-rsa', spki: publicKey.export({ type: 'spki', format: 'der' }) }));
  await run(rsaRef, [['pad-mode=none', 0], ['SIGN', 1], ['pad-mode=pss', 1], ['saltlen=auto', 0], ['SIGN', 1]]);
  assert.deepEqual(keyd.requests.slice(2).map((r) => r.scheme), [0x0401, 0x0804], 'rsa_pkcs1_sha256, then rsa_pss_rsae_sha256');
});

test('digest-sign streaming: an empty update, a copy of the context, two updates and Final sign the whole content', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-stream-');
  t.after(() => scratch.remove());
  const program = compileTestProgram('set-params', scratch.dir);
  const path = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, path);
  const keyd = await fakeKeyd(t, path, answerWithSignature(s));
  const r = await runTool(program, ['stream', s.refFile], '', { env: { ...process.env, OPENSSL_CONF: s.conf }, timeoutMs: 30_000 });
  assert.equal(r.signal, null, r.stderr);
  assert.equal(r.code, 0, r.stderr);
  // The copy failed ("CRYPTO_memdup: malloc failure") after the empty update.
  assert.equal(r.stdout, 'copy -> 1\nfinal -> 1\n', r.stderr);
  // Control: keyd got the two updates joined, the exact CertificateVerify content (RFC 8446 §4.4.3).
  const content = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify\0'), Buffer.alloc(32, 0x55)]);
  assert.deepEqual(keyd.requests.map((q) => q.content), [content]);
});
