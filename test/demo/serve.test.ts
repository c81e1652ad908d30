import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { howToReach, parseServeArgs, UsageError } from '../../src/cli/serve.js';
import { NamedGroup } from '../../src/tls/wire/codepoints.js';
import { DEFAULT_GROUPS } from '../../src/tls/crypto/key-exchange.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const ENGINE = fileURLToPath(new URL('../../src/tls/socket.js', import.meta.url));

test('arguments: defaults', () => {
  const config = parseServeArgs([], {});
  assert.notEqual(config, 'help');
  if (config === 'help') return;
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.port, 8443);
  assert.equal(config.keyType, 'ecdsa-p256');
  assert.deepEqual(config.groups, DEFAULT_GROUPS, 'the engine\'s default groups');
  assert.equal(config.tickets, 2);
  assert.deepEqual(config.alpn, ['http/1.1']);
  assert.deepEqual(config.names, ['localhost', '127.0.0.1']);
  assert.equal(config.dir, join(process.cwd(), '.delegator', 'serve'));
  assert.deepEqual([config.tls12, config.tls13, config.requireEms], [true, true, false]);
});

test('arguments: --no-tls12, --tls12-only, --require-ems; the two version switches exclude each other', () => {
  const off = parseServeArgs(['--no-tls12'], {});
  assert.ok(off !== 'help' && !off.tls12 && off.tls13);
  const only = parseServeArgs(['--tls12-only', '--require-ems'], {});
  assert.ok(only !== 'help' && only.tls12 && !only.tls13 && only.requireEms);
  assert.throws(() => parseServeArgs(['--no-tls12', '--tls12-only'], {}), UsageError);
});

test('arguments: every option parsed; DELEGATOR_HOME moves the default directory', () => {
  const config = parseServeArgs(
    ['--host', '0.0.0.0', '--port', '4433', '--key-type', 'rsa2048', '--groups', 'secp384r1, x25519', '--tickets', '0', '--hrr-cookie', '--alpn', 'h2,http/1.1', '--names', 'a.test,LOCALHOST', '--log-level', 'debug'],
    { DELEGATOR_HOME: '/srv/delegator' },
  );
  assert.notEqual(config, 'help');
  if (config === 'help') return;
  assert.equal(config.host, '0.0.0.0');
  assert.equal(config.port, 4433);
  assert.equal(config.keyType, 'rsa2048');
  assert.deepEqual(config.groups, [NamedGroup.secp384r1, NamedGroup.x25519]);
  assert.equal(config.tickets, 0);
  assert.deepEqual(config.alpn, ['h2', 'http/1.1']);
  assert.deepEqual(config.names, ['localhost', '127.0.0.1', 'a.test']);
  assert.equal(config.dir, '/srv/delegator/serve');
  assert.equal(config.logLevel, 'debug');
  assert.equal(parseServeArgs(['--help'], {}), 'help');
  assert.equal(parseServeArgs(['-h'], {}), 'help');
});

test('arguments: bad values are usage errors with a precise message', () => {
  const cases: [string[], RegExp][] = [
    [['--port', '70000'], /--port must be between 0 and 65535/],
    [['--port', 'x'], /--port must be an integer/],
    [['--key-type', 'dsa'], /--key-type must be one of ecdsa-p256, ecdsa-p384, rsa2048, ed25519/],
    [['--groups', 'x25519,ffdhe9'], /unknown group 'ffdhe9'/],
    [['--groups', ','], /at least one group/],
    [['--tickets', '-1'], /--tickets/],
    [['--log-level', 'loud'], /--log-level/],
    [['--nope'], /nope/],
    [['positional'], /positional/],
  ];
  for (const [argv, message] of cases) {
    assert.throws(() => parseServeArgs(argv, {}), (err: unknown) => err instanceof UsageError && message.test(err.message), argv.join(' '));
  }
});

// RFC 7301 §3.1: each ProtocolName is 1..255 bytes (the engine sends a name's UTF-8), and a
// name listed twice is a mistake; --alpn takes the check the edge's routes[].alpn has. Before,
// a duplicate and a lone surrogate were taken, and an empty entry silently dropped.
test('arguments: --alpn refuses a duplicate, an empty entry, a name over 255 UTF-8 bytes and a lone surrogate', () => {
  const cases: [string, string][] = [
    ['h2,http/1.1,h2', "--alpn entry 3: 'h2' is already --alpn entry 1; each protocol is listed once"],
    ['h2,,http/1.1', '--alpn entry 2 must be a non-empty string'],
    ['h2,', '--alpn entry 2 must be a non-empty string'],
    ['p'.repeat(256), '--alpn entry 1 is longer than 255 bytes (RFC 7301 §3.1)'],
    ['h2,' + 'é'.repeat(128), '--alpn entry 2 is longer than 255 bytes (RFC 7301 §3.1)'], // 128 characters, 256 bytes
    ['x\ud800', '--alpn entry 1 holds a lone UTF-16 surrogate, which has no UTF-8 encoding'],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => parseServeArgs(['--alpn', value], {}), (err: unknown) => err instanceof UsageError && err.message === message, value);
  }
});

