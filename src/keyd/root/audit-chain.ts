import { createHash } from 'node:crypto';
import { open, readFile, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { KeydError } from '../errors.js';

/**
 * The audit log as a hash chain: every line carries its number `n` (counted across the
 * whole log, rotated files included) and `chain` = SHA-256(previous chain ‖ "\n" ‖ the
 * line without `chain`). The store manifest records the head at each commit, so erasing
 * or editing entries up to the last commit (e.g. the delete entries of a rolled-back
 * store) is found at start. A rotated file ends with the line whose chain the next file
 * continues from, so the chain survives rotation; the first line of a file is checked
 * against the last line of the file before it when that file is still there (rotatedChain),
 * else a file's first line, which has no line before it in its file, could be edited freely.
 */

export const GENESIS = '0'.repeat(64);

export interface ChainHead {
  head: string;
  entries: number;
}

export class AuditChain {
  constructor(private current: ChainHead = { head: GENESIS, entries: 0 }) {}

  get head(): ChainHead {
    return { ...this.current };
  }

  /** The JSON line (with its newline) for `entry`, advancing the chain. */
  line(entry: Record<string, unknown>): string {
    const next = this.next(entry);
    this.advance(next.head);
    return next.line;
  }

  /**
   * The line for `entry` and the head it leads to, without advancing: a writer advances
   * only once the line is on disk, so a failed write leaves no gap in the chain.
   */
  next(entry: Record<string, unknown>): { line: string; head: ChainHead } {
    const n = this.current.entries + 1;
    const body = JSON.stringify({ ...entry, n });
    const chain = link(this.current.head, body);
    return { line: `${body.slice(0, -1)},"chain":"${chain}"}\n`, head: { head: chain, entries: n } };
  }

  advance(head: ChainHead): void {
    this.current = { ...head };
  }
}

function link(previous: string, body: string): string {
  return createHash('sha256').update(previous).update('\n').update(body).digest('hex');
}

interface ParsedLine {
  n: number;
  chain: string;
  body: string;
  lineNumber: number;
}

/**
 * Chained lines of one file; a torn last line (a crash mid-append) is skipped. Unchained
 * lines are those written before the log was chained: they may only come first, since
 * every line appended since carries its link (one after a chained line was inserted).
 */
function parseLines(text: string, path: string): ParsedLine[] {
  const raw = text.split('\n');
  const out: ParsedLine[] = [];
  for (let i = 0; i < raw.length; i++) {
    const line = raw[i]!;
    if (line === '') continue;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line) as Record<string, unknown>;
    } catch {
      if (i >= raw.length - 2) continue; // torn last line
      throw new KeydError('KEYD_AUDIT_TAMPERED', `${path} line ${i + 1} is not JSON: the audit log was edited`);
    }
    if (typeof obj.chain !== 'string' || typeof obj.n !== 'number') {
      if (out.length > 0) {
        throw new KeydError('KEYD_AUDIT_TAMPERED', `${path} line ${i + 1} has no hash-chain link but follows chained entries: it was inserted`);
      }
      continue;
    }
    const suffix = `,"chain":"${obj.chain}"}`;
    if (!line.endsWith(suffix)) throw new KeydError('KEYD_AUDIT_TAMPERED', `${path} line ${i + 1} was edited (chain field moved)`);
    out.push({ n: obj.n, chain: obj.chain, body: `${line.slice(0, -suffix.length)}}`, lineNumber: i + 1 });
  }
  return out;
}

/** Checks one file's links (each line against the one before); returns its lines. */
function checkLinks(lines: ParsedLine[], path: string, before?: ParsedLine): void {
  let previous = before;
  for (const line of lines) {
    if (previous) {
      if (line.n !== previous.n + 1) {
        throw new KeydError('KEYD_AUDIT_TAMPERED', `${path} line ${line.lineNumber} is entry ${line.n}, expected ${previous.n + 1}: audit entries were removed or reordered`);
      }
      if (link(previous.chain, line.body) !== line.chain) {
        throw new KeydError('KEYD_AUDIT_TAMPERED', `${path} line ${line.lineNumber} (entry ${line.n}) breaks the hash chain: it, or the entry before it, was edited`);
      }
    } else if (line.n === 1 && link(GENESIS, line.body) !== line.chain) {
      throw new KeydError('KEYD_AUDIT_TAMPERED', `${path} line ${line.lineNumber} (entry 1) breaks the hash chain: it was edited`);
    }
    previous = line;
  }
}

/**
 * Reads the audit log at `path`, checks its chain and that it still holds the head the
 * manifest committed; returns the current head (where appends continue).
 */
