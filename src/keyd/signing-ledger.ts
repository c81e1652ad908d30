import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { AuditEntry } from './audit.js';
import { writeFileDurably } from '../lib/durable-file.js';
import { dataRecord } from '../lib/data-record.js';
import type { KeydMetrics } from './metrics.js';

/** Key column for a refusal that named no existing key (bounded: never the caller's string). */
export const NO_KEY = '(none)';

export interface SignCounts {
  signatures: number;
  refusals: number;
}

/** `admin stats`: per client, totals and per key (null-prototype records: a client or key may be named `constructor`). */
export type SigningStats = Record<string, SignCounts & { keys: Record<string, SignCounts> }>;

type WindowSlot = { client: string; keyRef: string } & SignCounts;

interface TotalsFile {
  since: string;
  clients: Record<string, Record<string, SignCounts>>;
}

/**
 * The totals in memory: client → key reference → counts, in Maps. Client names are the
 * operator's principal names (`__proto__` and `constructor` are valid ones) or certificate
 * subjects, so they are never used as keys of an ordinary object: `clients['__proto__'] ??= {}`
 * returned Object.prototype and the counts were written onto it (every object then had them),
 * and `constructor` put them on the Object function; neither reached the totals file.
 */
interface Totals {
  since: string;
  clients: Map<string, Map<string, SignCounts>>;
}

/** From the file's JSON (JSON.parse makes `__proto__` an own property, so Object.entries lists it). */
function totalsFromFile(file: TotalsFile): Totals {
  const clients = new Map<string, Map<string, SignCounts>>();
  for (const [client, keys] of Object.entries(file.clients)) {
    clients.set(client, new Map(Object.entries(keys).map(([keyRef, c]) => [keyRef, { signatures: c.signatures, refusals: c.refusals }])));
  }
  return { since: file.since, clients };
}

/** The file's JSON, in the same format: null-prototype records, so every name is written as an own key. */
function totalsToFile(totals: Totals): TotalsFile {
  return { since: totals.since, clients: dataRecord([...totals.clients].map(([client, keys]) => [client, dataRecord(keys)])) };
}

/**
 * A totals file as keyd writes it. Anything else (a hand edit, a file of another program) is
 * not used: a client or count of the wrong type made `admin stats` throw, or the window's
 * fold throw (which stopped every later flush), and an array of clients was written back
 * as `[]`, losing every count at the next restart.
 */
function isTotalsFile(value: unknown): value is TotalsFile {
  const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  const isCount = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0;
  if (!isRecord(value) || typeof value.since !== 'string' || !isRecord(value.clients)) return false;
  return Object.values(value.clients).every((keys) => isRecord(keys) && Object.values(keys).every((c) => isRecord(c) && isCount(c.signatures) && isCount(c.refusals)));
}

/**
 * Signing, audited durably without a line per signature: counts per (client, key) are
 * kept for one window (a minute by default), then written as one audit entry per pair
 * ("op": "sign", with the counts) and folded into totals that are rewritten atomically
 * (`signing-totals.json`, temp file + fsync + rename). `admin stats` reads the totals,
 * which survive restarts; a crash loses at most the current window's counts.
 */
export class SigningLedger {
  /** The current window's counts: client → key reference → counts (two lookups, no key string built per request). */
  private window = new Map<string, Map<string, WindowSlot>>();
  /** The same slots in the order they were first used (audit entries keep that order). */
  private windowRows: WindowSlot[] = [];
  private windowStart: number;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  /** Totals hold counts that are not on disk yet (a window whose write failed). */
  private unsaved = false;

  private constructor(
    private readonly totalsPath: string,
    private totals: Totals,
    private readonly audit: (entry: Omit<AuditEntry, 'time'>) => Promise<void>,
    private readonly metrics: KeydMetrics | undefined,
    private readonly logger: Logger | undefined,
    private readonly intervalMs: number,
    private readonly now: () => number,
  ) {
    this.windowStart = now();
  }

