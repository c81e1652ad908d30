/**
 * docs/grafana-dashboard.json queries only metrics the code exports: every metric name in
 * every panel's PromQL is one that KeydMetrics or EdgeMetrics registers (a histogram's
 * _bucket/_sum/_count series included), and the labels it groups by exist on that metric.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { EdgeMetrics } from '../../src/edge/metrics.js';
import { Keyring } from '../../src/keyd/keyring.js';
import { KeydMetrics } from '../../src/keyd/metrics.js';

const DASHBOARD = fileURLToPath(new URL('../../../docs/grafana-dashboard.json', import.meta.url));

/** Series name → the label names it carries, for every metric the code registers. */
async function exportedSeries(): Promise<Map<string, Set<string>>> {
  const keyd = new KeydMetrics();
  keyd.watchKeyring(new Keyring(), 'file');
  const edge = new EdgeMetrics({ defaultMetrics: true });
  const series = new Map<string, Set<string>>();
  for (const registry of [keyd.registry, edge.registry]) {
    for (const metric of await registry.getMetricsAsJSON()) {
      const labels = new Set<string>((metric as unknown as { labelNames?: string[] }).labelNames ?? []);
      const inner = registry.getSingleMetric(metric.name) as unknown as { labelNames?: string[] };
      for (const l of inner?.labelNames ?? []) labels.add(l);
      const names = String(metric.type) === 'histogram' ? ['_bucket', '_sum', '_count'].map((s) => metric.name + s) : [metric.name];
      for (const name of names) series.set(name, name.endsWith('_bucket') ? new Set([...labels, 'le']) : labels);
    }
  }
  return series;
}

/** The metric names a PromQL expression refers to (the project's prefixes only; functions and labels are not metrics). */
function metricNamesIn(expr: string): string[] {
  return [...expr.matchAll(/\b((?:keyd|edge)_[a-zA-Z0-9_]+)\b/g)].map((m) => m[1]!);
}

/** Label names in `by (…)` / `without (…)` clauses. */
function groupingLabelsIn(expr: string): string[] {
  return [...expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()).filter(Boolean));
}

function queries(): string[] {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: { targets?: { expr: string }[] }[] };
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
}

test('every metric the Grafana dashboard queries is exported by the code, with the labels it groups by', async () => {
  const series = await exportedSeries();
  const exprs = queries();
  assert.ok(exprs.length >= 10, 'the dashboard has its panels');
  const used = new Set<string>();
  for (const expr of exprs) {
    const names = metricNamesIn(expr);
    assert.ok(names.length > 0, `query uses no project metric: ${expr}`);
    for (const name of names) {
      used.add(name);
      assert.ok(series.has(name), `${name} (in "${expr}") is not exported by keyd or the edge`);
      for (const label of groupingLabelsIn(expr)) {
        if (label === 'le' && !name.endsWith('_bucket')) continue;
        assert.ok(series.get(name)!.has(label), `${name} has no label "${label}" (in "${expr}")`);
      }
    }
  }
  // The operator's questions the issue names each have a panel.
  for (const name of ['keyd_signatures_total', 'keyd_sign_refusals_total', 'keyd_sign_duration_seconds_bucket', 'keyd_store_keys', 'keyd_backend_up', 'keyd_certificate_not_after_seconds', 'edge_handshakes_total']) {
    assert.ok(used.has(name), `no panel shows ${name}`);
  }
});

test('the check itself: a name or label the code does not export is caught', async () => {
  const series = await exportedSeries();
  assert.deepEqual(metricNamesIn('sum by (key) (rate(keyd_signatures_made_total[5m]))'), ['keyd_signatures_made_total']);
  assert.equal(series.has('keyd_signatures_made_total'), false);
  assert.equal(series.get('keyd_signatures_total')!.has('backend'), false);
  assert.equal(series.get('keyd_sign_duration_seconds_bucket')!.has('le'), true);
  assert.deepEqual(groupingLabelsIn('histogram_quantile(0.99, sum by (le, backend) (rate(x[5m])))'), ['le', 'backend']);
});
