/**
 * `delegator status` against a running system (the demo: keyd and the edge as processes):
 * keyd and edge health, each name's key type, back-end, expiry and signing counts; then
 * with keyd gone, the exit code says so.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { formatStatus, parsePrometheusText } from '../../src/cli/status.js';
import { freePort } from '../helpers/ports.js';
import { describeResult, runTool, startTool } from '../helpers/tools.js';
import { MAIN, scratchDir } from '../edge/system.js';

function handshake(port: number, ca: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, minVersion: 'TLSv1.3' });
    socket.once('secureConnect', () => {
      socket.end('GET / HTTP/1.0\r\n\r\n');
      socket.resume();
      socket.once('close', () => resolve());
    });
    socket.once('error', reject);
  });
}

test('delegator status: keyd and edge up, each name with key type, back-end, expiry and signatures; keyd down → exit 1', { timeout: 120_000 }, async (t) => {
  const scratch = scratchDir('status-');
  t.after(() => scratch.remove());
  const [port, metricsPort] = [await freePort(), await freePort()];
  const demo = startTool(t, process.execPath, [MAIN, 'demo', '--port', String(port), '--host', '127.0.0.1', '--metrics', `127.0.0.1:${metricsPort}`], {
    env: { ...process.env, DELEGATOR_HOME: scratch.dir },
    timeoutMs: 90_000,
  });
  await demo.waitFor('Ctrl-C stops everything', 60_000);
  const ca = readFileSync(join(scratch.dir, 'demo-ca', 'ca.pem'), 'utf8');
  for (let i = 0; i < 3; i++) await handshake(port, ca);
  const adminSocket = join(scratch.dir, 'run', 'keyd-admin.sock');
  const args = [MAIN, 'status', '--socket', adminSocket, '--edge-metrics', `127.0.0.1:${metricsPort}`];

  const up = await runTool(process.execPath, args);
  assert.equal(up.code, 0, describeResult(up));
  assert.match(up.stdout, /^keyd {3}up {4}.*keyd-admin\.sock: 1 key\(s\)$/m);
  assert.match(up.stdout, /^edge {3}up {4}127\.0\.0\.1:\d+: connected to keyd; handshakes 3 ok, \d+ failed; \d+ open connection\(s\)$/m);
  const row = up.stdout.split('\n').find((l) => l.startsWith('localhost'));
  assert.ok(row, up.stdout);
  const cells = row.split(/\s{2,}/);
  assert.equal(cells[1], 'ecdsa-p256');
  assert.equal(cells[2], 'software');
  assert.match(cells[3]!, /^\d{4}-\d\d-\d\dT/);
  assert.ok(Number(cells[4]) >= 363 && Number(cells[4]) <= 365, row);
  // The demo's readiness probe opens and closes a TCP connection: a failed handshake, no signature.
  assert.equal(cells[5], '3', 'one signature per full handshake');
  assert.equal(cells[6], '0');
  const json = await runTool(process.execPath, [...args, '--json']);
  assert.equal(json.code, 0, describeResult(json));
  const parsed = JSON.parse(json.stdout) as { keyd: { up: boolean; keys: number }; keys: { names: string[]; signatures: number }[]; edges: { handshakesOk: number }[] };
  assert.equal(parsed.keyd.up, true);
  assert.deepEqual(parsed.keys.map((k) => [k.names, k.signatures]), [[['localhost'], 3]]);
  assert.equal(parsed.edges[0]!.handshakesOk, 3);

  demo.child.kill('SIGTERM');
  const [code] = await once(demo.child, 'exit');
  assert.equal(code, 0, demo.stderr);
  const down = await runTool(process.execPath, args);
  assert.equal(down.code, 1, describeResult(down));
  assert.match(down.stdout, /^keyd {3}DOWN .*keyd-admin\.sock: .+\[KEYD_UNAVAILABLE\]$/m);
  assert.match(down.stdout, /^edge {3}DOWN {2}127\.0\.0\.1:\d+: ECONNREFUSED$/m);
});

test('status formatting: signing counts per key, expiry flagged within the warning window', () => {
  const text = formatStatus({
    keyd: { socket: '/run/keyd/admin.sock', up: true, keys: 2 },
    edges: [],
    keys: [
      { names: ['a.test'], keyRef: 'k1', keyType: 'rsa', backend: 'software', notAfter: '2030-01-01T00:00:00.000Z', daysLeft: 12, expiringSoon: true, signatures: 41, refusals: 2 },
      { names: ['b.test', '*.b.test'], keyRef: 'k2', keyType: 'ecdsa-p256', backend: 'pkcs11:token=hsm', notAfter: null, daysLeft: null, expiringSoon: false, signatures: 0, refusals: 0 },
    ],
  });
  assert.match(text, /^a\.test +rsa +software +2030-01-01T00:00:00\.000Z +12 RENEW +41 +2$/m);
  assert.match(text, /^b\.test,\*\.b\.test +ecdsa-p256 +pkcs11:token=hsm +\(no chain\) +- +0 +0$/m);
  assert.match(text, /edge {3}\(not checked/);
  assert.deepEqual(parsePrometheusText('# HELP x y\nedge_keyd_connected{endpoint="/run/k.sock"} 1\nbad line\nedge_active_connections 3'), [
    { name: 'edge_keyd_connected', labels: { endpoint: '/run/k.sock' }, value: 1 },
    { name: 'edge_active_connections', labels: {}, value: 3 },
  ]);
});
