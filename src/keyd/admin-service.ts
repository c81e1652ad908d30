import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { KeydError } from './errors.js';
import { AuditLog, boundAuditEntry, type AdminCaller, type AuditEntry, type AuditQuery } from './audit.js';
import type { SigningLedger, SigningStats } from './signing-ledger.js';
import { Keyring, entryFromStored, infoOf, type KeyEntry, type KeyInfo } from './keyring.js';
import { normaliseName } from './names.js';
import { GENERATE_KEY_TYPES, checkLeafMatchesKey, checkPrivateKey, generateKeyAndCsr, parseChain, type GenerateKeyType } from './pki.js';
import { SealedStore } from './store.js';
import { SoftwareKeyHandle, type KeyHandle } from './key-handle.js';
import { csrForHandle, parseSubject } from './handle-csr.js';
import type { TokenKeyHandle, TokenKeys } from './pkcs11/token-keys.js';

export type { AdminCaller, AuditEntry, AuditQuery, KeyInfo };

const MAX_NAMES_PER_KEY = 100;

export interface ChangeEvent {
  names: string[];
}

/**
 * Every key administration operation, whoever asks: the admin unix socket and the
 * provisioning listener both call this. Each call is serialised (one change at a
 * time), persisted durably before it returns, written to the audit log (ok or not),
 * and announced with a 'change' event ({ names }) that keyd pushes to edges.
 */
