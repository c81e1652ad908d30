#!/usr/bin/env node
// Compares one tlsfuzzer run (run.sh --out DIR) with the OpenSSL baseline's list of failed
// probes. Exit 0 when every failed probe is also one OpenSSL fails (or is listed in a further
// file given, e.g. .ci/tlsfuzzer-deviations.txt: probes whose expectation the RFCs contradict,
// each with its reason, docs/CONFORMANCE.md); 1 otherwise (a probe outside the lists, a script
// that timed out or crashed, or a failure count the logs do not account for).
// Usage: node .ci/tlsfuzzer-baseline.mjs RESULTS_DIR BASELINE_FAILURES [MORE_FAILURE_LISTS...]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const [resultsDir, ...baselinePaths] = process.argv.slice(2);
if (!resultsDir || baselinePaths.length === 0) {
  console.error('usage: tlsfuzzer-baseline.mjs RESULTS_DIR BASELINE_FAILURES [MORE_FAILURE_LISTS...]');
  process.exit(2);
}

/** Baseline file: "## script.py (N failed)" headings, then "  - probe name :: reason" lines; several merge. */
function readBaseline(path, byScript = new Map()) {
  let script;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const heading = /^## (\S+)/.exec(line);
    if (heading) {
      script = heading[1];
      if (!byScript.has(script)) byScript.set(script, new Set());
      continue;
    }
    const probe = /^ {2}- (.*?) :: /.exec(line);
    if (probe && script) byScript.get(script).add(probe[1]);
  }
  return byScript;
}

/** The probe names a tlsfuzzer script lists after "FAILED:" (one per line, Python repr). */
function failedProbes(log) {
  const lines = log.split('\n');
  const start = lines.lastIndexOf('FAILED:');
  if (start < 0) return [];
  const names = [];
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith('\t')) break;
    const repr = line.slice(1);
    names.push(/^(['"]).*\1$/.test(repr) ? repr.slice(1, -1) : repr);
  }
  return names;
}

const baseline = new Map();
for (const path of baselinePaths) readBaseline(path, baseline);
const summary = readFileSync(join(resultsDir, 'summary.tsv'), 'utf8').trim().split('\n').slice(1);
const outside = [];
let inBaseline = 0;
for (const row of summary) {
  const [script, status, , failed] = row.split('\t');
  const failedCount = Number(failed);
  if (status === 'ok' && failedCount === 0) continue;
  if (status !== 'FAIL') {
    outside.push(`${script}: ${status}`);
    continue;
  }
  const names = failedProbes(readFileSync(join(resultsDir, script.replace(/\.py$/, '.log')), 'utf8'));
  const allowed = baseline.get(script) ?? new Set();
  const unexpected = names.filter((n) => !allowed.has(n));
  for (const n of unexpected) outside.push(`${script}: ${n}`);
  inBaseline += names.length - unexpected.length;
  if (names.length < failedCount) outside.push(`${script}: ${failedCount - names.length} failure(s) not listed by name (script-level check)`);
}
console.log(`baseline comparison: ${inBaseline} failed probe(s) also failed by OpenSSL or listed as deviations, ${outside.length} outside the baseline`);
for (const o of outside) console.log(`  outside baseline: ${o}`);
process.exit(outside.length ? 1 : 0);
