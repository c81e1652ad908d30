/**
 * Error codes, docs against code, both ways. The codes are TypeScript types only
 * (KeydErrorCode in src/keyd/errors.ts, ProvisionErrorCode in src/provision/errors.ts), so
 * they are read from the source: the type's list, and every 'KEYD_…' / 'PROVISION_…' string
 * literal anywhere in src/ (a code thrown or audited that the type does not list is still a
 * code an operator meets).
 * - every keyd code is in docs/PROTOCOL.md "Error codes" by name, or by a `KEYD_X_*` row
 *   whose "see KEYD.md" then names it in docs/KEYD.md;
 * - every provisioning code is named in docs/PROVISIONING.md;
 * - every KEYD_/PROVISION_/EDGE_ code named anywhere in docs/*.md or README.md exists
 *   (a `…_*` wildcard must cover at least one; `KEYD_LIMIT_<LIMIT>` is limit-reporter.ts's
 *   pattern and must name limits that exist).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? files(path) : entry.endsWith('.ts') ? [path] : [];
  });
}

/** The string members of `export type NAME = | 'A' | 'B' …;` in a source file. */
function typeMembers(path: string, name: string): string[] {
  const m = new RegExp(`export type ${name} =([^;]*);`).exec(read(path));
  assert.ok(m, `${path} declares ${name}`);
  const members = [...m[1]!.matchAll(/'([A-Z0-9_]+)'/g)].map((x) => x[1]!);
  assert.ok(members.length >= 10, `${name} has its codes`);
  return members;
}

/** Every 'PREFIX_…' string literal in src/ (code thrown, audited or mapped). */
function literals(prefix: string): Set<string> {
  const out = new Set<string>();
  for (const file of files(join(ROOT, 'src'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(new RegExp(`'(${prefix}_[A-Z0-9_]+)'`, 'g'))) out.add(m[1]!);
  }
  return out;
}

const keydCodes = new Set([...typeMembers('src/keyd/errors.ts', 'KeydErrorCode'), ...literals('KEYD')]);
const provisionCodes = new Set([...typeMembers('src/provision/errors.ts', 'ProvisionErrorCode'), ...literals('PROVISION')]);
const edgeCodes = literals('EDGE');

function protocolCodesSection(): string {
  const text = read('docs/PROTOCOL.md');
  const start = text.indexOf('\n## Error codes\n');
  assert.ok(start >= 0, 'docs/PROTOCOL.md has "## Error codes"');
  const end = text.indexOf('\n## ', start + 1);
  return text.slice(start, end < 0 ? undefined : end);
}

/** Codes (and `X_*` wildcards) named in backticks or plain text; not shell or environment variables ($KEYD_PID, KEYD_PID=…). */
function named(text: string, prefix: string): Set<string> {
  return new Set([...text.matchAll(new RegExp(`(?<![$\\w])${prefix}_[A-Z0-9_]*(?:[A-Z0-9]|_\\*|_<[A-Z]+>)(?![\\w=])`, 'g'))].map((m) => m[0]));
}

/** Codes of `codes` a section does not document: not named, and not under a wildcard of it whose codes `detail` names. */
function undocumented(codes: Iterable<string>, section: string, prefix: string, detail?: string): string[] {
  const names = named(section, prefix);
  const wildcards = [...names].filter((n) => n.endsWith('_*')).map((n) => n.slice(0, -1));
  const detailed = detail === undefined ? new Set<string>() : named(detail, prefix);
  return [...codes].filter((code) => !names.has(code) && !(wildcards.some((w) => code.startsWith(w)) && detailed.has(code))).sort();
}

/** Names in docs that are no code: unknown codes, and wildcards or patterns that cover none. */
function unknown(text: string, prefix: string, codes: Set<string>): string[] {
  const out: string[] = [];
  for (const name of named(text, prefix)) {
    if (name === 'KEYD_LIMIT_<LIMIT>') continue; // the audit code pattern, checked below
    if (name.endsWith('_*') ? ![...codes].some((c) => c.startsWith(name.slice(0, -1))) : !codes.has(name)) out.push(name);
  }
  return out.sort();
}

/** The limits limit-reporter.ts reports (its LimitName type), and their audit codes KEYD_LIMIT_<LIMIT> (upper-cased, - → _). */
const LIMITS = [...(/export type LimitName =([^;]*);/.exec(read('src/keyd/limit-reporter.ts'))?.[1] ?? '').matchAll(/'([a-z-]+)'/g)].map((m) => m[1]!);
const limitCodes = new Set(LIMITS.map((l) => `KEYD_LIMIT_${l.toUpperCase().replace(/-/g, '_')}`));

test('every keyd error code is in docs/PROTOCOL.md "Error codes" (a wildcard row only for codes KEYD.md names)', () => {
  assert.deepEqual(undocumented(keydCodes, protocolCodesSection(), 'KEYD', read('docs/KEYD.md')), []);
});

test('every provisioning error code is in docs/PROVISIONING.md', () => {
  assert.deepEqual(undocumented(provisionCodes, read('docs/PROVISIONING.md'), 'PROVISION'), []);
});

test('every error code the docs and README name exists in the code', () => {
  assert.ok(LIMITS.length >= 8, 'limit-reporter.ts lists its limits');
  const docs = [...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`), 'README.md'];
  const found: string[] = [];
  for (const doc of docs) {
    const text = read(doc);
    for (const name of unknown(text, 'KEYD', new Set([...keydCodes, ...limitCodes]))) found.push(`${doc}: ${name}`);
    for (const name of unknown(text, 'PROVISION', provisionCodes)) found.push(`${doc}: ${name}`);
    for (const name of unknown(text, 'EDGE', edgeCodes)) found.push(`${doc}: ${name}`);
  }
  assert.deepEqual(found, []);
  // The limit names docs/KEYD.md "Limits" gives (limit `…`) are the ones keyd reports.
  const limitsText = read('docs/KEYD.md');
  for (const m of limitsText.matchAll(/\blimit\s+`([a-z-]+)`/g)) assert.ok(LIMITS.includes(m[1]!), `limit ${m[1]} exists`);
  for (const limit of LIMITS) assert.ok(new RegExp(`\\blimit\\s+\`${limit}\``).test(limitsText), `docs/KEYD.md names limit ${limit}`);
});

