/**
 * SIGHUP reload of a running edge (`delegator edge`, two workers) under load: new routes
 * are served, an established connection and the handshakes in flight are not dropped (zero
 * failed handshakes over the whole run), and a bad config is refused with its reason logged
 * while the old one keeps serving. The load is a loop of node:tls clients in this process
 * (full handshakes, 8 at a time), so the test needs no external load generator.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { makeTestPki } from '../helpers/pki.js';
import { KeydProcess, logged, scratchDir, startEdgeProcess, startHttpUpstream, type EdgeProcess } from './system.js';

function handshake(port: number, servername: string, ca: string[]): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername, ca, minVersion: 'TLSv1.3' });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function get(socket: TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (body += d));
    socket.once('end', () => resolve(body));
    socket.once('error', reject);
    socket.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  });
}

/** Full handshakes, `parallel` at a time, until stopped; counts outcomes and keeps the first errors. */
function loadLoop(port: number, servername: string, ca: string[], parallel = 8) {
  const stats = { ok: 0, failed: 0, errors: [] as string[], straddled: 0 };
  let running = true;
  let reloadSent = false;
  let reloadApplied = false;
  const loops = Array.from({ length: parallel }, async () => {
    while (running) {
      const startedBeforeReload = !reloadSent;
      try {
        const socket = await handshake(port, servername, ca);
        socket.destroy();
        stats.ok++;
        if (startedBeforeReload && reloadApplied) stats.straddled++;
      } catch (err) {
        stats.failed++;
        if (stats.errors.length < 5) stats.errors.push((err as Error).message);
      }
    }
  });
  return {
    stats,
    markReloadSent: () => (reloadSent = true),
    markReloadApplied: () => (reloadApplied = true),
    /** Resolves once `n` more handshakes have completed. */
    async after(n: number) {
      const target = stats.ok + stats.failed + n;
      while (stats.ok + stats.failed < target) await new Promise((r) => setImmediate(r));
    },
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

test('SIGHUP under load: new routes served, zero failed handshakes, an open connection kept; a bad config refused, the old kept', { timeout: 180_000 }, async (t) => {
  const scratch = scratchDir('edge-reload-');
  t.after(() => scratch.remove());
  const [pkiA, pkiB] = await Promise.all([
    makeTestPki({ commonName: 'a.test', extraNames: ['a.test'] }),
    makeTestPki({ commonName: 'b.test', extraNames: ['b.test'] }),
  ]);
  const keyd = new KeydProcess(scratch.dir);
  await keyd.start();
  t.after(() => keyd.kill());
  await keyd.put(['a.test'], pkiA.leafKey, pkiA.chainDer);
  await keyd.put(['b.test'], pkiB.leafKey, pkiB.chainDer);
  const upA = await startHttpUpstream('A');
  const upB = await startHttpUpstream('B');
  t.after(() => Promise.all([upA.close(), upB.close()]));
  const configFile = join(scratch.dir, 'edge.json');
  const writeConfig = (routes: object[], extra: object = {}) =>
    writeFileSync(configFile, JSON.stringify({ keyd: keyd.socket, routes, logLevel: 'info', ...extra }));
  const routeA = { names: ['a.test'], upstream: `127.0.0.1:${upA.port}` };
  writeConfig([routeA]);
  const edge = await startEdgeProcess(['--config', configFile, '--workers', '2'], { readyLog: /edge workers ready/ });
  t.after(() => edge.stop('SIGKILL'));
  const ca = [pkiA.caCertPem, pkiB.caCertPem];

  await assert.rejects(handshake(edge.port, 'b.test', ca), /unrecognized name/i, 'b.test is not routed yet');
  const held = await handshake(edge.port, 'a.test', ca); // established before the reload, used after it

  const load = loadLoop(edge.port, 'a.test', ca);
  await load.after(50);
  writeConfig([routeA, { names: ['b.test'], upstream: `127.0.0.1:${upB.port}` }], { limits: { handshakeTimeoutMs: 8000 } });
  load.markReloadSent();
  edge.child.kill('SIGHUP');
  await logged(edge, /"msg":"reloaded: new connections use the new config/, 2); // both workers
  load.markReloadApplied();
  await load.after(100);
  await load.stop();
  t.diagnostic(`load: ${load.stats.ok} handshakes ok, ${load.stats.failed} failed, ${load.stats.straddled} begun before the reload and done after it`);
  assert.equal(load.stats.failed, 0, `failed handshakes: ${load.stats.errors.join('; ')}`);
  assert.ok(load.stats.straddled > 0, 'handshakes were in flight during the reload');
  assert.match(await get(await handshake(edge.port, 'b.test', ca)), /upstream B/, 'the new route is served');
  assert.match(await get(held), /upstream A/, 'the connection opened before the reload still works');

  // A config that does not validate: refused, its reason logged, the running one kept.
  writeFileSync(configFile, JSON.stringify({ keyd: keyd.socket, routes: [{ names: ['a.test'], upstream: '127.0.0.1:99999' }] }));
  edge.child.kill('SIGHUP');
  await logged(edge, /"msg":"reload refused: the running config is kept"/);
  assert.match(edge.log(), /upstream: port 99999 is out of range|99999/);
  // One that changes what only a restart can (the metrics listener): refused too.
  writeConfig([routeA], { metrics: '127.0.0.1:9' });
  edge.child.kill('SIGHUP');
  await logged(edge, /"msg":"reload refused: the running config is kept"/, 2);
  assert.match(edge.log(), /metrics changed: a restart applies that/);
  assert.match(await get(await handshake(edge.port, 'b.test', ca)), /upstream B/, 'still the last good config');
  assert.match(await get(await handshake(edge.port, 'a.test', ca)), /upstream A/);
  assert.equal(await edge.stop(), 0);
});
