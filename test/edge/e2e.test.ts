/**
 * End to end with real clients (curl, openssl s_client, gnutls-cli) through
 * `delegator edge` → keyd (child process, real store) → HTTP upstreams.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect } from 'node:tls';
import { freePort } from '../helpers/ports.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { describeResult, requireTool, runTool, startTool } from '../helpers/tools.js';
import { KeydProcess, requestOverTls, scratchDir, startEdgeProcess, startHttpUpstream, type EdgeProcess, type HttpUpstream } from './system.js';

let scratch: ReturnType<typeof scratchDir>;
let keyd: KeydProcess;
let edge: EdgeProcess;
let upA: HttpUpstream;
let upB: HttpUpstream;
let pkiA: TestPki;
let pkiB: TestPki;
let caA: string;
let caB: string;
let deadPort: number;

before(async () => {
  scratch = scratchDir('edge-e2e-');
  [pkiA, pkiB] = await Promise.all([
    makeTestPki({ commonName: 'a.test', extraNames: ['a.test'] }),
    makeTestPki({ keyType: 'rsa2048', commonName: 'www.b.test', extraNames: ['*.b.test'] }),
  ]);
  caA = join(scratch.dir, 'ca-a.pem');
  caB = join(scratch.dir, 'ca-b.pem');
  writeFileSync(caA, pkiA.caCertPem);
  writeFileSync(caB, pkiB.caCertPem);
  keyd = new KeydProcess(scratch.dir);
  await keyd.start();
  await keyd.put(['a.test'], pkiA.leafKey, pkiA.chainDer);
  await keyd.put(['*.b.test'], pkiB.leafKey, pkiB.chainDer);
  upA = await startHttpUpstream('A');
  upB = await startHttpUpstream('B');
  deadPort = await freePort();
  edge = await startEdgeProcess([
    '--keyd', keyd.socket,
    '--route', `a.test=127.0.0.1:${upA.port}`,
    '--route', `*.b.test=127.0.0.1:${upB.port}`,
    '--route', `down.test=127.0.0.1:${deadPort}`,
    '--route', 'later.test=127.0.0.1:' + upA.port,
    '--default-name', 'a.test',
    '--log-level', 'warn',
  ]);
});

after(async () => {
  await edge?.stop('SIGKILL');
  await keyd?.kill();
  await upA?.close();
  await upB?.close();
  scratch?.remove();
});

function curl(name: string, ca: string, extra: string[] = []) {
  return runTool('curl', ['-sS', '-v', '--tlsv1.3', '--max-time', '10', '--cacert', ca, '--resolve', `${name}:${edge.port}:127.0.0.1`, ...extra, `https://${name}:${edge.port}/`]);
}

function sClient(args: string[], input = 'GET / HTTP/1.0\r\n\r\n') {
  return runTool('openssl', ['s_client', '-connect', `127.0.0.1:${edge.port}`, '-tls1_3', '-ign_eof', ...args], input);
}

test('curl: each of two names gets its own certificate and upstream', async (t) => {
  if (!requireTool(t, 'curl', 'curl')) return;
  const a = await curl('a.test', caA);
  assert.equal(a.code, 0, describeResult(a));
  assert.equal(a.stdout, 'upstream A\n');
  assert.match(a.stderr, /subject: CN=a\.test/);
  assert.match(a.stderr, /TLSv1\.3/);
  const b = await curl('www.b.test', caB);
  assert.equal(b.code, 0, describeResult(b));
  assert.equal(b.stdout, 'upstream B\n');
  assert.match(b.stderr, /subject: CN=www\.b\.test/);
});

test('openssl s_client: right certificate per name, unknown name refused, no SNI gets the default', async (t) => {
  if (!requireTool(t, 'openssl', 'openssl')) return;
  const a = await sClient(['-servername', 'a.test', '-CAfile', caA, '-verify_return_error']);
  assert.match(a.stdout, /subject=CN = a\.test/, describeResult(a));
  assert.match(a.stdout, /Verify return code: 0 \(ok\)/);
  assert.match(a.stdout, /upstream A/);
  const b = await sClient(['-servername', 'x.b.test', '-CAfile', caB, '-verify_return_error']);
  assert.match(b.stdout, /subject=CN = www\.b\.test/, describeResult(b));
  assert.match(b.stdout, /upstream B/);
  const unknown = await sClient(['-servername', 'other.test']);
  assert.notEqual(unknown.code, 0);
  assert.match(unknown.stderr, /unrecognized name|alert number 112/, describeResult(unknown));
  const none = await sClient(['-noservername', '-CAfile', caA]);
  assert.match(none.stdout, /subject=CN = a\.test/, describeResult(none));
  assert.match(none.stdout, /upstream A/);
});

test('gnutls-cli: SNI routing and the page through the edge', async (t) => {
  if (!requireTool(t, 'gnutls-cli', 'gnutls-bin')) return;
  // Keep stdin open until the answer is in: gnutls-cli sends close_notify at stdin EOF.
  const tool = startTool(
    t,
    'gnutls-cli',
    ['127.0.0.1', '-p', String(edge.port), '--sni-hostname', 'www.b.test', '--verify-hostname', 'www.b.test', '--x509cafile', caB, '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.3'],
  );
  await tool.waitFor('Simple Client Mode');
  tool.write('GET / HTTP/1.0\r\n\r\n');
  await tool.waitFor('upstream B');
  tool.closeStdin();
  const r = await tool.done;
  assert.match(r.stdout, /upstream B/);
  assert.match(r.stdout + r.stderr, /TLS1\.3/);
});

test('a key put into keyd is served without an edge restart', async (t) => {
  if (!requireTool(t, 'curl', 'curl')) return;
  const before = await curl('later.test', caA);
  assert.notEqual(before.code, 0, 'no key yet: refused');
  assert.match(before.stderr, /unrecognized name/i, describeResult(before));
  const pki = await makeTestPki({ commonName: 'later.test', extraNames: ['later.test'] });
  const ca = join(scratch.dir, 'ca-later.pem');
  writeFileSync(ca, pki.caCertPem);
  await keyd.put(['later.test'], pki.leafKey, pki.chainDer);
  await sleep(1100); // the edge remembers "no key" for at most 1 s; a push clears it at once
  const served = await curl('later.test', ca);
  assert.equal(served.code, 0, describeResult(served));
  assert.match(served.stderr, /subject: CN=later\.test/);
});

test('upstream down → the TLS connection is closed cleanly after the handshake', async (t) => {
  if (!requireTool(t, 'curl', 'curl')) return;
  const pki = await makeTestPki({ commonName: 'down.test', extraNames: ['down.test'] });
  const ca = join(scratch.dir, 'ca-down.pem');
  writeFileSync(ca, pki.caCertPem);
  await keyd.put(['down.test'], pki.leafKey, pki.chainDer);
  const r = await curl('down.test', ca);
  assert.match(r.stderr, /SSL connection using TLSv1\.3/, describeResult(r));
  assert.equal(r.code, 52, 'curl: empty reply (clean close), not a TLS error'); // 52 = CURLE_GOT_NOTHING
});

/** One handshake with node:tls; 'ok' or the error text. */
function handshake(): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port: edge.port, servername: 'a.test', ca: pkiA.caCertPem });
    s.once('secureConnect', () => {
      s.destroy();
      resolve('ok');
    });
    s.once('error', (err) => resolve(err.message));
    s.setTimeout(5000, () => {
      s.destroy();
      resolve('timeout');
    });
  });
}

