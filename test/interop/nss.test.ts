/**
 * Interop: NSS (Firefox's TLS library) through its test client `tstclnt`, against our
 * engine. The CA goes into a throw-away NSS database; `-h 127.0.0.1 -a localhost`
 * connects by address and sends SNI localhost; `-A file` sends an HTTP request, which
 * our test server answers and then closes, so tstclnt exits by itself.
 */
import { test, describe, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEngineServer, TEST_RESPONSE_BODY, type TestServer } from '../helpers/server.js';
import { makeTestPki, writePkiFiles, type PkiFiles, type TestPki } from '../helpers/pki.js';
import { hasTool, runTool, describeResult, type ToolResult } from '../helpers/tools.js';

const NSS_MISSING = !hasTool('tstclnt') || !hasTool('certutil');

let pki: TestPki;
let files: PkiFiles;
let dir: string;
let nssDb: string;
let requestFile: string;

before(async () => {
  if (NSS_MISSING) return;
  pki = await makeTestPki({ keyType: 'ecdsa-p256' });
  files = writePkiFiles(pki);
  dir = mkdtempSync(join(tmpdir(), 'delegator-nss-'));
  nssDb = `sql:${dir}`;
  requestFile = join(dir, 'request.txt');
  writeFileSync(requestFile, 'GET /nss HTTP/1.0\r\nHost: localhost\r\n\r\n');
  for (const args of [
    ['-N', '-d', nssDb, '--empty-password'],
    ['-A', '-d', nssDb, '-n', 'delegator-test-ca', '-t', 'C,,', '-i', files.caFile],
  ]) {
    const result = await runTool('certutil', args);
    assert.equal(result.code, 0, describeResult(result));
  }
});
after(() => {
  files?.remove();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function tstclnt(server: TestServer, args: readonly string[]): Promise<ToolResult> {
  return runTool(
    'tstclnt',
    ['-h', '127.0.0.1', '-p', String(server.port), '-a', 'localhost', '-d', nssDb, '-V', 'tls1.3:tls1.3', '-A', requestFile, ...args],
    '',
    { timeoutMs: 15_000 },
  );
}

async function server(t: TestContext, options: Parameters<typeof startEngineServer>[0] = {}): Promise<TestServer> {
  return startEngineServer({ pki, ...options }, t);
}

describe('NSS tstclnt', { skip: NSS_MISSING && 'tstclnt/certutil not installed (apt-get install libnss3-tools)' }, () => {
  for (const [nssGroup, group] of [
    ['x25519', 'x25519'],
    ['P256', 'secp256r1'],
    ['P384', 'secp384r1'],
  ] as const) {
    test(`group ${nssGroup}: verified handshake, HTTP answer`, async (t) => {
      const s = await server(t);
      const result = await tstclnt(s, ['-I', nssGroup, '-v']);
      assert.equal(result.code, 0, describeResult(result));
      assert.ok(result.stdout.endsWith(`\r\n\r\n${TEST_RESPONSE_BODY}`), describeResult(result));
      assert.match(result.stderr, /SSL version 3\.4 using 128-bit AES-GCM/, result.stderr);
      assert.match(result.stderr, /Signature Scheme: ecdsa_secp256r1_sha256/);
      const connection = await s.connection(0);
      assert.equal(connection.serverName, 'localhost');
      assert.equal(connection.cipherSuite, 'TLS_AES_128_GCM_SHA256');
      assert.match(connection.received.toString('latin1'), /^GET \/nss HTTP\/1\.0\r\n/);
      if (s.implementation === 'engine') assert.equal(connection.group, group);
    });
  }

  test('HelloRetryRequest: NSS shares one key (x25519), the server takes P-384 only', async (t) => {
    const { NamedGroup } = await import('../../src/tls/wire/codepoints.js');
    const s = await server(t, { groups: [NamedGroup.secp384r1] });
    const result = await tstclnt(s, ['-I', 'x25519,P384']);
    assert.equal(result.code, 0, describeResult(result));
    assert.ok(result.stdout.endsWith(TEST_RESPONSE_BODY), describeResult(result));
    if (s.implementation === 'engine') assert.equal((await s.connection(0)).group, 'secp384r1');
  });

  test('second connection resumes with the ticket (-L 2)', async (t) => {
    const s = await server(t);
    const result = await tstclnt(s, ['-L', '2']);
    assert.equal(result.code, 0, describeResult(result));
    assert.equal(result.stdout.split(TEST_RESPONSE_BODY).length - 1, 2, describeResult(result));
    assert.match(result.stdout + result.stderr, /1 stateless resumes/, describeResult(result));
    assert.equal((await s.connection(0)).resumed, false);
    assert.equal((await s.connection(1)).resumed, true);
  });

  test('RSA key: rsa_pss_rsae_sha256', async (t) => {
    const rsaPki = await makeTestPki({ keyType: 'rsa2048' });
    const rsaFiles = writePkiFiles(rsaPki);
    t.after(() => rsaFiles.remove());
    // Same CA name, other CA key: add it under another nickname.
    const added = await runTool('certutil', ['-A', '-d', nssDb, '-n', 'delegator-test-ca-rsa', '-t', 'C,,', '-i', rsaFiles.caFile]);
    assert.equal(added.code, 0, describeResult(added));
    const s = await startEngineServer({ pki: rsaPki }, t);
    const result = await tstclnt(s, ['-v']);
    assert.equal(result.code, 0, describeResult(result));
    assert.match(result.stderr, /Signature Scheme: rsa_pss_rsae_sha256/, result.stderr);
  });
});
