/**
 * `delegator status` without a running system: its usage checks (exit 2, nothing asked), its
 * health verdict (exit 0 only when keyd is up and every edge is up and connected to keyd), and
 * what it makes of keyd's answers (a fake admin transport) and of an edge's /metrics (a local
 * HTTP server): counts summed over clients, days left and the EXPIRED/RENEW label, an edge
 * that answers with an error or an endless body, an edge not connected to keyd.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { collectStatus, formatStatus, healthy, type EdgeStatus, type SystemStatus } from '../../src/cli/status.js';
import type { AdminTransport } from '../../src/keyd/admin-client.js';
import { describeResult, runTool } from '../helpers/tools.js';
import { MAIN } from '../edge/system.js';

const DAY = 86_400_000;
const HOUR = 3_600_000;

test('status: bad --warn-days, --timeout and --edge-metrics are usage errors (exit 2, the reason); good ones reach the check (control)', { timeout: 60_000 }, async () => {
  const nobody = ['--socket', '/nonexistent/keyd-admin.sock'];
  const cases: [string[], RegExp][] = [
    [['--warn-days', 'x'], /^delegator status: --warn-days must be a number of days$/m],
    [['--warn-days', '12345'], /^delegator status: --warn-days must be a number of days$/m],
    [['--warn-days=-1'], /^delegator status: --warn-days must be a number of days$/m],
    [['--timeout', '0'], /^delegator status: --timeout must be a positive number of seconds, at most 2147483$/m],
    [['--timeout', 'soon'], /^delegator status: --timeout must be a positive number of seconds, at most 2147483$/m],
    [['--edge-metrics', '127.0.0.1:70000'], /^delegator status: .*--edge-metrics/m],
  ];
  for (const [argv, message] of cases) {
    const r = await runTool(process.execPath, [MAIN, 'status', ...nobody, ...argv]);
    assert.equal(r.code, 2, `${argv.join(' ')}: ${describeResult(r)}`);
    assert.match(r.stderr, message, argv.join(' '));
    assert.equal(r.stdout, '', 'nothing checked');
  }
  // Control: in range, the check runs and finds keyd down (exit 1, not 2).
  const r = await runTool(process.execPath, [MAIN, 'status', ...nobody, '--warn-days', '9999', '--timeout', '0.5']);
  assert.equal(r.code, 1, describeResult(r));
  assert.match(r.stdout, /^keyd {3}DOWN {2}\/nonexistent\/keyd-admin\.sock: .*\[KEYD_UNAVAILABLE\]$/m);
});

// Node runs a timer longer than 2^31-1 ms after 1 ms (TimeoutOverflowWarning): "--timeout
// 3000000" or "Infinity" would give keyd and every edge 1 ms, and report a healthy system down.
test('status --timeout above 2147483 s (node\'s longest timer) or Infinity is a usage error; 2147483 itself is taken (control)', { timeout: 30_000 }, async () => {
  const nobody = ['--socket', '/nonexistent/keyd-admin.sock'];
  for (const timeout of ['2147484', '3000000', 'Infinity']) {
    const r = await runTool(process.execPath, [MAIN, 'status', ...nobody, '--timeout', timeout]);
    assert.equal(r.code, 2, `${timeout}: ${describeResult(r)}`);
    assert.match(r.stderr, /^delegator status: --timeout must be a positive number of seconds, at most 2147483$/m, timeout);
    assert.equal(r.stdout, '', 'nothing checked');
  }
  const r = await runTool(process.execPath, [MAIN, 'status', ...nobody, '--timeout', '2147483']);
  assert.equal(r.code, 1, describeResult(r));
  assert.match(r.stdout, /^keyd {3}DOWN .*ENOENT.*\[KEYD_UNAVAILABLE\]$/m, 'keyd down because it is absent, not because of the timer');
  assert.doesNotMatch(r.stderr, /TimeoutOverflowWarning/);
});

test('status health: exit 0 only with keyd up and every edge up and connected to keyd', () => {
  const edge = (e: Partial<EdgeStatus>): EdgeStatus => ({ address: '127.0.0.1:9100', up: true, keydConnected: true, ...e });
  const system = (keydUp: boolean, edges: EdgeStatus[]): SystemStatus => ({ keyd: { socket: '/run/keyd/admin.sock', up: keydUp }, edges, keys: [] });
  assert.equal(healthy(system(true, [])), true, 'keyd up, no edge checked (control)');
  assert.equal(healthy(system(true, [edge({}), edge({})])), true, 'keyd up, edges up and connected (control)');
  assert.equal(healthy(system(false, [])), false, 'keyd down');
  assert.equal(healthy(system(false, [edge({})])), false, 'keyd down, the edge fine');
  assert.equal(healthy(system(true, [edge({}), edge({ keydConnected: false })])), false, 'an edge up but not connected to keyd');
  assert.equal(healthy(system(true, [edge({ up: false })])), false, 'an edge down');
});

/** A transport answering list and stats as keyd would; records that it was closed. */
function fakeKeyd(keys: object[], stats: object): { connect: (socket: string, timeoutMs: number) => Promise<AdminTransport>; closed: () => boolean } {
  let closed = false;
  const transport = { list: async () => keys, stats: async () => stats, close: () => void (closed = true) } as unknown as AdminTransport;
  return { connect: async () => transport, closed: () => closed };
}

