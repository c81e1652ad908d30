/**
 * RFC 9345 end to end: keyd (child process, real store) certifies a credential for a key the
 * edge (in this process, real engine) made; clients that offer delegated_credential get a
 * CertificateVerify signed in the edge with it, proved from the client's side (the signature
 * verifies under the credential's key, not the certificate's; keyd's signing count for the
 * key does not move); others get keyd's signature. With keyd killed, credential handshakes
 * (our scripted client, NSS tstclnt -B) still complete; openssl s_client fails with an alert.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { validateConfig } from '../../src/edge/config.js';
import { startEdge, type RunningEdge } from '../../src/edge/edge.js';
import { loadEngine } from '../../src/edge/engine.js';
import { KeydClient } from '../../src/keyd/client.js';
import { Opcode } from '../../src/keyd/protocol.js';
import {
  certificateVerifyScheme,
  certificateVerifyVerifies,
  parseCertificateMessage,
  validateDelegatedCredential,
} from '../helpers/dc-verifier.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { Tls13Client, socketTransport } from '../helpers/tls13-client.js';
import { describeResult, hasTool, runTool } from '../helpers/tools.js';
import { KeydProcess, scratchDir, startHttpUpstream, type HttpUpstream } from './system.js';

const ECDSA_P256 = 0x0403;
const RSA_PSS_RSAE_SHA256 = 0x0804;
const DELEGATED_CREDENTIAL = 34;
const NSS = hasTool('tstclnt') && hasTool('certutil');

let scratch: ReturnType<typeof scratchDir>;
let keyd: KeydProcess;
let upstream: HttpUpstream;
let pki: TestPki;
let rsaPki: TestPki;
let edge: RunningEdge;
let nssDir: string;
let requestFile: string;

async function keydSignatures(): Promise<number> {
  const admin = await KeydClient.connect({ socketPath: keyd.adminSocket });
  try {
    const clients = (await admin.admin(Opcode.stats, {})).json.clients as Record<string, { signatures: number }>;
    return Object.values(clients).reduce((n, c) => n + c.signatures, 0);
  } finally {
    admin.close();
  }
}

async function handshake(serverName: string, opts: { dc?: number[]; signatureAlgorithms?: number[] } = {}) {
  const transport = await socketTransport(edge.addresses[0]!.port);
  const client = new Tls13Client(transport, {
    serverName,
    ...(opts.dc ? { delegatedCredentialSchemes: opts.dc } : {}),
    ...(opts.signatureAlgorithms ? { signatureAlgorithms: opts.signatureAlgorithms } : {}),
  });
  try {
    await client.handshake();
    return client.authentication!;
  } finally {
    transport.socket.destroy();
  }
}

before(async () => {
  scratch = scratchDir('edge-dc-');
  [pki, rsaPki] = await Promise.all([
    makeTestPki({ commonName: 'dc.test', extraNames: ['dc.test'], delegationUsage: 'non-critical' }),
    makeTestPki({ keyType: 'rsa2048', commonName: 'rsa.test', extraNames: ['rsa.test'], delegationUsage: 'non-critical' }),
  ]);
  keyd = new KeydProcess(scratch.dir);
  await keyd.start();
  await keyd.put(['dc.test'], pki.leafKey, pki.chainDer);
  await keyd.put(['rsa.test'], rsaPki.leafKey, rsaPki.chainDer);
  upstream = await startHttpUpstream('DC');
  const config = validateConfig({
    listen: ['127.0.0.1:0'],
    keyd: [keyd.socket],
    routes: [{ names: ['dc.test', 'rsa.test'], upstream: `127.0.0.1:${upstream.port}` }],
    defaultServerName: 'dc.test',
    workers: 1,
    logLevel: 'silent',
  });
  edge = await startEdge(config, {
    createTlsServer: await loadEngine(),
    connectKeyd: (endpoint, opts) => KeydClient.connect(endpoint, opts),
    logger: pino({ level: 'silent' }),
  });
  const held = (name: string) => edge.identities.get(name) as Promise<{ keyRef: string }>;
  await Promise.all([edge.credentials!.whenHeld((await held('dc.test')).keyRef), edge.credentials!.whenHeld((await held('rsa.test')).keyRef)]);

  if (NSS) {
    nssDir = mkdtempSync(join(tmpdir(), 'delegator-dc-nss-'));
    requestFile = join(nssDir, 'request.txt');
    writeFileSync(requestFile, 'GET / HTTP/1.0\r\nHost: dc.test\r\n\r\n');
    writeFileSync(join(nssDir, 'ca.pem'), pki.caCertPem);
    for (const args of [
      ['-N', '-d', `sql:${nssDir}`, '--empty-password'],
      ['-A', '-d', `sql:${nssDir}`, '-n', 'dc-test-ca', '-t', 'C,,', '-i', join(nssDir, 'ca.pem')],
    ]) {
      const result = await runTool('certutil', args);
      assert.equal(result.code, 0, describeResult(result));
    }
  }
});

after(async () => {
  await edge?.close();
  await keyd?.kill();
  await upstream?.close();
  scratch?.remove();
  if (nssDir) rmSync(nssDir, { recursive: true, force: true });
});

function tstclnt(args: readonly string[] = []) {
  return runTool(
    'tstclnt',
    ['-h', '127.0.0.1', '-p', String(edge.addresses[0]!.port), '-a', 'dc.test', '-d', `sql:${nssDir}`, '-V', 'tls1.3:tls1.3', '-A', requestFile, ...args],
    '',
    { timeoutMs: 15_000 },
  );
}

for (const [name, cert, algorithm] of [
  ['ECDSA P-256', () => pki, ECDSA_P256],
  ['RSA-2048', () => rsaPki, RSA_PSS_RSAE_SHA256],
] as const) {
  const serverName = name === 'RSA-2048' ? 'rsa.test' : 'dc.test';
  test(`${name} certificate: a client offering delegated_credential gets the credential, and keyd signs nothing`, async () => {
    const before = await keydSignatures();
    // The certificate's own scheme is in the list too: the edge sends a credential only then (NSS's rule).
    const auth = await handshake(serverName, { dc: [...new Set([ECDSA_P256, algorithm])] });
    const [leaf, ...rest] = parseCertificateMessage(auth.certificate);
    assert.ok(leaf!.extensions.has(DELEGATED_CREDENTIAL), 'the end-entity entry carries delegated_credential');
    assert.ok(rest.every((e) => e.extensions.size === 0), 'no other entry carries extensions (RFC 9345 §4.1.1)');
    assert.deepEqual(leaf!.certificate, Buffer.from(cert().leafCertDer));
    const cvScheme = certificateVerifyScheme(auth.certificateVerify);
    assert.equal(cvScheme, ECDSA_P256);
    const { key, dc } = validateDelegatedCredential(leaf!.extensions.get(DELEGATED_CREDENTIAL)!, leaf!.certificate, Date.now(), cvScheme);
    assert.equal(dc.algorithm, algorithm, 'the certificate key certified the credential with its own scheme');
    assert.ok(certificateVerifyVerifies(auth.certificateVerify, key, auth.transcriptHashBeforeVerify), 'CertificateVerify verifies under the credential key');
    if (name === 'ECDSA P-256') {
      assert.ok(!certificateVerifyVerifies(auth.certificateVerify, cert().leafKey, auth.transcriptHashBeforeVerify), 'and not under the certificate key');
    }
    assert.equal(await keydSignatures(), before, "keyd's signing count did not move");
  });

  test(`${name} certificate: a client without the extension gets a keyd-signed handshake`, async () => {
    const before = await keydSignatures();
    const auth = await handshake(serverName);
    const [leaf] = parseCertificateMessage(auth.certificate);
    assert.equal(leaf!.extensions.size, 0, 'no credential without the extension (RFC 9345 §4.1.1 MUST NOT)');
    const { createPublicKey } = await import('node:crypto');
    assert.ok(certificateVerifyVerifies(auth.certificateVerify, createPublicKey(cert().leafKey), auth.transcriptHashBeforeVerify));
    assert.equal(await keydSignatures(), before + 1, 'keyd signed it');
  });
}

test('a client whose delegated_credential list lacks the credential scheme, or whose signature_algorithms lacks the certificate scheme, is signed by keyd', async () => {
  const before = await keydSignatures();
  const otherScheme = await handshake('dc.test', { dc: [0x0503] });
  assert.equal(parseCertificateMessage(otherScheme.certificate)[0]!.extensions.size, 0);
  // RFC 9345 §4.1.1: the credential's algorithm must be in signature_algorithms.
  const noCertScheme = await handshake('rsa.test', { dc: [ECDSA_P256, RSA_PSS_RSAE_SHA256], signatureAlgorithms: [0x0805] });
  assert.equal(parseCertificateMessage(noCertScheme.certificate)[0]!.extensions.size, 0);
  // NSS's offer (ECDSA schemes only in delegated_credential, rsa_pss_rsae_sha256 in
  // signature_algorithms): NSS would reject a credential certified with rsa_pss_rsae_sha256
  // (illegal_parameter), so the RSA certificate's key signs instead.
  const nssShaped = await handshake('rsa.test', { dc: [ECDSA_P256, 0x0503, 0x0603, 0x0203] });
  assert.equal(parseCertificateMessage(nssShaped.certificate)[0]!.extensions.size, 0);
  assert.equal(await keydSignatures(), before + 3);
});

test('metrics: handshakes by signing path and the credential expiry per identity', async () => {
  const text = await edge.metrics.registry.metrics();
  assert.match(text, /edge_handshakes_by_signing_path_total\{path="credential"\} [1-9]/);
  assert.match(text, /edge_handshakes_by_signing_path_total\{path="keyd"\} [1-9]/);
  const expiry = [...text.matchAll(/edge_delegated_credential_expiry_seconds\{identity="[^"]+"\} (\d+)/g)].map((m) => Number(m[1]));
  assert.equal(expiry.length, 2);
  for (const e of expiry) assert.ok(e * 1000 > Date.now() && e * 1000 <= Date.now() + 4 * 3600_000 + 5000, `expiry ${e}`);
});

test('NSS tstclnt -B verifies the credential (and keyd signs nothing)', { skip: !NSS && 'tstclnt/certutil not installed (apt-get install libnss3-tools)' }, async () => {
  const before = await keydSignatures();
  const result = await tstclnt(['-B', '-v']);
  assert.equal(result.code, 0, describeResult(result));
  assert.match(result.stdout, /upstream DC/);
  assert.equal(await keydSignatures(), before, "keyd's signing count did not move");
  // Control: without -B, keyd signs.
  const plain = await tstclnt(['-v']);
  assert.equal(plain.code, 0, describeResult(plain));
  assert.equal(await keydSignatures(), before + 1);
});

test('keyd stopped: credential clients keep completing handshakes; openssl s_client fails with an alert', async () => {
  await keyd.kill();
  // The identity cache would serve for minutes; drop it so the fallback is what serves.
  edge.identities.clear();
  const auth = await handshake('dc.test', { dc: [ECDSA_P256] });
  const [leaf] = parseCertificateMessage(auth.certificate);
  const { key } = validateDelegatedCredential(leaf!.extensions.get(DELEGATED_CREDENTIAL)!, leaf!.certificate, Date.now(), ECDSA_P256);
  assert.ok(certificateVerifyVerifies(auth.certificateVerify, key, auth.transcriptHashBeforeVerify));
  if (NSS) {
    const result = await tstclnt(['-B']);
    assert.equal(result.code, 0, describeResult(result));
    assert.match(result.stdout, /upstream DC/);
  }
  if (hasTool('openssl')) {
    const s = await runTool(
      'openssl',
      ['s_client', '-connect', `127.0.0.1:${edge.addresses[0]!.port}`, '-servername', 'dc.test', '-tls1_3'],
      '',
      { timeoutMs: 15_000 },
    );
    assert.notEqual(s.code, 0, describeResult(s));
    assert.match(s.stdout + s.stderr, /alert internal error/, describeResult(s));
  }
});
