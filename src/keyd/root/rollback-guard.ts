import { KeydError } from '../errors.js';
import { crashPoint } from './crash-point.js';
import { emptyManifest, readManifest, writeManifest, type ManifestState } from './manifest-file.js';
import type { RootCounter } from './root-key.js';

/**
 * Commits store changes to the manifest and, with a TPM, to the NV counter.
 *
 * A change is: (1) the record file written (or removed), (2) the manifest written with
 * counter = C+1, (3) the counter incremented to C+1, (4) acknowledged. At open:
 *   manifest == counter      the last change completed;
 *   manifest == counter + 1  a crash between (2) and (3): the change is finished now
 *                            by incrementing the counter (never bricked);
 *   manifest <  counter      the data directory is older than the TPM says: refused;
 *   manifest >  counter + 1  the manifest is not from this TPM's history: refused.
 * A crash between (1) and (2) leaves a record newer than the manifest; it authenticates
 * under the seal key, so only keyd wrote it, and it is adopted (SealedStore.open).
 *
 * Without a counter the manifest still refuses a single record older than it, a deleted
 * record brought back, or a rolled-back secret; a copy of the *whole* data directory
 * (manifest included) is self-consistent and cannot be told from the current one.
 */
export type RecordKind = 'key' | 'secret';

export type RecordStatus = 'current' | 'newer' | 'unknown';

export class RollbackGuard {
  private auditHead: () => { head: string; entries: number } | null = () => this.state.audit;
  /** Messages about what `open` recovered, for keyd's start-up log. */
  readonly recovered: string[] = [];
  /** The manifest on disk is one change ahead of the counter: a commit's increment failed. */
  private incrementPending = false;

  private constructor(
    private readonly dataDir: string,
    private readonly macKey: Buffer,
    private readonly counter: RootCounter | undefined,
    private state: ManifestState,
  ) {}

  /**
   * Opens the manifest. `fresh`: the store was just created (or never got past creation),
   * so any manifest found is left over from an interrupted initialisation and replaced.
   * `legacy`: a store from before manifests, which gets one now.
   */
  static async open(dataDir: string, macKey: Buffer, counter: RootCounter | undefined, mode: 'fresh' | 'legacy' | 'existing'): Promise<RollbackGuard> {
    if (mode === 'legacy' && counter && (await counter.readOptional()) !== undefined) {
      // A store from before manifests never had a counter, yet this TPM's is in use: either
      // this store's own upgrade stopped after writing its manifest (store.json is rewritten
      // last), or this is an older copy of a store that has been upgraded since — binding
      // that copy to the counter's current value would let a whole-store rollback through.
      const state = await readManifest(dataDir, macKey);
      if (!state || state.counter === null) {
        throw new KeydError(
          'KEYD_STORE_ROLLED_BACK',
          `${dataDir} is a store from before manifests (store.json format 1), but ${counter.description} is already in use on this TPM: an older copy of a store upgraded since, or another store's counter; refusing to open it (a store of its own needs counter=0xINDEX of its own)`,
        );
      }
      const guard = new RollbackGuard(dataDir, macKey, counter, state);
      await guard.checkCounter();
      return guard;
    }
    if (mode !== 'existing') {
      const state = emptyManifest();
      if (counter) {
        state.counter = (await counter.create()).toString();
        state.counterDescription = counter.description;
      }
      await writeManifest(dataDir, macKey, state);
      return new RollbackGuard(dataDir, macKey, counter, state);
    }
    const state = await readManifest(dataDir, macKey);
    if (!state) {
      throw new KeydError(
        'KEYD_MANIFEST_MISSING',
        `${dataDir} has no manifest.json although its store.json says it was created with one: the manifest was removed; refusing to open a store whose history cannot be checked`,
      );
    }
    const guard = new RollbackGuard(dataDir, macKey, counter, state);
    await guard.checkCounter();
    return guard;
  }