export class AdminService extends EventEmitter {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly store: SealedStore,
    readonly keyring: Keyring,
    private readonly auditLog: AuditLog,
    private readonly ledger: SigningLedger,
    private readonly logger?: Logger,
    /** PKCS#11 tokens keys can be generated in or put into (`--token`). */
    private readonly tokens?: TokenKeys,
  ) {
    super();
  }

  private tokenKeys(uri: string): TokenKeys {
    if (!this.tokens) throw new KeydError('KEYD_TOKEN_UNCONFIGURED', `keyd has no PKCS#11 token configured (config "pkcs11"), so it cannot use ${uri}`);
    return this.tokens;
  }

  /**
   * Installs a key and its chain for one or more names (replacing what served them).
   * With `token` (a PKCS#11 URI or token label) the key goes into that token as a
   * non-extractable object and the store keeps only its reference.
   */
  put(caller: AdminCaller, names: string[], privateKey: KeyObject, chainDer: Uint8Array[], token?: string): Promise<KeyInfo> {
    return this.mutate(caller, 'put', { names }, async () => {
      const normalised = normaliseNames(names);
      const keyType = checkPrivateKey(privateKey);
      const [leaf] = parseChain(chainDer);
      const software = new SoftwareKeyHandle(privateKey);
      checkLeafMatchesKey(leaf!, software.publicKey);
      const id = SealedStore.newKeyId();
      const chain = chainDer.map((c) => Uint8Array.from(c));
      let entry: KeyEntry;
      if (token === undefined) {
        entry = await this.install(normalised, software, chain, undefined, id);
      } else {
        const tokens = this.tokenKeys(token);
        const key = await tokens.importKey(token, privateKey, `keyd ${id}`);
        entry = await this.recordTokenKey(tokens, key, id, () => this.install(normalised, key, chain, undefined, id));
      }
      return { result: infoOf(entry), names: normalised, keyRef: entry.id, keyType };
    });
  }

  /**
   * Creates a key inside keyd — or, with `token`, inside that PKCS#11 token, where it is
   * sensitive and never extractable — and returns a CSR. The name is served once
   * `setChain` gives it a chain.
   */
  generate(caller: AdminCaller, name: string, keyType: GenerateKeyType, subject: string, token?: string): Promise<{ info: KeyInfo; csrPem: string }> {
    return this.mutate(caller, 'generate', { names: [name], keyType }, async () => {
      const [normalised] = normaliseNames([name]);
      if (!GENERATE_KEY_TYPES.includes(keyType)) {
        throw new KeydError('KEYD_BAD_REQUEST', `unknown key type ${JSON.stringify(keyType)}: use ${GENERATE_KEY_TYPES.join(', ')}`);
      }
      const sanName = normalised!.replace(/^\*\./, '*.');
      const id = SealedStore.newKeyId();
      let made: { entry: KeyEntry; csrPem: string };
      if (token === undefined) {
        const generated = await generateKeyAndCsr(keyType, sanName, subject);
        made = { entry: await this.install([normalised!], new SoftwareKeyHandle(generated.privateKey), [], subject, id), csrPem: generated.csrPem };
      } else {
        parseSubject(subject);
        const tokens = this.tokenKeys(token);
        const key = await tokens.generate(token, keyType, `keyd ${id} ${normalised}`);
        made = await this.recordTokenKey(tokens, key, id, async () => {
          const csrPem = await csrForHandle(key, sanName, subject);
          return { entry: await this.install([normalised!], key, [], subject, id), csrPem };
        });
      }
      const { entry, csrPem } = made;
      return { result: { info: infoOf(entry), csrPem }, names: [normalised!], keyRef: entry.id, keyType };
    });
  }

  /** Replaces the certificate chain of the key serving `name` (e.g. after the CA signed the CSR). */
  setChain(caller: AdminCaller, name: string, chainDer: Uint8Array[]): Promise<KeyInfo> {
    return this.mutate(caller, 'setChain', { names: [name] }, async () => {
      const entry = this.ownerOf(name);
      const [leaf] = parseChain(chainDer);
      checkLeafMatchesKey(leaf!, entry.key.publicKey);
      const stored = await this.store.putKey({
        id: entry.id,
        seq: entry.seq,
        names: entry.names,
        key: entry.key,
        chain: chainDer.map((c) => Uint8Array.from(c)),
        addedAt: entry.addedAt,
      });
      const updated = entryFromStored(stored);
      this.keyring.set(updated);
      return { result: infoOf(updated), names: updated.names, keyRef: updated.id, keyType: updated.keyType };
    });
  }

  /** Stops serving `name`; the key is deleted when no other name uses it. */
  delete(caller: AdminCaller, name: string): Promise<void> {
    return this.mutate(caller, 'delete', { names: [name] }, async () => {
      const entry = this.ownerOf(name);
      const normalised = normaliseName(name);
      const remaining = entry.names.filter((n) => n !== normalised);
      if (remaining.length === 0) {
        await this.store.deleteKey(entry.id);
        this.keyring.remove(entry.id);
      } else {
        const stored = await this.store.putKey({ ...entry, names: remaining });
        this.keyring.set(entryFromStored(stored));
      }
      return { result: undefined, names: [normalised], keyRef: entry.id, keyType: entry.keyType };
    });
  }

  list(caller: AdminCaller): Promise<KeyInfo[]> {
    return this.observe(caller, 'list', {}, async () => this.keyring.entries().map(infoOf));
  }

  show(caller: AdminCaller, name: string): Promise<KeyInfo> {
    return this.observe(caller, 'show', { names: [name] }, async () => infoOf(this.ownerOf(name)));
  }

  /**
   * `query` comes from the wire (the provisioning listener passes its JSON through): a
   * `limit` that is not a positive integer would make the reader keep every entry of
   * every audit file (audit-reader.ts caps only a number), so it is refused.
   */
  audit(caller: AdminCaller, query?: AuditQuery): Promise<AuditEntry[]> {
    return this.observe(caller, 'audit', {}, async () => this.auditLog.read(checkAuditQuery(query)));
  }

  /**
   * Records an audit entry for a refusal that happened before this service was reached
   * (e.g. the provisioning listener refusing an unauthenticated operator).
   */
  recordAudit(entry: Omit<AuditEntry, 'time'>): Promise<void> {
    return this.auditLog.append(entry);
  }

  /** Per-client, per-key signing counts, durable across restarts (signing-ledger.ts). */
  stats(caller: AdminCaller): Promise<SigningStats> {
    return this.observe(caller, 'stats', {}, async () => this.ledger.snapshot().clients);
  }

  /**
   * Writes a new record owning `names`, then trims the names from older records. The
   * new record's higher sequence number makes it the owner even if we crash between
   * the two steps (see Keyring.set), so a put is atomic at the moment of the rename.
   */
  private async install(names: string[], key: KeyHandle, chain: Uint8Array[], subject?: string, id = SealedStore.newKeyId()): Promise<KeyEntry> {
    const stored = await this.store.putKey({
      id,
      names,
      key,
      chain,
      ...(subject !== undefined ? { subject } : {}),
    });
    const previousOwners = new Set(names.map((n) => this.keyring.owner(n)).filter((e): e is KeyEntry => e !== undefined));
    const entry = entryFromStored(stored);
    this.keyring.set(entry);
    for (const old of previousOwners) {
      // keyring.set already removed the taken names from `old.names`.
      if (old.names.length === 0) {
        await this.store.deleteKey(old.id);
        this.keyring.remove(old.id);
      } else {
        const rewritten = await this.store.putKey({ ...old, names: old.names });
        this.keyring.set(entryFromStored(rewritten));
      }
    }
    return entry;
  }

  /**
   * Runs `steps`, which record `key` — just made in a token by generate or put — under
   * record `id`. If they fail before that record is on disk (the CSR cannot be signed, the
   * store write fails), the token's objects are destroyed: the operator is told the change
   * failed, and keyd would never know the key (the same as a key pair generated after its
   * request timed out, pkcs11/token.ts). A record on disk (or one whose presence cannot be
   * told) is keyd's, now or from the next start (store.ts, changeRecord): its key is kept.
   */
  private async recordTokenKey<T>(tokens: TokenKeys, key: TokenKeyHandle, id: string, steps: () => Promise<T>): Promise<T> {
    try {
      return await steps();
    } catch (err) {
      const objectId = key.reference.id;
      let onDisk: boolean;
      try {
        onDisk = await this.store.keyRecordOnDisk(id);
      } catch (statErr) {
        this.logger?.warn({ keyRef: id, id: objectId }, `key ${id}: whether its record was written cannot be told (${(statErr as Error).message}); its token objects (CKA_ID ${objectId}) are kept`);
        onDisk = true;
      }
      if (onDisk) throw err;
      const refused = await tokens.discard(key, `made for key ${id}, whose record was not written`);
      const outcome =
        refused === undefined
          ? `the key made in token ${JSON.stringify(key.reference.token)} (CKA_ID ${objectId}) was destroyed`
          : `the key made in token ${JSON.stringify(key.reference.token)} (CKA_ID ${objectId}) could not be destroyed (${refused}): remove it with the token's own tools`;
      // The cause keeps its code; a bare error from the file system (the store's write) is KEYD_STORE_IO.
      const code = err instanceof KeydError ? err.code : typeof (err as NodeJS.ErrnoException).syscall === 'string' ? 'KEYD_STORE_IO' : 'KEYD_INTERNAL';
      throw new KeydError(code, `${err instanceof Error ? err.message : String(err)}; ${outcome}`);
    }
  }

  private ownerOf(name: string): KeyEntry {
    const normalised = normaliseName(name);
    const entry = this.keyring.owner(normalised);
    if (!entry) throw new KeydError('KEYD_UNKNOWN_NAME', `no key for ${normalised}`);
    return entry;
  }

  /** A change: serialised, audited, announced. */
  private mutate<T>(
    caller: AdminCaller,
    op: string,
    subject: { names?: string[]; keyType?: string },
    body: () => Promise<{ result: T; names: string[]; keyRef: string; keyType: string }>,
  ): Promise<T> {
    const run = this.queue.then(async () => {
      try {
        const done = await body();
        await this.auditLog.append({ op, caller, names: done.names, keyRef: done.keyRef, keyType: done.keyType, ok: true });
        this.logger?.info({ op, caller, names: done.names, keyRef: done.keyRef }, `admin ${op} ok`);
        this.emit('change', { names: done.names } satisfies ChangeEvent);
        return done.result;
      } catch (err) {
        await this.recordFailure(caller, op, subject, err);
        throw err;
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  /** A read-only call: audited, not serialised. */
  private async observe<T>(caller: AdminCaller, op: string, subject: { names?: string[] }, body: () => Promise<T>): Promise<T> {
    try {
      const result = await body();
      await this.auditLog.append({ op, caller, ...subject, ok: true });
      return result;
    } catch (err) {
      await this.recordFailure(caller, op, subject, err);
      throw err;
    }
  }

  private async recordFailure(caller: AdminCaller, op: string, subject: { names?: string[]; keyType?: string }, err: unknown): Promise<void> {
    const code = err instanceof KeydError ? err.code : 'KEYD_INTERNAL';
    const message = err instanceof Error ? err.message : String(err);
    // The log line is bounded like the audit entry: names and message may come from the request.
    const entry = boundAuditEntry({ op, caller, ...subject, ok: false, code, message });
    this.logger?.warn({ op, caller: entry.caller, code, names: entry.names }, `admin ${op} refused: ${entry.message}`);
    await this.auditLog.append(entry).catch((e: unknown) => {
      this.logger?.error({ err: e }, 'audit log write failed');
    });
  }
}

function checkAuditQuery(query: AuditQuery | undefined): AuditQuery {
  if (query === undefined) return {};
  const { limit, since } = query as { limit?: unknown; since?: unknown };
  if (limit !== undefined && !(typeof limit === 'number' && Number.isInteger(limit) && limit >= 1)) {
    throw new KeydError('KEYD_BAD_REQUEST', 'audit: "limit" must be a positive integer');
  }
  if (since !== undefined && typeof since !== 'string') throw new KeydError('KEYD_BAD_REQUEST', 'audit: "since" must be an ISO time string');
  return { ...(limit !== undefined ? { limit } : {}), ...(since !== undefined ? { since } : {}) };
}

function normaliseNames(names: string[]): string[] {
  if (!Array.isArray(names) || names.length === 0) throw new KeydError('KEYD_BAD_NAME', 'at least one name is needed');
  if (names.length > MAX_NAMES_PER_KEY) throw new KeydError('KEYD_BAD_NAME', `at most ${MAX_NAMES_PER_KEY} names per key`);
  return [...new Set(names.map(normaliseName))];
}
