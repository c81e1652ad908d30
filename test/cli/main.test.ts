/**
 * `delegator` itself (src/cli/main.ts): the dispatch and its exit codes. No command is a usage
 * error (2) with the command list; `--help` is not (0); an unknown command is refused (2), and so
 * is a name every object inherits (toString, constructor, __proto__): only the registry's own
 * entries are commands. An error a command did not catch exits 1 with one line under the command's
 * name (`delegator demo: …`).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeResult, runTool } from '../helpers/tools.js';
import { MAIN } from '../edge/system.js';

test('delegator without a command exits 2 with the command list; --help, -h and help exit 0 with it', { timeout: 60_000 }, async () => {
  const none = await runTool(process.execPath, [MAIN]);
  assert.equal(none.code, 2, describeResult(none));
  assert.match(none.stdout, /^Usage: delegator <command> \[options\]\n/);
  assert.match(none.stdout, /^ {2}status {3}/m);
  for (const flag of ['--help', '-h', 'help']) {
    const r = await runTool(process.execPath, [MAIN, flag]);
    assert.equal(r.code, 0, `${flag}: ${describeResult(r)}`);
    assert.match(r.stdout, /^Usage: delegator <command> \[options\]\n/, flag);
  }
});

test('delegator refuses an unknown command, and names inherited from Object.prototype, with exit 2; a real command runs (control)', { timeout: 60_000 }, async () => {
  for (const name of ['frobnicate', 'toString', 'constructor', '__proto__', 'hasOwnProperty']) {
    const r = await runTool(process.execPath, [MAIN, name]);
    assert.equal(r.code, 2, `${name}: ${describeResult(r)}`);
    assert.equal(r.stderr, `delegator: unknown command '${name}' (see delegator --help)\n`, name);
    assert.equal(r.stdout, '');
  }
  const status = await runTool(process.execPath, [MAIN, 'status', '--help']);
  assert.equal(status.code, 0, describeResult(status));
  assert.match(status.stdout, /^Usage: delegator status /);
});

test('a command that fails with an error nobody caught exits 1 with its message under the command\'s name, not 0', { timeout: 30_000 }, async () => {
  // demo creates --home before anything else; a path under a file cannot be created. The line
  // names the command ("delegator demo: …"), as a command's own errors do: a bare
  // "delegator: ENOTDIR …" left the operator to guess which command failed.
  const r = await runTool(process.execPath, [MAIN, 'demo', '--port', '0', '--home', '/dev/null/delegator']);
  assert.equal(r.code, 1, describeResult(r));
  assert.equal(r.stderr, "delegator demo: ENOTDIR: not a directory, mkdir '/dev/null/delegator'\n");
  assert.equal(r.stdout, '');
});

test('control: a command\'s own error keeps its single "delegator <command>: " prefix (not doubled by the dispatch)', { timeout: 30_000 }, async () => {
  const r = await runTool(process.execPath, [MAIN, 'status', '--timeout', '3000000']);
  assert.equal(r.code, 2, describeResult(r));
  assert.match(r.stderr, /^delegator status: --timeout must be a positive number of seconds, at most 2147483$/m);
  assert.doesNotMatch(r.stderr, /delegator status: delegator/);
});
