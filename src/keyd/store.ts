import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { lstat, mkdir, readFile, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Reader } from '../lib/reader.js';
import { Writer } from '../lib/writer.js';
import { KeydError } from './errors.js';
import { SoftwareKeyHandle, type KeyHandle, type KeyReference, type ReferenceResolver } from './key-handle.js';
import { removeLeftoverTemporaries, syncDirectory, unlinkDurably, writeFileDurably } from '../lib/durable-file.js';
import { readRegularFileBounded } from '../lib/bounded-file.js';
import { crashPoint } from './root/crash-point.js';
import { loadRoot, type LoadedRoot } from './root/root-key.js';
import { RollbackGuard, type RecordKind } from './root/rollback-guard.js';
import type { ManifestState } from './root/manifest-file.js';

/**
 * keyd's sealed store: one file per key (keys/ID.rec) and per keyd secret
 * (secrets/NAME.rec), each sealed with AES-256-GCM under a key derived by HKDF from
 * the machine root key (32 random bytes in a file outside the data directory) and
 * /etc/machine-id. The record's kind, id, version, sequence number and names are in
 * the clear header, which is the GCM additional data: a record renamed, swapped,
 * or edited anywhere fails authentication.
 *
 * store.json (not secret) holds the HKDF salt and two checks that let us say *why*
 * a data directory cannot be opened: another root key, or another machine.
 *
 * manifest.json (root/manifest-file.ts) records every record's version and every
 * delete; every change commits to it (and to the TPM NV counter when the root key is in
 * a TPM, root/rollback-guard.ts), and every read checks against it: an older record, a
 * deleted one brought back, or an older store is refused and named.
 */

export interface StoreOptions {
  /** Data directory (created 0700 when missing). */
  dataDir: string;
  /** Root key file; created (32 random bytes, mode 0600) on first run. Must be outside dataDir. Ignored when `root` is given. */
  rootKeyPath?: string;
  /** The root key already loaded (root/root-key.ts: file or TPM). */
  root?: LoadedRoot;
  /** Overridable for tests; default /etc/machine-id. */
  machineIdPath?: string;
}

/**
 * A key as stored. Its private half is behind a KeyHandle: a software key (sealed here
 * as PKCS#8) or a reference to a key in a token (no key bytes in the record).
 */
export interface StoredKey {
  id: string;
  /** Grows on every rewrite of this record (in the AAD). */
  version: number;
  /** Store-wide sequence number of the put that created it: the newest put owns a name. */
  seq: number;
  names: string[];
  key: KeyHandle;
  chain: Uint8Array[];
  addedAt: string;
  updatedAt: string;
  /** Subject given to `generate` (kept for KeyInfo while no chain is set). */
  subject?: string;
}

export type NewKey = Omit<StoredKey, 'version' | 'seq' | 'addedAt' | 'updatedAt'> & { seq?: number; addedAt?: string };

export interface LoadResult {
  keys: StoredKey[];
  /** Records that could not be opened (tampered, unreadable): each error names its record. */
  failures: KeydError[];
}

const RECORD_MAGIC = Buffer.from('KEYDREC1', 'latin1');
const KIND_KEY = 1;
const KIND_SECRET = 2;
const NONCE_LENGTH = 12;
const TAG_LENGTH = 16;
/** Format 2: the store has a manifest (its root key check covers the format, so it cannot be edited back to 1). */
const STORE_FORMAT = 2;
const RECORD_ID = /^[a-z0-9][a-z0-9._-]{0,99}$/;
/**
 * Largest record file read: a record holds what one admin request carried (at most
 * protocol.ts MAX_PAYLOAD, 1 MiB: key and chain) plus its header (≤ 100 names), or a
 * keyd secret. A larger file in keys/ or secrets/ is not keyd's: refused unread.
 */
const MAX_RECORD_BYTES = 16 * 1024 * 1024;
/** store.json holds a salt, two checks and a date. */
const MAX_STORE_JSON_BYTES = 64 * 1024;

interface StoreMeta {
  format: number;
  salt: string;
  rootKeyCheck: string;
  machineCheck: string;
  createdAt: string;
}

interface RecordHeader {
  kind: number;
  id: string;
  version: number;
  seq: number;
  names: string[];
}

