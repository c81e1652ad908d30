/**
 * keyd with its keys in a PKCS#11 token (SoftHSM2, made at test time): keys generated in
 * the token serve real TLS handshakes through the edge; they are sensitive and never
 * extractable as the PKCS#11 API itself reports; a key put into the token leaves no
 * bytes in keyd's store or memory (a software key does: the control); a removed token or
 * a wrong PIN fails precisely while keyd serves its other keys, and the token coming back
 * resumes signing without a restart.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalAdminTransport } from '../../../src/keyd/admin-client.js';
import { KeydClient } from '../../../src/keyd/client.js';
import { parseTokenUri } from '../../../src/keyd/pkcs11/config.js';
import type { KeyHandle } from '../../../src/keyd/key-handle.js';
import { SealedStore } from '../../../src/keyd/store.js';
import { certificateVerifyContent } from '../../../src/tls/signer.js';
import { SignatureScheme } from '../../../src/tls/wire/codepoints.js';
import { detachedPrivateKey } from '../../helpers/detached-keys.js';
import { heapSnapshot, processMemoryReadable, scanProcessMemory } from '../../helpers/memory-scan.js';
import { describeResult, requireTool, runTool } from '../../helpers/tools.js';
import { KeydProcess, MAIN, scratchDir, startEdgeProcess, startHttpUpstream } from '../../edge/system.js';
import { issueFromCsr, makeIdentity, pem, type TestIdentity } from '../fixtures.js';
import { inspectToken, makeSoftHsmToken, requireSoftHsm, type SoftHsmToken } from './softhsm.js';

const CKM_ECDSA = 0x1041;
const CKM_RSA_PKCS_PSS = 0x0d;
const CKM_EDDSA = 0x1057;

const KEY_TYPES = [
  { type: 'ecdsa-p256', mechanism: CKM_ECDSA, peerSignature: /Peer signature type: ECDSA/ },
  { type: 'ecdsa-p384', mechanism: CKM_ECDSA, peerSignature: /Peer signature type: ECDSA/ },
  { type: 'rsa2048', mechanism: CKM_RSA_PKCS_PSS, peerSignature: /Peer signature type: RSA-PSS/ },
  { type: 'ed25519', mechanism: CKM_EDDSA, peerSignature: /Peer signature type: ed25519/i },
] as const;

function idOf(location: string): string {
  const id = parseTokenUri(location).id;
  assert.ok(id && id.length > 0, `the location ${location} names the object's CKA_ID`);
  return id.toString('hex');
}

async function startTokenKeyd(dir: string, token: SoftHsmToken | undefined, extra: { execArgv?: string[] } = {}): Promise<KeydProcess> {
  const keyd = new KeydProcess(dir);
  await keyd.start({ ...(token ? { config: token.config, env: token.env } : {}), ...extra, cwd: dir });
  return keyd;
}

function mapsMention(pid: number, what: string): boolean {
  return readFileSync(`/proc/${pid}/maps`, 'utf8').includes(what);
}

test('keys generated inside the token: CSR → chain → TLS 1.3 through the edge (openssl s_client), sensitive and never extractable', { timeout: 240_000 }, async (t) => {
  if (!requireSoftHsm(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const token = makeSoftHsmToken();
  const scratch = scratchDir('keyd-token-gen-');
  t.after(() => {
    scratch.remove();
    token.cleanup();
  });
  const offered = new Set(inspectToken(token, undefined).mechanisms);
  const keyd = await startTokenKeyd(scratch.dir, token);
  t.after(() => keyd.kill());
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=Token Test CA' });
  const caFile = join(scratch.dir, 'ca.pem');
  writeFileSync(caFile, pem(ca.chain[0]!));
  const admin = await LocalAdminTransport.connect(keyd.adminSocket);
  t.after(() => admin.close());
  const upstream = await startHttpUpstream('T');
  t.after(() => upstream.close());

  const served: { name: string; peerSignature: RegExp; id: string }[] = [];
  for (const { type, mechanism, peerSignature } of KEY_TYPES) {
    const name = `${type}.token.test`;
    if (!offered.has(mechanism)) {
      t.diagnostic(`SoftHSM here does not offer mechanism 0x${mechanism.toString(16)}: ${type} not tested`);
      await assert.rejects(admin.generate(name, type, `CN=${name}`, { token: token.uri }), (err: Error & { code: string }) => err.code === 'KEYD_TOKEN_MECHANISM');
      continue;
    }
    const { info, csrPem } = await admin.generate(name, type, `CN=${name}`, { token: token.uri });
    assert.match(info.location, new RegExp(`^pkcs11:token=${token.label};object=`), 'the key lives in the token');
    assert.equal(await new x509.Pkcs10CertificateRequest(csrPem).verify(), true, `${type}: the CSR's signature (made by the token) verifies`);
    const chain = await issueFromCsr(csrPem, ca);
    const set = await admin.setChain(name, chain);
    assert.equal(set.hasChain, true);
    served.push({ name, peerSignature, id: idOf(info.location) });
  }
  assert.ok(served.length >= 3, 'SoftHSM offers at least ECDSA and RSA-PSS');

  const edge = await startEdgeProcess(['--keyd', keyd.socket, ...served.flatMap((s) => ['--route', `${s.name}=127.0.0.1:${upstream.port}`]), '--log-level', 'warn']);
  t.after(() => edge.stop('SIGKILL'));
  for (const { name, peerSignature } of served) {
    const r = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${edge.port}`, '-tls1_3', '-ign_eof', '-servername', name, '-CAfile', caFile, '-verify_return_error'], 'GET / HTTP/1.0\r\n\r\n');
    assert.match(r.stdout, new RegExp(`subject=CN = ${name.replace(/\./g, '\\.')}`), describeResult(r));
    assert.match(r.stdout, /Verify return code: 0 \(ok\)/, describeResult(r));
    assert.match(r.stdout, peerSignature, describeResult(r));
    assert.match(r.stdout, /upstream T/, describeResult(r));
  }

  // What the PKCS#11 API says about the objects, asked by a separate client.
  for (const { name, id } of served) {
    const seen = inspectToken(token, id);
    assert.equal(seen.sensitive, true, `${name}: CKA_SENSITIVE`);
    assert.equal(seen.extractable, false, `${name}: CKA_EXTRACTABLE`);
    assert.equal(seen.private, true, `${name}: CKA_PRIVATE`);
    assert.equal(seen.alwaysSensitive, true, `${name}: CKA_ALWAYS_SENSITIVE (generated sensitive)`);
    assert.equal(seen.neverExtractable, true, `${name}: CKA_NEVER_EXTRACTABLE (generated non-extractable)`);
    assert.equal(seen.secretRead, 'CKR_ATTRIBUTE_SENSITIVE', `${name}: reading the private value fails`);
  }
  // Control: the same inspector reads the value of a key made extractable.
  assert.match(inspectToken(token, undefined, true).secretRead, /^read 32 bytes$/);
});

/** The ways a P-256 scalar may sit in memory: big-endian (DER, JWK) and as little-endian BIGNUM words (OpenSSL). */
function scalarNeedles(label: string, key: KeyObject): { name: string; value: Buffer }[] {
  const d = Buffer.from(detachedPrivateKey(key).export({ format: 'jwk' }).d!, 'base64url');
  return [
    { name: `${label} scalar`, value: d },
    { name: `${label} scalar, little-endian`, value: Buffer.from(d).reverse() },
  ];
}

