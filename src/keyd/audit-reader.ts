import { open } from 'node:fs/promises';
import type { AuditEntry, AuditQuery, AuditReply } from './audit.js';

/** Read size: the reader never holds more than this plus one line plus the entries kept. */
const CHUNK_BYTES = 64 * 1024;
/** Longer lines are not audit entries keyd wrote; they are skipped without being buffered. */
export const MAX_AUDIT_LINE = 64 * 1024;
/** Most entries one query returns. */
export const MAX_AUDIT_QUERY = 10_000;

/**
 * The newest of `entries` (oldest first, as read) whose reply `{"entries":[…]}` takes at
 * most `budget` bytes of JSON; when older ones are left out, the reply says so
 * ("truncated": true, "omitted": how many) and its marker is counted in the budget. Whole
 * entries only, the newest kept: an operator asking for the log wants what happened last,
 * and a reply cut inside an entry would not parse.
 */
export function newestEntriesWithin(entries: readonly AuditEntry[], budget: number): AuditReply {
  // JSON.stringify of an array is "[" + its items joined by "," + "]", with no spaces.
  const sizes = entries.map((e) => Buffer.byteLength(JSON.stringify(e)));
  const whole = Buffer.byteLength(JSON.stringify({ entries: [] })) + sizes.reduce((a, b) => a + b, 0) + Math.max(0, entries.length - 1);
  if (whole <= budget) return { entries: [...entries] };
  let used = Buffer.byteLength(JSON.stringify({ entries: [], truncated: true, omitted: entries.length }));
  let first = entries.length;
  while (first > 0 && used + sizes[first - 1]! + (first < entries.length ? 1 : 0) <= budget) {
    used += sizes[first - 1]! + (first < entries.length ? 1 : 0);
    first--;
  }
  return { entries: entries.slice(first), truncated: true, omitted: first };
}

/** What a read held at most, for tests and the bench (bounded memory is the point). */
export interface ReadStats {
  peakLineBytes: number;
  bytesRead: number;
}

/**
 * Reads audit files (oldest first) incrementally: fixed-size chunks, one line at a time,
 * keeping only the newest `limit` matching entries. Memory is bounded by the chunk, the
 * longest line accepted and `limit` — not by the size of the log.
 */
export async function readAuditFiles(paths: readonly string[], query: AuditQuery = {}, stats?: ReadStats): Promise<AuditEntry[]> {
  const limit = Math.max(1, Math.min(query.limit ?? 100, MAX_AUDIT_QUERY));
  const kept: AuditEntry[] = [];
  const take = (line: string) => {
    if (line.length === 0) return;
    let e: AuditEntry;
    try {
      e = JSON.parse(line) as AuditEntry;
    } catch {
      return; // a torn last line after a crash: skip it rather than fail the whole query
    }
    if (query.since && !(e.time >= query.since)) return;
    kept.push(e);
    if (kept.length > limit) kept.shift();
  };
  for (const path of paths) {
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    try {
      const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
      let partial: Buffer[] = [];
      let partialBytes = 0;
      let skipping = false;
      for (;;) {
        const { bytesRead } = await fh.read(chunk, 0, CHUNK_BYTES, null);
        if (bytesRead === 0) break;
        if (stats) stats.bytesRead += bytesRead;
        let start = 0;
        while (start < bytesRead) {
          const nl = chunk.indexOf(0x0a, start);
          const end = nl === -1 || nl >= bytesRead ? bytesRead : nl;
          if (!skipping) {
            partial.push(Buffer.from(chunk.subarray(start, end)));
            partialBytes += end - start;
            if (stats) stats.peakLineBytes = Math.max(stats.peakLineBytes, partialBytes);
            if (partialBytes > MAX_AUDIT_LINE) {
              skipping = true;
              partial = [];
              partialBytes = 0;
            }
          }
          if (end === bytesRead) break;
          if (!skipping) take(Buffer.concat(partial, partialBytes).toString('utf8'));
          partial = [];
          partialBytes = 0;
          skipping = false;
          start = end + 1;
        }
      }
      if (!skipping && partialBytes > 0) take(Buffer.concat(partial, partialBytes).toString('utf8'));
    } finally {
      await fh.close();
    }
  }
  return kept;
}