test('positive control: --alpn takes 255-byte names, case-distinct names, trims spaces, and an empty value turns ALPN off', () => {
  const alpn = (value: string) => {
    const config = parseServeArgs(['--alpn', value], {});
    assert.notEqual(config, 'help');
    return config === 'help' ? [] : config.alpn;
  };
  assert.deepEqual(alpn('p'.repeat(255)), ['p'.repeat(255)]);
  assert.deepEqual(alpn(`${'é'.repeat(127)}x,\u{1F600}`), [`${'é'.repeat(127)}x`, '\u{1F600}']);
  assert.deepEqual(alpn(' h2 , H2 ,http/1.1'), ['h2', 'H2', 'http/1.1']);
  assert.deepEqual(alpn(''), []);
});

test('serve --alpn h2,h2 exits 2 with the message, before any file is written', { timeout: 30_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'serve-alpn-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const result = spawnSync(process.execPath, [MAIN, 'serve', '--port', '0', '--dir', join(dir, 'serve'), '--alpn', 'h2,h2'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(result.status, 2, result.stderr);
  assert.match(result.stderr, /delegator serve: --alpn entry 2: 'h2' is already --alpn entry 1; each protocol is listed once/);
  assert.equal(existsSync(join(dir, 'serve')), false, 'nothing created');
});

test('the printed curl command reaches the listener and trusts the demo CA', () => {
  assert.deepEqual(howToReach('127.0.0.1', 8443, '/x/ca.pem'), {
    url: 'https://localhost:8443/',
    curlCommand: 'curl --cacert /x/ca.pem https://localhost:8443/',
  });
  assert.equal(
    howToReach('10.0.0.5', 4433, "/it's here/ca.pem").curlCommand,
    `curl --cacert '/it'\\''s here/ca.pem' --connect-to localhost:4433:10.0.0.5:4433 https://localhost:4433/`,
  );
  assert.match(howToReach('fd00::1', 1, '/ca.pem').curlCommand, /--connect-to localhost:1:\[fd00::1\]:1 /);
});

interface ServeProcess {
  child: ChildProcess;
  port: number;
  caPath: string;
  curlCommand: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Starts `delegator serve` in a child process; it is killed when the test ends. */
async function startServe(t: TestContext, args: string[]): Promise<ServeProcess> {
  const child = spawn(process.execPath, [MAIN, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const started = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start in 20 s; stderr: ${stderr}`)), 20_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (/^Try: .*\n/m.test(stdout)) {
        clearTimeout(timer);
        resolve(stdout);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code}: ${stderr}`));
    });
  });
  const port = Number(/on [^ ]+:(\d+) \(TLS 1\.3/.exec(started)?.[1]);
  const caPath = /^CA certificate: (.+)$/m.exec(started)?.[1] ?? '';
  const curlCommand = /^Try: (.+)$/m.exec(started)?.[1] ?? '';
  assert.ok(port > 0, started);
  return { child, port, caPath, curlCommand, stderr: () => stderr, exited };
}

/** GET / over node:tls (TLS 1.3 only, verifying against the demo CA); resolves with the whole response. */
async function httpsGet(port: number, ca: Buffer, request = 'GET / HTTP/1.0\r\n\r\n'): Promise<{ response: string; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca, minVersion: 'TLSv1.3', ALPNProtocols: ['http/1.1'] });
    const chunks: Buffer[] = [];
    let protocol: string | null = null;
    socket.setTimeout(10_000, () => socket.destroy(new Error('timeout')));
    socket.once('secureConnect', () => {
      protocol = socket.getProtocol();
      socket.write(request);
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve({ response: Buffer.concat(chunks).toString('utf8'), protocol }));
    socket.once('error', reject);
  });
}

function engineMissing(t: TestContext): boolean {
  if (existsSync(ENGINE)) return false;
  t.skip('TLS engine (src/tls/socket.ts) not built yet');
  return true;
}

