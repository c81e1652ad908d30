/**
 * src/tls/index.ts is the engine's one public entry: code outside src/tls (the edge, the
 * CLI, the demo, provisioning, the benchmarks) imports the engine from there only, so
 * the engine's files can move without reaching into its users.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const engine = join(root, 'src/tls');
const entry = join(engine, 'index.js');
/**
 * keyd builds the §4.4.3 signed content with the engine's helpers; moving those imports
 * to the public entry is left to the work on keyd's signing protocol.
 */
const NOT_YET_CHECKED = ['src/keyd/'];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

/** Module specifiers of every static import/export … from and dynamic import() in `text`. */
function specifiers(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)) found.push(m[1]!);
  return found;
}

/** Files outside src/tls that import an engine file other than its public entry. */
function internalImports(files: { file: string; text: string }[]): string[] {
  const offenders: string[] = [];
  for (const { file, text } of files) {
    for (const spec of specifiers(text)) {
      if (!spec.startsWith('.')) continue;
      const target = resolve(dirname(file), spec);
      if (target.startsWith(engine + '/') && target !== entry) offenders.push(`${relative(root, file)} imports ${spec}`);
    }
  }
  return offenders;
}

test('nothing outside src/tls imports the engine except through src/tls/index.ts', () => {
  const files = [...sources(join(root, 'src')), ...sources(join(root, 'bench'))].filter((file) => {
    const rel = relative(root, file);
    return !rel.startsWith('src/tls/') && !NOT_YET_CHECKED.some((prefix) => rel.startsWith(prefix));
  });
  assert.ok(files.some((f) => f.endsWith('src/edge/engine.ts')), 'the scan sees the edge');
  assert.deepEqual(internalImports(files.map((file) => ({ file, text: readFileSync(file, 'utf8') }))), []);
});

test('the check finds an import of an engine internal (positive control)', () => {
  const file = join(root, 'src/edge/engine.ts');
  const text = "import { RecordLayer } from '../tls/record/record-layer.js';\nimport { createServer } from '../tls/index.js';";
  assert.deepEqual(internalImports([{ file, text }]), ['src/edge/engine.ts imports ../tls/record/record-layer.js']);
});
