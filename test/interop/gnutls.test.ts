/**
 * Interop: gnutls-cli (GnuTLS 3.7) against our engine: a TLS stack with no code in
 * common with OpenSSL. Negotiated parameters are read from its `- Description:` line
 * ((TLS1.3-X.509)-(ECDHE-group)-(signature)-(cipher)); `-d 4` logs every handshake
 * message, which shows HelloRetryRequest, tickets and KeyUpdate from the client side.
 */
import { test, describe, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startEngineServer, type TestServer, type TestServerOptions } from '../helpers/server.js';
import { makeTestPki, writePkiFiles, type PkiFiles, type TestPki } from '../helpers/pki.js';
import { hasTool, runTool, startTool, describeResult, type ToolProcess } from '../helpers/tools.js';
import { NamedGroup } from '../../src/tls/wire/codepoints.js';

const GNUTLS_MISSING = !hasTool('gnutls-cli');
const TLS13_ONLY = 'NORMAL:-VERS-ALL:+VERS-TLS1.3';

let pki: TestPki;
let files: PkiFiles;
before(async () => {
  pki = await makeTestPki({ keyType: 'ecdsa-p256' });
  files = writePkiFiles(pki);
});
after(() => files?.remove());

function gnutlsArgs(server: TestServer, priority: string, extra: readonly string[], caFile = files.caFile): string[] {
  return [
    '127.0.0.1',
    '--port',
    String(server.port),
    '--sni-hostname',
    'localhost',
    '--verify-hostname',
    'localhost',
    '--x509cafile',
    caFile,
    '--priority',
    priority,
    ...extra,
  ];
}

function description(output: string): string {
  const match = /- Description: (\S+)/.exec(output);
  assert.ok(match, `no Description line in:\n${output}`);
  return match[1]!;
}

function token(): string {
  return `ping-${randomBytes(6).toString('hex')}`;
}

async function echo(client: ToolProcess, line: string): Promise<void> {
  const seen = client.stdout.split(line).length - 1;
  client.write(`${line}\n`);
  await client.waitFor(new RegExp(`(${line}[\\s\\S]*){${seen + 1}}`));
}

/** Handshake, two echoed lines, EOF; returns gnutls-cli's whole output (stdout + stderr). */
async function converse(
  t: TestContext,
  server: TestServer,
  priority: string,
  extra: readonly string[] = [],
  caFile = files.caFile,
): Promise<string> {
  const client = startTool(t, 'gnutls-cli', gnutlsArgs(server, priority, extra, caFile));
  await client.waitFor('- Handshake was completed');
  const lines = [token(), token()];
  for (const line of lines) await echo(client, line);
  client.closeStdin();
  const result = await client.done;
  assert.equal(result.code, 0, describeResult(result));
  const connection = await server.connection(0);
  await connection.closed;
  const expected = lines.map((l) => `${l}\n`).join('');
  assert.equal(connection.received.toString('latin1'), expected);
  assert.equal(connection.sent.toString('latin1'), expected);
  assert.equal(connection.serverName, 'localhost');
  return result.stdout + result.stderr;
}

async function server(t: TestContext, options: TestServerOptions = {}): Promise<TestServer> {
  return startEngineServer({ pki, ...options }, t);
}