  static async open(opts: {
    totalsPath: string;
    audit: (entry: Omit<AuditEntry, 'time'>) => Promise<void>;
    metrics?: KeydMetrics;
    logger?: Logger;
    intervalMs: number;
    now?: () => number;
  }): Promise<SigningLedger> {
    const now = opts.now ?? Date.now;
    let totals: Totals = { since: new Date(now()).toISOString(), clients: new Map() };
    try {
      const parsed: unknown = JSON.parse(await readFile(opts.totalsPath, 'utf8'));
      if (isTotalsFile(parsed)) totals = totalsFromFile(parsed);
      else opts.logger?.error(`signing totals ${opts.totalsPath} is not a totals file (client → key → non-negative integer counts); counting from zero`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') opts.logger?.error({ err: (err as Error).message }, `signing totals ${opts.totalsPath} unreadable; counting from zero`);
    }
    return new SigningLedger(opts.totalsPath, totals, opts.audit, opts.metrics, opts.logger, opts.intervalMs, now);
  }

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** `timing`: the key's back-end and when the signature was accepted (performance.now(), ms), for metrics. */
  signed(client: string, keyRef: string, timing?: { backend: string; startedAt: number }): void {
    this.slot(client, keyRef).signatures++;
    if (!this.metrics) return;
    this.metrics.countSignature(client, keyRef);
    if (timing) this.metrics.signedWith(timing.backend, (performance.now() - timing.startedAt) / 1000);
  }

  /**
   * `keyRef` only when it names an existing key (else NO_KEY), so the table stays bounded;
   * `backend` when the key's back-end itself failed to sign.
   */
  refused(client: string, keyRef: string | undefined, code: string, backend?: string): void {
    this.slot(client, keyRef ?? NO_KEY).refusals++;
    this.metrics?.signRefusals.inc({ client, key: keyRef ?? NO_KEY, code });
    if (backend !== undefined) this.metrics?.backendFailed(backend);
  }

  /** Totals since `since` (persisted windows plus the current one). */
  snapshot(): { since: string; clients: SigningStats } {
    const clients = new Map<string, SignCounts & { keys: Map<string, SignCounts> }>();
    const add = (client: string, keyRef: string, c: SignCounts) => {
      let row = clients.get(client);
      if (!row) clients.set(client, (row = { signatures: 0, refusals: 0, keys: new Map() }));
      let k = row.keys.get(keyRef);
      if (!k) row.keys.set(keyRef, (k = { signatures: 0, refusals: 0 }));
      row.signatures += c.signatures;
      row.refusals += c.refusals;
      k.signatures += c.signatures;
      k.refusals += c.refusals;
    };
    for (const [client, keys] of this.totals.clients) for (const [keyRef, c] of keys) add(client, keyRef, c);
    for (const w of this.windowRows) add(w.client, w.keyRef, w);
    const stats: SigningStats = dataRecord([...clients].map(([client, row]) => [client, { signatures: row.signatures, refusals: row.refusals, keys: dataRecord(row.keys) }]));
    return { since: this.totals.since, clients: stats };
  }

  /** Ends the window: one audit entry per (client, key), then the totals file. Serialised; never rejects (flushWindow). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(() => this.flushWindow());
    return this.flushing;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private slot(client: string, keyRef: string): WindowSlot {
    let keys = this.window.get(client);
    if (!keys) this.window.set(client, (keys = new Map()));
    let s = keys.get(keyRef);
    if (!s) {
      keys.set(keyRef, (s = { client, keyRef, signatures: 0, refusals: 0 }));
      this.windowRows.push(s);
    }
    return s;
  }

  /**
   * One window, never rejecting: `flushing` chains the windows, and a rejection would leave
   * it rejected, so every later flush (and its counts) would be skipped, and the timer's
   * `void this.flush()` would be an unhandled rejection, which ends a Node 20 process. A
   * window that fails is counted and logged; its counts are already in the totals, which
   * the next flush writes (even one with an empty window).
   */
  private async flushWindow(): Promise<void> {
    try {
      await this.writeWindow();
    } catch (err) {
      this.windowFailed(err);
    }
  }

  private windowFailed(err: unknown): void {
    this.metrics?.ledgerFailures.inc();
    try {
      // The message only (a path, an errno): not whatever else a thrown object carries.
      this.logger?.error({ err: err instanceof Error ? err.message : `a thrown ${typeof err}` }, 'could not persist signing counts (the totals are written with the next window)');
    } catch {
      // A logger that cannot write (stderr closed) has nowhere to say so; the metric counted it.
    }
  }

  private async writeWindow(): Promise<void> {
    const rows = this.windowRows;
    const from = new Date(this.windowStart).toISOString();
    this.window = new Map();
    this.windowRows = [];
    this.windowStart = this.now();
    if (rows.length === 0 && !this.unsaved) return;
    const to = new Date(this.windowStart).toISOString();
    for (const r of rows) {
      let keys = this.totals.clients.get(r.client);
      if (!keys) this.totals.clients.set(r.client, (keys = new Map()));
      let t = keys.get(r.keyRef);
      if (!t) keys.set(r.keyRef, (t = { signatures: 0, refusals: 0 }));
      t.signatures += r.signatures;
      t.refusals += r.refusals;
    }
    this.unsaved = true;
    for (const r of rows) {
      await this.audit({
        op: 'sign',
        caller: { kind: 'client', id: r.client },
        ...(r.keyRef !== NO_KEY ? { keyRef: r.keyRef } : {}),
        ok: r.refusals === 0,
        message: `${r.signatures} signature(s), ${r.refusals} refusal(s) from ${from} to ${to}`,
        count: r.signatures,
        refusals: r.refusals,
      });
    }
    await writeFileDurably(this.totalsPath, Buffer.from(JSON.stringify(totalsToFile(this.totals))));
    this.unsaved = false;
  }
}
