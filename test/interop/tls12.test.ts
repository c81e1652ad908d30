/**
 * Interop with TLS 1.2 forced on the client: openssl s_client -tls1_2, curl --tls-max 1.2,
 * gnutls-cli with only TLS 1.2 in its priority string, and node:tls maxVersion TLSv1.2,
 * for an ECDSA P-256 and an RSA-2048 certificate. Each case checks what both ends say was
 * negotiated and the application bytes; resumption (ticket and session id), the extended
 * master secret and the refusal of renegotiation are seen from the client side.
 */
import { test, describe, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type TLSSocket } from 'node:tls';
import { startEngineServer, TEST_RESPONSE_BODY, type TestServer } from '../helpers/server.js';
import { makeTestPki, writePkiFiles, type PkiFiles, type TestKeyType, type TestPki } from '../helpers/pki.js';
import { hasTool, runTool, startTool, describeResult, type ToolProcess } from '../helpers/tools.js';

const KEYS: { keyType: TestKeyType; auth: 'ECDSA' | 'RSA'; scheme: RegExp }[] = [
  { keyType: 'ecdsa-p256', auth: 'ECDSA', scheme: /^ecdsa_/ },
  { keyType: 'rsa2048', auth: 'RSA', scheme: /^rsa_/ },
];

const pkis = new Map<TestKeyType, { pki: TestPki; files: PkiFiles }>();
before(async () => {
  for (const { keyType } of KEYS) {
    const pki = await makeTestPki({ keyType });
    pkis.set(keyType, { pki, files: writePkiFiles(pki) });
  }
});
after(() => {
  for (const { files } of pkis.values()) files.remove();
});

function material(keyType: TestKeyType): { pki: TestPki; files: PkiFiles } {
  const m = pkis.get(keyType);
  if (!m) throw new Error(`no PKI for ${keyType}`);
  return m;
}

function token(): string {
  return `ping-${randomBytes(6).toString('hex')}`;
}

async function echo(client: ToolProcess, line: string): Promise<void> {
  const seen = client.stdout.split(line).length - 1;
  client.write(`${line}\n`);
  await client.waitFor(new RegExp(`(${line}[\\s\\S]*){${seen + 1}}`));
}

function count(text: string, re: RegExp): number {
  return [...text.matchAll(re)].length;
}