export async function verifyAuditLog(path: string, committed: ChainHead | null): Promise<ChainHead> {
  const text = await repairTornTail(
    path,
    await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    }),
  );
  const lines = parseLines(text, path);
  checkLinks(lines, path);
  const last = lines.at(-1);
  if (!last) {
    if (!committed || committed.entries === 0) return { head: GENESIS, entries: 0 };
    // An empty log after rotation: the committed entry must be in a rotated file, and
    // appends continue from that file's last entry.
    const rotated = (await rotatedChain(path, committed.entries)).found;
    if (!rotated) {
      throw new KeydError('KEYD_AUDIT_ROLLED_BACK', `${path} is empty and no rotated file holds entry ${committed.entries}, which the store manifest committed: the audit log was removed`);
    }
    if (rotated.hit.chain !== committed.head) {
      throw new KeydError('KEYD_AUDIT_TAMPERED', `audit entry ${committed.entries} differs from the one the store manifest committed: the audit log was rewritten`);
    }
    return { head: rotated.last.chain, entries: rotated.last.n };
  }
  const head: ChainHead = { head: last.chain, entries: last.n };
  // After a rotation this file starts past entry 1: its first line is checked against the
  // rotated file that ends just before it (and the rotated files against each other).
  const rotated = lines[0]!.n > 1 ? await rotatedChain(path, committed?.entries, lines[0]) : undefined;
  if (!committed || committed.entries === 0) return head;
  if (head.entries < committed.entries) {
    throw new KeydError(
      'KEYD_AUDIT_ROLLED_BACK',
      `${path} ends at entry ${head.entries} but the store manifest committed entry ${committed.entries}: audit entries were erased (or the log rolled back)`,
    );
  }
  let found = lines.find((l) => l.n === committed.entries);
  if (!found && lines[0]!.n > committed.entries) found = rotated?.found?.hit;
  if (!found) {
    throw new KeydError('KEYD_AUDIT_ROLLED_BACK', `entry ${committed.entries} that the store manifest committed is not in ${path} or its rotated files`);
  }
  if (found.chain !== committed.head) {
    throw new KeydError('KEYD_AUDIT_TAMPERED', `audit entry ${committed.entries} differs from the one the store manifest committed: the audit log was rewritten`);
  }
  return head;
}

/**
 * A log that does not end with a newline was cut mid-append by a crash. Appending after
 * the cut would glue the next entry onto it, and that line, no longer the last, would
 * then read as an edit (or as entries removed) at every later start. The torn line was
 * never acknowledged (the append returns after its datasync), so it is cut off; a whole
 * line that only lacks its newline gets one.
 */
async function repairTornTail(path: string, text: string): Promise<string> {
  if (text === '' || text.endsWith('\n')) return text;
  const cut = text.lastIndexOf('\n') + 1;
  let whole = true;
  try {
    JSON.parse(text.slice(cut));
  } catch {
    whole = false;
  }
  const fh = await open(path, 'r+');
  try {
    if (whole) await fh.write('\n', (await fh.stat()).size);
    else await fh.truncate(Buffer.byteLength(text.slice(0, cut), 'utf8'));
    await fh.sync();
  } finally {
    await fh.close();
  }
  return whole ? `${text}\n` : text.slice(0, cut);
}

/**
 * Reads the rotated siblings of `path` (audit.log.1, audit.log.2026-…, …), one at a time:
 * checks each file's links, then each boundary between files — the first line of a file
 * (and `next`, the first line of `path` itself) against the last line of every file that
 * ends with the entry just before it. Returns entry `n` when a file holds it, with that
 * file's last line (where appends continue after a rotation).
 */
async function rotatedChain(path: string, n: number | undefined, next?: ParsedLine): Promise<{ found?: { hit: ParsedLine; last: ParsedLine } }> {
  const dir = dirname(path);
  const prefix = `${basename(path)}.`;
  const ends: { file: string; first: ParsedLine; last: ParsedLine }[] = [];
  let found: { hit: ParsedLine; last: ParsedLine } | undefined;
  for (const name of (await readdir(dir)).filter((f) => f.startsWith(prefix)).sort()) {
    const file = join(dir, name);
    const text = await readFile(file, 'utf8').catch(() => '');
    const lines = parseLines(text, file);
    checkLinks(lines, file);
    if (lines.length === 0) continue;
    ends.push({ file, first: lines[0]!, last: lines.at(-1)! });
    const hit = n === undefined ? undefined : lines.find((l) => l.n === n);
    if (hit && !found) found = { hit, last: lines.at(-1)! };
  }
  const starts = [...ends.map((e) => ({ file: e.file, first: e.first })), ...(next ? [{ file: path, first: next }] : [])];
  for (const { file, first } of starts) {
    if (first.n <= 1) continue;
    for (const before of ends) if (before.last.n === first.n - 1) checkLinks([first], file, before.last);
  }
  return found ? { found } : {};
}
