/**
 * `delegator demo` (npm start) around its happy path, which test/edge/demo runs: argument
 * checks (exit 2 before anything starts), a part that cannot start (exit 1, keyd stopped,
 * not left running), the state directories' modes, and a demo CA that was deleted (keyd's
 * leaf no longer chains to the new CA, so a new key is certified).
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

test('demo usage errors exit 2 with the usage text before anything starts (the state directory is not even made)', { timeout: 120_000 }, async (t) => {
  const dir = scratch(t, 'demo-usage-');
  const port = String(await freePort());
  const cases: Array<[string[], RegExp]> = [
    [['--port', '65536'], /--port must be 0\.\.65535, got '65536'/],
    [['--port', port, '--key-type', 'dsa'], /--key-type must be one of ecdsa-p256, ecdsa-p384, rsa2048, ed25519/],
    [['--port', port, '--client-auth', 'optional'], /--client-auth needs --client-ca FILE/],
    [['--port', port, '--client-auth', 'sometimes', '--client-ca', join(dir, 'clients.pem')], /--client-auth must be optional or required, got 'sometimes'/],
  ];
  for (const [args, message] of cases) {
    const home = join(dir, `home-${cases.findIndex(([a]) => a === args)}`);
    const { code, demo, stoppedByUs } = await demoUntilExit(t, [...args, '--home', home], 10_000);
    assert.equal(stoppedByUs, false, `${args.join(' ')} ran instead of exiting: ${demo.stdout}`);
    assert.equal(code, 2, `${args.join(' ')}: ${demo.stderr}`);
    assert.match(demo.stderr, new RegExp(`^delegator demo: ${message.source}\n\nUsage: delegator demo `), args.join(' '));
    assert.equal(existsSync(home), false, `nothing made for ${args.join(' ')}`);
  }
  // Control: the highest port is a port (it parses; the help exits before anything starts).
  const help = await demoUntilExit(t, ['--port', '65535', '--help'], 10_000);
  assert.equal(help.code, 0, help.demo.stderr);
  assert.match(help.demo.stdout, /^Usage: delegator demo /);
});

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

test('demo after its CA was deleted: a new CA, and keyd\'s leaf (from the old one) is replaced, not reused', { timeout: 180_000 }, async (t) => {
  const home = join(scratch(t, 'demo-ca-'), 'home');
  const port = String(await freePort());
  const start = async (): Promise<string> => {
    const demo = startTool(t, process.execPath, [MAIN, 'demo', '--host', '127.0.0.1', '--port', port, '--home', home], { timeoutMs: 90_000 });
    await demo.waitFor('Ctrl-C stops everything', 60_000);
    demo.child.kill('SIGTERM');
    const result = await demo.done;
    assert.equal(result.code, 0, result.stderr);
    return result.stdout;
  };
  assert.match(await start(), /keyd generated a new ecdsa-p256 key for localhost/);
  assert.match(await start(), /keyd already holds the ecdsa-p256 key for localhost; reusing it/, 'control: same CA, reused');
  rmSync(join(home, 'demo-ca'), { recursive: true });
  assert.match(await start(), /keyd generated a new ecdsa-p256 key for localhost/);
});
