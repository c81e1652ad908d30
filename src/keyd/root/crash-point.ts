/**
 * Test hook: `DELEGATOR_TEST_CRASH_AT=<step>` makes keyd kill itself with SIGKILL when a
 * committed change reaches that step (record-written, manifest-written,
 * counter-incremented), so tests can prove every interruption is recovered. Unset in
 * production; reading one environment variable is all it costs.
 */
export type CrashStep = 'record-written' | 'manifest-written' | 'counter-incremented';

export function crashPoint(step: CrashStep): void {
  if (process.env.DELEGATOR_TEST_CRASH_AT === step) process.kill(process.pid, 'SIGKILL');
}
