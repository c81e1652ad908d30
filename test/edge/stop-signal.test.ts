/**
 * SIGTERM sent to the edge's whole process group, as systemd's default KillMode=control-group
 * does on `systemctl stop` (and `kill -TERM -PGID`): with workers, each worker receives the
 * signal itself, besides the primary's drain message. A request in flight on an open
 * connection must still get its answer (the drain, docs/EDGE.md "SIGTERM / SIGINT"), and
 * the edge exits 0. Before, Node's default action killed the workers at once.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { keydServingATest, logged, startEdgeProcess, type EdgeProcess } from './system.js';

test('--workers 2, SIGTERM to the process group: the request in flight is answered, then exit 0', { timeout: 120_000 }, async (t) => {
  const { scratch, pki, keyd } = await keydServingATest(t, 'edge-stop-group-');

  // An upstream that answers only when the test says so: the request stays in flight.
  let arrived!: (socket: Socket) => void;
  const requestArrived = new Promise<Socket>((resolve) => (arrived = resolve));
  const upstreamSockets = new Set<Socket>();
  const upstream = createServer((socket) => {
    upstreamSockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('data', () => arrived(socket));
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  t.after(() => {
    for (const socket of upstreamSockets) socket.destroy();
    upstream.close();
  });
  const configFile = join(scratch.dir, 'edge.json');
  writeFileSync(
    configFile,
    JSON.stringify({
      keyd: keyd.socket,
      routes: [{ names: ['a.test'], upstream: `127.0.0.1:${(upstream.address() as { port: number }).port}` }],
      // A deadline the test never reaches: the connection ends because its answer came.
      limits: { drainTimeoutMs: 60_000 },
      logLevel: 'info',
    }),
  );
  const edge = await startEdgeProcess(['--config', configFile, '--workers', '2'], { readyLog: /edge workers ready/, detached: true });
  t.after(() => {
    try {
      process.kill(-edge.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const exited = once(edge.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;

  const client = tlsConnect({ host: '127.0.0.1', port: edge.port, servername: 'a.test', ca: pki.caCertPem });
  let answer = '';
  client.setEncoding('utf8').on('data', (d: string) => (answer += d));
  client.on('error', () => undefined);
  client.once('end', () => client.end());
  const clientClosed = once(client, 'close').then(() => 'closed' as const);
  await once(client, 'secureConnect');
  client.write('ping');
  const upstreamSide = await requestArrived;

  process.kill(-edge.child.pid!, 'SIGTERM');
  // Both workers say they drain (one for the signal, and on the primary's message); a worker
  // killed by the signal says nothing, and its client connection is cut.
  const first = await Promise.race([logged(edge, /"msg":"stopping: draining connections"/, 2).then(() => 'draining' as const), clientClosed]);
  assert.equal(first, 'draining', `the client connection was cut at the signal; answer so far ${JSON.stringify(answer)}\n${edge.log()}`);

  upstreamSide.end('pong');
  await clientClosed;
  assert.equal(answer, 'pong', 'the request in flight at the signal was answered');
  const [code, signal] = await exited;
  assert.equal(signal, null);
  assert.equal(code, 0, edge.log());
  assert.doesNotMatch(edge.log(), /worker died/);
});
