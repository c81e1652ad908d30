/**
 * `delegator edge --workers 2`: a worker restarted after a crash runs the config the primary
 * runs (sent over the cluster channel), not the file as edited since: before, it read the
 * file again and served other routes than its sibling (or, with a file that no longer
 * validates, died at every restart). After a SIGHUP reload the config applied is what a
 * restarted worker gets. Controls: every handshake is served by the running config.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { makeTestPki } from '../helpers/pki.js';
import { KeydProcess, scratchDir, startEdgeProcess, startHttpUpstream, type EdgeProcess } from './system.js';

function count(edge: EdgeProcess, re: RegExp): number {
  return edge.log().match(new RegExp(re.source, 'g'))?.length ?? 0;
}

/** Resolves with the first of `patterns` (name → [regexp, times]) the log reaches. */
function firstLogged(edge: EdgeProcess, patterns: Record<string, [RegExp, number]>): Promise<string> {
  return new Promise((resolve) => {
    const check = () => {
      for (const [name, [re, times]] of Object.entries(patterns)) {
        if (count(edge, re) >= times) {
          edge.child.stdout!.off('data', check);
          edge.child.stderr!.off('data', check);
          return resolve(name);
        }
      }
    };
    edge.child.stdout!.on('data', check);
    edge.child.stderr!.on('data', check);
    check();
  });
}

/** One request under `servername`: the upstream's answer, or the error's message. */
function request(port: number, servername: string, ca: string[]): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername, ca });
    let data = '';
    s.once('secureConnect', () => s.write('GET / HTTP/1.0\r\n\r\n'));
    s.setEncoding('utf8').on('data', (d: string) => (data += d));
    s.once('end', () => s.end());
    s.once('close', () => resolve(data));
    s.once('error', (err) => resolve(err.message));
  });
}

/** The pid of one worker, from its log lines. */
function aWorkerPid(edge: EdgeProcess): number {
  const line = edge.log().split('\n').reverse().find((l) => /"worker":\d+/.test(l) && /"msg":"edge listening"/.test(l));
  assert.ok(line, edge.log());
  return (JSON.parse(line) as { pid: number }).pid;
}

test('--workers 2: a worker restarted after a crash runs the primary\'s config, not the file edited since; after a reload, the reloaded one', { timeout: 180_000 }, async (t) => {
  const scratch = scratchDir('edge-workers-');
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
  const ca = [pkiA.caCertPem, pkiB.caCertPem];
  const configFile = join(scratch.dir, 'edge.json');
  const writeConfig = (name: string, port: number) =>
    writeFileSync(configFile, JSON.stringify({ keyd: keyd.socket, routes: [{ names: [name], upstream: `127.0.0.1:${port}` }], logLevel: 'info' }));
  writeConfig('a.test', upA.port);
  const edge = await startEdgeProcess(['--config', configFile, '--workers', '2'], { readyLog: /edge workers ready/ });
  t.after(() => edge.stop('SIGKILL'));
  const listening = /"msg":"edge listening"/;
  const died = /"msg":"worker died; restarting it"/;

  /** Kills one worker and waits for the primary's restart to listen (or to die again). */
  const crashAWorker = async () => {
    const [before, deaths] = [count(edge, listening), count(edge, died)];
    process.kill(aWorkerPid(edge), 'SIGKILL');
    const first = await firstLogged(edge, { restarted: [listening, before + 1], 'died again': [died, deaths + 2] });
    assert.equal(first, 'restarted', edge.log());
  };
  /** Enough requests that each of the two workers (round robin) takes several. */
  const answers = async (servername: string) => {
    const out: string[] = [];
    for (let i = 0; i < 8; i++) out.push(await request(edge.port, servername, ca));
    return out;
  };

  for (const a of await answers('a.test')) assert.match(a, /upstream A/); // control
  // The file changes, no SIGHUP: the running config stays a.test, the restarted worker included.
  writeConfig('b.test', upB.port);
  await crashAWorker();
  for (const a of await answers('a.test')) assert.match(a, /upstream A/, 'a restarted worker serves the running config');
  for (const b of await answers('b.test')) assert.match(b, /unrecognized name/i, 'the file as edited is not in force');

  // SIGHUP applies the file; a worker restarted after that runs the reloaded config.
  const reloaded = count(edge, /"msg":"reloaded: new connections use the new config/);
  edge.child.kill('SIGHUP');
  await firstLogged(edge, { reloaded: [/"msg":"reloaded: new connections use the new config/, reloaded + 2] });
  await crashAWorker();
  for (const b of await answers('b.test')) assert.match(b, /upstream B/, 'a worker restarted after the reload serves the reloaded config');
  for (const a of await answers('a.test')) assert.match(a, /unrecognized name/i);

  assert.equal(await edge.stop('SIGTERM'), 0, edge.log());
});
