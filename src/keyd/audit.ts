import { open, rename, stat, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { readAuditFiles, type ReadStats } from './audit-reader.js';
import { syncDirectory } from '../lib/durable-file.js';
import { truncate } from '../lib/truncate.js';
import { AuditChain, type ChainHead } from './root/audit-chain.js';

export interface AdminCaller {
  /** local: an admin socket principal; operator: provisioning; client: a signing client (aggregated entries). */
  kind: 'local' | 'operator' | 'client';
  /** e.g. "uid 0 via /run/keyd/admin.sock" or an operator certificate subject. */
  id: string;
}

/** One line of the audit log: what, when, who, and how it ended. Never key material. */
export interface AuditEntry {
  time: string;
  op: string;
  caller: AdminCaller;
  names?: string[];
  keyRef?: string;
  keyType?: string;
  /** Network peer, for operations that came over the provisioning listener. */
  remote?: string;
  ok: boolean;
  code?: string;
  message?: string;
  /** Aggregated entries (op "sign", "limit", "refused"): how many events the line stands for. */
  count?: number;
  /** op "sign": refusals in the window. */
  refusals?: number;
}

/** Rotation (config "auditLog"): audit.log moves to audit.log.1 … audit.log.<keep> past maxBytes. */
export interface AuditRotation {
  maxBytes: number;
  keep: number;
}

/**
 * Bounds on the strings of one entry. Some come from a request (an operator's op and names,
 * a refusal message quoting them); unbounded, an entry could pass the reader's line limit
 * (MAX_AUDIT_LINE: `admin audit` would skip it) and a few hundred would rotate the whole
 * history away. With these, a line stays far below that limit.
 */
export const AUDIT_FIELD_LIMITS = Object.freeze({ text: 256, message: 2048, names: 100 });

/** The entry with every string field within AUDIT_FIELD_LIMITS (absent fields stay absent in the JSON line). */
export function boundAuditEntry<E extends Omit<AuditEntry, 'time'>>(entry: E): E {
  const { text, message, names } = AUDIT_FIELD_LIMITS;
  const cut = (s: string | undefined, max: number) => (s === undefined ? undefined : truncate(s, max));
  const kept = entry.names?.slice(0, names).map((n) => truncate(n, text));
  return {
    ...entry,
    op: truncate(entry.op, text),
    caller: { ...entry.caller, id: truncate(entry.caller.id, text) },
    keyRef: cut(entry.keyRef, text),
    keyType: cut(entry.keyType, text),
    remote: cut(entry.remote, text),
    code: cut(entry.code, text),
    message: cut(entry.message, message),
    names: kept && entry.names!.length > names ? [...kept, `…(${entry.names!.length - names} more names)`] : kept,
  };
}

export const DEFAULT_AUDIT_ROTATION: Readonly<AuditRotation> = Object.freeze({ maxBytes: 64 * 1024 * 1024, keep: 8 });

/**
 * An `admin audit` reply: one frame at most (docs/PROTOCOL.md), so the newest entries that
 * fit; `omitted` counts the older ones the query matched (within its limit) that did not
 * (audit-reader.ts newestEntriesWithin). Absent: nothing left out.
 */
export interface AuditReply {
  entries: AuditEntry[];
  truncated?: true;
  omitted?: number;
}

export interface AuditQuery {
  /** Newest N entries (default 100). */
  limit?: number;
  /** Only entries at or after this ISO time. */
  since?: string;
}

/**
 * Append-only audit log (JSON lines, mode 0600). The file is opened in append mode
 * and every entry is fdatasync'ed before the admin call returns, so an acknowledged
 * change always has its audit line. Lines are hash-chained (root/audit-chain.ts) and
 * the store manifest commits the chain's head.
 */
export class AuditLog {
  private queue: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    private fh: FileHandle,
    private readonly chain: AuditChain,
    private size: number,
    private readonly rotation: AuditRotation,
    private readonly beforeRotate: (() => Promise<void>) | undefined,
  ) {
    this.durableHead = chain.head;
  }

  /** Head after the last line that reached the disk: what a manifest commit may record. */
  private durableHead: ChainHead;

  /**
   * `head`: where the chain continues (root/audit-chain.ts verifyAuditLog's answer); the
   * chain runs on across rotated files. `beforeRotate`: keyd commits the store manifest
   * with the current head there. A rotation drops the oldest file, and the entry the
   * manifest last committed must stay in a kept file (the start checks it is there); a
   * keyd whose keys do not change for a long time would otherwise rotate it away, and
   * its next start would refuse the log as erased.
   */
  static async open(path: string, head?: ChainHead, rotation: AuditRotation = DEFAULT_AUDIT_ROTATION, beforeRotate?: () => Promise<void>): Promise<AuditLog> {
    const fh = await open(path, 'a', 0o600);
    return new AuditLog(path, fh, new AuditChain(head), (await fh.stat()).size, rotation, beforeRotate);
  }

  /** Head of the hash chain after the last appended line. */
  get head(): ChainHead {
    return { ...this.durableHead };
  }

  append(entry: Omit<AuditEntry, 'time'>): Promise<void> {
    const done = this.queue.then(async () => {
      const { line, head } = this.chain.next({ time: new Date().toISOString(), ...boundAuditEntry(entry) });
      try {
        await this.fh.write(line);
        await this.fh.datasync();
      } catch (err) {
        // A failed write (disk full, I/O error) must not leave a torn line for the next
        // entry to follow, nor a chain that skips a line that never reached the disk: the
        // next start would then refuse the log as tampered. Cut back to the last whole line.
        await this.fh.truncate(this.size).catch(() => {});
        throw err;
      }
      this.chain.advance(head);
      this.durableHead = head;
      this.size += Buffer.byteLength(line);
      if (this.size >= this.rotation.maxBytes) {
        try {
          await this.beforeRotate?.();
        } catch {
          // The entry is on disk; rotating now could drop the committed one. The next
          // append tries again (the same failure fails keyd's changes, which say why).
          return;
        }
        await this.rotate();
      }
    });
    this.queue = done.catch(() => {});
    return done;
  }

  /**
   * Inside the append queue, after the entry is on disk: shift audit.log.N → N+1 (the
   * oldest beyond `keep` is overwritten), audit.log → audit.log.1, fsync the directory,
   * then open a fresh audit.log. No entry is between files at any moment.
   */
  private async rotate(): Promise<void> {
    await this.fh.close();
    for (let i = this.rotation.keep - 1; i >= 1; i--) {
      await rename(`${this.path}.${i}`, `${this.path}.${i + 1}`).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
    }
    await rename(this.path, `${this.path}.1`);
    await syncDirectory(dirname(this.path));
    this.fh = await open(this.path, 'a', 0o600);
    this.size = 0;
  }

  /** Every audit file, oldest first. */
  async files(): Promise<string[]> {
    const paths: string[] = [];
    for (let i = this.rotation.keep; i >= 1; i--) {
      const p = `${this.path}.${i}`;
      if (await stat(p).then(() => true, () => false)) paths.push(p);
    }
    paths.push(this.path);
    return paths;
  }

  /** The newest entries matching `query`, read incrementally across rotated files (audit-reader.ts). */
  async read(query: AuditQuery = {}, stats?: ReadStats): Promise<AuditEntry[]> {
    await this.queue;
    return readAuditFiles(await this.files(), query, stats);
  }

  async close(): Promise<void> {
    await this.queue;
    await this.fh.close();
  }
}