test('keyd killed and restarted mid-run: handshakes fail only while it is down, the edge recovers', async () => {
  assert.equal(await handshake(), 'ok');
  await keyd.kill();
  const t0 = Date.now();
  const down = await handshake();
  assert.match(down, /internal error/i);
  assert.ok(Date.now() - t0 < 2000, `failed fast (${Date.now() - t0} ms)`);
  await keyd.start();
  const deadline = Date.now() + 10_000;
  let result = '';
  while (Date.now() < deadline && (result = await handshake()) !== 'ok') await sleep(100);
  assert.equal(result, 'ok', 'recovered without an edge restart');
  for (let i = 0; i < 5; i++) assert.equal(await handshake(), 'ok');
});

test('SIGTERM drains: an open connection finishes, new ones are refused, exit 0', async () => {
  const s = tlsConnect({ host: '127.0.0.1', port: edge.port, servername: 'a.test', ca: pkiA.caCertPem });
  await once(s, 'secureConnect');
  s.write('GET / HTTP/1.0\r\n'); // request head not finished yet
  const exit = once(edge.child, 'exit');
  edge.child.kill('SIGTERM');
  await sleep(300);
  assert.notEqual(await handshake(), 'ok', 'no new connections while draining');
  let body = '';
  s.setEncoding('utf8').on('data', (d: string) => (body += d));
  s.write('\r\n');
  await once(s, 'end');
  assert.match(body, /upstream A/);
  const [code] = await exit;
  assert.equal(code, 0, edge.log());
});

