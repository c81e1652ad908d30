/**
 * Every `delegator` command's flags, three ways: the options its parseArgs takes (read from
 * the command's source: parseArgs options are local to each main(); admin's connection
 * options from REMOTE_OPTION_NAMES at run time), its `--help` text (from running it), and
 * the docs. Checked:
 * - the commands are the ones `delegator --help` lists;
 * - the parser takes every flag read from its source (one run with all of them and --help
 *   exits 0, while an unknown flag is refused), so the source reading is the parser's truth;
 * - every flag is in the command's --help, and every flag its --help names is one it takes;
 * - every flag (not --help) is named in the command's docs, and every flag the docs give a
 *   command (after `delegator CMD` on a line, in a flag table) is one it takes;
 * - the edge's flags table in docs/EDGE.md: each flag sets the config key its row names
 *   (configFromArgs, at run time), and the defaults --help states are the parser's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configFromArgs } from '../../src/cli/edge.js';
import { validateConfig } from '../../src/edge/config.js';
import { REMOTE_OPTION_NAMES } from '../../src/provision/remote-admin.js';
import { describeResult, runTool } from '../helpers/tools.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = join(ROOT, 'dist/src/cli/main.js');
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

/** Where each command's flags are documented. */
const DOCS: Record<string, string[]> = {
  edge: ['docs/EDGE.md'],
  keyd: ['docs/KEYD.md'],
  admin: ['docs/KEYD.md', 'docs/PROVISIONING.md', 'docs/OPENSSL-PROVIDER.md'],
  status: ['docs/DEPLOY.md'],
  demo: ['docs/EDGE.md', 'README.md'],
  serve: ['README.md', 'docs/CONFORMANCE.md', 'docs/TLS12.md'],
};

/** The keys of the object literal that starts at `open` (a "{"), one level deep. */
function objectKeys(source: string, open: number): string[] {
  let depth = 0;
  let end = open;
  for (; end < source.length; end++) {
    if (source[end] === '{') depth++;
    else if (source[end] === '}' && --depth === 0) break;
  }
  const body = source.slice(open + 1, end);
  return [...body.matchAll(/^\s*'?([a-z0-9-]+)'?:\s*\{/gm)].map((m) => m[1]!);
}

/** The flags a command's parseArgs takes, read from its source. */
function sourceFlags(command: string): string[] {
  const source = read(`src/cli/${command}.ts`);
  if (command === 'admin') {
    const local = [...(/LOCAL_OPTION_NAMES: readonly string\[\] = \[([^\]]*)\]/.exec(source)?.[1] ?? '').matchAll(/'(--[a-z-]+)'/g)].map((m) => m[1]!);
    assert.ok(local.length >= 2, 'admin has its local options');
    const perOperation = [...source.matchAll(/parse\(args, \{([^}]*)\}\)/g)].flatMap((m) => [...m[1]!.matchAll(/'?([a-z-]+)'?: '(?:string|boolean)'/g)].map((k) => `--${k[1]}`));
    assert.ok(perOperation.length >= 10, 'admin operations have their options');
    return [...new Set([...local, ...REMOTE_OPTION_NAMES, ...perOperation, '--help'])].sort();
  }
  const at = source.indexOf('parseArgs({');
  assert.ok(at >= 0, `${command} calls parseArgs`);
  const options = source.indexOf('options: {', at);
  const keys = objectKeys(source, source.indexOf('{', options));
  assert.ok(keys.length >= 4, `${command}'s parseArgs options`);
  return keys.map((k) => `--${k}`).sort();
}

/** Flags named in a text, without those of another command written before them ("keyd --provision-listen"). */
function flagsIn(text: string, command: string): string[] {
  const other = Object.keys(DOCS).filter((c) => c !== command).join('|');
  const own = text.replace(new RegExp(`\\b(?:${other}) (--[a-z][a-z0-9-]*)`, 'g'), '');
  return [...new Set([...own.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)].map((m) => m[0]))].sort();
}

