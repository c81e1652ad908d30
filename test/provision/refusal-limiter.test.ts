/**
 * RefusalLimiter (src/provision/refusal-limiter.ts) on a clock the test moves: the byte
 * budget is inclusive, a window ends exactly windowMs after it began (also when no timer
 * fired), and each new window starts with a full budget and empty counts, so that its
 * summary says what happened in it and refusals are written individually again.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RefusalLimiter, type SuppressedSummary } from '../../src/provision/refusal-limiter.js';

function limiter(budget: number, windowMs: number) {
  let now = 1_000_000;
  const summaries: SuppressedSummary[] = [];
  const l = new RefusalLimiter(budget, windowMs, (s) => void summaries.push(s), () => now);
  return { l, summaries, at: (t: number) => void (now = 1_000_000 + t) };
}

test('the budget is inclusive: refusals up to exactly budgetBytes are written, the next byte is counted', () => {
  const { l, summaries } = limiter(1000, 60_000);
  assert.equal(l.admit('A', 600), true);
  assert.equal(l.admit('A', 400), true, 'exactly filling the budget is admitted');
  assert.equal(l.admit('A', 1), false, 'one byte past it is not');
  assert.equal(l.admit('B', 0), true, 'nothing past a full budget: a zero-byte entry still fits');
  l.stop();
  assert.deepEqual(summaries.map((s) => s.byCode), [{ A: 1 }]);
});

test('a window ends at windowMs after its start when admit sees it, without the timer: fresh budget, and the summary of the one before', () => {
  const { l, summaries, at } = limiter(100, 60_000);
  assert.equal(l.admit('A', 100), true);
  assert.equal(l.admit('A', 50), false);
  at(59_999);
  assert.equal(l.admit('A', 50), false, 'still the first window');
  assert.deepEqual(summaries, []);
  at(60_000);
  assert.equal(l.admit('B', 100), true, 'at windowMs: a new window, a full budget');
  assert.deepEqual(summaries, [{ count: 2, byCode: { A: 2 }, from: 1_000_000, to: 1_060_000 }]);
  assert.equal(l.admit('B', 1), false);
  at(120_000);
  assert.equal(l.admit('C', 1), true);
  assert.deepEqual(summaries[1], { count: 1, byCode: { B: 1 }, from: 1_060_000, to: 1_120_000 }, "the second window's counts only");
});

test('after a flood, each new window writes refusals individually again and summarises only its own', () => {
  const { l, summaries, at } = limiter(200, 1000);
  for (let w = 0; w < 3; w++) {
    at(w * 1000);
    if (w > 0) l.roll(); // the timer's roll
    const admitted = Array.from({ length: 10 }, () => l.admit('FLOOD', 100)).filter(Boolean).length;
    assert.equal(admitted, 2, `window ${w}: the budget's worth`);
  }
  l.stop();
  assert.deepEqual(summaries.map((s) => [s.count, s.byCode]), [[8, { FLOOD: 8 }], [8, { FLOOD: 8 }], [8, { FLOOD: 8 }]]);
  // Control: a window with nothing suppressed writes no summary.
  l.roll();
  assert.equal(summaries.length, 3);
});
