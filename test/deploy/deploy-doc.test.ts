/**
 * docs/DEPLOY.md, checked where no root is needed: its config files are valid (the edge's
 * through `delegator edge --check-config`), every `delegator` command and flag it uses
 * exists, the files it installs are in the package, and the paths the units run are where
 * `npm install -g` puts the package.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { validateConfig } from '../../src/edge/config.js';
import { parseConfig } from '../../src/keyd/config.js';
import { describeResult, runTool } from '../helpers/tools.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = join(ROOT, 'dist/src/cli/main.js');
const DOC = readFileSync(join(ROOT, 'docs/DEPLOY.md'), 'utf8');
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; bin: Record<string, string>; files?: string[] };

/** The fenced blocks of one language, each with the heading above it. */
function blocks(lang: string): { heading: string; body: string }[] {
  const out: { heading: string; body: string }[] = [];
  let heading = '';
  const re = /^(#+ .*)$|^```(\w*)\n([\s\S]*?)^```$/gm;
  for (const m of DOC.matchAll(re)) {
    if (m[1]) heading = m[1];
    else if (m[2] === lang) out.push({ heading, body: m[3]! });
  }
  return out;
}

test('DEPLOY.md: the keyd and edge configs are valid; the edge passes --check-config', async (t) => {
  const json = blocks('json');
  const keyd = json.find((b) => /keyd's config/.test(b.heading));
  const edge = json.find((b) => /edge's config/.test(b.heading));
  assert.ok(keyd && edge, 'both configs are in the guide');
  assert.equal(parseConfig(JSON.parse(keyd.body)).expiryWarningDays, 30);
  const config = validateConfig(JSON.parse(edge.body));
  assert.deepEqual(config.listen.map((a) => a.port), [443, 443]);
  assert.equal(config.keyd.length, 1);
  const dir = mkdtempSync(join(tmpdir(), 'delegator-deploy-doc-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'edge.json');
  writeFileSync(file, edge.body);
  const checked = await runTool(process.execPath, [MAIN, 'edge', '--config', file, '--check-config']);
  assert.equal(checked.code, 0, describeResult(checked));
  // The negative control: the same check refuses a broken config.
  writeFileSync(file, edge.body.replace('"upstream": "127.0.0.1:8080"', '"upstream": "127.0.0.1:80800"'));
  const refused = await runTool(process.execPath, [MAIN, 'edge', '--config', file, '--check-config']);
  assert.notEqual(refused.code, 0, describeResult(refused));
});

test('DEPLOY.md: every delegator command and flag it uses exists', async () => {
  const help = new Map<string, string>();
  const helpOf = async (command: string) => {
    if (!help.has(command)) {
      const result = await runTool(process.execPath, [MAIN, command, '--help']);
      assert.equal(result.code, 0, `delegator ${command} --help: ${describeResult(result)}`);
      help.set(command, result.stdout);
    }
    return help.get(command)!;
  };
  const lines = blocks('sh').flatMap((b) => b.body.split('\n')).filter((l) => /(^|\s)delegator \w/.test(l));
  assert.ok(lines.length >= 5, lines.join('\n'));
  const seen = new Set<string>();
  for (const line of lines) {
    const [, command, rest] = /(?:^|\s)delegator (\w+)(.*)$/.exec(line)!;
    seen.add(command!);
    const text = await helpOf(command!);
    for (const flag of rest!.match(/--[a-z][a-z-]*/g) ?? []) assert.ok(text.includes(flag), `delegator ${command} has no ${flag} (in: ${line.trim()})`);
    if (command === 'admin') {
      const op = /admin(?: --socket \S+)? (\w+)/.exec(line)?.[1];
      assert.ok(op && new RegExp(`^  ${op} `, 'm').test(text), `delegator admin has no operation ${op}`);
    }
  }
  for (const command of ['edge', 'admin', 'status']) assert.ok(seen.has(command), `the guide uses delegator ${command}`);
});

test('DEPLOY.md: the files it installs ship in the package; the units run the installed package', () => {
  const paths = [...DOC.matchAll(/\$PKG\/(\S+)/g)].map((m) => m[1]!);
  assert.ok(paths.length >= 3);
  for (const p of paths) {
    assert.ok(existsSync(join(ROOT, p)), `${p} exists`);
    assert.ok(PACKAGE.files?.some((f) => p === f || p.startsWith(f.replace(/\/$/, '') + '/')), `${p} is in package.json "files"`);
  }
  assert.match(DOC, new RegExp(`npm install -g \\./${PACKAGE.name}-${PACKAGE.version}\\.tgz`));
  const installed = `/usr/local/lib/node_modules/${PACKAGE.name}/${PACKAGE.bin.delegator}`;
  for (const unit of ['delegator-keyd.service', 'delegator-edge.service']) {
    const text = readFileSync(join(ROOT, 'deploy/systemd', unit), 'utf8');
    assert.ok(text.includes(`ExecStart=/usr/bin/node ${installed} `), `${unit} runs ${installed}`);
  }
});
