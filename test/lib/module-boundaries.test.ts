/**
 * Module boundaries the layout promises (docs/ARCHITECTURE.md): keyd does not import from
 * provision/ (provision builds on keyd, not the reverse), nothing imports a module by a
 * computed path, and HOST:PORT parsing and durable writes each live in one place (src/lib/).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../../src/', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : [];
  });
}

/** Relative imports of a file (static, re-exports and literal dynamic ones), resolved to src/-relative paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from\s+|import\s*\(\s*)'(\.{1,2}\/[^']+)'/g)].map((m) => relative(SRC, resolve(dirname(file), m[1]!)));
}

const FILES = sources(SRC);

test('keyd does not import from provision/ (provision imports keyd)', () => {
  const offending = FILES.filter((f) => relative(SRC, f).startsWith('keyd/')).flatMap((f) =>
    importsOf(f)
      .filter((target) => target.startsWith('provision/'))
      .map((target) => `${relative(SRC, f)} → ${target}`),
  );
  assert.deepEqual(offending, []);
  // The positive control: the scan does see provision's imports of keyd.
  assert.ok(FILES.filter((f) => relative(SRC, f).startsWith('provision/')).some((f) => importsOf(f).some((t) => t.startsWith('keyd/'))));
});

test('no dynamic import of a computed path', () => {
  const computed = FILES.flatMap((f) =>
    [...readFileSync(f, 'utf8').matchAll(/\bimport\s*\(\s*([^'"\s)][^)]*)\)/g)].map((m) => `${relative(SRC, f)}: import(${m[1]})`),
  );
  assert.deepEqual(computed, []);
  assert.equal([...'await import(specifier)'.matchAll(/\bimport\s*\(\s*([^'"\s)][^)]*)\)/g)].length, 1, 'the check sees a computed import');
});

test('HOST:PORT parsing and durable writes live in src/lib only', () => {
  const hostPortRegexes = FILES.filter((f) => !f.endsWith('lib/host-port.ts') && /\\d\{1,5\}\)\$/.test(readFileSync(f, 'utf8')));
  assert.deepEqual(hostPortRegexes.map((f) => relative(SRC, f)), [], 'a second HOST:PORT parser');
  // An atomic replace is a temp file renamed over the old one: only durable-file.ts does that.
  // (audit.ts renames whole rotated logs, audit.log → audit.log.1: a move, not a write.)
  const renamers = FILES.filter((f) => /\brename\(/.test(readFileSync(f, 'utf8'))).map((f) => relative(SRC, f)).sort();
  assert.deepEqual(renamers, ['keyd/audit.ts', 'lib/durable-file.ts']);
});