test('--workers 2: both workers serve, /metrics aggregates them, SIGTERM stops all with exit 0', async () => {
  const metricsPort = await freePort();
  const cluster = await startEdgeProcess([
    '--keyd', keyd.socket,
    '--route', `a.test=127.0.0.1:${upA.port}`,
    '--workers', '2',
    '--metrics', `127.0.0.1:${metricsPort}`,
    '--log-level', 'warn',
  ]);
  try {
    for (let i = 0; i < 6; i++) {
      const body = await requestOverTls(cluster.port, 'a.test', [pkiA.caCertPem]);
      assert.match(body, /upstream A/);
    }
    // Both workers hold a keyd connection; the gauge sums over workers. A worker that
    // served no connection yet may still be connecting to keyd (a loaded machine), and a
    // worker reports its counts to the primary's registry when scraped: poll until both
    // figures are in, then assert on what was read (the test's timeout bounds the wait).
    const keydConnected = new RegExp(`edge_keyd_connected\\{endpoint="unix:${keyd.socket.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}"\\} 2`);
    const handshakes = /edge_handshakes_total\{outcome="ok",alert="none"\} 6\n/;
    let text = '';
    for (let poll = 0; poll < 100; poll++) {
      text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      if (keydConnected.test(text) && handshakes.test(text)) break;
      await sleep(100);
    }
    assert.match(text, keydConnected, text);
    assert.match(text, handshakes, text);
  } finally {
    assert.equal(await cluster.stop('SIGTERM'), 0, cluster.log());
  }
});

test('--workers 4: SIGTERM as soon as the port opens (workers still starting) drains them all and exits 0', async () => {
  // The port accepts once the first worker listens; the others may still be starting. The
  // primary must already handle SIGTERM then (Node's default action would kill it: exit null).
  const cluster = await startEdgeProcess(['--keyd', keyd.socket, '--route', `a.test=127.0.0.1:${upA.port}`, '--workers', '4', '--log-level', 'warn']);
  assert.equal(await cluster.stop('SIGTERM'), 0, cluster.log());
});

test('--workers 2: a session ticket issued by one worker resumes on the other (shared ticket keys)', async () => {
  // Waits for both workers: connections made while one is still starting all land on the other.
  const cluster = await startEdgeProcess(['--keyd', keyd.socket, '--route', `a.test=127.0.0.1:${upA.port}`, '--workers', '2', '--log-level', 'info'], {
    readyLog: /edge workers ready/,
  });
  const handshake = (session?: Buffer) =>
    new Promise<{ reused: boolean; session: Buffer | undefined }>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: cluster.port, servername: 'a.test', ca: pkiA.caCertPem, ...(session ? { session } : {}) });
      let ticket: Buffer | undefined;
      let reused = false;
      s.on('session', (t: Buffer) => (ticket ??= t));
      s.once('secureConnect', () => {
        reused = s.isSessionReused();
        s.write('GET / HTTP/1.0\r\n\r\n');
      });
      s.resume();
      s.once('end', () => s.end());
      s.once('close', () => resolve({ reused, session: ticket }));
      s.once('error', reject);
    });
  try {
    const first = await handshake();
    assert.equal(first.reused, false);
    assert.ok(first.session, 'the first connection got a ticket');
    // The cluster hands connections to the workers in turn, so these land on both workers.
    const reused: boolean[] = [];
    for (let i = 0; i < 6; i++) reused.push((await handshake(first.session)).reused);
    assert.deepEqual(reused, [true, true, true, true, true, true]);
  } finally {
    assert.equal(await cluster.stop('SIGTERM'), 0, cluster.log());
  }
});
