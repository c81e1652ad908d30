import assert from 'node:assert/strict';

/** Whether process `pid` still exists (signal 0, kill(2)); any error but ESRCH fails the test. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ESRCH');
    return false;
  }
}