describe('gnutls-cli', { skip: GNUTLS_MISSING && 'gnutls-cli not installed (apt-get install gnutls-bin)' }, () => {
  const suites = [
    { priority: '-CIPHER-ALL:+AES-128-GCM', gnutls: 'AES-128-GCM', name: 'TLS_AES_128_GCM_SHA256' },
    { priority: '-CIPHER-ALL:+AES-256-GCM', gnutls: 'AES-256-GCM', name: 'TLS_AES_256_GCM_SHA384' },
    { priority: '-CIPHER-ALL:+CHACHA20-POLY1305', gnutls: 'CHACHA20-POLY1305', name: 'TLS_CHACHA20_POLY1305_SHA256' },
  ];
  for (const suite of suites) {
    test(`priority ${suite.priority}`, async (t) => {
      const s = await server(t);
      const output = await converse(t, s, `${TLS13_ONLY}:${suite.priority}:-GROUP-ALL:+GROUP-X25519`);
      assert.equal(description(output), `(TLS1.3-X.509)-(ECDHE-X25519)-(ECDSA-SECP256R1-SHA256)-(${suite.gnutls})`);
      assert.equal((await s.connection(0)).cipherSuite, suite.name);
    });
  }

  const groups = [
    { priority: '-GROUP-ALL:+GROUP-X25519', gnutls: 'X25519', name: 'x25519' },
    { priority: '-GROUP-ALL:+GROUP-SECP256R1', gnutls: 'SECP256R1', name: 'secp256r1' },
    { priority: '-GROUP-ALL:+GROUP-SECP384R1', gnutls: 'SECP384R1', name: 'secp384r1' },
  ];
  for (const group of groups) {
    test(`priority ${group.priority}`, async (t) => {
      const s = await server(t);
      const output = await converse(t, s, `${TLS13_ONLY}:${group.priority}:-CIPHER-ALL:+AES-128-GCM`);
      assert.equal(description(output), `(TLS1.3-X.509)-(ECDHE-${group.gnutls})-(ECDSA-SECP256R1-SHA256)-(AES-128-GCM)`);
      if (s.implementation === 'engine') assert.equal((await s.connection(0)).group, group.name);
    });
  }

  test('HelloRetryRequest: key share for P-256 only, server takes P-384 only', async (t) => {
    const s = await server(t, { groups: [NamedGroup.secp384r1] });
    // GnuTLS sends one key share per curve family: here only SECP256R1.
    const output = await converse(t, s, `${TLS13_ONLY}:-GROUP-ALL:+GROUP-SECP256R1:+GROUP-SECP384R1`, ['-d', '4']);
    assert.match(output, /HELLO RETRY REQUEST \(\d+\) was received/, output);
    assert.match(output, /HRR key share with SECP384R1/);
    assert.match(description(output), /^\(TLS1\.3-X\.509\)-\(ECDHE-SECP384R1\)-/);
  });

  test('resumption (--resume)', async (t) => {
    const s = await server(t);
    const result = await runTool('gnutls-cli', gnutlsArgs(s, TLS13_ONLY, ['--resume']), '', { timeoutMs: 15_000 });
    assert.equal(result.code, 0, describeResult(result));
    assert.match(result.stdout, /\*\*\* This is a resumed session/, describeResult(result));
    const first = await s.connection(0);
    const second = await s.connection(1);
    assert.equal(first.resumed, false);
    assert.equal(second.resumed, true);
  });

  test('KeyUpdate requested by the client (^rekey^) is answered with the server KeyUpdate', async (t) => {
    const s = await server(t);
    const client = startTool(t, 'gnutls-cli', gnutlsArgs(s, TLS13_ONLY, ['--inline-commands', '-d', '4']));
    await client.waitFor('- Handshake was completed');
    const lines = [token(), token(), token()];
    await echo(client, lines[0]!);
    client.write('^rekey^\n'); // gnutls-cli: ^rekey^ = update_requested, ^rekey1^ = only its own keys
    await client.waitFor('- Rekey was completed');
    await echo(client, lines[1]!);
    await client.waitFor(/KEY_UPDATE \(24\) was received/);
    client.write('^rekey1^\n'); // update_not_requested: the server must not answer
    await echo(client, lines[2]!);
    client.closeStdin();
    const result = await client.done;
    assert.equal(result.code, 0, describeResult(result));
    const output = result.stdout + result.stderr;
    assert.equal([...output.matchAll(/KEY_UPDATE \(24\) was received/g)].length, 1, output);
    const connection = await s.connection(0);
    await connection.closed;
    const expected = lines.map((l) => `${l}\n`).join('');
    assert.equal(connection.received.toString('latin1'), expected);
    assert.equal(connection.sent.toString('latin1'), expected);
  });

  test('record_size_limit (RFC 8449): the server sends a large answer in records within the client limit', async (t) => {
    const answer = `${token()}-${'y'.repeat(20_000)}\n`;
    const s = await server(t, {
      onConnection(connection) {
        // One 20 kB write: more than a full 2^14 record.
        connection.socket.once('data', (chunk: Buffer) => {
          connection.received = Buffer.concat([connection.received, chunk]);
          connection.sent = Buffer.from(answer);
          connection.socket.end(answer);
        });
        return true;
      },
    });
    // `--recordsize 1000` makes gnutls-cli send record_size_limit = 1001 (1000 bytes of content + the
    // TLS 1.3 inner content type) and, 1000 not being a power of two, no max_fragment_length: only
    // RFC 8449 limits the server. GnuTLS does not reject bigger records itself, so the test reads the
    // size of every record it decrypted from its debug log (-d 5).
    const client = startTool(t, 'gnutls-cli', gnutlsArgs(s, TLS13_ONLY, ['--recordsize', '1000', '-d', '5']));
    await client.waitFor('- Handshake was completed');
    client.write('send the big answer\n');
    const result = await client.done;
    assert.equal(result.code, 0, describeResult(result));
    const received = result.stdout.slice(result.stdout.indexOf('- Simple Client Mode:\n\n') + '- Simple Client Mode:\n\n'.length);
    assert.ok(received.startsWith(answer), `client got ${received.length} bytes: ${received.slice(0, 80)}...`);
    const sizes = [...result.stderr.matchAll(/Decrypted Packet\[\d+\] Application Data\(23\) with length: (\d+)/g)].map(
      (m) => Number(m[1]),
    );
    assert.equal(sizes.reduce((a, b) => a + b, 0), answer.length, `record sizes ${sizes.join(',')}`);
    assert.ok(Math.max(...sizes) <= 1000, `record over the client's limit: sizes ${sizes.join(',')}`);
  });

  test('ALPN', async (t) => {
    const s = await server(t, { alpnProtocols: ['h2', 'http/1.1'] });
    const output = await converse(t, s, TLS13_ONLY, ['--alpn', 'http/1.1']);
    assert.match(output, /- Application protocol: http\/1\.1/);
    assert.equal((await s.connection(0)).alpnProtocol, 'http/1.1');
  });

  for (const kt of [
    { keyType: 'ed25519', gnutls: 'EdDSA-Ed25519' },
    { keyType: 'rsa2048', gnutls: 'RSA-PSS-RSAE-SHA256' },
    { keyType: 'ecdsa-p384', gnutls: 'ECDSA-SECP384R1-SHA384' },
  ] as const) {
    test(`key type ${kt.keyType}`, async (t) => {
      const ktPki = await makeTestPki({ keyType: kt.keyType });
      const ktFiles = writePkiFiles(ktPki);
      t.after(() => ktFiles.remove());
      const s = await startEngineServer({ pki: ktPki }, t);
      const output = await converse(t, s, TLS13_ONLY, [], ktFiles.caFile);
      assert.match(description(output), new RegExp(`-\\(${kt.gnutls}\\)-`), output);
    });
  }
});
