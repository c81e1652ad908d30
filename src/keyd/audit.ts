import { open, readFile, type FileHandle } from 'node:fs/promises';
import { AuditChain, type ChainHead } from './root/audit-chain.js';

export interface AdminCaller {
  kind: 'local' | 'operator';
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
    private readonly fh: FileHandle,
    private readonly chain: AuditChain,
  ) {
    this.durableHead = chain.head;
  }

  /** Head after the last line that reached the disk: what a manifest commit may record. */
  private durableHead: ChainHead;

  /** `head`: where the chain continues (root/audit-chain.ts verifyAuditLog's answer). */
  static async open(path: string, head?: ChainHead): Promise<AuditLog> {
    return new AuditLog(path, await open(path, 'a', 0o600), new AuditChain(head));
  }

  /** Head of the hash chain after the last appended line. */
  get head(): ChainHead {
    return { ...this.durableHead };
  }

  append(entry: Omit<AuditEntry, 'time'>): Promise<void> {
    const done = this.queue.then(async () => {
      const line = this.chain.line({ time: new Date().toISOString(), ...entry });
      const head = this.chain.head;
      await this.fh.write(line);
      await this.fh.datasync();
      this.durableHead = head;
    });
    this.queue = done.catch(() => {});
    return done;
  }

  async read(query: AuditQuery = {}): Promise<AuditEntry[]> {
    await this.queue;
    const limit = Math.max(1, Math.min(query.limit ?? 100, 100_000));
    const lines = (await readFile(this.path, 'utf8')).split('\n').filter((l) => l.length > 0);
    const entries: AuditEntry[] = [];
    for (const line of lines) {
      try {
        const e = JSON.parse(line) as AuditEntry;
        if (!query.since || e.time >= query.since) entries.push(e);
      } catch {
        // A torn last line after a crash: skip it rather than fail the whole query.
      }
    }
    return entries.slice(-limit);
  }

  async close(): Promise<void> {
    await this.queue;
    await this.fh.close();
  }
}

/** Per-client signing counters (since keyd started), for `delegator admin stats`. */
export class SigningCounters {
  private readonly byClient = new Map<string, { signatures: number; refusals: number }>();

  private slot(client: string) {
    let s = this.byClient.get(client);
    if (!s) this.byClient.set(client, (s = { signatures: 0, refusals: 0 }));
    return s;
  }

  signed(client: string): void {
    this.slot(client).signatures++;
  }

  refused(client: string): void {
    this.slot(client).refusals++;
  }

  snapshot(): Record<string, { signatures: number; refusals: number }> {
    return Object.fromEntries([...this.byClient].map(([k, v]) => [k, { ...v }]));
  }
}