for (const key of KEYS) {
  const server = async (t: TestContext, options: Parameters<typeof startEngineServer>[0] = {}): Promise<TestServer> =>
    startEngineServer({ pki: material(key.keyType).pki, ...options }, t);

  describe(`TLS 1.2, ${key.keyType}: openssl s_client -tls1_2`, { skip: !hasTool('openssl') && 'openssl not installed (apt-get install openssl)' }, () => {
    const sClient = (t: TestContext, s: TestServer, args: readonly string[]) =>
      startTool(t, 'openssl', [
        's_client', '-connect', `127.0.0.1:${s.port}`, '-servername', 'localhost',
        '-CAfile', material(key.keyType).files.caFile, '-verify_return_error', '-tls1_2', ...args,
      ]);

    const openSslSuites = [`ECDHE-${key.auth}-AES128-GCM-SHA256`, `ECDHE-${key.auth}-AES256-GCM-SHA384`, `ECDHE-${key.auth}-CHACHA20-POLY1305`];
    const ianaSuites = [
      `TLS_ECDHE_${key.auth}_WITH_AES_128_GCM_SHA256`,
      `TLS_ECDHE_${key.auth}_WITH_AES_256_GCM_SHA384`,
      `TLS_ECDHE_${key.auth}_WITH_CHACHA20_POLY1305_SHA256`,
    ];
    openSslSuites.forEach((cipher, i) => {
      test(`${cipher}: extended master secret, echo both ways`, async (t) => {
        const s = await server(t);
        const client = sClient(t, s, ['-cipher', cipher]);
        await client.waitFor('Verify return code: 0 (ok)');
        const line = token();
        await echo(client, line);
        client.closeStdin();
        const result = await client.done;
        assert.equal(result.code, 0, describeResult(result));
        assert.match(result.stdout, new RegExp(`New, TLSv1\\.2, Cipher is ${cipher}`), describeResult(result));
        assert.match(result.stdout, /Extended master secret: yes/, describeResult(result));
        const c = await s.connection(0);
        await c.closed;
        assert.equal(c.version, 'TLSv1.2');
        assert.equal(c.cipherSuite, ianaSuites[i]);
        assert.match(c.signatureScheme ?? '', key.scheme);
        assert.equal(c.received.toString('latin1'), `${line}\n`);
        assert.equal(c.sent.toString('latin1'), `${line}\n`);
      });
    });

    for (const ticket of [true, false]) {
      test(`-reconnect resumes by ${ticket ? 'ticket' : 'session id (-no_ticket)'}`, async (t) => {
        const s = await server(t);
        const client = sClient(t, s, ['-reconnect', ...(ticket ? [] : ['-no_ticket'])]);
        client.closeStdin();
        const result = await client.done;
        assert.equal(result.code, 0, describeResult(result));
        assert.equal(count(result.stdout, /New, TLSv1\.2, Cipher is/g), 1, describeResult(result));
        assert.equal(count(result.stdout, /Reused, TLSv1\.2, Cipher is/g), 5, describeResult(result));
        await s.connection(5);
        assert.deepEqual(s.connections.map((c) => c.resumed), [false, true, true, true, true, true]);
      });
    }

    test('`R` (renegotiation) gets a warning no_renegotiation; the server sends no fatal alert and keeps the connection', async (t) => {
      const s = await server(t);
      const client = sClient(t, s, ['-msg']);
      await client.waitFor('Verify return code: 0 (ok)');
      const c = await s.connection(0);
      client.write('R\n');
      await client.waitFor(/<<< TLS 1\.2, Alert \[length 0002\], warning no_renegotiation/);
      // OpenSSL's client gives up on a refused renegotiation by itself (it sends the fatal
      // alert); what matters here is that our side answered with the warning only.
      const result = await client.done;
      assert.doesNotMatch(result.stdout, /<<< TLS 1\.2, Alert \[length 0002\], fatal/, describeResult(result));
      await c.closed;
      assert.equal(c.error?.message.includes('no_renegotiation') ?? false, false);
    });
  });

  describe(`TLS 1.2, ${key.keyType}: curl --tls-max 1.2`, { skip: !hasTool('curl') && 'curl not installed (apt-get install curl)' }, () => {
    test('GET over TLS 1.2, verified chain', async (t) => {
      const s = await server(t);
      const result = await runTool('curl', [
        '--silent', '--show-error', '--verbose', '--tlsv1.2', '--tls-max', '1.2',
        '--cacert', material(key.keyType).files.caFile,
        '--resolve', `localhost:${s.port}:127.0.0.1`, '--max-time', '10', `https://localhost:${s.port}/`,
      ]);
      assert.equal(result.code, 0, describeResult(result));
      assert.equal(result.stdout, TEST_RESPONSE_BODY);
      assert.match(result.stderr, /SSL connection using TLSv1\.2 \/ ECDHE-/, describeResult(result));
      const c = await s.connection(0);
      assert.equal(c.version, 'TLSv1.2');
      assert.match(c.cipherSuite, new RegExp(`^TLS_ECDHE_${key.auth}_`));
    });
  });

  describe(`TLS 1.2, ${key.keyType}: gnutls-cli`, { skip: !hasTool('gnutls-cli') && 'gnutls-cli not installed (apt-get install gnutls-bin)' }, () => {
    test('NORMAL:-VERS-ALL:+VERS-TLS1.2 with --resume: EMS, then a resumed session', async (t) => {
      const s = await server(t);
      const client = startTool(t, 'gnutls-cli', [
        '127.0.0.1', '--port', String(s.port), '--sni-hostname', 'localhost', '--verify-hostname', 'localhost',
        '--x509cafile', material(key.keyType).files.caFile, '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.2', '--resume',
      ], { timeoutMs: 30_000 });
      await client.waitFor(/This is a resumed session/);
      client.closeStdin();
      const result = await client.done;
      const output = result.stdout + result.stderr;
      assert.match(output, /- Description: \(TLS1\.2[^)]*\)-\(ECDHE-/, describeResult(result));
      assert.match(output, /extended master secret/i, describeResult(result));
      await s.connection(1);
      assert.equal(s.connections[0]?.version, 'TLSv1.2');
      assert.equal(s.connections[1]?.resumed, true);
    });
  });

  describe(`TLS 1.2, ${key.keyType}: node:tls maxVersion TLSv1.2`, () => {
    async function open(s: TestServer, session?: Buffer): Promise<TLSSocket> {
      const socket = connect({
        host: '127.0.0.1', port: s.port, servername: 'localhost', ca: s.pki.caCertPem,
        maxVersion: 'TLSv1.2', ...(session ? { session } : {}),
      });
      await once(socket, 'secureConnect');
      return socket;
    }

    test('handshake, echo, then resumption from the session', async (t) => {
      const s = await server(t);
      const first = await open(s);
      assert.equal(first.getProtocol(), 'TLSv1.2');
      assert.match(first.getCipher().standardName, new RegExp(`^TLS_ECDHE_${key.auth}_WITH_AES_128_GCM_SHA256$`));
      const data = randomBytes(40_000);
      const chunks: Buffer[] = [];
      first.on('data', (chunk: Buffer) => chunks.push(chunk));
      first.write(data);
      while (Buffer.concat(chunks).length < data.length) await once(first, 'data');
      assert.deepEqual(Buffer.concat(chunks), data);
      // TLS 1.2: the session (with its ticket) exists once the handshake is done.
      const session = first.getSession();
      assert.ok(session, 'a session to resume');
      first.end();
      await once(first, 'close');

      const second = await open(s, session);
      assert.equal(second.isSessionReused(), true);
      second.end();
      await once(second, 'close');
      const c = await s.connection(1);
      assert.equal(c.version, 'TLSv1.2');
      assert.equal(c.resumed, true);
    });

    test('tls12: false refuses a TLS 1.2-only client (protocol_version)', async (t) => {
      const s = await server(t, { tls12: false });
      const socket = connect({ host: '127.0.0.1', port: s.port, servername: 'localhost', ca: s.pki.caCertPem, maxVersion: 'TLSv1.2' });
      const [err] = (await once(socket, 'error')) as [Error & { code?: string }];
      assert.match(`${err.code} ${err.message}`, /PROTOCOL_VERSION|protocol version/i);
    });
  });
}
