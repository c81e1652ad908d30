/**
 * keyd's limit reporter (docs/KEYD.md "Limits"): a metric per refusal, and one aggregated
 * audit entry per (client, limit) per window, at most MAX_AUDITED_PAIRS pairs plus one
 * "(other clients)" entry per limit. Windows are flushed by hand, the clock is injected.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditEntry } from '../../src/keyd/audit.js';
import { LimitReporter, MAX_AUDITED_PAIRS } from '../../src/keyd/limit-reporter.js';
import { KeydMetrics } from '../../src/keyd/metrics.js';

type Entry = Omit<AuditEntry, 'time'>;

/** client|code → count, from the audit entries of one flush. */
const tallies = (entries: Entry[]) => Object.fromEntries(entries.map((e) => [`${e.caller.id}|${e.code}`, e.count]));

test('one audit entry per (client, limit) per window, each counted for its own client; a flushed window is not audited again', { timeout: 20_000 }, async () => {
  const entries: Entry[] = [];
  let now = Date.parse('2026-01-01T00:00:00Z');
  const metrics = new KeydMetrics();
  const reporter = new LimitReporter(async (e) => void entries.push(e), metrics, undefined, 60_000, () => now);
  for (let i = 0; i < 3; i++) reporter.refused('edge-a', 'signature-rate', 'throttled');
  reporter.refused('edge-b', 'signature-rate', 'throttled');
  reporter.refused('edge-b', 'signature-rate', 'throttled');
  reporter.refused('edge-a', 'tls-handshake-timeout', 'slow');
  now += 60_000;
  await reporter.flush();
  assert.deepEqual(tallies(entries), {
    'edge-a|KEYD_LIMIT_SIGNATURE_RATE': 3,
    'edge-b|KEYD_LIMIT_SIGNATURE_RATE': 2,
    'edge-a|KEYD_LIMIT_TLS_HANDSHAKE_TIMEOUT': 1,
  });
  assert.ok(entries.every((e) => e.op === 'limit' && e.ok === false && e.caller.kind === 'client'));
  assert.match(entries[0]!.message!, /^throttled; 3 time\(s\) from 2026-01-01T00:00:00\.000Z to 2026-01-01T00:01:00\.000Z$/);
  const text = await metrics.registry.getSingleMetricAsString('keyd_limit_refusals_total');
  assert.match(text, /keyd_limit_refusals_total\{client="edge-a",limit="signature-rate"\} 3\n/);
  assert.match(text, /keyd_limit_refusals_total\{client="edge-b",limit="signature-rate"\} 2\n/);

  // The next window starts empty: nothing to audit, then only what it saw.
  entries.length = 0;
  await reporter.flush();
  assert.equal(entries.length, 0, 'a flushed window is not audited again');
  reporter.refused('edge-b', 'signature-rate', 'throttled');
  now += 60_000;
  await reporter.flush();
  assert.deepEqual(tallies(entries), { 'edge-b|KEYD_LIMIT_SIGNATURE_RATE': 1 }, 'positive control: the new window is audited');
  assert.match(entries[0]!.message!, /from 2026-01-01T00:01:00\.000Z to 2026-01-01T00:02:00\.000Z$/);
});

test(`at most ${MAX_AUDITED_PAIRS} (client, limit) pairs per window, then one "(other clients)" entry per limit counting the rest`, { timeout: 20_000 }, async () => {
  const entries: Entry[] = [];
  const reporter = new LimitReporter(async (e) => void entries.push(e), undefined, undefined, 60_000, () => 0);
  for (let i = 0; i < MAX_AUDITED_PAIRS; i++) reporter.refused(`c${i}`, 'idle', 'idle');
  reporter.refused('c0', 'idle', 'idle'); // a pair already tallied keeps its own entry past the cap
  reporter.refused(`c${MAX_AUDITED_PAIRS}`, 'idle', 'idle');
  reporter.refused(`c${MAX_AUDITED_PAIRS + 1}`, 'idle', 'idle');
  reporter.refused(`c${MAX_AUDITED_PAIRS + 1}`, 'pending', 'pending');
  await reporter.flush();
  assert.equal(entries.length, MAX_AUDITED_PAIRS + 2, 'the named pairs, then one "(other clients)" entry per limit folded');
  const named = entries.filter((e) => e.caller.id !== '(other clients)');
  assert.equal(named.length, MAX_AUDITED_PAIRS, 'exactly the cap of named pairs');
  assert.equal(named.find((e) => e.caller.id === 'c0')?.count, 2, 'positive control: a known pair is still counted past the cap');
  assert.equal(named.some((e) => e.caller.id === `c${MAX_AUDITED_PAIRS}`), false, 'the first pair beyond the cap is not named');
  const others = entries.filter((e) => e.caller.id === '(other clients)');
  assert.deepEqual(tallies(others), { '(other clients)|KEYD_LIMIT_IDLE': 2, '(other clients)|KEYD_LIMIT_PENDING': 1 });
});

test('past the cap, each "(other clients)" entry carries the code of the refusals it counts, not that of the first one folded', { timeout: 20_000 }, async () => {
  const entries: Entry[] = [];
  const reporter = new LimitReporter(async (e) => void entries.push(e), undefined, undefined, 60_000, () => 0);
  for (let i = 0; i < MAX_AUDITED_PAIRS; i++) reporter.refused(`c${i}`, 'idle', 'idle');
  // Beyond the cap: one slow client, then a signature-rate flood from many.
  reporter.refused('slow', 'frame-timeout', 'frame timeout');
  for (let i = 0; i < 1000; i++) reporter.refused(`flood${i % 50}`, 'signature-rate', 'throttled');
  reporter.refused('slow', 'frame-timeout', 'frame timeout');
  await reporter.flush();
  const others = entries.filter((e) => e.caller.id === '(other clients)');
  assert.deepEqual(tallies(others), { '(other clients)|KEYD_LIMIT_FRAME_TIMEOUT': 2, '(other clients)|KEYD_LIMIT_SIGNATURE_RATE': 1000 });
  assert.ok(others.every((e) => /^clients beyond the 64 \(client, limit\) pairs audited in this window; \d+ time\(s\) from /.test(e.message!)), others.map((e) => e.message).join('\n'));
  // Positive control: every refusal is counted once, in some entry.
  assert.equal(entries.reduce((n, e) => n + (e.count ?? 0), 0), MAX_AUDITED_PAIRS + 1002);

  // Bounded: however many clients trip every limit, a window has the cap plus one entry per limit.
  entries.length = 0;
  const limits = ['payload', 'listener-connections', 'client-connections', 'idle', 'frame-timeout', 'tls-handshake-timeout', 'signature-rate', 'delegation-rate', 'pending', 'socket-exposed'] as const;
  for (let i = 0; i < 5000; i++) reporter.refused(`x${i}`, limits[i % limits.length]!, 'refused');
  await reporter.flush();
  assert.equal(entries.length, MAX_AUDITED_PAIRS + limits.length);
  assert.equal(new Set(entries.filter((e) => e.caller.id === '(other clients)').map((e) => e.code)).size, limits.length);
  assert.equal(entries.reduce((n, e) => n + (e.count ?? 0), 0), 5000);
});
