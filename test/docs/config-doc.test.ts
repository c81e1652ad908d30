/**
 * The configuration tables of docs/EDGE.md ("Configuration"), docs/KEYD.md ("Limits") and
 * docs/PROVISIONING.md ("Limits") against the parsers, both ways, with the truth read from
 * the running parsers (validateConfig, parseConfig, parseListenerLimits):
 * - the keys: what each parser accepts (the "allowed: …" list it gives for an unknown key)
 *   is exactly the keys the table has rows for;
 * - the defaults: each row's default is what the parser fills in when the key is absent
 *   ("—" = required: the parser refuses the config without it, naming the key);
 * - the bounds: an integer key's bounds are the ones the parser states when it refuses a
 *   value (then checked: min and max accepted, one past each refused), and the row says
 *   exactly those — "(MIN … MAX)" or "(≥ MIN)".
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { validateConfig, type EdgeConfig } from '../../src/edge/config.js';
import { CONFIG_KEYS, parseConfig } from '../../src/keyd/config.js';
import { parseListenerLimits } from '../../src/provision/listener-limits.js';
import { DEFAULT_GENERATE_TIMEOUT_MS, DEFAULT_SIGN_TIMEOUT_MS, parseTokenConfigs } from '../../src/keyd/pkcs11/config.js';
import { DEFAULT_REPLAY_WINDOW_SECONDS, parseProvisioningConfig } from '../../src/provision/roles.js';
import { makeClientCa, writeFiles } from '../helpers/client-pki.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

function section(markdown: string, heading: string): string {
  const start = markdown.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `section "## ${heading}" exists`);
  const end = markdown.indexOf('\n## ', start + 1);
  return markdown.slice(start, end < 0 ? undefined : end);
}

/** The rows of the markdown tables in `text`, as trimmed cells (header and rule rows left out). */
function tableRows(text: string): string[][] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('| ') && !/^\|[-| ]+\|$/.test(l))
    .map((l) => l.slice(1, -1).split(' | ').map((c) => c.trim()));
}