  private async checkCounter(): Promise<void> {
    const counter = this.counter;
    if (!counter) {
      // A store bound to a counter, started without one (tpm:counter=none): opening it would
      // switch its whole-store rollback check off without a word — an older copy of the data
      // directory would open. Refused like a missing counter: no override (docs/KEYD.md).
      if (this.state.counter !== null) {
        throw new KeydError(
          'KEYD_COUNTER_MISSING',
          `the manifest of ${this.dataDir} is bound to ${this.state.counterDescription ?? 'a TPM NV counter'} at ${this.state.counter}, but keyd was started without a counter (counter=none): that would turn off the store's rollback check; start keyd with the counter the store is bound to`,
        );
      }
      return;
    }
    if (this.state.counter === null) {
      // A store first run with counter=none, now with a counter: bind it from here on.
      this.state.counter = (await counter.create()).toString();
      this.state.counterDescription = counter.description;
      await writeManifest(this.dataDir, this.macKey, this.state);
      this.recovered.push(`manifest bound to ${counter.description} from now on`);
      return;
    }
    // keyd started with another counter index than the one the store is bound to: the checks
    // below would compare the store with a counter that is not its own (and could even
    // increment it to "complete" a change); each refusal would name only the configured one.
    const bound = this.state.counterDescription;
    if (bound && bound !== counter.description) {
      throw new KeydError(
        'KEYD_COUNTER_MISSING',
        `the manifest of ${this.dataDir} is bound to ${bound}, but keyd was started with ${counter.description}: start keyd with the counter the store is bound to (counter=)`,
      );
    }
    const committed = BigInt(this.state.counter);
    const current = await counter.readOptional();
    if (current === undefined) {
      throw new KeydError(
        'KEYD_COUNTER_MISSING',
        `the manifest of ${this.dataDir} is bound to ${counter.description} at ${committed}, which this TPM does not have: the counter was undefined, or this is another TPM`,
      );
    }
    if (committed === current) return;
    if (committed === current + 1n) {
      // Crash between writing the manifest and incrementing the counter: finish the change.
      const now = await counter.increment();
      if (now !== committed) {
        throw new KeydError('KEYD_STORE_ROLLED_BACK', `${counter.description} moved to ${now} while completing change ${committed}: another writer uses this counter`);
      }
      this.recovered.push(`completed an interrupted change: ${counter.description} incremented to ${committed} to match the manifest`);
      return;
    }
    if (committed < current) {
      throw new KeydError(
        'KEYD_STORE_ROLLED_BACK',
        `the data directory ${this.dataDir} was rolled back: its manifest commits change ${committed} of ${counter.description}, but the counter is at ${current} (${current - committed} committed change(s) missing); refusing to serve an older store`,
      );
    }
    throw new KeydError(
      'KEYD_STORE_ROLLED_BACK',
      `the manifest of ${this.dataDir} commits change ${committed} of ${counter.description}, but the counter is only at ${current}: this store's history is not this TPM's; refusing to open it`,
    );
  }

  get hasCounter(): boolean {
    return this.counter !== undefined;
  }

  get counterDescription(): string | undefined {
    return this.counter?.description;
  }

  /** The audit head recorded by the last commit (checked against the audit log at start). */
  get committedAuditHead(): { head: string; entries: number } | null {
    return this.state.audit;
  }

  get sequence(): number {
    return this.state.sequence;
  }

  /** Where each commit reads the audit log's head from (keyd's AuditLog once it is open). */
  setAuditHeadSource(source: () => { head: string; entries: number } | null): void {
    this.auditHead = source;
  }

  /** The version the manifest holds for a record, or its tombstone. */
  expected(kind: RecordKind, id: string): { version?: number; deleted?: number } {
    const live = kind === 'key' ? this.state.keys : this.state.secrets;
    const dead = kind === 'key' ? this.state.deletedKeys : this.state.deletedSecrets;
    return { ...(live[id] !== undefined ? { version: live[id] } : {}), ...(dead[id] !== undefined ? { deleted: dead[id] } : {}) };
  }