test('serve: every key type answers GET over TLS 1.3 with the page; SIGTERM exits 0', { timeout: 60_000 }, async (t) => {
  if (engineMissing(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'serve-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  for (const keyType of ['ecdsa-p256', 'ecdsa-p384', 'rsa2048', 'ed25519']) {
    const serve = await startServe(t, ['--dir', dir, '--key-type', keyType]);
    assert.equal(serve.caPath, join(dir, 'ca.pem'));
    const ca = await readFile(serve.caPath);
    const { response, protocol } = await httpsGet(serve.port, ca);
    assert.equal(protocol, 'TLSv1.3');
    assert.match(response, /^HTTP\/1\.1 200 OK\r\n/, keyType);
    assert.match(response, /TLS_AES_128_GCM_SHA256|TLS_AES_256_GCM_SHA384|TLS_CHACHA20_POLY1305_SHA256/);
    assert.match(response, new RegExp(`${keyType}, in this process`));
    assert.equal((await stat(join(dir, `leaf-${keyType}-key.pem`))).mode & 0o777, 0o600);
    serve.child.kill('SIGTERM');
    assert.equal(await serve.exited, 0, serve.stderr());
  }
});

test('serve: a second start reuses the CA; handshake failures are logged at debug with the alert, no key material', { timeout: 60_000 }, async (t) => {
  if (engineMissing(t)) return;
  const dir = await mkdtemp(join(tmpdir(), 'serve-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const first = await startServe(t, ['--dir', dir]);
  const caBefore = await readFile(first.caPath);
  first.child.kill('SIGTERM');
  assert.equal(await first.exited, 0);

  const second = await startServe(t, ['--dir', dir, '--log-level', 'debug', '--no-tls12']);
  assert.deepEqual(await readFile(second.caPath), caBefore, 'CA reused');
  assert.match(second.stderr(), /reusing demo CA and certificate/);
  // With --no-tls12 a TLS 1.2-only client must be refused with a protocol_version alert.
  await new Promise<void>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: second.port, servername: 'localhost', maxVersion: 'TLSv1.2', rejectUnauthorized: false });
    socket.once('error', () => resolve());
    socket.once('secureConnect', () => {
      socket.destroy();
      resolve();
    });
  });
  // The first good request shows the server is still fine after the failure.
  const { response } = await httpsGet(second.port, caBefore);
  assert.match(response, /^HTTP\/1\.1 200 OK/);
  second.child.kill('SIGINT');
  assert.equal(await second.exited, 0);
  const logs = second.stderr();
  assert.match(logs, /"msg":"handshake failed"/);
  assert.match(logs, /"alert":"protocol_version"/);
  const keyPem = await readFile(join(dir, 'leaf-ecdsa-p256-key.pem'), 'utf8');
  const keyBase64 = keyPem.split('\n').filter((line) => line && !line.startsWith('-----')).join('');
  assert.ok(!logs.includes(keyBase64.slice(0, 40)), 'no key material in logs');
  assert.doesNotMatch(logs, /PRIVATE KEY/);
});

