#!/usr/bin/env node
// Mutation check: applies each mutant of mutants.json (plausible one-line bugs in security
// checks) one at a time, runs the test files that should catch it, and prints a
// killed/survived table. A mutant is matched by search string, not line number, so it
// survives unrelated edits; a search string that no longer matches exactly once is
// reported as "stale" (the list needs updating), which also fails the run.
//
//   node test/mutation/run.mjs                 # every mutant, its listed test files
//   node test/mutation/run.mjs --only a,b      # some mutants
//   node test/mutation/run.mjs --full          # run the whole suite (npm test's files) per mutant
//   node test/mutation/run.mjs --verbose       # also list the tests that failed for each mutant
//
// Each mutated file is transpiled on its own into dist/ (the rest of dist/ comes from one
// `npm run build` at the start); a mutated C file of the OpenSSL provider is rebuilt with
// `make -B` in its directory (plugins/openssl-provider/Makefile writes dist/'s delegator.so).
//
// The working tree is never left mutated:
// - the source file and its dist/ output are put back in a `finally` after each mutant;
// - on SIGINT, SIGTERM or SIGHUP (Ctrl-C, kill, a closed terminal) the runner kills the
//   tests' process group, puts both back and exits 128 + the signal's number (130, 143,
//   129). The tests run in an async child, so the handler runs at once, not when they end;
// - SIGKILL cannot be handled: before a mutant is written, the pristine source and dist/
//   output go to test/mutation/.mutation-backup.json (git-ignored), removed once they are
//   back. A run that finds this file puts them back first (and says so), before anything
//   else. Only a signal during a synchronous step (the build at the start, a `make`) waits
//   for that step to end.
// Exit status: 0 when every mutant is killed, 1 otherwise, 2 when the run cannot start.
//
// MUTATION_ROOT: run on another project laid out like this one (used by
// test/mutation/runner-restore.test.ts on a tiny fixture).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = process.env.MUTATION_ROOT ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..');
process.chdir(ROOT);
const BACKUP = join(ROOT, 'test/mutation/.mutation-backup.json');

// A runner that was SIGKILLed mid-mutant left its pristine copy: put it back before anything.
// Unless that run is still going (a second runner in the same tree).
if (existsSync(BACKUP)) {
  const original = JSON.parse(readFileSync(BACKUP, 'utf8'));
  if (isRunning(original.pid)) {
    console.error(`a mutation run (pid ${original.pid}) is mutating ${original.file} in this tree; wait for it (or remove ${relative(ROOT, BACKUP)} if there is no such run)`);
    process.exit(2);
  }
  putBack(original);
  rmSync(BACKUP);
  console.log(`put back ${original.file} (and its dist/ output), left mutated by a mutation run that was killed`);
}
const args = process.argv.slice(2);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : undefined;
const full = args.includes('--full');
const verbose = args.includes('--verbose');
const mutants = JSON.parse(readFileSync(join(ROOT, 'test/mutation/mutants.json'), 'utf8')).filter((m) => !only || only.includes(m.id));
if (only && mutants.length !== only.length) {
  console.error(`unknown mutant id in --only ${only.join(',')}`);
  process.exit(2);
}

const tsconfig = ts.getParsedCommandLineOfConfigFile(join(ROOT, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} });
const TEST_RUN_LIMIT_MS = (full ? 90 : 10) * 60_000;
// transpileModule cannot see package.json's "type": "module", so NodeNext would emit CommonJS.
const compilerOptions = { ...tsconfig.options, sourceMap: false, module: ts.ModuleKind.ES2022 };

function distPath(file) {
  return join(ROOT, 'dist', file.replace(/\.ts$/, '.js'));
}

// C sources (the OpenSSL provider) are built by their Makefile, not by tsc.
function isNative(file) {
  return file.endsWith('.c') || file.endsWith('.h');
}

function transpileInto(file, source) {
  if (isNative(file)) {
    const failed = rebuildNative(file);
    if (failed) throw new Error(`make failed for ${file}:\n${failed}`);
    return;
  }
  const out = ts.transpileModule(source, { compilerOptions, fileName: join(ROOT, file) });
  writeFileSync(distPath(file), out.outputText);
}