test('the check itself: a code added without docs, a doc line removed, a stale name are caught', () => {
  const section = protocolCodesSection();
  const keyd = read('docs/KEYD.md');
  assert.deepEqual(undocumented([...keydCodes, 'KEYD_NEW_CODE'], section, 'KEYD', keyd), ['KEYD_NEW_CODE']);
  const withoutRow = section.split('\n').filter((l) => !l.startsWith('| `KEYD_BAD_HASH_LENGTH`')).join('\n');
  assert.deepEqual(undocumented(keydCodes, withoutRow, 'KEYD', keyd), ['KEYD_BAD_HASH_LENGTH']);
  // Under the KEYD_STORE_* wildcard, a code KEYD.md does not name is undocumented.
  assert.deepEqual(undocumented(['KEYD_STORE_NEW'], section, 'KEYD', keyd), ['KEYD_STORE_NEW']);
  assert.deepEqual(undocumented(['KEYD_STORE_CORRUPT'], section, 'KEYD', keyd), []);
  assert.deepEqual(unknown('`KEYD_NO_SUCH_CODE`, `KEYD_STORE_*`, `KEYD_NOPE_*`', 'KEYD', keydCodes), ['KEYD_NOPE_*', 'KEYD_NO_SUCH_CODE']);
  assert.deepEqual(unknown('KEYD_PID=$!\nkill $KEYD_PID # $KEYD_ADMIN_SOCKET', 'KEYD', keydCodes), []);
  assert.deepEqual(undocumented(['PROVISION_NEW'], read('docs/PROVISIONING.md'), 'PROVISION'), ['PROVISION_NEW']);
});
