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
// `make -B` in its directory (plugins/openssl-provider/Makefile writes dist/'s delegator.so). The source file and its dist/ output are restored in a
// `finally` (and on SIGINT/SIGTERM), so the working tree is never left mutated.
// Exit status: 0 when every mutant is killed, 1 otherwise.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
process.chdir(ROOT);
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
const isNative = (file) => file.endsWith('.c') || file.endsWith('.h');

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

function runTests(files) {
  // A mutant may make a test wait forever; a run that does not finish has not passed.
  // --test-force-exit: a test that failed on its own timeout can leave sockets open (the
  // cleanup after its await never ran), which would keep its file's process alive until
  // the limit below. coreutils' timeout runs the tests in their own process group and kills
  // the whole group at the limit, so no test process outlives its mutant (SIGKILL to
  // `node --test` alone left the per-file processes running, orphaned).
  const limitSeconds = String(TEST_RUN_LIMIT_MS / 1000);
  const r = spawnSync('timeout', ['--signal=KILL', limitSeconds, process.execPath, '--test', '--test-force-exit', '--test-concurrency=1', ...files], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    timeout: TEST_RUN_LIMIT_MS + 60_000,
    killSignal: 'SIGKILL',
  });
  if (process.env.MUTATION_DUMP) writeFileSync(process.env.MUTATION_DUMP, r.stdout ?? '');
  const failedTests = [...(r.stdout ?? '').matchAll(/^\s*not ok \d+ - (.*)$/gm)].map((m) => m[1]);
  // 137: timeout's SIGKILL (128 + 9).
  return { ok: r.status === 0, failed: failedTests.length, failedTests, hung: r.status === 137 || r.error?.code === 'ETIMEDOUT' };
}

// Originals of the file being mutated, restored by `restore()` whatever happens.
let pending;
function restore() {
  if (!pending) return;
  const { file, source, dist } = pending;
  pending = undefined;
  writeFileSync(join(ROOT, file), source);
  if (isNative(file)) rebuildNative(file);
  else writeFileSync(distPath(file), dist);
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    restore();
    process.exit(130);
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
  for (const file of mutatedFiles) transpileInto(file, readFileSync(join(ROOT, file), 'utf8'));
  baseline = runTests(used);
} finally {
  // Back to tsc's own output (with source maps).
  spawnSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, stdio: 'inherit' });
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
  pending = { file: m.file, source, dist: isNative(m.file) ? undefined : readFileSync(distPath(m.file), 'utf8') };
  let result;
  try {
    writeFileSync(join(ROOT, m.file), mutated);
    // A C mutant that does not compile says nothing about the tests: reported as ERROR.
    const buildFailure = isNative(m.file) ? rebuildNative(m.file) : transpileInto(m.file, mutated);
    result = buildFailure ? { ok: false, failed: 0, failedTests: [], hung: false, buildFailure } : runTests(testFilesOf(m));
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