function scalarTexts(key: KeyObject): string[] {
  const d = Buffer.from(detachedPrivateKey(key).export({ format: 'jwk' }).d!, 'base64url');
  return [d.toString('hex'), d.toString('base64').replace(/=+$/, ''), d.toString('base64url')];
}

async function identityFor(name: string, ca: TestIdentity): Promise<TestIdentity> {
  return makeIdentity('ecdsa-p256', [name], ca);
}

test('a key put into the token (admin put --token) leaves no bytes in keyd\'s store or memory; a software key does (control)', { timeout: 240_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken();
  const scratch = scratchDir('keyd-token-put-');
  t.after(() => {
    scratch.remove();
    token.cleanup();
  });
  const keyd = await startTokenKeyd(scratch.dir, token, { execArgv: ['--heapsnapshot-signal=SIGUSR2'] });
  t.after(() => keyd.kill());
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true });
  const soft = await identityFor('soft.test', ca);
  const hard = await identityFor('hard.test', ca);

  // The software key with the plain admin put; the other through the CLI, --token.
  await keyd.put(['soft.test'], soft.privateKey, soft.chain);
  const keyFile = join(scratch.dir, 'hard.key.pem');
  const chainFile = join(scratch.dir, 'hard.chain.pem');
  writeFileSync(keyFile, hard.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  writeFileSync(chainFile, pem(hard.chain[0]!));
  const cli = await runTool(process.execPath, [MAIN, 'admin', '--socket', keyd.adminSocket, 'put', 'hard.test', '--key', keyFile, '--chain', chainFile, '--token', token.uri]);
  assert.equal(cli.code, 0, describeResult(cli));
  assert.match(cli.stdout, /installed ecdsa-p256 key \S+ for hard\.test: ecdsa-p256 key.* in pkcs11:token=keyd-test;object=/);

  // Both sign, verified against their certificates.
  const signer = await KeydClient.connect({ socketPath: keyd.socket });
  t.after(() => signer.close());
  for (const [name, id] of [['soft.test', soft], ['hard.test', hard]] as const) {
    const identity = await signer.identity(name);
    assert.ok(identity, name);
    for (let i = 0; i < 20; i++) {
      const hash = randomBytes(32);
      const sig = await signer.sign(identity.keyRef, name, SignatureScheme.ecdsa_secp256r1_sha256, hash);
      assert.ok(verify('sha256', certificateVerifyContent(hash), createPublic(id), sig), `${name} signature verifies`);
    }
  }
  const hardKey = (await LocalAdminTransport.connect(keyd.adminSocket).then(async (a) => {
    try {
      return await a.show('hard.test');
    } finally {
      a.close();
    }
  }));
  const seen = inspectToken(token, idOf(hardKey.location));
  assert.deepEqual([seen.sensitive, seen.extractable, seen.secretRead], [true, false, 'CKR_ATTRIBUTE_SENSITIVE'], 'the imported object is sensitive and not extractable');

  // The store: the software record holds its PKCS#8 (control); the token record only a reference.
  const store = await SealedStore.open({ dataDir: join(scratch.dir, 'data'), rootKeyPath: join(scratch.dir, 'root.key'), machineIdPath: join(scratch.dir, 'machine-id') });
  const references: object[] = [];
  const { keys } = await store.loadKeys((reference) => {
    references.push(reference);
    return { keyType: reference.keyType, publicKey: createPublic(hard), location: 'test', sign: () => Promise.reject(new Error('not here')), storedForm: () => ({ kind: 'reference', reference }) } satisfies KeyHandle;
  });
  const softRecord = keys.find((k) => k.names.includes('soft.test'))!.key.storedForm();
  assert.equal(softRecord.kind, 'pkcs8');
  const softScalar = scalarNeedles('soft', soft.privateKey)[0]!.value;
  assert.ok(softRecord.kind === 'pkcs8' && softRecord.der.includes(softScalar), 'control: the software record holds its key');
  assert.equal(references.length, 1, 'one record is a token reference');
  const referenceText = JSON.stringify(references[0]);
  for (const text of scalarTexts(hard.privateKey)) assert.ok(!referenceText.includes(text), 'the token record holds no form of the key');
  assert.match(referenceText, /"backend":"pkcs11"/);

  // keyd's memory: a heap snapshot (which also collects garbage), then every mapping.
  const pid = keyd.child!.pid!;
  const snapshot = await heapSnapshot(pid, scratch.dir);
  assert.ok(snapshot.includes('hard.test'), 'the snapshot holds keyd\'s strings');
  assert.deepEqual(scalarTexts(hard.privateKey).filter((x) => snapshot.includes(x)), [], 'the token key in keyd\'s heap snapshot');
  await signer.ping(); // let the collector's weak callbacks run
  if (!processMemoryReadable(pid)) {
    t.diagnostic('/proc/PID/mem not readable here: process-memory scan skipped');
    return;
  }
  const found = scanProcessMemory(pid, [...scalarNeedles('token key', hard.privateKey), ...scalarNeedles('software key', soft.privateKey)]);
  assert.ok(found.some((f) => f.startsWith('software key')), `control: the software key is in keyd's memory (found: ${found.join(', ') || 'nothing'})`);
  assert.deepEqual(found.filter((f) => f.startsWith('token key')), [], 'the token key in keyd\'s memory');
});