async function help(command: string): Promise<string> {
  const result = await runTool(process.execPath, [MAIN, command, '--help']);
  assert.equal(result.code, 0, describeResult(result));
  return result.stdout;
}

/** Every line of the docs that runs `delegator CMD` (continuation lines joined), cut at a pipe or `&&`. */
function docCommandLines(): { doc: string; command: string; flags: string[]; line: string }[] {
  const docs = [...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`), 'README.md'];
  const out: { doc: string; command: string; flags: string[]; line: string }[] = [];
  for (const doc of docs) {
    for (const line of read(doc).replace(/\\\n\s*/g, ' ').split('\n')) {
      for (const m of line.matchAll(/(?:^|[\s`(])delegator (\w+)((?:(?!\||&&|;|`).)*)/g)) {
        if (!(m[1]! in DOCS)) continue;
        out.push({ doc, command: m[1]!, flags: flagsIn(m[2]!, m[1]!), line: line.trim() });
      }
    }
  }
  return out;
}

/** Flags in the first column of the flag table (`| flag | … |`) of a doc section. */
function flagTable(doc: string, heading: string): string[] {
  const text = read(doc);
  const start = text.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `${doc} has "## ${heading}"`);
  const end = text.indexOf('\n## ', start + 1);
  const rows = text.slice(start, end).split('\n').filter((l) => /^\| `-/.test(l));
  return rows.flatMap((r) => [...r.split(' | ')[0]!.matchAll(/--[a-z][a-z0-9-]*/g)].map((m) => m[0]));
}

test('the commands are the ones `delegator --help` lists, each with the flags its source parses', async () => {
  const result = await runTool(process.execPath, [MAIN, '--help']);
  const listed = [...result.stdout.matchAll(/^ {2}(\w+) {2,}/gm)].map((m) => m[1]!).sort();
  assert.deepEqual(listed, Object.keys(DOCS).sort());
  // README.md's command table has exactly those commands.
  const readme = [...read('README.md').matchAll(/^\| `delegator (\w+)` \|/gm)].map((m) => m[1]!).sort();
  assert.deepEqual(readme, listed, "README.md's command table");
  // The source reading is the parser's: all the flags at once are taken (with --help, before any
  // work), and a flag not among them is refused.
  for (const command of ['edge', 'keyd', 'status', 'demo', 'serve']) {
    const flags = sourceFlags(command);
    const source = read(`src/cli/${command}.ts`);
    const args = flags.flatMap((f) => (new RegExp(`\\s'?${f.slice(2)}'?: \\{ type: 'boolean'`).test(source) ? [f] : [f, 'x']));
    const all = await runTool(process.execPath, [MAIN, command, ...args, '--help']);
    assert.equal(all.code, 0, `${command} takes ${flags.join(' ')}: ${describeResult(all)}`);
    const unknown = await runTool(process.execPath, [MAIN, command, '--no-such-flag', '--help']);
    assert.notEqual(unknown.code, 0, `${command} refuses an unknown flag`);
  }
});

test("every flag is in its command's --help, and --help names only flags the command takes", async () => {
  const wrong: string[] = [];
  for (const command of Object.keys(DOCS)) {
    const flags = sourceFlags(command);
    const usage = flagsIn(await help(command), command);
    for (const f of flags) if (!usage.includes(f)) wrong.push(`${command}: ${f} is not in --help`);
    for (const f of usage) if (!flags.includes(f)) wrong.push(`${command}: --help names ${f}, which it does not take`);
  }
  assert.deepEqual(wrong, []);
});

/** Flags of `command` its docs do not name, and flags the docs give it that it does not take. */
function docMismatches(command: string, flags: string[], docs: Record<string, string>, lines: ReturnType<typeof docCommandLines>, tables: string[]): string[] {
  const wrong: string[] = [];
  const documented = new Set(Object.values(docs).flatMap((text) => flagsIn(text, command)));
  for (const f of flags) if (f !== '--help' && !documented.has(f)) wrong.push(`${command}: ${f} is in no doc of ${Object.keys(docs).join(', ')}`);
  for (const { doc, flags: used, line } of lines.filter((l) => l.command === command)) {
    for (const f of used) if (!flags.includes(f)) wrong.push(`${doc}: delegator ${command} has no ${f} (${line})`);
  }
  for (const f of tables) if (!flags.includes(f)) wrong.push(`${command}'s flag table names ${f}, which it does not take`);
  return wrong;
}

const tables = (): Record<string, string[]> => ({ keyd: flagTable('docs/KEYD.md', 'Running it'), edge: flagTable('docs/EDGE.md', 'Running it') });

test('every flag is in its command\'s docs, and every flag the docs give a command is one it takes', () => {
  const lines = docCommandLines();
  assert.ok(lines.length >= 40, `the docs run delegator (${lines.length} lines)`);
  const t = tables();
  assert.ok(t.keyd!.length >= 12 && t.edge!.length >= 15, 'the flag tables of KEYD.md and EDGE.md');
  const wrong = Object.entries(DOCS).flatMap(([command, docs]) =>
    docMismatches(command, sourceFlags(command), Object.fromEntries(docs.map((d) => [d, read(d)])), lines, t[command] ?? []),
  );
  assert.deepEqual(wrong, []);
});

/** docs/EDGE.md's flags table: flag → the config key its row names (`—` when none). */
function edgeFlagKeys(): Map<string, string | undefined> {
  const text = read('docs/EDGE.md');
  const out = new Map<string, string | undefined>();
  for (const line of text.split('\n')) {
    const m = /^\| `(--[a-z-]+)[^|]*\| (`([^`]+)`|—)/.exec(line);
    if (m) out.set(m[1]!, m[3]);
  }
  return out;
}

test("docs/EDGE.md's flags table: each flag sets the config key it names; --help's defaults are the parser's", async () => {
  const table = edgeFlagKeys();
  const values: Record<string, { args: string[]; value: unknown }> = {
    '--listen': { args: ['--listen', '127.0.0.1:7001'], value: [{ host: '127.0.0.1', port: 7001 }] },
    '--keyd': { args: ['--keyd', '/run/x.sock'], value: [{ socketPath: '/run/x.sock' }] },
    '--route': { args: [], value: ['a.example'] },
    '--proxy-protocol': { args: ['--proxy-protocol'], value: true },
    '--alpn': { args: ['--alpn', 'h2,http/1.1'], value: ['h2', 'http/1.1'] },
    '--default-name': { args: ['--default-name', 'a.example'], value: 'a.example' },
    '--workers': { args: ['--workers', '3'], value: 3 },
    '--max-connections': { args: ['--max-connections', '7'], value: 7 },
    '--handshake-timeout': { args: ['--handshake-timeout', '1234'], value: 1234 },
    '--idle-timeout': { args: ['--idle-timeout', '2345'], value: 2345 },
    '--drain-timeout': { args: ['--drain-timeout', '3456'], value: 3456 },
    '--upstream-connect-timeout': { args: ['--upstream-connect-timeout', '4567'], value: 4567 },
    '--metrics': { args: ['--metrics', '127.0.0.1:7002'], value: { host: '127.0.0.1', port: 7002 } },
    '--tickets': { args: ['--tickets', '5'], value: 5 },
    '--log-level': { args: ['--log-level', 'debug'], value: 'debug' },
  };
  const base = ['--keyd', '/run/k.sock', '--route', 'a.example=127.0.0.1:1'];
  const get = (config: unknown, path: string): unknown =>
    path.split('.').reduce<unknown>((v, k) => (k.endsWith('[]') ? (v as Record<string, unknown[]>)[k.slice(0, -2)]![0] : (v as Record<string, unknown>)[k]), config);
  const wrong: string[] = [];
  for (const flag of sourceFlags('edge')) {
    if (flag === '--help') continue;
    if (!table.has(flag)) {
      wrong.push(`${flag}: no row`);
      continue;
    }
    const key = table.get(flag);
    if (key === undefined) continue; // --config, --check-config: no config key
    const { args, value } = values[flag] ?? assert.fail(`the test has no value for ${flag}`);
    const parsed = configFromArgs([...(flag === '--keyd' ? base.slice(2) : base), ...args]);
    assert.notEqual(parsed, 'help');
    const actual = get((parsed as { config: unknown }).config, key);
    if (JSON.stringify(actual) !== JSON.stringify(value)) wrong.push(`${flag}: sets ${JSON.stringify(value)}, but ${key} is ${JSON.stringify(actual)}`);
  }
  for (const flag of table.keys()) if (!sourceFlags('edge').includes(flag)) wrong.push(`${flag}: a row, not a flag`);
  assert.deepEqual(wrong, []);
  // "(default N)" in --help, for a flag with a config key, is the parser's default.
  const defaults = validateConfig({ keyd: '/run/k.sock', routes: [{ names: ['a.example'], upstream: '127.0.0.1:1' }] });
  let checked = 0;
  for (const m of (await help('edge')).matchAll(/^ {2}(--[a-z-]+)[^\n]*\(default (\d+)[;)]/gm)) {
    const key = table.get(m[1]!);
    assert.ok(key, `${m[1]} has a config key`);
    assert.equal(get(defaults, key), Number(m[2]), `--help: ${m[1]} (default ${m[2]}), the parser's ${key}`);
    checked++;
  }
  assert.ok(checked >= 5, `--help states defaults (${checked})`);
});

test("delegator admin's operations: each is in its --help and run in the docs; the docs run no other", async () => {
  const source = read('src/cli/admin.ts');
  const operations = objectKeys(source, source.indexOf('{', source.indexOf('const OPERATIONS')));
  assert.ok(operations.length >= 10, `admin's operations (${operations})`);
  const usage = await help('admin');
  const docs = [...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`), 'README.md'];
  const run = new Map<string, string>();
  for (const doc of docs) {
    const re = /delegator admin(?: \[--socket PATH\]| --socket \S+| "?\$\{?\w+\}?"?)* ([a-z][a-z-]*)/g;
    for (const m of read(doc).matchAll(re)) run.set(m[1]!, doc);
  }
  const wrong: string[] = [];
  for (const op of operations) {
    if (!new RegExp(`(?:^ {2}|: |Remote only: )${op}\\b`, 'm').test(usage)) wrong.push(`${op} is not in --help`);
    if (!run.has(op)) wrong.push(`${op} is run in no doc`);
  }
  for (const [op, doc] of run) if (!operations.includes(op)) wrong.push(`${doc} runs delegator admin ${op}, which is no operation`);
  assert.deepEqual(wrong, []);
});

test('the check itself: a flag added without help or docs, a doc naming a flag that is not taken', () => {
  const lines = docCommandLines();
  const docs = { 'docs/DEPLOY.md': read('docs/DEPLOY.md') };
  const flags = sourceFlags('status');
  assert.deepEqual(docMismatches('status', flags, docs, lines, []), []);
  assert.deepEqual(docMismatches('status', [...flags, '--new-flag'], docs, lines, []), ['status: --new-flag is in no doc of docs/DEPLOY.md']);
  const removed = { 'docs/DEPLOY.md': docs['docs/DEPLOY.md'].replaceAll('--warn-days', '') };
  assert.deepEqual(docMismatches('status', flags, removed, lines, []), ['status: --warn-days is in no doc of docs/DEPLOY.md']);
  const stale = [...lines, { doc: 'docs/X.md', command: 'status', flags: ['--verbose'], line: 'delegator status --verbose' }];
  assert.deepEqual(docMismatches('status', flags, docs, stale, []), ['docs/X.md: delegator status has no --verbose (delegator status --verbose)']);
  assert.deepEqual(docMismatches('keyd', sourceFlags('keyd'), { k: read('docs/KEYD.md') }, [], ['--pid-file']), ["keyd's flag table names --pid-file, which it does not take"]);
  assert.deepEqual(flagsIn("keyd's provisioning listener (keyd --provision-listen); --server", 'admin'), ['--server']);
});