test('serve: the printed curl command works as printed', { timeout: 30_000 }, async (t) => {
  if (engineMissing(t)) return;
  if (spawnSync('sh', ['-c', 'command -v curl'], { stdio: 'ignore' }).status !== 0) {
    t.skip('curl not installed (apt-get install curl)');
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'serve-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const serve = await startServe(t, ['--dir', dir]);
  const result = spawnSync('sh', ['-c', `${serve.curlCommand} --silent --show-error --max-time 10 --tlsv1.3`], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /<h1>TLS sign delegator<\/h1>/);
  assert.match(result.stdout, /ALPN protocol<\/th><td>http\/1\.1/);
  serve.child.kill('SIGTERM');
  assert.equal(await serve.exited, 0);
});

test('arguments: --client-ca (required by default), --client-auth optional, --client-crl; the flags need --client-ca', () => {
  const required = parseServeArgs(['--client-ca', 'ca.pem'], {});
  assert.notEqual(required, 'help');
  if (required === 'help') return;
  assert.deepEqual(required.clientAuth, { mode: 'required', caFile: join(process.cwd(), 'ca.pem') });
  const optional = parseServeArgs(['--client-ca', '/x/ca.pem', '--client-auth', 'optional', '--client-crl', '/x/crl.pem'], {});
  assert.notEqual(optional, 'help');
  if (optional === 'help') return;
  assert.deepEqual(optional.clientAuth, { mode: 'optional', caFile: '/x/ca.pem', crlFile: '/x/crl.pem' });
  assert.equal((parseServeArgs([], {}) as { clientAuth?: unknown }).clientAuth, undefined);
  assert.throws(() => parseServeArgs(['--client-auth', 'required'], {}), /need --client-ca/);
  assert.throws(() => parseServeArgs(['--client-crl', 'c.pem'], {}), /need --client-ca/);
  assert.throws(() => parseServeArgs(['--client-ca', 'ca.pem', '--client-auth', 'sometimes'], {}), /optional or required/);
});

// --port is a TCP port (0..65535) and --tickets is capped at 16 NewSessionTickets per
// connection; each takes decimal digits only, so "0x50", "1e3", "1.5" or " 80" (all of which
// Number() reads) are usage errors, not a port someone did not mean.
test('arguments: --port and --tickets take decimal integers within their bounds, the last value of each is taken (control)', () => {
  const refused: [string[], string][] = [
    [['--port', '65536'], '--port must be between 0 and 65535, got 65536'],
    [['--tickets', '17'], '--tickets must be between 0 and 16, got 17'],
    [['--port', '0x50'], "--port must be an integer, got '0x50'"],
    [['--port', '1e3'], "--port must be an integer, got '1e3'"],
    [['--port', '1.5'], "--port must be an integer, got '1.5'"],
    [['--port', ' 80'], "--port must be an integer, got ' 80'"],
    [['--port', ''], "--port must be an integer, got ''"],
    [['--tickets', '+2'], "--tickets must be an integer, got '+2'"],
  ];
  for (const [argv, message] of refused) {
    assert.throws(() => parseServeArgs(argv, {}), (err: unknown) => err instanceof UsageError && err.message === message, argv.join(' '));
  }
  const config = parseServeArgs(['--port', '65535', '--tickets', '16'], {});
  assert.ok(config !== 'help' && config.port === 65535 && config.tickets === 16);
  const zero = parseServeArgs(['--port', '0', '--tickets', '0'], {});
  assert.ok(zero !== 'help' && zero.port === 0 && zero.tickets === 0);
});

test('serve: a --client-ca that cannot be read exits 1 with the file and the reason; a usage error exits 2', { timeout: 30_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'serve-client-ca-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const missing = join(dir, 'missing-ca.pem');
  const result = spawnSync(process.execPath, [MAIN, 'serve', '--port', '0', '--dir', join(dir, 'serve'), '--client-ca', missing], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(result.status, 1, result.stderr);
  assert.equal(result.stderr.trim().split('\n').at(-1), `delegator serve: --client-ca ${missing}: ENOENT`);
  const usage = spawnSync(process.execPath, [MAIN, 'serve', '--port', '65536'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(usage.status, 2, usage.stderr);
  assert.match(usage.stderr, /^delegator serve: --port must be between 0 and 65535, got 65536 \(see delegator serve --help\)$/m);
});

/** GET / over node:tls 1.3 with a client certificate (or none); the response, or the error that ended the connection. */
function getWithClientCert(port: number, ca: Buffer, client?: { pem: string; keyPem: string }): Promise<{ response: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ca, minVersion: 'TLSv1.3', ...(client ? { cert: client.pem, key: client.keyPem } : {}) });
    const chunks: Buffer[] = [];
    let error: string | undefined;
    socket.setTimeout(10_000, () => socket.destroy(new Error('timeout')));
    socket.once('secureConnect', () => socket.write('GET / HTTP/1.0\r\n\r\n'));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('error', (err) => (error = err.message));
    socket.once('close', () => resolve({ response: Buffer.concat(chunks).toString('utf8'), ...(error ? { error } : {}) }));
  });
}

// --client-crl is the revocation list the engine checks client certificates against
// (RFC 5280 §6.3); parsing it and not handing it on would let a revoked certificate in.
test('serve --client-ca --client-crl: a revoked client certificate is refused, another of the same CA is served, no certificate is refused (required)', { timeout: 60_000 }, async (t) => {
  if (engineMissing(t)) return;
  const { makeClientCa, issue, makeCrl, writeFiles } = await import('../helpers/client-pki.js');
  const { pino } = await import('pino');
  const { startServe: start } = await import('../../src/cli/serve.js');
  const clientCa = await makeClientCa({ commonName: 'serve test client CA' });
  const revoked = await issue(clientCa, { commonName: 'revoked-client' });
  const good = await issue(clientCa, { commonName: 'good-client' });
  const files = writeFiles({ 'client-ca.pem': clientCa.pem, 'client-crl.pem': await makeCrl(clientCa, [revoked]) });
  t.after(() => files.remove());
  const config = parseServeArgs(['--port', '0', '--dir', join(files.dir, 'serve'), '--client-ca', files.path('client-ca.pem'), '--client-crl', files.path('client-crl.pem')], {});
  assert.ok(config !== 'help');
  const running = await start(config, pino({ level: 'silent' }));
  t.after(() => running.close(100));
  const ca = await readFile(running.caPath);

  const served = await getWithClientCert(running.port, ca, good);
  assert.match(served.response, /^HTTP\/1\.1 200 OK\r\n/, served.error);
  assert.match(served.response, /client certificate<\/th><td>CN=good-client/);
  const refused = await getWithClientCert(running.port, ca, revoked);
  assert.doesNotMatch(refused.response, /HTTP\/1\.1 200/, 'the revoked certificate is not served');
  assert.match(refused.error ?? '', /certificate revoked/i);
  const none = await getWithClientCert(running.port, ca);
  assert.doesNotMatch(none.response, /HTTP\/1\.1 200/, 'no certificate, required mode');
});
