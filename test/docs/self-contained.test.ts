/**
 * The project stands on its own: comments and docs cite docs/ pages of this repository,
 * never an issue number, a design note outside the repository (a bare "DESIGN.md" that is
 * not docs/DESIGN.md) or a path beside it (../shared).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

function files(dir: string, ext: RegExp): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? files(path, ext) : ext.test(entry) ? [path] : [];
  });
}

const CHECKED = [...files(join(ROOT, 'src'), /\.ts$/), ...files(join(ROOT, 'docs'), /\.md$/), join(ROOT, 'README.md')];

/** What an outside reference looks like. */
const OUTSIDE = [
  { what: 'an issue number', re: /\bissues?\s*#?\d+|#\d+\b(?![\da-f])(?=[^\n]*\bissue)/i },
  { what: 'a DESIGN.md outside docs/', re: /(?<!docs\/)(?<![\w/])DESIGN\.md/ },
  // The external test tools (tlsfuzzer, hsload) are run from beside the repository, so docs
  // may name ../shared/tools/…; citing anything else there is citing outside the project.
  { what: 'a note outside the repository', re: /\.\.\/shared\/(?!tools\/)/ },
];

function offences(text: string): string[] {
  return text.split('\n').flatMap((line, i) => OUTSIDE.filter(({ re }) => re.test(line)).map(({ what }) => `line ${i + 1}: ${what}: ${line.trim()}`));
}

test('no comment or doc cites an issue number, a DESIGN.md outside docs/, or a note in ../shared', () => {
  const found = CHECKED.flatMap((f) => offences(readFileSync(f, 'utf8')).map((o) => `${relative(ROOT, f)} ${o}`));
  assert.deepEqual(found, []);
});

test('docs/DESIGN.md exists and says what keyd is, the trust boundary and the measured costs', () => {
  const path = join(ROOT, 'docs/DESIGN.md');
  assert.ok(existsSync(path));
  const text = readFileSync(path, 'utf8');
  for (const heading of ['## What keyd is', '## The trust boundary', '## Measured costs']) assert.ok(text.includes(heading), heading);
});

test('the check itself catches each kind of outside reference', () => {
  assert.equal(offences('// see issue 16 for why').length, 1);
  assert.equal(offences('// fixed in issue #7').length, 1);
  assert.equal(offences(' * (DESIGN.md, "Where the trust model goes next")').length, 1);
  assert.equal(offences('match the anchors in ../shared/DESIGN.md, so').length, 1);
  assert.deepEqual(offences('run ../shared/tools/tlsfuzzer/run.sh'), []);
  assert.deepEqual(offences('// docs/DESIGN.md explains the trust boundary; RFC 8446 §4.4.3; PKCS#11 §2.3'), []);
});
