/**
 * The metrics tables of docs/EDGE.md ("Observability") and docs/KEYD.md ("Metrics") are the
 * metrics the code registers, both ways: every metric EdgeMetrics and KeydMetrics register
 * (read from their real prom-client registries) has a row with its type and labels, every
 * row names a registered metric, and every `edge_…` / `keyd_…` name anywhere in the docs is
 * one the code exports. (docs/grafana-dashboard.json is checked by grafana-dashboard.test.ts.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Registry } from 'prom-client';
import { EdgeMetrics } from '../../src/edge/metrics.js';
import { Keyring } from '../../src/keyd/keyring.js';
import { KeydMetrics } from '../../src/keyd/metrics.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const read = (path: string): string => readFileSync(join(ROOT, path), 'utf8');

interface Registered {
  type: string;
  labels: string[];
}

async function registered(registry: Registry): Promise<Map<string, Registered>> {
  const out = new Map<string, Registered>();
  for (const metric of await registry.getMetricsAsJSON()) {
    const inner = registry.getSingleMetric(metric.name) as unknown as { labelNames?: string[] };
    out.set(metric.name, { type: String(metric.type), labels: [...(inner.labelNames ?? [])] });
  }
  return out;
}

function keydRegistry(): Registry {
  const keyd = new KeydMetrics();
  keyd.watchKeyring(new Keyring(), 'file'); // registers the gauges read from the keyring
  return keyd.registry;
}

/** The text of a `## heading` section, up to the next `## `. */
function section(markdown: string, heading: string): string {
  const start = markdown.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `section "## ${heading}" exists`);
  const end = markdown.indexOf('\n## ', start + 1);
  return markdown.slice(start, end < 0 ? undefined : end);
}

/** Rows `| \`name\` | type | … |` of the metrics table in a section: name → its cells. */
function tableRows(text: string, prefix: string): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^\\| \`(${prefix}_[a-z0-9_]+)\` \\|(.*)\\|$`).exec(line);
    if (!m) continue;
    assert.ok(!rows.has(m[1]!), `${m[1]} has one row`);
    rows.set(m[1]!, m[2]!.split(' | ').map((c) => c.trim()));
  }
  return rows;
}

function edgeRows(): Map<string, string[]> {
  return tableRows(section(read('docs/EDGE.md'), 'Observability'), 'edge');
}

function keydRows(): Map<string, string[]> {
  return tableRows(section(read('docs/KEYD.md'), 'Metrics'), 'keyd');
}

/** What the tables must agree on, as messages (empty = true docs). */
function mismatches(code: Map<string, Registered>, rows: Map<string, string[]>, labelsColumn: boolean): string[] {
  const out: string[] = [];
  for (const [name, { type, labels }] of code) {
    const row = rows.get(name);
    if (!row) {
      out.push(`${name} (${type}) is registered but has no row`);
      continue;
    }
    if (row[0] !== type) out.push(`${name} is a ${type}, the row says ${row[0]}`);
    if (labelsColumn) {
      const documented = [...row[1]!.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!).sort();
      if (documented.join(',') !== [...labels].sort().join(',')) out.push(`${name} has labels [${labels}], the row lists [${documented}]`);
    } else {
      const cell = row.slice(1).join(' | ');
      for (const label of labels) if (!cell.includes(`\`${label}\``)) out.push(`${name}'s label ${label} is not in its row`);
      if (labels.length === 0 && /^`[a-z_]+`/.test(cell)) out.push(`${name} has no labels, its row starts with one: ${cell}`);
    }
  }
  for (const name of rows.keys()) if (!code.has(name)) out.push(`${name} has a row but is not registered`);
  return out;
}

test('docs/EDGE.md Observability lists exactly the metrics EdgeMetrics registers, with type and labels', async () => {
  const code = await registered(new EdgeMetrics().registry);
  assert.ok(code.size >= 10, 'the edge registers its metrics');
  assert.deepEqual(mismatches(code, edgeRows(), false), []);
});

test('docs/KEYD.md Metrics lists exactly the metrics KeydMetrics registers, with type and labels', async () => {
  const code = await registered(keydRegistry());
  assert.ok(code.size >= 9, 'keyd registers its metrics');
  assert.deepEqual(mismatches(code, keydRows(), true), []);
});

test('every edge_… / keyd_… metric name in the docs and README is one the code exports', async () => {
  const exported = new Set<string>();
  for (const registry of [new EdgeMetrics({ defaultMetrics: true }).registry, keydRegistry()]) {
    for (const [name, { type }] of await registered(registry)) {
      exported.add(name);
      if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(name + s);
    }
  }
  const docs = [...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`), 'README.md'];
  const unknown: string[] = [];
  let seen = 0;
  for (const doc of docs) {
    for (const m of read(doc).matchAll(/\b((?:edge|keyd)_[a-z0-9_]+)\b/g)) {
      seen++;
      if (!exported.has(m[1]!)) unknown.push(`${doc}: ${m[1]}`);
    }
  }
  assert.ok(seen >= 30, `the docs name metrics (${seen})`);
  assert.deepEqual(unknown, []);
  // The default process metrics the edge's section promises are there.
  assert.ok(exported.has('edge_process_cpu_seconds_total'));
});

test('the check itself: a metric added without a row, a row removed, a wrong type or label is caught', async () => {
  const code = await registered(keydRegistry());
  const rows = keydRows();
  assert.deepEqual(mismatches(code, rows, true), []);
  const added = new Map(code).set('keyd_new_total', { type: 'counter', labels: [] });
  assert.deepEqual(mismatches(added, rows, true), ['keyd_new_total (counter) is registered but has no row']);
  const removed = new Map(rows);
  removed.delete('keyd_connections');
  assert.deepEqual(mismatches(code, removed, true), ['keyd_connections (gauge) is registered but has no row']);
  const stale = new Map(rows).set('keyd_gone_total', ['counter', '', '']);
  assert.deepEqual(mismatches(code, stale, true), ['keyd_gone_total has a row but is not registered']);
  const retyped = new Map(rows).set('keyd_connections', ['counter', '`listener`', '']);
  assert.deepEqual(mismatches(code, retyped, true), ['keyd_connections is a gauge, the row says counter']);
  const relabelled = new Map(rows).set('keyd_connections', ['gauge', '`listener`, `client`', '']);
  assert.equal(mismatches(code, relabelled, true).length, 1);
  const edge = await registered(new EdgeMetrics().registry);
  const edgeRowsNoLabel = new Map(edgeRows()).set('edge_keyd_connected', ['gauge', 'one series per configured endpoint']);
  assert.deepEqual(mismatches(edge, edgeRowsNoLabel, false), ["edge_keyd_connected's label endpoint is not in its row"]);
});
