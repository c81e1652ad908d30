/**
 * test/mutation/run.mjs must never leave the working tree mutated: a runner stopped by
 * SIGINT, SIGTERM or SIGHUP while a mutant's tests are running kills those tests and puts
 * the source file and its dist/ output back, byte for byte, at once; a runner killed by
 * SIGKILL (which no process can handle) leaves a pristine copy beside the tree that the next
 * run puts back before anything else. Run on a tiny fixture project in a temporary
 * directory (MUTATION_ROOT), whose test waits while one mutant ("hang") is applied, so the
 * signal always lands while a test run is in flight.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { processAlive } from '../helpers/process-alive.js';

const require = createRequire(import.meta.url);
const TSC = require.resolve('typescript/bin/tsc');
// dist/test/mutation/ → the repository's test/mutation/run.mjs.
const RUNNER = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'mutation', 'run.mjs');
const BACKUP = join('test', 'mutation', '.mutation-backup.json');

const SOURCE = `// The fixture's code under test.
export const mode: string = 'ok';
export const unused: number = 1;
`;

// Plain JS: the fixture has no @types/node to compile a test against. With the "hang"
// mutant applied it says so (its pid, in FIXTURE_READY) and waits far longer than any
// assertion here, so the runner is caught inside its test run.
const FIXTURE_TEST = `import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { mode } from '../src/x.js';
test('mode is ok', async () => {
  if (mode === 'hang') {
    writeFileSync(process.env.FIXTURE_READY, String(process.pid));
    await new Promise((resolve) => setTimeout(resolve, 300_000));
  }
  if (mode !== 'ok') throw new Error('mode is ' + mode);
});
`;

const MUTANTS = [
  { id: 'hang', what: 'the test waits', file: 'src/x.ts', edits: [{ search: "mode: string = 'ok'", replace: "mode: string = 'hang'" }], tests: ['x'] },
  { id: 'wrong', what: 'the test fails', file: 'src/x.ts', edits: [{ search: "mode: string = 'ok'", replace: "mode: string = 'wrong'" }], tests: ['x'] },
  { id: 'unseen', what: 'no test looks', file: 'src/x.ts', edits: [{ search: 'unused: number = 1', replace: 'unused: number = 2' }], tests: ['x'] },
];

interface Fixture {
  root: string;
  /** Runner pids (each its own process group's), killed with the tests at the end. */
  runners: number[];
  ready: string;
  source: () => Buffer;
  dist: () => Buffer;
}

/** A project the runner can work on: package.json whose build is tsc, one source file, one test. */
function fixture(t: TestContext): Fixture {
  const root = mkdtempSync(join(tmpdir(), 'mutation-runner-'));
  const runners: number[] = [];
  const ready = join(root, 'ready');
  // Whatever the test's outcome, nothing it started outlives it: the runners, then the
  // tests they started (their group, found from the pid the fixture's test wrote).
  t.after(() => {
    for (const pid of runners) killGroup(pid);
    if (existsSync(ready)) killGroup(groupOf(Number(readFileSync(ready, 'utf8'))));
    rmSync(root, { recursive: true, force: true });
  });
  mkdirSync(join(root, 'src'));
  mkdirSync(join(root, 'test', 'mutation'), { recursive: true });
  mkdirSync(join(root, 'dist', 'test'), { recursive: true });
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'fixture', private: true, type: 'module', scripts: { build: `node ${JSON.stringify(TSC)} -p tsconfig.json` } }));
  writeFileSync(
    join(root, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', outDir: 'dist', rootDir: '.', sourceMap: true, strict: true, types: [] }, include: ['src/**/*.ts'] }),
  );
  writeFileSync(join(root, 'src', 'x.ts'), SOURCE);
  writeFileSync(join(root, 'dist', 'test', 'x.test.js'), FIXTURE_TEST);
  writeFileSync(join(root, 'test', 'mutation', 'mutants.json'), JSON.stringify(MUTANTS));
  const build = spawnSync(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: root, encoding: 'utf8' });
  assert.equal(build.status, 0, build.stdout + build.stderr);
  return {
    root,
    runners,
    ready,
    source: () => readFileSync(join(root, 'src', 'x.ts')),
    dist: () => readFileSync(join(root, 'dist', 'src', 'x.js')),
  };
}

interface Runner {
  child: ChildProcess;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts the runner on the fixture in a process group of its own (pgid = its pid). */
function startRunner(f: Fixture, only: string): Runner {
  // Without NODE_TEST_CONTEXT, which `node --test` sets for its files: with it, the
  // runner's own `node --test` would report in the parent's protocol, not TAP.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const child = spawn(process.execPath, [RUNNER, '--only', only], {
    env: { ...env, MUTATION_ROOT: f.root, FIXTURE_READY: f.ready },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  f.runners.push(child.pid!);
  return { child, output: () => out, exited };
}

function killGroup(pgid: number | undefined): void {
  if (!pgid) return;
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** The process group of `pid` (field 5 of /proc/<pid>/stat); undefined once it is gone. */
function groupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return undefined;
  }
}

