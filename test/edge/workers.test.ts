/**
 * `delegator edge --workers 2`: a worker restarted after a crash runs the config the primary
 * runs (sent over the cluster channel), not the file as edited since: before, it read the
 * file again and served other routes than its sibling (or, with a file that no longer
 * validates, died at every restart). After a SIGHUP reload the config applied is what a
 * restarted worker gets. Controls: every handshake is served by the running config. The
 * restart back-off starts over after a worker served for the stable period.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readFileSync, readlinkSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeTestPki } from '../helpers/pki.js';
import { KeydProcess, keydServingATest, firstLogged, logCount, requestOverTls, scratchDir, startEdgeProcess, startHttpUpstream, type EdgeProcess } from './system.js';

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
    const [before, deaths] = [logCount(edge, listening), logCount(edge, died)];
    process.kill(aWorkerPid(edge), 'SIGKILL');
    const first = await firstLogged(edge, { restarted: [listening, before + 1], 'died again': [died, deaths + 2] });
    assert.equal(first, 'restarted', edge.log());
  };
  /** Enough requests that each of the two workers (round robin) takes several. */
  const answers = async (servername: string) => {
    const out: string[] = [];
    for (let i = 0; i < 8; i++) out.push(await requestOverTls(edge.port, servername, ca));
    return out;
  };

  for (const a of await answers('a.test')) assert.match(a, /upstream A/); // control
  // The file changes, no SIGHUP: the running config stays a.test, the restarted worker included.
  writeConfig('b.test', upB.port);
  await crashAWorker();
  for (const a of await answers('a.test')) assert.match(a, /upstream A/, 'a restarted worker serves the running config');
  for (const b of await answers('b.test')) assert.match(b, /unrecognized name/i, 'the file as edited is not in force');

  // SIGHUP applies the file; a worker restarted after that runs the reloaded config.
  const reloaded = logCount(edge, /"msg":"reloaded: new connections use the new config/);
  edge.child.kill('SIGHUP');
  await firstLogged(edge, { reloaded: [/"msg":"reloaded: new connections use the new config/, reloaded + 2] });
  await crashAWorker();
  for (const b of await answers('b.test')) assert.match(b, /upstream B/, 'a worker restarted after the reload serves the reloaded config');
  for (const a of await answers('a.test')) assert.match(a, /unrecognized name/i);

  assert.equal(await edge.stop('SIGTERM'), 0, edge.log());
});

test('--workers 2: a message to a worker that has just died (its exit not yet seen) does not crash the primary', { timeout: 60_000 }, async (t) => {
  // The window, made wide: the config file is a FIFO, so the primary's SIGHUP handler blocks
  // reading it; meanwhile a worker is killed (its channel closed, its exit not yet handled);
  // then the config arrives and the primary sends the reload to both workers.
  const { scratch, pki, keyd } = await keydServingATest(t, 'edge-workers-epipe-');
  const upA = await startHttpUpstream('A');
  t.after(() => upA.close());
  const fifo = join(scratch.dir, 'edge.json');
  const text = JSON.stringify({ keyd: keyd.socket, routes: [{ names: ['a.test'], upstream: `127.0.0.1:${upA.port}` }], logLevel: 'info' });
  writeFileSync(fifo, text);
  // Its own process group, so that the cleanup also ends a worker stuck on the FIFO.
  const edge = await startEdgeProcess(['--config', fifo, '--workers', '2'], { readyLog: /edge workers ready/, detached: true });
  t.after(() => {
    try {
      process.kill(-edge.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  // The file becomes a FIFO once the edge runs: only the primary's SIGHUP handler reads it.
  unlinkSync(fifo);
  execFileSync('mkfifo', [fifo]);
  for (let i = 0; i < 4; i++) assert.match(await requestOverTls(edge.port, 'a.test', [pki.caCertPem]), /upstream A/); // control

  const primaryExit = once(edge.child, 'exit').then(() => 'primary died');
  edge.child.kill('SIGHUP');
  // The primary is in open() of the FIFO once a writer can open it without blocking.
  let writer: number | undefined;
  while (writer === undefined) {
    try {
      writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENXIO') throw err;
      await sleep(10);
    }
  }
  const victim = aWorkerPid(edge);
  const listeningBefore = logCount(edge, /"msg":"edge listening"/);
  // The worker's end of its channel with the primary: once the kernel has released it, a
  // write from the primary fails (EPIPE). The worker's exit is not handled meanwhile.
  const channelFd = /(?:^|\0)NODE_CHANNEL_FD=(\d+)/.exec(readFileSync(`/proc/${victim}/environ`, 'latin1'))![1];
  const channel = /socket:\[(\d+)\]/.exec(readlinkSync(`/proc/${victim}/fd/${channelFd}`))![1];
  const unixSockets = () => readFileSync('/proc/net/unix', 'latin1').split('\n').map((line) => line.trim().split(/\s+/)[6]);
  assert.ok(unixSockets().includes(channel));
  process.kill(victim, 'SIGKILL');
  while (unixSockets().includes(channel)) await sleep(10);
  writeSync(writer, text);
  closeSync(writer);

  const first = await Promise.race([primaryExit, firstLogged(edge, { 'worker restarted': [/"msg":"edge listening"/, listeningBefore + 1] })]);
  assert.equal(first, 'worker restarted', edge.log());
  assert.match(edge.log(), /"msg":"a message to a worker failed \(it is exiting\)"/);
  for (let i = 0; i < 4; i++) assert.match(await requestOverTls(edge.port, 'a.test', [pki.caCertPem]), /upstream A/);
  assert.equal(await edge.stop('SIGTERM'), 0, edge.log());
});

test('--workers 2: the restart back-off grows while a worker keeps dying at once, and starts over once a worker has served for the stable period', { timeout: 120_000 }, async (t) => {
  // The stable period is 60 s in production; DELEGATOR_TEST_WORKER_STABLE_MS shortens it here.
  const STABLE_MS = 3000;
  const { scratch, pki, keyd } = await keydServingATest(t, 'edge-workers-backoff-');
  const upA = await startHttpUpstream('A');
  t.after(() => upA.close());
  const configFile = join(scratch.dir, 'edge.json');
  writeFileSync(configFile, JSON.stringify({ keyd: keyd.socket, routes: [{ names: ['a.test'], upstream: `127.0.0.1:${upA.port}` }], logLevel: 'info' }));
  const edge = await startEdgeProcess(['--config', configFile, '--workers', '2'], {
    readyLog: /edge workers ready/,
    env: { ...process.env, DELEGATOR_TEST_WORKER_STABLE_MS: String(STABLE_MS) },
  });
  t.after(() => edge.stop('SIGKILL'));
  const listening = /"msg":"edge listening"/;
  const died = /"msg":"worker died; restarting it"/;
  /** The restartInMs of each death the primary logged, in order. */
  const delays = () =>
    edge
      .log()
      .split('\n')
      .filter((l) => died.test(l))
      .map((l) => (JSON.parse(l) as { restartInMs: number }).restartInMs);
  /** Kills the worker that listened last (the newest) and waits for its replacement to listen. */
  const crashNewest = async () => {
    const [before, deaths] = [logCount(edge, listening), logCount(edge, died)];
    process.kill(aWorkerPid(edge), 'SIGKILL');
    const first = await firstLogged(edge, { restarted: [listening, before + 1], 'died again': [died, deaths + 2] });
    assert.equal(first, 'restarted', edge.log());
  };

  // The control: a worker killed as soon as it serves, again and again, is restarted later each time.
  for (let i = 0; i < 3; i++) await crashNewest();
  assert.deepEqual(delays(), [200, 400, 800], edge.log());
  // The newest worker now serves longer than the stable period before it dies: the back-off
  // starts over (before: 1600, and 5000 from the sixth death on, for the primary's lifetime).
  await sleep(STABLE_MS + 500);
  await crashNewest();
  assert.deepEqual(delays(), [200, 400, 800, 200], edge.log());
  // Quick deaths grow it again from there.
  await crashNewest();
  assert.deepEqual(delays(), [200, 400, 800, 200, 400], edge.log());
  assert.match(await requestOverTls(edge.port, 'a.test', [pki.caCertPem]), /upstream A/);
  assert.equal(await edge.stop('SIGTERM'), 0, edge.log());
});

test('--workers 2: each worker slot has its own back-off: a sibling\'s deaths do not add to it, and a sibling\'s stable run does not start it over', { timeout: 120_000 }, async (t) => {
  // One count for all workers used to make a worker dying at once restart after 400 ms the
  // first time because its sibling had died before, and drop back to 200 ms whenever a
  // sibling that had served for the stable period died.
  const STABLE_MS = 6000;
  const { scratch, pki, keyd } = await keydServingATest(t, 'edge-workers-slots-');
  const upA = await startHttpUpstream('A');
  t.after(() => upA.close());
  const configFile = join(scratch.dir, 'edge.json');
  writeFileSync(configFile, JSON.stringify({ keyd: keyd.socket, routes: [{ names: ['a.test'], upstream: `127.0.0.1:${upA.port}` }], logLevel: 'info' }));
  const edge = await startEdgeProcess(['--config', configFile, '--workers', '2'], {
    readyLog: /edge workers ready/,
    env: { ...process.env, DELEGATOR_TEST_WORKER_STABLE_MS: String(STABLE_MS) },
  });
  t.after(() => edge.stop('SIGKILL'));
  const listening = /"msg":"edge listening"/;
  const died = /"msg":"worker died; restarting it"/;
  const lines = () => edge.log().split('\n').filter((l) => l.startsWith('{'));
  /** The pid of each worker that listened, in order. */
  const listeningPids = () => lines().filter((l) => /"worker":\d+/.test(l) && listening.test(l)).map((l) => (JSON.parse(l) as { pid: number }).pid);
  /** The restartInMs of each death the primary logged, in order. */
  const delays = () => lines().filter((l) => died.test(l)).map((l) => (JSON.parse(l) as { restartInMs: number }).restartInMs);
  /** Kills the worker `pid`, waits for its replacement to listen; the replacement's pid. */
  const crash = async (pid: number): Promise<number> => {
    const [before, deaths] = [logCount(edge, listening), logCount(edge, died)];
    process.kill(pid, 'SIGKILL');
    const first = await firstLogged(edge, { restarted: [listening, before + 1], 'died again': [died, deaths + 2] });
    assert.equal(first, 'restarted', edge.log());
    return listeningPids().at(-1)!;
  };

  const [x0, y0] = listeningPids();
  assert.ok(x0 && y0 && x0 !== y0, edge.log());
  // Y dies at once, then X dies at once three times: X's back-off starts at its own first
  // death (200 ms), not at Y's count (one count: 400, 800, 1600).
  let y = await crash(y0!);
  let x = await crash(x0!);
  x = await crash(x);
  x = await crash(x);
  assert.deepEqual(delays(), [200, 200, 400, 800], edge.log());
  // Both now serve past the stable period. The control: X's own stable run starts X's count
  // over (200), and its next quick death grows it (400).
  await sleep(STABLE_MS + 500);
  x = await crash(x);
  x = await crash(x);
  assert.deepEqual(delays(), [200, 200, 400, 800, 200, 400], edge.log());
  // Y dies after a stable run (its own count starts over: 200); X, dying at once again, keeps
  // backing off (800), where one count had been started over by Y's death (400).
  y = await crash(y);
  x = await crash(x);
  assert.deepEqual(delays(), [200, 200, 400, 800, 200, 400, 200, 800], edge.log());
  assert.ok(y !== x);
  assert.match(await requestOverTls(edge.port, 'a.test', [pki.caCertPem]), /upstream A/);
  assert.equal(await edge.stop('SIGTERM'), 0, edge.log());
});
