/**
 * Looking for key bytes in another process: a V8 heap snapshot (every string the JS heap
 * holds; taking one also runs a full garbage collection) and the whole process memory
 * through /proc/PID/mem (ArrayBuffers, OpenSSL's and native modules' memory).
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Writes a heap snapshot of `pid` (started with --heapsnapshot-signal=SIGUSR2, cwd `dir`) and returns its text. */
export async function heapSnapshot(pid: number, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 60_000;
  for (;;) {
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (file) {
      const path = join(dir, file);
      const size = statSync(path).size;
      await sleep(300);
      if (size > 0 && statSync(path).size === size) {
        const text = readFileSync(path, 'utf8');
        if (text.trimEnd().endsWith('}')) return text;
      }
    }
    if (Date.now() > deadline) throw new Error('no heap snapshot written');
    await sleep(100);
  }
}

/** True when this process may read other processes' memory (/proc/PID/mem). */
export function processMemoryReadable(pid: number): boolean {
  try {
    const fd = openSync(`/proc/${pid}/mem`, 'r');
    closeSync(fd);
    readFileSync(`/proc/${pid}/maps`);
    return true;
  } catch {
    return false;
  }
}

/** Every readable mapping of `pid`, concatenated per region, searched for each needle; returns the names found. */
export function scanProcessMemory(pid: number, needles: { name: string; value: Buffer }[]): string[] {
  const found = new Set<string>();
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of maps) {
      const [range, perms, , , , path] = line.split(/\s+/);
      if (!perms!.startsWith('r') || path === '[vvar]' || path === '[vsyscall]') continue;
      const [start, end] = range!.split('-').map((h) => BigInt(`0x${h}`));
      const length = Number(end! - start!);
      if (length > 1 << 30) continue;
      const buffer = Buffer.alloc(length);
      let read = 0;
      try {
        read = readSync(fd, buffer, 0, length, start!);
      } catch {
        continue; // guard pages and the like
      }
      const region = buffer.subarray(0, read);
      for (const n of needles) if (region.includes(n.value)) found.add(n.name);
    }
  } finally {
    closeSync(fd);
  }
  return [...found];
}
