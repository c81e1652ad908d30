/**
 * A SIGHUP that reaches `delegator edge` while it starts — here while it waits for a keyd
 * that accepts TCP but never answers TLS (up to the keyd connect timeout) — is held and
 * applied once the edge runs. Before, Node's default action for SIGHUP ended the edge, and
 * the systemd unit reloads with `kill -HUP $MAINPID` (deploy/systemd).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { renameSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { makeTestPki, writePkiFiles } from '../helpers/pki.js';
import { freePort } from '../helpers/ports.js';
import { MAIN } from './system.js';

test('delegator edge: a SIGHUP while the edge waits for keyd at start is held, then reloads once the edge has started', { timeout: 60_000 }, async (t) => {
  const pki = writePkiFiles(await makeTestPki());
  t.after(() => pki.remove());
  // keyd's address accepts the connection and never says a word: the edge's start waits
  // for the keyd connect timeout there.
  const silent: Socket[] = [];
  const mute = createServer((s) => silent.push(s));
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const s of silent) s.destroy();
    mute.close();
  });
  const keyd = { host: '127.0.0.1', port: (mute.address() as AddressInfo).port, cert: pki.certFile, key: pki.keyFile, ca: pki.caFile };
  const configFile = join(pki.dir, 'edge.json');
  // Replaced whole (rename), as config tools do, so no read sees half a file.
  const writeConfig = (names: string[]) => {
    writeFileSync(`${configFile}.new`, JSON.stringify({ keyd: [keyd], routes: names.map((n) => ({ names: [n], upstream: '127.0.0.1:9' })), logLevel: 'info' }));
    renameSync(`${configFile}.new`, configFile);
  };
  writeConfig(['a.test']);

  const port = await freePort();
  const child = spawn(process.execPath, [MAIN, 'edge', '--listen', `127.0.0.1:${port}`, '--workers', '1', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let log = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (log += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
  const exited = once(child, 'exit');
  const logged = async (re: RegExp, ms = 20_000) => {
    const until = Date.now() + ms;
    while (!re.test(log)) {
      if (child.exitCode !== null || child.signalCode !== null) assert.fail(`edge exited (${child.exitCode ?? child.signalCode}) before /${re.source}/:\n${log}`);
      if (Date.now() > until) assert.fail(`no /${re.source}/ within ${ms} ms:\n${log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  await logged(/edge starting/);
  // Freeze the edge: if it has not given up on keyd yet, the SIGHUP below is delivered (on
  // SIGCONT) while it is still starting.
  child.kill('SIGSTOP');
  await new Promise((r) => setTimeout(r, 100));
  assert.doesNotMatch(log, /keyd is not reachable yet/, 'the edge is still waiting for keyd');
  writeConfig(['a.test', 'b.test']);
  child.kill('SIGHUP');
  child.kill('SIGCONT');

  await logged(/a SIGHUP arrived while the edge was starting/);
  await logged(/"routes":2[^\n]*reloaded: new connections use the new config/);
  assert.equal(child.exitCode, null, 'still running');
  assert.equal(child.signalCode, null);

  // Control: a SIGHUP once started reloads as before, and the held one is not replayed again.
  writeConfig(['a.test', 'b.test', 'c.test']);
  child.kill('SIGHUP');
  await logged(/"routes":3[^\n]*reloaded: new connections use the new config/);
  assert.equal(log.split('a SIGHUP arrived while the edge was starting').length - 1, 1);
  child.kill('SIGTERM');
  const [code] = await exited;
  assert.equal(code, 0);
});