function createPublic(id: TestIdentity): KeyObject {
  return createPublicKey(id.privateKey);
}

test('token removed or PIN wrong: a precise error while keyd serves its other keys; the token back: signing resumes without a restart', { timeout: 240_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken();
  const scratch = scratchDir('keyd-token-gone-');
  t.after(() => {
    scratch.remove();
    token.cleanup();
  });
  let keyd = await startTokenKeyd(scratch.dir, token);
  t.after(() => keyd.kill());
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true });
  const soft = await identityFor('soft.test', ca);
  await keyd.put(['soft.test'], soft.privateKey, soft.chain);
  const admin = await LocalAdminTransport.connect(keyd.adminSocket);
  const { csrPem } = await admin.generate('hard.test', 'ecdsa-p256', 'CN=hard.test', { token: token.uri });
  await admin.setChain('hard.test', await issueFromCsr(csrPem, ca));
  admin.close();

  const signer = await KeydClient.connect({ socketPath: keyd.socket });
  const softRef = (await signer.identity('soft.test'))!.keyRef;
  const hardRef = (await signer.identity('hard.test'))!.keyRef;
  const sign = (ref: string, name: string) => signer.sign(ref, name, SignatureScheme.ecdsa_secp256r1_sha256, randomBytes(32));
  await sign(hardRef, 'hard.test');
  assert.ok(mapsMention(keyd.child!.pid!, 'pkcs11.node'), 'control: a keyd using a token has the PKCS#11 binding loaded');

  // Unplugged.
  token.remove();
  await assert.rejects(sign(hardRef, 'hard.test'), (err: Error & { code: string }) => {
    assert.equal(err.code, 'KEYD_TOKEN_ABSENT', err.message);
    assert.match(err.message, /token "keyd-test" is not present in module .*libsofthsm2\.so/);
    assert.match(err.message, /CKR_[A-Z_]+/, 'the PKCS#11 return value is named');
    return true;
  });
  await assert.rejects(sign(hardRef, 'hard.test'), (err: Error & { code: string }) => err.code === 'KEYD_TOKEN_ABSENT');
  assert.ok((await sign(softRef, 'soft.test')).length > 0, 'the software key signs while the token is away');
  await signer.ping();
  assert.equal(keyd.child!.exitCode, null, 'keyd keeps running');

  // Plugged back: the next request reconnects.
  token.restore();
  assert.ok((await sign(hardRef, 'hard.test')).length > 0, 'signing resumes without a restart');

  // A wrong PIN: refused with the CKR value, not retried; fixed in the file: resumes.
  writeFileSync(token.pinFile, 'wrong-pin\n');
  token.remove();
  await assert.rejects(sign(hardRef, 'hard.test'), (err: Error & { code: string }) => err.code === 'KEYD_TOKEN_ABSENT');
  token.restore();
  await assert.rejects(sign(hardRef, 'hard.test'), (err: Error & { code: string }) => {
    assert.equal(err.code, 'KEYD_TOKEN_PIN', err.message);
    assert.match(err.message, /C_Login \(PIN from pin file .*\) returned CKR_PIN_INCORRECT \(0x000000a0\)/);
    assert.ok(!err.message.includes('wrong-pin') && !err.message.includes(token.pin), 'the PIN is never in a message');
    return true;
  });
  await assert.rejects(sign(hardRef, 'hard.test'), (err: Error & { code: string }) => {
    assert.equal(err.code, 'KEYD_TOKEN_PIN');
    assert.match(err.message, /refused this PIN before/);
    return true;
  });
  assert.ok((await sign(softRef, 'soft.test')).length > 0, 'the software key signs while the PIN is wrong');
  writeFileSync(token.pinFile, `${token.pin}\n`);
  assert.ok((await sign(hardRef, 'hard.test')).length > 0, 'the right PIN in the file: signing resumes');
  signer.close();

  // The same store without a token config: the binding is never loaded, the key is refused precisely.
  await keyd.kill();
  keyd = await startTokenKeyd(scratch.dir, undefined);
  const plain = await KeydClient.connect({ socketPath: keyd.socket });
  t.after(() => plain.close());
  assert.ok((await plain.sign(softRef, 'soft.test', SignatureScheme.ecdsa_secp256r1_sha256, randomBytes(32))).length > 0);
  await assert.rejects(plain.sign(hardRef, 'hard.test', SignatureScheme.ecdsa_secp256r1_sha256, randomBytes(32)), (err: Error & { code: string }) => {
    assert.equal(err.code, 'KEYD_TOKEN_UNCONFIGURED', err.message);
    return true;
  });
  assert.equal(mapsMention(keyd.child!.pid!, 'pkcs11.node'), false, 'keyd without a token config does not load the PKCS#11 binding');
});