async function until(what: string, cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

/** Starts the runner on the "hang" mutant; returns once its test is running on the mutated source. */
async function runnerInFlight(t: TestContext, f: Fixture): Promise<{ runner: Runner; testPid: number }> {
  const runner = startRunner(f, 'hang');
  await within(
    Promise.race([until('the hanging test to start', () => existsSync(f.ready) && readFileSync(f.ready, 'utf8') !== '', 30_000), runner.exited.then(() => assert.fail(`the runner ended first:\n${runner.output()}`))]),
    31_000,
    'reaching the hanging test',
  );
  assert.match(f.source().toString(), /'hang'/, 'the source is mutated while the test runs');
  return { runner, testPid: Number(readFileSync(f.ready, 'utf8')) };
}

for (const [signal, code, whom] of [
  ['SIGINT', 130, 'the runner alone'],
  ['SIGTERM', 143, "the runner's process group (kill -- -PGID)"],
  ['SIGHUP', 129, "the runner's process group"],
] as const) {
  test(`${signal} to ${whom} during a test run: the runner exits ${code} at once, its tests are killed, source and dist/ are as before`, { timeout: 60_000 }, async (t) => {
    const f = fixture(t);
    const source = f.source();
    const dist = f.dist();
    const { runner, testPid } = await runnerInFlight(t, f);
    process.kill(whom === 'the runner alone' ? runner.child.pid! : -runner.child.pid!, signal);
    const exit = await within(runner.exited, 10_000, `the runner's exit after ${signal}`);
    assert.deepEqual(exit, { code, signal: null }, runner.output());
    assert.deepEqual(f.source(), source, 'the source is byte-identical to before');
    assert.deepEqual(f.dist(), dist, 'the dist/ output is byte-identical to before');
    assert.equal(existsSync(join(f.root, BACKUP)), false, 'no pristine copy is left behind');
    await until('the mutant test process to be gone', () => !processAlive(testPid), 5_000);
  });
}

test('SIGKILL of the runner and its tests mid-run: the pristine copy left beside the tree is put back by the next run, which then runs normally', { timeout: 90_000 }, async (t) => {
  const f = fixture(t);
  const source = f.source();
  const dist = f.dist();
  const { runner, testPid } = await runnerInFlight(t, f);
  const testGroup = groupOf(testPid);
  killGroup(runner.child.pid!);
  killGroup(testGroup);
  await within(runner.exited, 10_000, "the runner's exit after SIGKILL");
  assert.match(f.source().toString(), /'hang'/, 'SIGKILL cannot be handled: the mutated source is still there');
  assert.ok(existsSync(join(f.root, BACKUP)), 'the pristine copy is left beside the tree');

  rmSync(f.ready);
  const next = startRunner(f, 'wrong');
  const exit = await within(next.exited, 60_000, 'the next run');
  assert.match(next.output(), /put back src\/x\.ts/, next.output());
  assert.deepEqual(exit, { code: 0, signal: null }, next.output());
  assert.match(next.output(), /^wrong: killed/m);
  assert.deepEqual(f.source(), source, 'the source is byte-identical to before');
  assert.deepEqual(f.dist(), dist, 'the dist/ output is byte-identical to before');
  assert.equal(existsSync(join(f.root, BACKUP)), false, 'the pristine copy is removed once put back');
});

test('positive control: a run to the end reports killed and survived mutants, exits 1 for the survivor, and leaves source and dist/ as before', { timeout: 60_000 }, async (t) => {
  const f = fixture(t);
  const source = f.source();
  const dist = f.dist();
  const runner = startRunner(f, 'wrong,unseen');
  const exit = await within(runner.exited, 50_000, 'the run');
  assert.deepEqual(exit, { code: 1, signal: null }, runner.output());
  assert.match(runner.output(), /^wrong: killed \(1 failed test\(s\)/m);
  assert.match(runner.output(), /^unseen: SURVIVED/m);
  assert.match(runner.output(), /^1 of 2 mutants killed$/m);
  assert.deepEqual(f.source(), source, 'the source is byte-identical to before');
  assert.deepEqual(f.dist(), dist, 'the dist/ output is byte-identical to before');
  assert.equal(existsSync(join(f.root, BACKUP)), false);
});

test('a second runner while the first is mutating (its pristine copy is there, its pid alive): refused with exit 2, nothing put back', { timeout: 30_000 }, async (t) => {
  const f = fixture(t);
  const mutated = f.source().toString().replace("'ok'", "'hang'");
  writeFileSync(join(f.root, 'src', 'x.ts'), mutated);
  const copy = JSON.stringify({ pid: process.pid, file: 'src/x.ts', source: SOURCE, dist: f.dist().toString() });
  writeFileSync(join(f.root, BACKUP), copy);
  const runner = startRunner(f, 'wrong');
  const exit = await within(runner.exited, 20_000, 'the refused run');
  assert.deepEqual(exit, { code: 2, signal: null }, runner.output());
  assert.match(runner.output(), new RegExp(`a mutation run \\(pid ${process.pid}\\) is mutating src/x\\.ts`));
  assert.equal(f.source().toString(), mutated, "the other run's mutant is left to it");
  assert.equal(readFileSync(join(f.root, BACKUP), 'utf8'), copy);
});