  /** Ids the manifest lists as present. */
  listed(kind: RecordKind): string[] {
    return Object.keys(kind === 'key' ? this.state.keys : this.state.secrets);
  }

  /**
   * Checks a record that authenticated under the seal key against the manifest. Throws
   * KEYD_RECORD_DELETED / KEYD_RECORD_ROLLED_BACK naming it; returns 'newer' or 'unknown'
   * for a write that was never committed (a crash before the manifest), 'current' else.
   */
  check(kind: RecordKind, id: string, version: number, what: string): RecordStatus {
    const { version: expected, deleted } = this.expected(kind, id);
    if (deleted !== undefined) {
      throw new KeydError(
        'KEYD_RECORD_DELETED',
        `${what} was deleted (its tombstone in the manifest says version ${deleted}); the copy on disk (version ${version}) was restored and is not served`,
      );
    }
    if (expected === undefined) return 'unknown';
    if (version < expected) {
      throw new KeydError(
        'KEYD_RECORD_ROLLED_BACK',
        `${what} is version ${version} but the manifest says version ${expected}: an older copy was restored; not served`,
      );
    }
    return version > expected ? 'newer' : 'current';
  }

  /**
   * Records a change: manifest with the next counter value, then the counter (see class
   * comment). When the previous commit's increment failed (the TPM was busy or gone),
   * that increment is finished first: writing yet another manifest would leave it two
   * ahead of the counter, which no start could tell from a foreign store.
   */
  async commit(change: (state: ManifestState) => void): Promise<void> {
    if (this.incrementPending) await this.finishPendingIncrement();
    const next: ManifestState = structuredClone(this.state);
    change(next);
    next.sequence = this.state.sequence + 1;
    next.audit = this.auditHead();
    next.committedAt = new Date().toISOString();
    if (this.counter) {
      next.counter = (BigInt(this.state.counter ?? '0') + 1n).toString();
      next.counterDescription = this.counter.description;
    }
    await writeManifest(this.dataDir, this.macKey, next);
    this.state = next;
    crashPoint('manifest-written');
    if (this.counter) {
      this.incrementPending = true;
      const value = await this.counter.increment();
      this.incrementPending = false;
      if (value.toString() !== next.counter) {
        throw new KeydError(
          'KEYD_STORE_ROLLED_BACK',
          `${this.counter.description} is at ${value} after committing change ${next.counter}: another writer uses this counter; stop keyd and check the TPM`,
        );
      }
      crashPoint('counter-incremented');
    }
  }

  /** The counter to the manifest's value, when it is one behind (a failed increment); read first, so a retry never overshoots. */
  private async finishPendingIncrement(): Promise<void> {
    const counter = this.counter!;
    const committed = BigInt(this.state.counter!);
    let current = await counter.read();
    if (current === committed - 1n) current = await counter.increment();
    if (current !== committed) {
      throw new KeydError('KEYD_STORE_ROLLED_BACK', `${counter.description} is at ${current} while completing change ${committed}: another writer uses this counter; stop keyd and check the TPM`);
    }
    this.incrementPending = false;
  }

  static markKey(state: ManifestState, id: string, version: number): void {
    state.keys[id] = version;
    delete state.deletedKeys[id];
  }

  static markKeyDeleted(state: ManifestState, id: string): void {
    const last = state.keys[id];
    delete state.keys[id];
    state.deletedKeys[id] = last ?? 0;
  }

  static markSecret(state: ManifestState, name: string, version: number): void {
    state.secrets[name] = version;
    delete state.deletedSecrets[name];
  }

  static markSecretDeleted(state: ManifestState, name: string): void {
    const last = state.secrets[name];
    delete state.secrets[name];
    state.deletedSecrets[name] = last ?? 0;
  }
}
