/**
 * Interop: curl (OpenSSL backend on Debian) fetching a page from our engine over TLS 1.3.
 * Checks the body and HTTP version curl reports, the suite/ALPN/group from curl's
 * verbose log, and the request bytes and negotiated parameters on the server side.
 */
import { test, describe, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { startEngineServer, TEST_RESPONSE_BODY, type TestServer, type TestServerOptions } from '../helpers/server.js';
import { makeTestPki, writePkiFiles, type PkiFiles, type TestPki } from '../helpers/pki.js';
import { hasTool, runTool, describeResult, type ToolResult } from '../helpers/tools.js';

const CURL_MISSING = !hasTool('curl');
/** curl -w: one trailing line we can parse after the body. */
const WRITE_OUT = '\n@@ %{http_version} %{response_code} %{ssl_verify_result} %{num_connects}\n';

let pki: TestPki;
let files: PkiFiles;
before(async () => {
  pki = await makeTestPki({ keyType: 'ecdsa-p256', extraNames: ['www.example.test'] });
  files = writePkiFiles(pki);
});
after(() => files?.remove());

async function curl(server: TestServer, args: readonly string[], urls = ['/'], caFile = files.caFile): Promise<ToolResult> {
  const host = 'localhost';
  return runTool('curl', [
    '--silent',
    '--show-error',
    '--verbose',
    '--tlsv1.3',
    '--cacert',
    caFile,
    '--resolve',
    `${host}:${server.port}:127.0.0.1`,
    '--max-time',
    '10',
    '--write-out',
    WRITE_OUT,
    ...args,
    ...urls.map((path) => `https://${host}:${server.port}${path}`),
  ]);
}

/** Splits curl's stdout into bodies and the write-out lines. */
function parse(result: ToolResult): { bodies: string[]; httpVersion: string; responseCode: string; verify: string } {
  const parts = result.stdout.split(/\n@@ ([^\n]*)\n/);
  const bodies: string[] = [];
  let last = ['', '', '', ''];
  for (let i = 0; i + 1 < parts.length; i += 2) {
    bodies.push(parts[i]!);
    last = parts[i + 1]!.split(' ');
  }
  return { bodies, httpVersion: last[0]!, responseCode: last[1]!, verify: last[2]! };
}

async function server(t: TestContext, options: TestServerOptions = {}): Promise<TestServer> {
  return startEngineServer({ pki, ...options }, t);
}

describe('curl', { skip: CURL_MISSING && 'curl not installed (apt-get install curl)' }, () => {
  test('GET over TLS 1.3 with certificate verification', async (t) => {
    const s = await server(t, { alpnProtocols: ['http/1.1'] });
    const result = await curl(s, []);
    assert.equal(result.code, 0, describeResult(result));
    const out = parse(result);
    assert.deepEqual(out.bodies, [TEST_RESPONSE_BODY], describeResult(result));
    assert.equal(out.httpVersion, '1.1');
    assert.equal(out.responseCode, '200');
    assert.equal(out.verify, '0', 'certificate verified');
    const suite = /SSL connection using TLSv1\.3 \/ (TLS_\w+)/.exec(result.stderr)?.[1];
    assert.ok(suite, result.stderr);
    assert.match(result.stderr, /ALPN: server accepted http\/1\.1/, result.stderr);

    const connection = await s.connection(0);
    await connection.closed;
    const request = connection.received.toString('latin1');
    assert.match(request, new RegExp(`^GET / HTTP/1\\.1\\r\\nHost: localhost:${s.port}\\r\\n`), request);
    assert.ok(request.endsWith('\r\n\r\n'));
    assert.equal(connection.alpnProtocol, 'http/1.1');
    assert.equal(connection.serverName, 'localhost');
    assert.equal(connection.cipherSuite, suite, 'both ends report the same suite');
  });

  for (const cipher of ['TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
    test(`--tls13-ciphers ${cipher}`, async (t) => {
      const s = await server(t);
      const result = await curl(s, ['--tls13-ciphers', cipher]);
      assert.equal(result.code, 0, describeResult(result));
      assert.deepEqual(parse(result).bodies, [TEST_RESPONSE_BODY]);
      assert.match(result.stderr, new RegExp(`SSL connection using TLSv1\\.3 / ${cipher}`), result.stderr);
      assert.equal((await s.connection(0)).cipherSuite, cipher);
    });
  }

  for (const [curve, group] of [
    ['P-384', 'secp384r1'],
    ['P-256', 'secp256r1'],
  ] as const) {
    test(`--curves ${curve}`, async (t) => {
      const s = await server(t);
      const result = await curl(s, ['--curves', curve]);
      assert.equal(result.code, 0, describeResult(result));
      assert.deepEqual(parse(result).bodies, [TEST_RESPONSE_BODY]);
      if (s.implementation === 'engine') assert.equal((await s.connection(0)).group, group);
    });
  }

  test('no ALPN configured on the server: HTTP/1.1 without ALPN', async (t) => {
    const s = await server(t);
    const result = await curl(s, []);
    assert.equal(result.code, 0, describeResult(result));
    assert.equal(parse(result).httpVersion, '1.1');
    assert.match(result.stderr, /ALPN: server did not agree on a protocol/, result.stderr);
    assert.equal((await s.connection(0)).alpnProtocol, undefined);
  });

  test('two URLs: the second connection resumes with a ticket', async (t) => {
    const s = await server(t);
    const result = await curl(s, [], ['/one', '/two']);
    assert.equal(result.code, 0, describeResult(result));
    const out = parse(result);
    assert.deepEqual(out.bodies, [TEST_RESPONSE_BODY, TEST_RESPONSE_BODY], describeResult(result));
    // The server closes after each response (Connection: close), so curl opens a second connection.
    assert.match(result.stderr, /SSL re-using session ID/, result.stderr);
    const first = await s.connection(0);
    const second = await s.connection(1);
    assert.equal(first.resumed, false);
    assert.equal(second.resumed, true);
    assert.match(second.received.toString('latin1'), /^GET \/two HTTP\/1\.1\r\n/);
  });

  test('SNI for another name in the certificate', async (t) => {
    const s = await server(t);
    const result = await runTool('curl', [
      '--silent', '--show-error', '--tlsv1.3', '--cacert', files.caFile,
      '--resolve', `www.example.test:${s.port}:127.0.0.1`, `https://www.example.test:${s.port}/`,
    ]);
    assert.equal(result.code, 0, describeResult(result));
    assert.equal(result.stdout, TEST_RESPONSE_BODY);
    assert.equal((await s.connection(0)).serverName, 'www.example.test');
  });

  test('a client that trusts another CA refuses the certificate', async (t) => {
    const s = await server(t);
    const other = writePkiFiles(await makeTestPki());
    t.after(() => other.remove());
    const result = await curl(s, [], ['/'], other.caFile);
    assert.equal(result.code, 60, describeResult(result)); // CURLE_PEER_FAILED_VERIFICATION
  });

  for (const keyType of ['rsa2048', 'ed25519', 'ecdsa-p384'] as const) {
    test(`key type ${keyType}`, async (t) => {
      const ktPki = await makeTestPki({ keyType });
      const ktFiles = writePkiFiles(ktPki);
      t.after(() => ktFiles.remove());
      const s = await startEngineServer({ pki: ktPki }, t);
      const result = await curl(s, [], ['/'], ktFiles.caFile);
      assert.equal(result.code, 0, describeResult(result));
      assert.deepEqual(parse(result).bodies, [TEST_RESPONSE_BODY]);
    });
  }
});