export class SealedStore {
  private readonly keysDir: string;
  private readonly secretsDir: string;
  private readonly versions = new Map<string, number>();
  private lastSeq = 0;
  /** Records refused at open (rolled back, deleted, tampered): named, never served. */
  readonly refused: KeydError[] = [];
  private readonly refusedIds = new Set<string>();
  /**
   * Changes run one at a time: each reads the manifest state, writes its record and
   * commits the next manifest (and counter value). The admin service serialises its own
   * calls, but provisioning saves its nonce store beside them; two commits built from the
   * same manifest state would lose one change, and with a TPM counter both would claim the
   * same counter value, leaving a manifest one behind the counter that no start opens.
   */
  private changes: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly dataDir: string,
    private readonly sealKey: Buffer,
    readonly guard: RollbackGuard,
    /** What the root key is bound to, in one line (logged at start). */
    readonly binding: string,
  ) {
    this.keysDir = join(dataDir, 'keys');
    this.secretsDir = join(dataDir, 'secrets');
  }

  /**
   * Opens (or initialises) the store. Throws KEYD_STORE_OTHER_ROOT_KEY /
   * KEYD_STORE_OTHER_MACHINE when the data directory was sealed elsewhere.
   */
  static async open(opts: StoreOptions): Promise<SealedStore> {
    const dataDir = resolve(opts.dataDir);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    if (!opts.root && !opts.rootKeyPath) throw new KeydError('KEYD_CONFIG', 'the store needs a root key (a file or tpm)');
    const root = opts.root ?? (await loadRoot({ kind: 'file', path: opts.rootKeyPath! }, dataDir));
    const rootKey = root.rootKey;
    const machineIdPath = opts.machineIdPath ?? '/etc/machine-id';
    const machineId = await readMachineId(machineIdPath);
    const { meta, mode } = await loadOrCreateMeta(dataDir, rootKey, machineId, root.location, machineIdPath);
    const salt = Buffer.from(meta.salt, 'base64');
    // RFC 5869: the root key is the IKM, the per-store salt the salt; machine-id goes in
    // `info` so the same root key on another machine derives a different seal key.
    const info = Buffer.concat([Buffer.from('keyd sealed store v1\0', 'latin1'), machineId]);
    const sealKey = Buffer.from(hkdfSync('sha256', rootKey, salt, info, 32));
    const manifestKey = Buffer.from(hkdfSync('sha256', sealKey, salt, 'keyd manifest mac v1', 32));
    rootKey.fill(0);
    const keysDir = join(dataDir, 'keys');
    const secretsDir = join(dataDir, 'secrets');
    // The data directory too: a crash while writing manifest.json, store.json or
    // signing-totals.json leaves its temporary there.
    for (const dir of [dataDir, keysDir, secretsDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await removeLeftoverTemporaries(dir);
    }
    const guard = await RollbackGuard.open(dataDir, manifestKey, root.counter, mode);
    if (mode !== 'existing') await writeMeta(dataDir, meta);
    const store = new SealedStore(dataDir, sealKey, guard, root.binding);
    await store.reconcile();
    await syncDirectory(dataDir);
    return store;
  }

  /**
   * Compares every record on disk with the manifest: older or deleted records are refused
   * (keys one by one, keyd's own secrets by refusing to open), records the manifest lacks
   * or has older (a crash before the commit) are adopted, records the manifest lists but
   * the disk lacks (a crash in a delete) are recorded as deleted; then one commit.
   */
  private async reconcile(): Promise<void> {
    const adopt: { kind: RecordKind; id: string; version: number }[] = [];
    const missing: { kind: RecordKind; id: string }[] = [];
    for (const [kind, dir, recordKind] of [['key', this.keysDir, KIND_KEY], ['secret', this.secretsDir, KIND_SECRET]] as const) {
      const present = new Set<string>();
      for (const file of (await readdir(dir)).sort()) {
        if (!file.endsWith('.rec') || file.startsWith('.')) continue;
        const id = file.slice(0, -4);
        present.add(id);
        const what = kind === 'key' ? `key record ${id}` : `secret ${id}`;
        let header: RecordHeader;
        try {
          const bytes = await readRecordFile(join(dir, file), what);
          const opened = this.open(bytes, recordKind, id, what);
          opened.plaintext.fill(0);
          header = opened.header;
        } catch (err) {
          if (kind === 'secret') throw err;
          continue; // loadKeys reports a tampered key record by name
        }
        const named = header.names.length > 0 ? `${what} (names ${header.names.join(', ')})` : what;
        try {
          const status = this.guard.check(kind, id, header.version, named);
          if (status !== 'current') adopt.push({ kind, id, version: header.version });
          this.versions.set(kind === 'key' ? id : `secret:${id}`, header.version);
          if (kind === 'key') this.lastSeq = Math.max(this.lastSeq, header.seq);
        } catch (err) {
          // keyd's own secrets (the provisioning key, the nonce store) rolled back: do not start.
          if (kind === 'secret') throw err;
          this.refused.push(err as KeydError);
          this.refusedIds.add(id);
        }
      }
      for (const id of this.guard.listed(kind)) if (!present.has(id)) missing.push({ kind, id });
    }
    if (adopt.length === 0 && missing.length === 0) return;
    await this.guard.commit((state) => {
      for (const a of adopt) (a.kind === 'key' ? RollbackGuard.markKey : RollbackGuard.markSecret)(state, a.id, a.version);
      for (const m of missing) (m.kind === 'key' ? RollbackGuard.markKeyDeleted : RollbackGuard.markSecretDeleted)(state, m.id);
    });
    for (const a of adopt) this.guard.recovered.push(`adopted ${a.kind} ${a.id} version ${a.version}, written before an interrupted commit`);
    for (const m of missing) this.guard.recovered.push(`${m.kind} ${m.id} is gone from disk (an interrupted delete): recorded as deleted`);
  }

  private exclusive<T>(change: () => Promise<T>): Promise<T> {
    const run = this.changes.then(change);
    this.changes = run.catch(() => {});
    return run;
  }

  /** Next version of a record: above anything the manifest ever held for it (live or tombstone). */
  private nextVersion(kind: RecordKind, id: string, known: number): number {
    const { version, deleted } = this.guard.expected(kind, id);
    return Math.max(known, version ?? 0, deleted ?? 0) + 1;
  }

  /** A fresh random key reference. */
  static newKeyId(): string {
    return `k${randomBytes(10).toString('hex')}`;
  }

  /**
   * Reads every key record. Bad records are reported, not fatal: the others are still
   * served. `resolveReference` turns a record that references a token key into its handle.
   */
  async loadKeys(resolveReference: ReferenceResolver = unresolvable): Promise<LoadResult> {
    const keys: StoredKey[] = [];
    const failures: KeydError[] = [];
    failures.push(...this.refused);
    for (const file of (await readdir(this.keysDir)).sort()) {
      if (!file.endsWith('.rec') || file.startsWith('.')) continue;
      const id = file.slice(0, -4);
      if (this.refusedIds.has(id)) continue;
      try {
        const key = await this.readKey(id, resolveReference);
        if (key) keys.push(key);
      } catch (err) {
        failures.push(err instanceof KeydError ? err : new KeydError('KEYD_STORE_IO', `record ${id}: ${(err as Error).message}`));
      }
    }
    return { keys, failures };
  }

  /** Writes (creates or replaces) a key record durably; returns the record as stored. */
  putKey(key: NewKey): Promise<StoredKey> {
    return this.exclusive(() => this.writeKey(key));
  }

  private async writeKey(key: NewKey): Promise<StoredKey> {
    checkRecordId(key.id);
    const now = new Date().toISOString();
    const version = this.nextVersion('key', key.id, this.versions.get(key.id) ?? 0);
    const seq = key.seq ?? ++this.lastSeq;
    this.lastSeq = Math.max(this.lastSeq, seq);
    const stored: StoredKey = {
      ...key,
      version,
      seq,
      addedAt: key.addedAt ?? now,
      updatedAt: now,
    };
    // The key field holds PKCS#8 for a software key, or (keyForm "reference") the JSON
    // reference to a token object: then the record holds no key bytes at all.
    const form = key.key.storedForm();
    const keyBytes = form.kind === 'pkcs8' ? form.der : Buffer.from(JSON.stringify(form.reference), 'utf8');
    const meta = Buffer.from(
      JSON.stringify({ addedAt: stored.addedAt, updatedAt: stored.updatedAt, subject: stored.subject, ...(form.kind === 'reference' ? { keyForm: 'reference' } : {}) }),
      'utf8',
    );
    const w = new Writer(keyBytes.length + 4096);
    w.opaque(3, meta).opaque(3, keyBytes);
    w.vec(3, () => key.chain.forEach((c) => w.opaque(3, c)));
    const plaintext = w.finish();
    keyBytes.fill(0);
    const header: RecordHeader = { kind: KIND_KEY, id: key.id, version, seq, names: key.names };
    const sealed = this.seal(header, plaintext);
    plaintext.fill(0);
    await this.changeRecord(join(this.keysDir, `${key.id}.rec`), `key ${key.id}`, sealed, (state) => RollbackGuard.markKey(state, key.id, version));
    this.versions.set(key.id, version);
    this.refusedIds.delete(key.id);
    return stored;
  }

  deleteKey(id: string): Promise<void> {
    return this.exclusive(async () => {
      checkRecordId(id);
      await this.changeRecord(join(this.keysDir, `${id}.rec`), `key ${id}`, undefined, (state) => RollbackGuard.markKeyDeleted(state, id));
      this.versions.delete(id);
    });
  }

  /** keyd's own secrets (e.g. the provisioning key pair), sealed like keys. */
  putSecret(name: string, bytes: Uint8Array): Promise<void> {
    return this.exclusive(async () => {
      checkRecordId(name);
      const version = this.nextVersion('secret', name, this.versions.get(`secret:${name}`) ?? (await this.secretVersion(name)));
      const sealed = this.seal({ kind: KIND_SECRET, id: name, version, seq: 0, names: [] }, bytes);
      await this.changeRecord(join(this.secretsDir, `${name}.rec`), `secret ${name}`, sealed, (state) => RollbackGuard.markSecret(state, name, version));
      this.versions.set(`secret:${name}`, version);
    });
  }

  async getSecret(name: string): Promise<Buffer | undefined> {
    checkRecordId(name);
    const bytes = await readOptional(join(this.secretsDir, `${name}.rec`), `secret ${name}`);
    if (!bytes) return undefined;
    const { header, plaintext } = this.open(bytes, KIND_SECRET, name, `secret ${name}`);
    try {
      // On every read, not only at open: a record swapped while keyd runs is refused too.
      if (this.guard.check('secret', name, header.version, `secret ${name}`) !== 'current') {
        throw new KeydError('KEYD_RECORD_ROLLED_BACK', `secret ${name} (version ${header.version}) is not the version the manifest commits; not used`);
      }
    } catch (err) {
      plaintext.fill(0);
      throw err;
    }
    this.versions.set(`secret:${name}`, header.version);
    return plaintext;
  }

  deleteSecret(name: string): Promise<void> {
    return this.exclusive(async () => {
      checkRecordId(name);
      await this.changeRecord(join(this.secretsDir, `${name}.rec`), `secret ${name}`, undefined, (state) => RollbackGuard.markSecretDeleted(state, name));
      this.versions.delete(`secret:${name}`);
    });
  }

  /**
   * One change: the record file written (`next`) or removed (undefined), then the manifest
   * committed. A start adopts a record the manifest lacks, and records a missing one as
   * deleted, because a crash between the two steps leaves exactly that (docs/KEYD.md). A
   * commit that fails while keyd runs (the manifest cannot be written: disk full, I/O; the
   * TPM counter cannot finish an earlier increment) must not leave that state behind: the
   * change is reported failed, so the file is put back as it was and the next start finds
   * nothing to adopt. Once the manifest is written (its sequence moved) the change stands.
   */
  private async changeRecord(path: string, what: string, next: Buffer | undefined, mark: (state: ManifestState) => void): Promise<void> {
    // The file as it is, to put back; null when it cannot be read (damaged: then it is not put back).
    const previous = await readOptional(path, what).catch(() => null);
    if (next) await writeFileDurably(path, next);
    else await unlinkDurably(path);
    crashPoint('record-written');
    const sequence = this.guard.sequence;
    try {
      await this.guard.commit(mark);
    } catch (err) {
      if (this.guard.sequence !== sequence || previous === null) throw err;
      try {
        if (previous) await writeFileDurably(path, previous);
        else await unlinkDurably(path);
      } catch (undo) {
        const message = `${(err as Error).message}; and ${what} could not be put back as it was (${(undo as Error).message}): the next start adopts the change`;
        throw err instanceof KeydError ? new KeydError(err.code, message) : new KeydError('KEYD_STORE_IO', message);
      }
      throw err;
    }
  }

  /** A commit that changes no record: the manifest takes the audit log's current head (before a rotation, audit.ts). */
  commitAuditHead(): Promise<void> {
    return this.exclusive(() => this.guard.commit(() => {}));
  }

  /**
   * Whether a record file for key `id` is on disk: then it is served, or (a change whose
   * commit failed and could not be undone, see changeRecord) adopted at the next start.
   * Throws when that cannot be told (anything but ENOENT).
   */
  async keyRecordOnDisk(id: string): Promise<boolean> {
    checkRecordId(id);
    try {
      await lstat(join(this.keysDir, `${id}.rec`));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Path of a key record (tests tamper with it; docs name it). */
  keyRecordPath(id: string): string {
    return join(this.keysDir, `${id}.rec`);
  }

  private async secretVersion(name: string): Promise<number> {
    const bytes = await readOptional(join(this.secretsDir, `${name}.rec`), `secret ${name}`);
    if (!bytes) return 0;
    return parseHeader(bytes, `secret ${name}`).header.version;
  }

  private async readKey(id: string, resolveReference: ReferenceResolver): Promise<StoredKey | undefined> {
    const what = `key record ${id}`;
    const bytes = await readOptional(join(this.keysDir, `${id}.rec`), what);
    if (!bytes) return undefined;
    const { header, plaintext } = this.open(bytes, KIND_KEY, id, what);
    try {
      const named = header.names.length > 0 ? `${what} (names ${header.names.join(', ')})` : what;
      // On every read, not only at open (see reconcile for what open adopts).
      if (this.guard.check('key', id, header.version, named) !== 'current') {
        throw new KeydError('KEYD_RECORD_ROLLED_BACK', `${named} (version ${header.version}) is not the version the manifest commits; not served`);
      }
    } catch (err) {
      plaintext.fill(0);
      throw err;
    }
    try {
      const r = new Reader(plaintext, what);
      const meta = JSON.parse(Buffer.from(r.vec(3, 0, 0xffffff, 'meta')).toString('utf8')) as {
        addedAt: string;
        updatedAt: string;
        subject?: string;
        keyForm?: 'reference';
      };
      const keyBytes = r.vec(3, 1, 0xffffff, 'private key');
      const key: KeyHandle =
        meta.keyForm === 'reference'
          ? resolveReference(JSON.parse(Buffer.from(keyBytes).toString('utf8')) as KeyReference)
          : new SoftwareKeyHandle(createPrivateKey({ key: Buffer.from(keyBytes.buffer, keyBytes.byteOffset, keyBytes.byteLength), format: 'der', type: 'pkcs8' }));
      const chain: Uint8Array[] = [];
      const cr = r.sub(3, 0, 0xffffff, 'chain');
      while (cr.remaining > 0) chain.push(Uint8Array.from(cr.vec(3, 1, 0xffffff, 'certificate')));
      r.end();
      this.versions.set(id, header.version);
      this.lastSeq = Math.max(this.lastSeq, header.seq);
      return {
        id,
        version: header.version,
        seq: header.seq,
        names: header.names,
        key,
        chain,
        addedAt: meta.addedAt,
        updatedAt: meta.updatedAt,
        ...(meta.subject !== undefined ? { subject: meta.subject } : {}),
      };
    } catch (err) {
      throw new KeydError('KEYD_STORE_CORRUPT', `${what} (names ${header.names.join(', ')}) authenticated but does not decode: ${(err as Error).message}`);
    } finally {
      plaintext.fill(0);
    }
  }

  private seal(header: RecordHeader, plaintext: Uint8Array): Buffer {
    const aad = encodeHeader(header);
    const nonce = randomBytes(NONCE_LENGTH);
    const cipher = createCipheriv('aes-256-gcm', this.sealKey, nonce);
    cipher.setAAD(aad);
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([aad, nonce, body, cipher.getAuthTag()]);
  }

  private open(bytes: Buffer, kind: number, id: string, what: string): { header: RecordHeader; plaintext: Buffer } {
    const { header, headerLength } = parseHeader(bytes, what);
    if (header.kind !== kind || header.id !== id) {
      throw new KeydError('KEYD_RECORD_TAMPERED', `${what} is tampered with: its header names ${header.kind === KIND_KEY ? 'key' : 'secret'} ${header.id}; not served`);
    }
    if (bytes.length < headerLength + NONCE_LENGTH + TAG_LENGTH) {
      throw new KeydError('KEYD_RECORD_TAMPERED', `${what} is truncated; not served`);
    }
    const nonce = bytes.subarray(headerLength, headerLength + NONCE_LENGTH);
    const tag = bytes.subarray(bytes.length - TAG_LENGTH);
    const decipher = createDecipheriv('aes-256-gcm', this.sealKey, nonce);
    decipher.setAAD(bytes.subarray(0, headerLength));
    decipher.setAuthTag(tag);
    const body = decipher.update(bytes.subarray(headerLength + NONCE_LENGTH, bytes.length - TAG_LENGTH));
    try {
      const plaintext = Buffer.concat([body, decipher.final()]);
      body.fill(0);
      return { header, plaintext };
    } catch {
      body.fill(0);
      const names = header.names.length > 0 ? ` (names ${header.names.join(', ')})` : '';
      throw new KeydError('KEYD_RECORD_TAMPERED', `${what}${names} failed authentication: it was tampered with or corrupted; not served`);
    }
  }
}

function unresolvable(reference: KeyReference): KeyHandle {
  throw new Error(`it references a ${reference.backend} key and no resolver was given`);
}

function encodeHeader(h: RecordHeader): Buffer {
  const w = new Writer(128);
  w.bytes(RECORD_MAGIC).u8(h.kind);
  w.opaque(1, Buffer.from(h.id, 'latin1'));
  w.u32(h.version).u32(h.seq);
  w.vec(2, () => h.names.forEach((n) => w.opaque(1, Buffer.from(n, 'latin1'))));
  return w.finish();
}

function parseHeader(bytes: Buffer, what: string): { header: RecordHeader; headerLength: number } {
  try {
    const r = new Reader(bytes, what);
    if (!Buffer.from(r.bytesN(RECORD_MAGIC.length, 'magic')).equals(RECORD_MAGIC)) {
      throw new Error('not a keyd record (bad magic)');
    }
    const kind = r.u8('kind');
    const id = Buffer.from(r.vec(1, 1, 255, 'id')).toString('latin1');
    const version = r.u32('version');
    const seq = r.u32('seq');
    const names: string[] = [];
    const nr = r.sub(2, 0, 0xffff, 'names');
    while (nr.remaining > 0) names.push(Buffer.from(nr.vec(1, 1, 255, 'name')).toString('latin1'));
    return { header: { kind, id, version, seq, names }, headerLength: r.position };
  } catch (err) {
    throw new KeydError('KEYD_RECORD_TAMPERED', `${what} has a damaged header (${(err as Error).message}); not served`);
  }
}

function checkRecordId(id: string): void {
  if (!RECORD_ID.test(id)) throw new KeydError('KEYD_BAD_REQUEST', `invalid record name ${JSON.stringify(id)}`);
}

function readRecordFile(path: string, what: string): Promise<Buffer> {
  return readRegularFileBounded(path, MAX_RECORD_BYTES, (why) => new KeydError('KEYD_RECORD_TAMPERED', `${what} ${why}: keyd writes no such record; not served`));
}

/** A record, or store.json (`what` undefined); undefined when the file does not exist. */
async function readOptional(path: string, what?: string): Promise<Buffer | undefined> {
  try {
    if (what !== undefined) return await readRecordFile(path, what);
    return await readRegularFileBounded(path, MAX_STORE_JSON_BYTES, (why) => new KeydError('KEYD_STORE_CORRUPT', `${path} ${why}: it is not a keyd store description`));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function readMachineId(path: string): Promise<Buffer> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch (err) {
    throw new KeydError('KEYD_STORE_IO', `cannot read the machine id ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (text.length === 0) throw new KeydError('KEYD_STORE_IO', `machine id file ${path} is empty`);
  return Buffer.from(text, 'utf8');
}

function rootKeyCheck(rootKey: Buffer, salt: Buffer, format: number): string {
  // Format 1 (before manifests) kept its original label; later formats put the format in
  // the MAC so store.json cannot be edited back to a format without a manifest.
  const label = format === 1 ? 'keyd root key check\0' : `keyd root key check format ${format}\0`;
  return createHmac('sha256', rootKey).update(label).update(salt).digest('hex');
}

function machineCheck(machineId: Buffer, salt: Buffer): string {
  return createHmac('sha256', salt).update('keyd machine check\0').update(machineId).digest('hex');
}

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}

async function loadOrCreateMeta(
  dataDir: string,
  rootKey: Buffer,
  machineId: Buffer,
  rootKeyPath: string,
  machineIdPath: string,
): Promise<{ meta: StoreMeta; mode: 'fresh' | 'legacy' | 'existing' }> {
  const metaPath = join(dataDir, 'store.json');
  const text = await readOptional(metaPath);
  if (!text) {
    // keyd's own secrets count too: a new store would replace the manifest, and the old
    // store (its provisioning key, which operators pinned) could not be opened again
    // even with store.json restored.
    for (const kind of ['keys', 'secrets'] as const) {
      const records = await readdir(join(dataDir, kind)).catch(() => [] as string[]);
      if (records.some((f) => f.endsWith('.rec'))) {
        throw new KeydError('KEYD_STORE_CORRUPT', `data directory ${dataDir} holds ${kind === 'keys' ? 'key records' : 'keyd secrets'} but no store.json; refusing to start a new store over them`);
      }
    }
    const salt = randomBytes(32);
    const meta: StoreMeta = {
      format: STORE_FORMAT,
      salt: salt.toString('base64'),
      rootKeyCheck: rootKeyCheck(rootKey, salt, STORE_FORMAT),
      machineCheck: machineCheck(machineId, salt),
      createdAt: new Date().toISOString(),
    };
    // Written by SealedStore.open after the manifest: a store.json of format 2 always has one.
    return { meta, mode: 'fresh' };
  }
  let meta: StoreMeta;
  try {
    meta = JSON.parse(text.toString('utf8')) as StoreMeta;
    if ((meta.format !== 1 && meta.format !== STORE_FORMAT) || typeof meta.salt !== 'string') throw new Error(`format ${meta.format}`);
    // Damaged fields are said to be damaged: checked against the root key as they are,
    // they would read as "another root key" (or throw outside this message).
    if (Buffer.from(meta.salt, 'base64').length !== 32) throw new Error('its salt is not 32 bytes of base64');
    for (const field of ['rootKeyCheck', 'machineCheck'] as const) {
      if (typeof meta[field] !== 'string' || !/^[0-9a-f]{64}$/.test(meta[field])) throw new Error(`its ${field} is not 64 hex digits`);
    }
  } catch (err) {
    throw new KeydError('KEYD_STORE_CORRUPT', `${metaPath} is not a keyd store description (${(err as Error).message})`);
  }
  const salt = Buffer.from(meta.salt, 'base64');
  const rootOk = sameHex(meta.rootKeyCheck, rootKeyCheck(rootKey, salt, meta.format));
  const machineOk = sameHex(meta.machineCheck, machineCheck(machineId, salt));
  if (!rootOk) {
    throw new KeydError(
      'KEYD_STORE_OTHER_ROOT_KEY',
      `data directory ${dataDir} is sealed under another root key, not ${rootKeyPath}` +
        (machineOk ? '' : ` (and on another machine than the one ${machineIdPath} names)`),
    );
  }
  if (!machineOk) {
    throw new KeydError(
      'KEYD_STORE_OTHER_MACHINE',
      `data directory ${dataDir} is sealed to another machine: ${machineIdPath} differs from the machine it was created on`,
    );
  }
  if (meta.format === 1) {
    // A store from before manifests: it gets one now, and store.json moves to format 2.
    return { meta: { ...meta, format: STORE_FORMAT, rootKeyCheck: rootKeyCheck(rootKey, salt, STORE_FORMAT) }, mode: 'legacy' };
  }
  return { meta, mode: 'existing' };
}

async function writeMeta(dataDir: string, meta: StoreMeta): Promise<void> {
  await writeFileDurably(join(dataDir, 'store.json'), Buffer.from(JSON.stringify(meta, null, 2) + '\n'));
}
