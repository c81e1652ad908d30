/**
 * CPU time of a process from /proc/PID/stat (Linux): utime + stime, all threads
 * included, in microseconds. This is how servers are compared under the same load:
 * CPU spent per handshake, not handshake rate (on a 2-core machine the load generator
 * takes most of a core and bounds the rate).
 */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

let ticksPerSecond: number | undefined;

/** sysconf(_SC_CLK_TCK), the unit of utime/stime (100 on Linux in practice). */
export function clockTicksPerSecond(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** utime + stime of `pid` in µs (fields 14 and 15 of /proc/PID/stat, proc(5)). */
export function cpuTimeMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so field N is fields[N - 3].
  const utime = Number(fields[14 - 3]);
  const stime = Number(fields[15 - 3]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new Error(`cannot parse /proc/${pid}/stat`);
  return ((utime + stime) * 1_000_000) / clockTicksPerSecond();
}

/** Sum of cpuTimeMicros over several processes (nginx: master + worker). */
export function totalCpuTimeMicros(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + cpuTimeMicros(pid), 0);
}

/** Direct children of `pid` (from /proc/PID/task/PID/children, Linux ≥ 3.5). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}
