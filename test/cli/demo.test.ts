/**
 * `delegator demo` (npm start) around its happy path, which test/edge/demo runs: a part that
 * cannot start (exit 1, keyd stopped, not left running).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { freePort } from '../helpers/ports.js';
import { startTool, type ToolProcess } from '../helpers/tools.js';
import { MAIN } from '../edge/system.js';

function scratch(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Runs `delegator demo ARGS` until it exits, or for `graceMs` and then SIGTERM (the demo
 * stops keyd and the edge on SIGTERM; a SIGKILL would leave them running).
 */
async function demoUntilExit(t: TestContext, args: string[], graceMs: number): Promise<{ code: number | null; demo: ToolProcess; stoppedByUs: boolean }> {
  const demo = startTool(t, process.execPath, [MAIN, 'demo', '--host', '127.0.0.1', ...args], { timeoutMs: graceMs + 30_000 });
  let stoppedByUs = false;
  const timer = setTimeout(() => {
    stoppedByUs = true;
    demo.child.kill('SIGTERM');
  }, graceMs);
  const result = await demo.done;
  clearTimeout(timer);
  return { code: result.code, demo, stoppedByUs };
}

test('demo whose edge cannot listen (port taken) exits 1 naming the edge, stops keyd, and made its state directories 0700', { timeout: 120_000 }, async (t) => {
  const home = join(scratch(t, 'demo-fail-'), 'home');
  const taken: Server = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.after(() => taken.close());
  const port = (taken.address() as { port: number }).port;
  const { code, demo, stoppedByUs } = await demoUntilExit(t, ['--port', String(port), '--home', home], 60_000);
  assert.equal(stoppedByUs, false, demo.stdout);
  assert.equal(code, 1, `${demo.stdout}\n${demo.stderr}`);
  assert.match(demo.stderr, /^delegator demo: edge exited \(1\); its log .*edge\.log ends with:/m);
  assert.match(demo.stderr, /EADDRINUSE/, 'the edge log\'s tail says why');
  assert.doesNotMatch(demo.stdout, /Ctrl-C stops everything|^edge: /m, 'no banner for an edge that is not running');
  // keyd was started (it generated the key) and is stopped: its admin socket is gone.
  assert.match(demo.stdout, /keyd generated a new ecdsa-p256 key for localhost/);
  assert.equal(existsSync(join(home, 'run', 'keyd-admin.sock')), false, 'keyd stopped');
  // The state holds keyd's root key and sealed store, the admin socket and the logs: owner only.
  for (const dir of [home, join(home, 'run'), join(home, 'logs')]) assert.equal(statSync(dir).mode & 0o777, 0o700, dir);
});
