/**
 * Test hook: `DELEGATOR_TEST_CRASH_AT=<step>[:<n>]` makes keyd kill itself with SIGKILL
 * the n-th time (default the first) a committed change reaches that step
 * (record-written, manifest-written, counter-incremented), so tests can prove every
 * interruption is recovered. Unset in production: reading one environment variable is
 * all it costs.
 */
export type CrashStep = 'record-written' | 'manifest-written' | 'counter-incremented';

const reached = new Map<CrashStep, number>();

export function crashPoint(step: CrashStep): void {
  const wanted = process.env.DELEGATOR_TEST_CRASH_AT;
  if (wanted === undefined) return;
  const [name, nth] = wanted.split(':');
  if (name !== step) return;
  const count = (reached.get(step) ?? 0) + 1;
  reached.set(step, count);
  if (count === Number(nth ?? 1)) process.kill(process.pid, 'SIGKILL');
}