/** Rebuilds the native module of `file` as the file is on disk now (make -B); make's output when it fails. */
function rebuildNative(file) {
  const make = spawnSync('make', ['-s', '-B', '-C', join(ROOT, dirname(file))], { cwd: ROOT, encoding: 'utf8' });
  return make.status === 0 ? undefined : `${make.stdout}${make.stderr}`;
}

function allTestFiles(dir = join(ROOT, 'dist/test')) {
  const files = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) files.push(...allTestFiles(p));
    else if (name.endsWith('.test.js')) files.push(relative(ROOT, p));
  }
  return files;
}

// The running tests (their process group's leader), killed with the runner.
let running;

/** Runs `files` with node --test; resolves once the whole test run has ended. */
function runTests(files) {
  // A mutant may make a test wait forever; a run that does not finish has not passed.
  // --test-force-exit: a test that failed on its own timeout can leave sockets open (the
  // cleanup after its await never ran), which would keep its file's process alive until
  // the limit below. coreutils' timeout runs the tests in their own process group and kills
  // the whole group at the limit, so no test process outlives its mutant (SIGKILL to
  // `node --test` alone left the per-file processes running, orphaned).
  // Not spawnSync: a signal to the runner must be handled while the tests run. detached
  // puts timeout in a new session and process group from its first instruction, so the
  // whole group can be killed by the runner at any moment (timeout's own setpgid comes
  // later); in a session of their own the tests never get the terminal's Ctrl-C, the
  // runner does and stops them.
  const limitSeconds = String(TEST_RUN_LIMIT_MS / 1000);
  const child = spawn('timeout', ['--signal=KILL', limitSeconds, process.execPath, '--test', '--test-force-exit', '--test-concurrency=1', ...files], {
    cwd: ROOT,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running = child;
  const chunks = [];
  let size = 0;
  child.stdout.on('data', (d) => {
    if ((size += d.length) <= 256 * 1024 * 1024) chunks.push(d);
  });
  child.stderr.resume();
  // A second limit in case timeout itself does not end.
  let overran = false;
  const guard = setTimeout(() => {
    overran = true;
    killGroup(child);
  }, TEST_RUN_LIMIT_MS + 60_000);
  return new Promise((resolve) => {
    const done = (status) => {
      clearTimeout(guard);
      running = undefined;
      const stdout = Buffer.concat(chunks).toString('utf8');
      if (process.env.MUTATION_DUMP) writeFileSync(process.env.MUTATION_DUMP, stdout);
      const failedTests = [...stdout.matchAll(/^\s*not ok \d+ - (.*)$/gm)].map((m) => m[1]);
      // 137: timeout's SIGKILL (128 + 9).
      resolve({ ok: status === 0, failed: failedTests.length, failedTests, hung: status === 137 || overran });
    };
    child.on('error', () => done(undefined));
    child.on('close', (code, signal) => done(code ?? (signal ? 128 + constants.signals[signal] : undefined)));
  });
}

/** SIGKILL to the process group of `child` (its pid: spawned detached). */
function killGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

// Originals of the file being mutated ({ pid, file, source, dist }), restored by `restore()`
// whatever happens; kept on disk too (BACKUP, above) for a runner that is SIGKILLed.
let pending;
// dist/ outputs as tsc wrote them, replaced by plain transpiles for the positive control.
let baselineDist = [];

function mutating(original) {
  // Written and renamed before the mutant is: a crash leaves either no file or a whole one.
  writeFileSync(`${BACKUP}.tmp`, JSON.stringify(original));
  renameSync(`${BACKUP}.tmp`, BACKUP);
  pending = original;
}

function isRunning(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

function putBack({ file, source, dist }) {
  writeFileSync(join(ROOT, file), source);
  if (isNative(file)) rebuildNative(file);
  else writeFileSync(distPath(file), dist);
}

function restore() {
  for (const [path, bytes] of baselineDist.splice(0)) writeFileSync(path, bytes);
  if (!pending) return;
  const original = pending;
  pending = undefined;
  putBack(original);
  rmSync(BACKUP, { force: true });
}

for (const [signal, exitCode] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
  process.on(signal, () => {
    if (running) killGroup(running);
    restore();
    try {
      console.error(`\n${signal}: stopped; the tests were killed, the source and dist/ put back`);
    } catch {
      // the terminal is gone (SIGHUP)
    }
    process.exit(exitCode);
  });
}

console.log('building (npm run build) …');
const build = spawnSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });
if (build.status !== 0) process.exit(2);

const testFilesOf = (m) => (full ? allTestFiles() : m.tests.map((t) => `dist/test/${t}.test.js`));

// Positive control: every test file used must pass on the unmutated code, with each file to
// be mutated transpiled the way mutants are (so a broken transpile cannot pass for a kill).
const used = [...new Set(mutants.flatMap(testFilesOf))];
const mutatedFiles = [...new Set(mutants.map((m) => m.file))];
let baseline;
try {
  baselineDist = mutatedFiles.filter((file) => !isNative(file)).map((file) => [distPath(file), readFileSync(distPath(file))]);
  for (const file of mutatedFiles) transpileInto(file, readFileSync(join(ROOT, file), 'utf8'));
  baseline = await runTests(used);
} finally {
  // Back to tsc's own output (with source maps), as the build above wrote it.
  restore();
}
if (!baseline.ok) {
  console.error(`the tests fail without any mutant (failed: ${baseline.failedTests.join('; ') || 'see output'}): fix them first\n  ${used.join('\n  ')}`);
  process.exit(2);
}

const rows = [];
for (const m of mutants) {
  const source = readFileSync(join(ROOT, m.file), 'utf8');
  let mutated = source;
  let stale;
  for (const e of m.edits) {
    const count = mutated.split(e.search).length - 1;
    if (count !== 1) {
      stale = `search string found ${count} times: ${JSON.stringify(e.search.slice(0, 60))}`;
      break;
    }
    mutated = mutated.replace(e.search, () => e.replace);
  }
  if (stale) {
    rows.push({ m, result: 'STALE', detail: stale });
    continue;
  }
  const t0 = Date.now();
  mutating({ pid: process.pid, file: m.file, source, dist: isNative(m.file) ? undefined : readFileSync(distPath(m.file), 'utf8') });
  let result;
  try {
    writeFileSync(join(ROOT, m.file), mutated);
    // A C mutant that does not compile says nothing about the tests: reported as ERROR.
    const buildFailure = isNative(m.file) ? rebuildNative(m.file) : transpileInto(m.file, mutated);
    result = buildFailure ? { ok: false, failed: 0, failedTests: [], hung: false, buildFailure } : await runTests(testFilesOf(m));
  } finally {
    restore();
  }
  rows.push({
    m,
    // A test file that fails as a whole (it did not load) says nothing about the mutant.
    result: result.ok ? 'SURVIVED' : result.buildFailure || result.failedTests.some((t) => t.endsWith('.test.js')) ? 'ERROR' : 'killed',
    detail: `${result.buildFailure ? 'the mutant does not build' : result.hung ? 'tests did not finish' : `${result.failed ?? '?'} failed test(s)`}, ${((Date.now() - t0) / 1000).toFixed(0)} s`,
  });
  console.log(`${m.id}: ${rows.at(-1).result} (${rows.at(-1).detail})`);
  if (verbose) for (const name of result.failedTests) console.log(`    failed: ${name}`);
}

const table = [
  '| mutant | what | file | tests run | result |',
  '|---|---|---|---|---|',
  ...rows.map(({ m, result, detail }) => `| ${m.id} | ${m.what} | ${m.file} | ${full ? 'all' : m.tests.join(', ')} | ${result} (${detail}) |`),
];
console.log('\n' + table.join('\n'));
const killed = rows.filter((r) => r.result === 'killed').length;
console.log(`\n${killed} of ${rows.length} mutants killed`);
process.exit(killed === rows.length ? 0 : 1);