/** The message a parser throws for a config, or undefined when it accepts it. */
function refusal(parse: () => unknown): string | undefined {
  try {
    parse();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The keys a parser lists when it refuses an unknown key. */
function allowedKeys(message: string | undefined): string[] {
  const m = /\((?:allowed: )?([A-Za-z0-9, ]+)\)$/.exec(message ?? '');
  assert.ok(m, `an unknown key is refused with the allowed keys: ${message}`);
  return m[1]!.split(', ');
}

/** Bounds as the parser states them in a refusal: "from A to B", "≥ A", "positive integer", "at most B". */
function statedBounds(message: string | undefined): { min?: number; max?: number } {
  const text = message ?? '';
  const range = /from (-?\d+) to (\d+)/.exec(text);
  if (range) return { min: Number(range[1]), max: Number(range[2]) };
  const atLeast = /≥ (\d+)/.exec(text);
  if (atLeast) return { min: Number(atLeast[1]) };
  if (/positive integer/.test(text)) return { min: 1 };
  const atMost = /at most (\d+)/.exec(text);
  if (atMost) return { max: Number(atMost[1]) };
  return {};
}

/** What a doc row must say about bounds: "(MIN … MAX)", or "(≥ MIN" when there is no maximum. */
function boundsText(b: { min?: number; max?: number }): string | undefined {
  if (b.min === undefined) return undefined;
  return b.max === undefined ? `(≥ ${b.min}` : `(${b.min} … ${b.max})`;
}

/** Every bounds expression in a doc cell. */
function boundsIn(cell: string): string[] {
  return [...cell.matchAll(/\((?:\d+ … \d+\)|≥ \d+)/g)].map((m) => m[0]);
}

// ---------------------------------------------------------------- the edge

type Json = Record<string, unknown>;
const ROUTE = { names: ['a.example'], upstream: '127.0.0.1:1' };
const EDGE_BASE: Json = { keyd: '/run/keyd/keyd.sock', routes: [ROUTE] };

interface EdgeProbe {
  caFile: string;
  /** A config with `value` at `path` (a doc row's key), its companions set so that only `path` decides. */
  withValue(path: string, value: unknown): Json;
  without(path: string): Json;
  parse(doc: Json): EdgeConfig;
}

function edgeProbe(caFile: string): EdgeProbe {
  const parse = (doc: Json) => validateConfig(doc, '/');
  const withValue = (path: string, value: unknown): Json => {
    const doc = structuredClone(EDGE_BASE) as Json & { routes: Json[] };
    const [head, ...rest] = path.split('.');
    const key = rest.at(-1)!;
    if (rest.length === 0) doc[head!] = value;
    else if (head === 'limits') doc.limits = { [key]: value };
    // lifetime and margin are checked together (margin < lifetime / 2): make the other one not matter.
    else if (head === 'delegatedCredentials') doc.delegatedCredentials = { lifetimeSeconds: 604_800, expiryMarginSeconds: 0, [key]: value };
    else if (path.startsWith('routes[].clientAuth.')) doc.routes[0] = { ...ROUTE, clientAuth: { mode: 'required', ca: caFile, [key]: value } };
    else if (head === 'routes[]') doc.routes[0] = { ...ROUTE, [key]: value };
    else assert.fail(`no probe for ${path}`);
    return doc;
  };
  const without = (path: string): Json => {
    const doc = withValue(path, undefined);
    return JSON.parse(JSON.stringify(doc)) as Json; // drops the undefined key
  };
  return { caFile, withValue, without, parse };
}

/** The parser's keys, read from its refusals of an unknown key at each level: leaf paths as the doc writes them. */
function edgeParserKeys(p: EdgeProbe): { leaves: string[]; keydForms: string[][]; address: string[] } {
  const at = (doc: Json) => allowedKeys(refusal(() => p.parse(doc)));
  const top = at({ ...EDGE_BASE, zz: 1 });
  const sections: Record<string, string[]> = {
    limits: at({ ...EDGE_BASE, limits: { zz: 1 } }),
    delegatedCredentials: at({ ...EDGE_BASE, delegatedCredentials: { zz: 1 } }),
    'routes[]': at({ ...EDGE_BASE, routes: [{ ...ROUTE, zz: 1 }] }),
    'routes[].clientAuth': at({ ...EDGE_BASE, routes: [{ ...ROUTE, clientAuth: { zz: 1 } }] }),
  };
  const leaves = top.flatMap((k) => (k === 'routes' ? [] : sections[k] ? sections[k].map((s) => `${k}.${s}`) : [k]));
  for (const k of sections['routes[]']!) if (k !== 'clientAuth') leaves.push(`routes[].${k}`);
  leaves.push(...sections['routes[].clientAuth']!.map((s) => `routes[].clientAuth.${s}`));
  const keydForms = [at({ ...EDGE_BASE, keyd: { socket: 's', zz: 1 } }), at({ ...EDGE_BASE, keyd: { host: 'h', zz: 1 } })];
  const address = at({ ...EDGE_BASE, listen: { port: 1, zz: 1 } });
  return { leaves, keydForms, address };
}

/** The value the parser gives a doc row's key when the config leaves it out. */
function edgeEffective(p: EdgeProbe, path: string): unknown {
  const c = p.parse(structuredClone(EDGE_BASE));
  const [head, ...rest] = path.split('.');
  const key = rest.at(-1)!;
  if (path === 'listen') return c.listen.map((a) => `${a.host}:${a.port}`).join(', ');
  if (rest.length === 0) return (c as unknown as Json)[head!];
  if (head === 'limits') return (c.limits as unknown as Json)[key];
  if (head === 'delegatedCredentials') return (c.delegatedCredentials as unknown as Json)[key];
  if (path === 'routes[].tls12') return c.routes[0]!.tls12 !== false; // absent: on (edge.ts turns TLS 1.2 off only for false)
  if (path === 'routes[].clientAuth.mode') return c.routes[0]!.clientAuth?.mode ?? 'off'; // no clientAuth: never asked
  if (path.startsWith('routes[].clientAuth.')) {
    const auth = p.parse(p.withValue(path, undefined)).routes[0]!.clientAuth as unknown as Json;
    return auth[{ ca: 'caPem', crl: 'crlPem' }[key] ?? key];
  }
  return (c.routes[0] as unknown as Json)[key];
}

/** A default cell against the parser: mismatch message or undefined. */
function edgeDefaultMismatch(p: EdgeProbe, path: string, cell: string): string | undefined {
  const text = cell.replace(/`/g, '');
  if (text.startsWith('—')) {
    const message = refusal(() => p.parse(p.without(path)));
    const last = path.split('.').at(-1)!.replace('[]', '');
    return message?.includes(last) ? undefined : `${path} is documented as required, but a config without it gives ${message ?? 'no error'}`;
  }
  const actual = edgeEffective(p, path);
  let expected: unknown;
  if (/^\d+$/.test(text)) expected = Number(text);
  else if (text === 'true' || text === 'false') expected = text === 'true';
  else if (text === 'none') return actual === undefined || (Array.isArray(actual) && actual.length === 0) ? undefined : `${path}: documented none, parser gives ${JSON.stringify(actual)}`;
  else if (text === 'CPU count') expected = availableParallelism();
  else expected = text;
  return actual === expected ? undefined : `${path}: documented default ${cell}, parser gives ${JSON.stringify(actual)}`;
}

/** The bounds of an integer key, from the parser's refusal of 0.5, checked at both ends. */
function edgeBounds(p: EdgeProbe, path: string): { min?: number; max?: number } {
  const stated = statedBounds(refusal(() => p.parse(p.withValue(path, 0.5))));
  if (stated.min === undefined) return stated;
  const ok = (v: number) => refusal(() => p.parse(p.withValue(path, v))) === undefined;
  assert.ok(ok(stated.min) && !ok(stated.min - 1), `${path}: ${stated.min} is its minimum`);
  if (stated.max !== undefined) assert.ok(ok(stated.max) && !ok(stated.max + 1), `${path}: ${stated.max} is its maximum`);
  return stated;
}

function edgeRows(): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const cells of tableRows(section(read('docs/EDGE.md'), 'Configuration (`edge.json`)'))) {
    const key = /^`([^`]+)`$/.exec(cells[0]!)?.[1];
    if (key && key !== 'key') rows.set(key, cells.slice(1));
  }
  return rows;
}

function edgeMismatches(p: EdgeProbe, rows: Map<string, string[]>): string[] {
  const out: string[] = [];
  const { leaves, keydForms, address } = edgeParserKeys(p);
  for (const key of leaves) if (!rows.has(key)) out.push(`${key}: accepted by the parser, no row`);
  for (const key of rows.keys()) if (!leaves.includes(key)) out.push(`${key}: has a row, the parser refuses it`);
  for (const [key, [def, meaning]] of rows) {
    if (!leaves.includes(key)) continue;
    const wrong = edgeDefaultMismatch(p, key, def!);
    if (wrong) out.push(wrong);
    const want = boundsText(edgeBounds(p, key));
    const said = boundsIn(meaning!);
    if (want === undefined ? said.length > 0 : said.length !== 1 || said[0] !== want) out.push(`${key}: bounds ${want ?? 'none'}, the row says ${said.join(' ') || 'none'}`);
  }
  // The sub-keys of the keyd endpoint forms and of an address are named in their rows.
  for (const k of keydForms.flat()) if (!rows.get('keyd')?.[1]?.includes(k)) out.push(`keyd: the endpoint key ${k} is not in its row`);
  for (const k of address) if (!rows.get('listen')?.[1]?.includes(k)) out.push(`listen: the address key ${k} is not in its row`);
  return out;
}

test('docs/EDGE.md Configuration: the keys, defaults and bounds validateConfig has', async (t) => {
  const ca = await makeClientCa();
  const files = writeFiles({ 'ca.pem': ca.pem });
  t.after(() => files.remove());
  const p = edgeProbe(files.path('ca.pem'));
  assert.ok(edgeParserKeys(p).leaves.length >= 30, 'the probe finds the parser keys');
  assert.deepEqual(edgeMismatches(p, edgeRows()), []);
});

test('the edge check itself: a key added or removed, a wrong default or bound is caught', async (t) => {
  const ca = await makeClientCa();
  const files = writeFiles({ 'ca.pem': ca.pem });
  t.after(() => files.remove());
  const p = edgeProbe(files.path('ca.pem'));
  const rows = edgeRows();
  const removed = new Map(rows);
  removed.delete('limits.lingerIdleMs');
  assert.deepEqual(edgeMismatches(p, removed), ['limits.lingerIdleMs: accepted by the parser, no row']);
  const extra = new Map(rows).set('limits.maxStreams', ['8', '(1 … 9)']);
  assert.deepEqual(edgeMismatches(p, extra), ['limits.maxStreams: has a row, the parser refuses it']);
  const [, meaning] = rows.get('tickets')!;
  assert.deepEqual(edgeMismatches(p, new Map(rows).set('tickets', ['3', meaning!])), ['tickets: documented default 3, parser gives 2']);
  assert.deepEqual(edgeMismatches(p, new Map(rows).set('tickets', ['2', meaning!.replace('(0 … 16)', '(0 … 15)')])), ['tickets: bounds (0 … 16), the row says (0 … 15)']);
  assert.deepEqual(edgeMismatches(p, new Map(rows).set('tickets', ['2', 'tickets'])), ['tickets: bounds (0 … 16), the row says none']);
  assert.deepEqual(edgeMismatches(p, new Map(rows).set('logLevel', ['info', 'pino level (0 … 1)'])), ['logLevel: bounds none, the row says (0 … 1)']);
  assert.equal(edgeMismatches(p, new Map(rows).set('routes[].upstream', ['none', ''])).length, 1);
  assert.equal(edgeMismatches(p, new Map(rows).set('defaultServerName', ['— (required)', rows.get('defaultServerName')![1]!])).length, 1);
});

// ---------------------------------------------------------------- keyd and its provisioning listener

/** Rows of a Limits table: each config key in the "config key" column → the row's default and config key cells. */
function limitRows(doc: string, heading: string, keyPattern: RegExp): Map<string, { def: string; cell: string; keys: string[] }> {
  const rows = new Map<string, { def: string; cell: string; keys: string[] }>();
  for (const cells of tableRows(section(read(doc), heading))) {
    if (cells.length < 4) continue;
    const keys = [...cells[2]!.matchAll(keyPattern)].map((m) => m[1]!);
    for (const key of keys) if (!rows.has(key)) rows.set(key, { def: cells[1]!, cell: cells[2]!, keys });
  }
  return rows;
}

/** Numbers in a default cell ("64 MiB, 8 files kept" → 67108864, 8); units MiB and KiB applied. */
function defaultNumbers(cell: string): number[] {
  return [...cell.matchAll(/(\d+)\s*(MiB|KiB)?/g)].map((m) => Number(m[1]) * (m[2] === 'MiB' ? 2 ** 20 : m[2] === 'KiB' ? 1024 : 1));
}

/** The documented default of `key` in its row: one number per key of the row, or one for all. */
function documentedDefault(row: { def: string; keys: string[] }, key: string): number | undefined {
  const numbers = defaultNumbers(row.def);
  return numbers.length === row.keys.length ? numbers[row.keys.indexOf(key)] : numbers[0];
}

interface Parser {
  /** The keys it accepts. */
  keys: string[];
  value(config: Json, key: string): unknown;
  /** A config with only `key` set to `v`. */
  config(key: string, v: unknown): Json;
  parse(config: Json): unknown;
}

const keydParser = (): Parser => {
  const limits = allowedKeys(refusal(() => parseConfig({ limits: { zz: 1 } })));
  const auditLog = allowedKeys(refusal(() => parseConfig({ auditLog: { zz: 1 } })));
  return {
    keys: [...limits.map((k) => `limits.${k}`), 'maxPending', ...auditLog.map((k) => `auditLog.${k}`)],
    value: (config, key) => {
      const parsed = parseConfig(config) as unknown as Record<string, Json>;
      const [head, sub] = key.split('.');
      return sub === undefined ? parsed[head!] : parsed[head!]![sub];
    },
    config: (key, v) => {
      const [head, sub] = key.split('.');
      // A burst needs a rate (a burst alone is refused): give it one, so only the burst's own bounds decide.
      if (key === 'limits.signatureBurst') return { limits: { signaturesPerSecond: 1, signatureBurst: v } };
      return sub === undefined ? { [head!]: v } : { [head!]: { [sub]: v } };
    },
    parse: (config) => parseConfig(config),
  };
};

const provisioningParser = (): Parser => {
  const keys = allowedKeys(refusal(() => parseListenerLimits({ provisioning: { limits: { zz: 1 } } })));
  return {
    keys: keys.map((k) => `provisioning.limits.${k}`),
    value: (config, key) => (parseListenerLimits(config) as unknown as Json)[key.split('.').at(-1)!],
    config: (key, v) => ({ provisioning: { limits: { [key.split('.').at(-1)!]: v } } }),
    parse: (config) => parseListenerLimits(config),
  };
};

/** Bounds of a key: stated by the parser for -1 (minimum) and for 2^53 - 1 (a maximum, if any), checked at both ends. */
function parserBounds(p: Parser, key: string): { min?: number; max?: number } {
  const low = statedBounds(refusal(() => p.parse(p.config(key, -1))));
  const high = refusal(() => p.parse(p.config(key, Number.MAX_SAFE_INTEGER)));
  const b = { min: low.min, max: low.max ?? (high === undefined ? undefined : statedBounds(high).max) };
  const ok = (v: number) => refusal(() => p.parse(p.config(key, v))) === undefined;
  assert.ok(b.min !== undefined && ok(b.min) && !ok(b.min - 1), `${key}: ${b.min} is its minimum`);
  if (b.max !== undefined) assert.ok(ok(b.max) && !ok(b.max + 1), `${key}: ${b.max} is its maximum`);
  else assert.ok(high === undefined, `${key}: no maximum, or one the parser states (${high})`);
  return b;
}

function limitMismatches(p: Parser, rows: Map<string, { def: string; cell: string; keys: string[] }>, withBounds: boolean): string[] {
  const out: string[] = [];
  for (const key of p.keys) if (!rows.has(key)) out.push(`${key}: accepted by the parser, no row`);
  for (const [key, row] of rows) {
    if (!p.keys.includes(key)) {
      out.push(`${key}: has a row, the parser refuses it`);
      continue;
    }
    const actual = p.value({}, key);
    const documented = documentedDefault(row, key);
    if (documented !== undefined && documented !== actual) out.push(`${key}: documented default ${row.def}, parser gives ${JSON.stringify(actual)}`);
    if (!withBounds) continue;
    const want = boundsText(parserBounds(p, key))!;
    const after = new RegExp(`\`${key.replace(/\./g, '\\.')}\` (\\((?:\\d+ … \\d+\\)|≥ \\d+))`).exec(row.cell)?.[1];
    if (after !== want) out.push(`${key}: bounds ${want}${want.startsWith('(≥') ? ')' : ''}, the row says ${after ?? 'none'} after the key`);
  }
  return out;
}

const keydRows = () => limitRows('docs/KEYD.md', 'Limits', /`((?:limits|auditLog)\.[A-Za-z]+|maxPending)`/g);
const provisioningRows = () => limitRows('docs/PROVISIONING.md', 'Limits', /`(provisioning\.limits\.[A-Za-z]+)`/g);

test('docs/KEYD.md Limits: the keys, defaults and bounds of keyd\'s "limits", "maxPending" and "auditLog"', () => {
  const p = keydParser();
  assert.ok(p.keys.length >= 12, 'the probe finds the parser keys');
  assert.deepEqual(limitMismatches(p, keydRows(), true), []);
});

test('docs/PROVISIONING.md Limits: the keys, defaults and bounds of "provisioning.limits"', () => {
  const p = provisioningParser();
  assert.ok(p.keys.length >= 5);
  assert.deepEqual(limitMismatches(p, provisioningRows(), true), []);
  // Every limit has a maximum (a typo such as 1e12 is refused, not a bound turned into none).
  for (const key of p.keys) assert.notEqual(parserBounds(p, key).max, undefined, key);
  assert.match(section(read('docs/PROVISIONING.md'), 'Limits'), /`provisioning\.limits`, every key optional, each an integer within the bounds its row gives/);
});

test("keyd's top-level config keys: each is in docs/KEYD.md or docs/PROVISIONING.md; the example config holds only those and parses", () => {
  const keyd = read('docs/KEYD.md');
  const provisioning = read('docs/PROVISIONING.md');
  for (const key of CONFIG_KEYS) {
    assert.ok(new RegExp(`[\`"]${key}[\`"]`).test(keyd) || new RegExp(`"${key}"`).test(provisioning), `config key ${key} is documented`);
  }
  const example = /^Config:\n\n```json\n([\s\S]*?)^```$/m.exec(keyd)?.[1];
  assert.ok(example, 'KEYD.md has its config example');
  const doc = JSON.parse(example) as Json;
  for (const key of Object.keys(doc)) assert.ok(CONFIG_KEYS.includes(key), `the example's ${key} is a config key`);
  assert.doesNotThrow(() => parseConfig(doc));
  // Defaults stated in prose.
  const parsed = parseConfig({});
  assert.match(keyd, new RegExp(`\`allowTls12OnlyServers\` \\(default \`${parsed.allowTls12OnlyServers}\`\\)`));
  const days = statedBounds(refusal(() => parseConfig({ expiryWarningDays: -1 })));
  assert.match(keyd, new RegExp(`"expiryWarningDays"\`? \\(config; default\\s+${parsed.expiryWarningDays}, ${days.min} to ${days.max}\\)`));
});

test('the keyd check itself: a limit added or removed, a wrong default or bound is caught', () => {
  const p = keydParser();
  const rows = keydRows();
  const removed = new Map(rows);
  removed.delete('limits.frameTimeoutMs');
  assert.deepEqual(limitMismatches(p, removed, true), ['limits.frameTimeoutMs: accepted by the parser, no row']);
  const added = { ...p, keys: [...p.keys, 'limits.newLimit'] };
  assert.deepEqual(limitMismatches(added, rows, false), ['limits.newLimit: accepted by the parser, no row']);
  const stale = new Map(rows).set('limits.oldLimit', { def: '1', cell: '`limits.oldLimit` (≥ 1)', keys: ['limits.oldLimit'] });
  assert.deepEqual(limitMismatches(p, stale, false), ['limits.oldLimit: has a row, the parser refuses it']);
  const row = rows.get('limits.schedulerBatch')!;
  assert.deepEqual(limitMismatches(p, new Map(rows).set('limits.schedulerBatch', { ...row, def: '32 requests per turn' }), false), [
    'limits.schedulerBatch: documented default 32 requests per turn, parser gives 64',
  ]);
  assert.deepEqual(limitMismatches(p, new Map(rows).set('limits.schedulerBatch', { ...row, cell: '`limits.schedulerBatch` (≥ 0)' }), true), [
    'limits.schedulerBatch: bounds (1 … 4096), the row says (≥ 0 after the key',
  ]);
  assert.deepEqual(defaultNumbers('64 MiB, 8 files kept'), [67108864, 8]);
});

test('docs/KEYD.md "Configuring a token": the fields parseTokenConfigs takes, with their defaults and bounds', () => {
  // The fields are an inline list in the parser (its refusal names only the bad field): read from the source.
  const list = /if \(!\[([^\]]*)\]\.includes\(key\)\)/.exec(read('src/keyd/pkcs11/config.ts'))?.[1] ?? '';
  const fields = [...list.matchAll(/'(\w+)'/g)].map((m) => m[1]!);
  assert.ok(fields.length >= 6, `the token fields (${fields})`);
  const token = { token: 'keyd', module: '/usr/lib/x.so', pinEnv: 'PIN' };
  // Each is a field the parser knows (whatever it then says of the value), and another is refused as unknown.
  for (const f of fields) assert.doesNotMatch(refusal(() => parseTokenConfigs({ tokens: [{ ...token, [f]: 1 }] })) ?? '', /unknown field/, `${f} is taken`);
  assert.match(refusal(() => parseTokenConfigs({ tokens: [{ ...token, zz: 1 }] })) ?? '', /unknown field "zz"/);
  const rows = new Map<string, string>();
  for (const cells of tableRows(section(read('docs/KEYD.md'), 'Keys in a token (PKCS#11)'))) {
    for (const m of cells[0]!.matchAll(/`(\w+)`/g)) rows.set(m[1]!, cells[1]!);
  }
  rows.delete('field');
  assert.deepEqual([...rows.keys()].sort(), [...fields].sort());
  // Defaults and bounds: "(default D, MIN–MAX)", as the parser has them.
  const parsed = parseTokenConfigs({ tokens: [token] })![0]!;
  const defaults: Record<string, number> = { sessions: parsed.sessions, signTimeoutMs: parsed.signTimeoutMs ?? DEFAULT_SIGN_TIMEOUT_MS, generateTimeoutMs: parsed.generateTimeoutMs ?? DEFAULT_GENERATE_TIMEOUT_MS };
  for (const [field, def] of Object.entries(defaults)) {
    const b = statedBounds(refusal(() => parseTokenConfigs({ tokens: [{ ...token, [field]: 0.5 }] })));
    assert.ok(b.min !== undefined && b.max !== undefined, field);
    assert.equal(refusal(() => parseTokenConfigs({ tokens: [{ ...token, [field]: b.max! + 1 }] })) !== undefined, true);
    assert.ok(rows.get(field)!.includes(`(default ${def}, ${b.min}–${b.max})`), `${field}: (default ${def}, ${b.min}–${b.max}) in: ${rows.get(field)}`);
  }
});

test('principals and the provisioning section: the keys the parsers take are the ones the docs name', () => {
  const principal = allowedKeys(refusal(() => parseConfig({ principals: { p1: { socket: '/run/p1.sock', names: [], zz: 1 } } })));
  const callers = section(read('docs/KEYD.md'), 'Local callers: one socket per principal');
  for (const key of principal) assert.match(callers, new RegExp(`\`${key}\``), `principals key ${key}`);
  const provisioning = allowedKeys(refusal(() => parseProvisioningConfig({ provisioning: { operators: {}, zz: 1 } })));
  const said = /The section's keys are ((?:`\w+`(?:, | and )?)+);/.exec(read('docs/PROVISIONING.md').replace(/\s+/g, ' '))?.[1];
  assert.deepEqual([...(said ?? '').matchAll(/`(\w+)`/g)].map((m) => m[1]!).sort(), [...provisioning].sort());
  // replayWindowSeconds: default and bounds as stated.
  assert.equal(parseProvisioningConfig({ provisioning: { operators: {} } }).replayWindowSeconds, DEFAULT_REPLAY_WINDOW_SECONDS);
  assert.equal(refusal(() => parseProvisioningConfig({ provisioning: { operators: {}, replayWindowSeconds: 86400 } })), undefined);
  assert.notEqual(refusal(() => parseProvisioningConfig({ provisioning: { operators: {}, replayWindowSeconds: 86400.5 } })), undefined);
  assert.notEqual(refusal(() => parseProvisioningConfig({ provisioning: { operators: {}, replayWindowSeconds: 0 } })), undefined);
  assert.match(read('docs/PROVISIONING.md').replace(/\s+/g, ' '), new RegExp(`\`replayWindowSeconds\` \\(default ${DEFAULT_REPLAY_WINDOW_SECONDS}, more than 0 and at most 86400\\)`));
});
