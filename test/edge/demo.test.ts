/**
 * `delegator demo` (npm start) as a user runs it: start, run the printed curl command,
 * Ctrl-C, start again (the store is reused), Ctrl-C.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { freePort } from '../helpers/ports.js';
import { describeResult, requireTool, runTool, startTool } from '../helpers/tools.js';
import { MAIN, scratchDir } from './system.js';

test('npm start: the printed curl command gets the upstream page through edge and keyd; a second start reuses the key', { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, 'curl', 'curl')) return;
  const scratch = scratchDir('edge-demo-');
  t.after(() => scratch.remove());
  const port = await freePort();
  const env = { ...process.env, DELEGATOR_HOME: scratch.dir };

  const first = startTool(t, process.execPath, [MAIN, 'demo', '--port', String(port)], { env, timeoutMs: 60_000 });
  await first.waitFor('Ctrl-C stops everything', 30_000);
  assert.match(first.stdout, /keyd generated a new ecdsa-p256 key for localhost/);
  const command = /^\s*(curl --cacert \S+ https:\/\/localhost:\d+\/)$/m.exec(first.stdout)?.[1];
  assert.ok(command, first.stdout);
  const curl = await runTool('sh', ['-c', `${command} -sS`]);
  assert.equal(curl.code, 0, describeResult(curl));
  assert.match(curl.stdout, /Hello from the upstream app/);
  assert.match(curl.stdout, /server name \(SNI\): localhost/);
  first.child.kill('SIGINT');
  const [code] = await once(first.child, 'exit');
  assert.equal(code, 0, first.stderr);

  const second = startTool(t, process.execPath, [MAIN, 'demo', '--port', String(port)], { env, timeoutMs: 60_000 });
  await second.waitFor('Ctrl-C stops everything', 30_000);
  assert.match(second.stdout, /already holds the ecdsa-p256 key for localhost; reusing it/);
  const again = await runTool('sh', ['-c', `${command} -sS`]);
  assert.equal(again.code, 0, describeResult(again));
  second.child.kill('SIGTERM');
  const [code2] = await once(second.child, 'exit');
  assert.equal(code2, 0, second.stderr);
});
