/**
 * Interop: `openssl s_client` (OpenSSL 3) against our engine.
 *
 * Every case checks what both ends say was negotiated (s_client's summary and the
 * server's socket) and the application bytes both ways (the server echoes lines).
 * s_client commands used: a line `K` sends KeyUpdate(update_requested); `-msg`
 * prints every handshake message, which is how HelloRetryRequest (a second
 * ServerHello), tickets and KeyUpdates are seen from the client side.
 */
import { test, describe, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEngineServer, type TestServer, type TestServerOptions } from '../helpers/server.js';
import { makeTestPki, writePkiFiles, type PkiFiles, type TestPki } from '../helpers/pki.js';
import { hasTool, startTool, describeResult, type ToolProcess } from '../helpers/tools.js';
import { NamedGroup, CipherSuite } from '../../src/tls/wire/codepoints.js';

const OPENSSL_MISSING = !hasTool('openssl');
/** Pins the suite where the test is about something else (servers differ in whose preference wins). */
const AES128 = ['-ciphersuites', 'TLS_AES_128_GCM_SHA256'];

let pki: TestPki;
let files: PkiFiles;
let workDir: string;

before(async () => {
  pki = await makeTestPki({ keyType: 'ecdsa-p256' });
  files = writePkiFiles(pki);
  workDir = mkdtempSync(join(tmpdir(), 'delegator-sclient-'));
});
after(() => {
  files?.remove();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

/** A line no other output contains, to find the echo in s_client's stdout. */
function token(): string {
  return `ping-${randomBytes(6).toString('hex')}`;
}

function sClient(t: TestContext, server: TestServer, caFile: string, args: readonly string[]): ToolProcess {
  return startTool(t, 'openssl', [
    's_client',
    '-connect',
    `127.0.0.1:${server.port}`,
    '-servername',
    'localhost',
    '-CAfile',
    caFile,
    '-verify_return_error',
    '-tls1_3',
    ...args,
  ]);
}

/** Sends one line and waits for it to come back. */
async function echo(client: ToolProcess, line: string): Promise<void> {
  const before = client.stdout.split(line).length - 1;
  client.write(`${line}\n`);
  await client.waitFor(new RegExp(`(${line}[\\s\\S]*){${before + 1}}`));
}

interface SessionCheck {
  cipher: string;
  /** s_client's "Server Temp Key" text, e.g. "X25519, 253 bits". */
  tempKey?: string;
  serverGroup?: string;
}

/** Full run: handshake, two echoed lines, EOF (close_notify), then checks on both sides. */
async function converse(
  t: TestContext,
  server: TestServer,
  args: readonly string[],
  check: SessionCheck,
): Promise<{ client: ToolProcess; stdout: string }> {
  const client = sClient(t, server, files.caFile, args);
  await client.waitFor('Verify return code: 0 (ok)');
  const lines = [token(), token()];
  for (const line of lines) await echo(client, line);
  client.closeStdin();
  const result = await client.done;
  assert.equal(result.code, 0, describeResult(result));
  assert.match(result.stdout, new RegExp(`New, TLSv1\\.3, Cipher is ${check.cipher}`), describeResult(result));
  if (check.tempKey) assert.match(result.stdout, new RegExp(`Server Temp Key: ${check.tempKey}`));

  const connection = await server.connection(0);
  await connection.closed;
  const expected = lines.map((l) => `${l}\n`).join('');
  assert.equal(connection.received.toString('latin1'), expected, 'server received the client bytes');
  assert.equal(connection.sent.toString('latin1'), expected, 'server sent them back');
  assert.equal(connection.cipherSuite, check.cipher);
  assert.equal(connection.serverName, 'localhost');
  assert.equal(connection.resumed, false);
  if (server.implementation === 'engine') {
    if (check.serverGroup) assert.equal(connection.group, check.serverGroup);
    assert.equal(connection.signatureScheme, 'ecdsa_secp256r1_sha256');
  }
  return { client, stdout: result.stdout };
}

async function server(t: TestContext, options: TestServerOptions = {}): Promise<TestServer> {
  return startEngineServer({ pki, ...options }, t);
}

describe('openssl s_client', { skip: OPENSSL_MISSING && 'openssl not installed (apt-get install openssl)' }, () => {
  for (const cipher of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
    test(`cipher suite ${cipher}`, async (t) => {
      const s = await server(t);
      await converse(t, s, ['-ciphersuites', cipher], { cipher });
    });
  }

  test('server preference picks the suite when the client offers several', async (t) => {
    const s = await server(t, {
      cipherSuites: [CipherSuite.TLS_CHACHA20_POLY1305_SHA256, CipherSuite.TLS_AES_128_GCM_SHA256],
    });
    await converse(t, s, ['-ciphersuites', 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256'], {
      cipher: 'TLS_CHACHA20_POLY1305_SHA256',
    });
  });

  const groups = [
    { openssl: 'X25519', tempKey: 'X25519, 253 bits', name: 'x25519' },
    { openssl: 'P-256', tempKey: 'ECDH, prime256v1, 256 bits', name: 'secp256r1' },
    { openssl: 'P-384', tempKey: 'ECDH, secp384r1, 384 bits', name: 'secp384r1' },
  ];
  for (const group of groups) {
    test(`group ${group.openssl}`, async (t) => {
      const s = await server(t);
      const { stdout } = await converse(t, s, ['-groups', group.openssl, '-msg', ...AES128], {
        cipher: 'TLS_AES_128_GCM_SHA256',
        tempKey: group.tempKey,
        serverGroup: group.name,
      });
      assert.equal(count(stdout, /<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], ServerHello/g), 1, 'no HelloRetryRequest');
    });
  }

  test('HelloRetryRequest: client shares P-256 first, server only takes X25519', async (t) => {
    const s = await server(t, { groups: [NamedGroup.x25519] });
    // s_client sends a key share for the first listed group only, so the server must ask again.
    const { stdout } = await converse(t, s, ['-groups', 'P-256:X25519', '-msg', ...AES128], {
      cipher: 'TLS_AES_128_GCM_SHA256',
      tempKey: 'X25519, 253 bits',
      serverGroup: 'x25519',
    });
    assert.equal(count(stdout, />>> TLS 1\.3, Handshake \[length [0-9a-f]+\], ClientHello/g), 2, 'two ClientHellos');
    assert.equal(count(stdout, /<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], ServerHello/g), 2, 'HRR + ServerHello');
  });

  test('HelloRetryRequest: server prefers P-384, client shares X25519 first', async (t) => {
    const s = await server(t, { groups: [NamedGroup.secp384r1] });
    const { stdout } = await converse(t, s, ['-groups', 'X25519:P-384', '-msg', ...AES128], {
      cipher: 'TLS_AES_128_GCM_SHA256',
      tempKey: 'ECDH, secp384r1, 384 bits',
      serverGroup: 'secp384r1',
    });
    assert.equal(count(stdout, />>> TLS 1\.3, Handshake \[length [0-9a-f]+\], ClientHello/g), 2, 'two ClientHellos');
  });

  test('no common group: handshake_failure', async (t) => {
    const s = await server(t, { groups: [NamedGroup.x25519] });
    const client = sClient(t, s, files.caFile, ['-groups', 'P-384']);
    client.closeStdin();
    const result = await client.done;
    assert.notEqual(result.code, 0, describeResult(result));
    assert.match(result.stdout + result.stderr, /alert handshake failure/, describeResult(result));
    assert.equal(s.connections.length, 0);
  });

  test('resumption with -sess_out / -sess_in', async (t) => {
    const s = await server(t, { ticketCount: 2 });
    const sessionFile = join(workDir, `session-${randomBytes(4).toString('hex')}.pem`);
    const first = sClient(t, s, files.caFile, ['-sess_out', sessionFile, '-msg', ...AES128]);
    await first.waitFor('Verify return code: 0 (ok)');
    const line = token();
    await echo(first, line); // the tickets come before the echo (sent right after the handshake)
    first.closeStdin();
    const firstResult = await first.done;
    assert.equal(firstResult.code, 0, describeResult(firstResult));
    assert.equal(count(firstResult.stdout, /Handshake \[length [0-9a-f]+\], NewSessionTicket/g), 2, 'two tickets');

    const second = sClient(t, s, files.caFile, ['-sess_in', sessionFile, ...AES128]);
    await second.waitFor('Verify return code: 0 (ok)');
    const line2 = token();
    await echo(second, line2);
    second.closeStdin();
    const secondResult = await second.done;
    assert.equal(secondResult.code, 0, describeResult(secondResult));
    assert.match(secondResult.stdout, /Reused, TLSv1\.3, Cipher is TLS_AES_128_GCM_SHA256/, describeResult(secondResult));

    const resumed = await s.connection(1);
    await resumed.closed;
    assert.equal(resumed.resumed, true);
    assert.equal(resumed.received.toString('latin1'), `${line2}\n`);
    assert.equal(resumed.sent.toString('latin1'), `${line2}\n`);
    if (s.implementation === 'engine') assert.equal(resumed.signatureScheme, undefined, 'no CertificateVerify on resumption');
  });

  test('ticketCount 0: no NewSessionTicket, a full handshake next time', async (t) => {
    const s = await server(t, { ticketCount: 0 });
    if (s.implementation !== 'engine') return t.skip('ticketCount is an engine option');
    const client = sClient(t, s, files.caFile, ['-msg']);
    await client.waitFor('Verify return code: 0 (ok)');
    await echo(client, token());
    client.closeStdin();
    const result = await client.done;
    assert.equal(result.code, 0, describeResult(result));
    assert.equal(count(result.stdout, /NewSessionTicket/g), 0, describeResult(result));
  });

  test('KeyUpdate from the client (update_requested) is answered, data flows both ways after it', async (t) => {
    const s = await server(t);
    const client = sClient(t, s, files.caFile, ['-msg']);
    await client.waitFor('Verify return code: 0 (ok)');
    const lines = [token(), token(), token()];
    await echo(client, lines[0]!);
    client.write('K\n');
    await client.waitFor('KEYUPDATE');
    await echo(client, lines[1]!);
    // RFC 8446 §4.6.3: the server sends its own KeyUpdate before its next application data.
    assert.match(client.stdout, /<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate/, client.stdout);
    client.write('K\n');
    // s_client treats a whole stdin read as one command: wait for it to act on this K
    // before writing the next line, or both may arrive in one read and the line is lost.
    await client.waitFor(/(KEYUPDATE[\s\S]*){2}/);
    await echo(client, lines[2]!);
    client.closeStdin();
    const result = await client.done;
    assert.equal(result.code, 0, describeResult(result));
    assert.equal(count(result.stdout, />>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate/g), 2);
    assert.equal(count(result.stdout, /<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate/g), 2);

    const connection = await s.connection(0);
    await connection.closed;
    const expected = lines.map((l) => `${l}\n`).join('');
    assert.equal(connection.received.toString('latin1'), expected);
    assert.equal(connection.sent.toString('latin1'), expected);
  });

  test('KeyUpdate from the server (update_requested) is answered by the client', async (t) => {
    const trigger = 'please-update-keys';
    const s = await server(t, {
      onConnection(connection) {
        // Echo, but on the trigger line the server updates its keys and asks the client to do the same.
        connection.socket.on('data', (chunk: Buffer) => {
          connection.received = Buffer.concat([connection.received, chunk]);
          if (chunk.toString('latin1').startsWith(trigger)) {
            (connection.socket as unknown as { keyUpdate(requestPeer: boolean): void }).keyUpdate(true);
          }
          connection.sent = Buffer.concat([connection.sent, chunk]);
          connection.socket.write(chunk);
        });
        connection.socket.on('end', () => connection.socket.end());
        return true;
      },
    });
    if (s.implementation !== 'engine') return t.skip('server-initiated KeyUpdate needs the engine');
    const client = sClient(t, s, files.caFile, ['-msg']);
    await client.waitFor('Verify return code: 0 (ok)');
    await echo(client, trigger);
    await client.waitFor(/<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate/);
    const after = token();
    // The client must answer update_requested before its next data (§4.6.3); s_client does so when it writes.
    await echo(client, after);
    client.closeStdin();
    const result = await client.done;
    assert.equal(result.code, 0, describeResult(result));
    assert.equal(count(result.stdout, />>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate/g), 1, result.stdout);
    const connection = await s.connection(0);
    await connection.closed;
    assert.equal(connection.received.toString('latin1'), `${trigger}\n${after}\n`);
    assert.equal(connection.error, undefined);
  });

  test('ALPN: server picks from the client list in its own preference order', async (t) => {
    const s = await server(t, { alpnProtocols: ['h2', 'http/1.1'] });
    const client = sClient(t, s, files.caFile, ['-alpn', 'http/1.1,h2']);
    await client.waitFor('Verify return code: 0 (ok)');
    await echo(client, token());
    client.closeStdin();
    const result = await client.done;
    assert.equal(result.code, 0, describeResult(result));
    assert.match(result.stdout, /ALPN protocol: h2/, describeResult(result));
    const connection = await s.connection(0);
    assert.equal(connection.alpnProtocol, 'h2');
  });

  test('ALPN without overlap: no_application_protocol (RFC 7301 §3.2)', async (t) => {
    const s = await server(t, { alpnProtocols: ['h2'] });
    const client = sClient(t, s, files.caFile, ['-alpn', 'spdy/3']);
    client.closeStdin();
    const result = await client.done;
    assert.notEqual(result.code, 0, describeResult(result));
    assert.match(result.stdout + result.stderr, /no application protocol/, describeResult(result));
  });

  test('no SNI: the default identity is used', async (t) => {
    const s = await server(t);
    const client = startTool(t, 'openssl', [
      's_client', '-connect', `127.0.0.1:${s.port}`, '-noservername', '-CAfile', files.caFile,
      '-verify_return_error', '-verify_ip', '127.0.0.1', '-tls1_3',
    ]);
    await client.waitFor('Verify return code: 0 (ok)');
    await echo(client, token());
    client.closeStdin();
    const result = await client.done;
    assert.equal(result.code, 0, describeResult(result));
    const connection = await s.connection(0);
    assert.equal(connection.serverName, undefined);
  });

  const keyTypes = [
    { keyType: 'ecdsa-p384', peerType: 'ECDSA', digest: 'SHA384', scheme: 'ecdsa_secp384r1_sha384' },
    { keyType: 'rsa2048', peerType: 'RSA-PSS', digest: 'SHA256', scheme: 'rsa_pss_rsae_sha256' },
    { keyType: 'ed25519', peerType: 'ed25519', digest: undefined, scheme: 'ed25519' },
  ] as const;
  for (const kt of keyTypes) {
    test(`key type ${kt.keyType}: CertificateVerify ${kt.scheme}`, async (t) => {
      const ktPki = await makeTestPki({ keyType: kt.keyType });
      const ktFiles = writePkiFiles(ktPki);
      t.after(() => ktFiles.remove());
      const s = await startEngineServer({ pki: ktPki }, t);
      const client = sClient(t, s, ktFiles.caFile, []);
      await client.waitFor('Verify return code: 0 (ok)');
      await echo(client, token());
      client.closeStdin();
      const result = await client.done;
      assert.equal(result.code, 0, describeResult(result));
      assert.match(result.stdout, new RegExp(`Peer signature type: ${kt.peerType}`), describeResult(result));
      if (kt.digest) assert.match(result.stdout, new RegExp(`Peer signing digest: ${kt.digest}`));
      if (s.implementation === 'engine') assert.equal((await s.connection(0)).signatureScheme, kt.scheme);
    });
  }

  test('a large write is split into records and arrives whole', async (t) => {
    const s = await server(t);
    // -quiet implies -ign_eof; -no_ign_eof makes EOF on stdin close the connection again.
    const client = sClient(t, s, files.caFile, ['-quiet', '-no_ign_eof']);
    // 100 000 bytes in lines: more than six 2^14-byte records each way.
    const lines = Array.from({ length: 1000 }, (_, i) => `${String(i).padStart(4, '0')}${'x'.repeat(95)}`);
    const payload = lines.join('\n') + '\n';
    client.write(payload);
    await client.waitFor(`0999${'x'.repeat(95)}\n`, 15_000);
    client.closeStdin();
    const result = await client.done;
    assert.equal(result.code, 0, describeResult(result));
    assert.equal(result.stdout, payload);
    const connection = await s.connection(0);
    await connection.closed;
    assert.equal(connection.received.toString('latin1'), payload);
  });
});

function count(text: string, pattern: RegExp): number {
  return [...text.matchAll(pattern)].length;
}