test('status per key: signatures and refusals summed over clients; days left rounded down, EXPIRED once past notAfter, RENEW within --warn-days', async () => {
  const now = Date.parse('2030-06-01T12:00:00.000Z');
  const key = (keyRef: string, name: string, notAfterMs: number | null) => ({
    names: [name],
    keyRef,
    keyType: 'ecdsa-p256',
    notAfter: notAfterMs === null ? null : new Date(notAfterMs).toISOString(),
  });
  const keyd = fakeKeyd(
    [
      key('k-past', 'past.test', now - 12 * HOUR),
      key('k-hours', 'hours.test', now + 12 * HOUR),
      key('k-soon', 'soon.test', now + 10 * DAY + HOUR),
      key('k-far', 'far.test', now + 100 * DAY),
      key('k-none', 'none.test', null),
    ],
    {
      local: { signatures: 5, refusals: 1, keys: { 'k-far': { signatures: 3, refusals: 1 }, 'k-soon': { signatures: 2, refusals: 0 } } },
      'CN=edge-2': { signatures: 7, refusals: 4, keys: { 'k-far': { signatures: 7, refusals: 2 } } },
      'CN=edge-3': { signatures: 0, refusals: 2, keys: { 'k-far': { signatures: 0, refusals: 2 } } },
    },
  );
  const status = await collectStatus({ socket: '/fake', edges: [], warnDays: 30, timeoutMs: 1000, now, connect: keyd.connect });
  assert.ok(keyd.closed(), 'the transport is closed');
  const byName = new Map(status.keys.map((k) => [k.names[0], k]));
  assert.deepEqual([byName.get('far.test')!.signatures, byName.get('far.test')!.refusals], [10, 5], 'summed over three clients');
  assert.deepEqual([byName.get('soon.test')!.signatures, byName.get('soon.test')!.refusals], [2, 0]);
  assert.deepEqual([byName.get('none.test')!.signatures, byName.get('none.test')!.refusals], [0, 0], 'no client signed with it');
  const days = (name: string) => [byName.get(name)!.daysLeft, byName.get(name)!.expiringSoon];
  assert.deepEqual(days('past.test'), [-1, true], '12 hours past notAfter');
  assert.deepEqual(days('hours.test'), [0, true], '12 hours left');
  assert.deepEqual(days('soon.test'), [10, true]);
  assert.deepEqual(days('far.test'), [100, false], 'outside the warning window (control)');
  assert.deepEqual(days('none.test'), [null, false]);
  const text = formatStatus(status);
  assert.match(text, /^past\.test .* -1 EXPIRED /m);
  assert.match(text, /^hours\.test .* 0 RENEW /m);
  assert.match(text, /^soon\.test .* 10 RENEW /m);
  assert.match(text, /^far\.test .* 100 +10 +5$/m);
});

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('status per edge: HTTP 500 is down, a body over 16 MiB is down, edge_keyd_connected 0 is not connected, 1 is (control)', { timeout: 30_000 }, async (t) => {
  const metrics = (connected: number) =>
    `# TYPE edge_keyd_connected gauge\nedge_keyd_connected{endpoint="/run/keyd/keyd.sock"} ${connected}\n` +
    'edge_handshakes_total{outcome="ok",alert="none"} 4\nedge_handshakes_total{outcome="failed",alert="handshake_failure"} 2\nedge_active_connections 1\n';
  const servers = {
    connected: createServer((_req, res) => res.end(metrics(1))),
    disconnected: createServer((_req, res) => res.end(metrics(0))),
    failing: createServer((_req, res) => {
      res.statusCode = 500;
      res.end(metrics(1));
    }),
    endless: createServer((_req, res) => {
      const chunk = '#'.repeat(1024 * 1024) + '\n';
      const write = (): void => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', write);
      };
      res.on('close', () => res.destroy());
      write();
    }),
  };
  for (const server of Object.values(servers)) t.after(() => server.closeAllConnections() ?? server.close());
  const addresses = {
    connected: await listen(servers.connected),
    disconnected: await listen(servers.disconnected),
    failing: await listen(servers.failing),
    endless: await listen(servers.endless),
  };
  const keyd = fakeKeyd([], {});
  const status = await collectStatus({ socket: '/fake', edges: Object.values(addresses), warnDays: 30, timeoutMs: 10_000, connect: keyd.connect });
  const [connected, disconnected, failing, endless] = status.edges;
  assert.deepEqual(connected, { address: addresses.connected, up: true, keydConnected: true, handshakesOk: 4, handshakesFailed: 2, openConnections: 1 });
  assert.deepEqual(disconnected, { address: addresses.disconnected, up: true, keydConnected: false, handshakesOk: 4, handshakesFailed: 2, openConnections: 1 });
  assert.deepEqual(failing, { address: addresses.failing, up: false, error: 'HTTP 500' });
  assert.deepEqual(endless, { address: addresses.endless, up: false, error: 'metrics answer over 16 MiB' });
  assert.equal(healthy(status), false);
  assert.match(formatStatus(status), /NOT connected to keyd/);
});
