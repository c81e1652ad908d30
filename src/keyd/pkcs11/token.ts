import { createHash, randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { Logger } from 'pino';
import { KeydError } from '../errors.js';
import { readPinFile, takeEnvironmentPin, type TokenConfig } from './config.js';
import { CKA, CKF_OS_LOCKING_OK, CKF_RW_SESSION, CKF_SERIAL_SESSION, CKO_PRIVATE_KEY, CKU_USER, mechanismName } from './constants.js';
import { tokenErrorFromCkr, type TokenErrorContext } from './errors.js';
import type { TemplateAttribute } from './key-material.js';

type Handle = Buffer;

/** CKR values after which the sessions (or the whole module state) are gone: reconnect. */
const RECONNECT_CKR = new Set([
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
  'CKR_OBJECT_HANDLE_INVALID',
  'CKR_KEY_HANDLE_INVALID',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_TOKEN_NOT_RECOGNIZED',
  'CKR_DEVICE_REMOVED',
  'CKR_DEVICE_ERROR',
  'CKR_SLOT_ID_INVALID',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_GENERAL_ERROR',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
]);

/** The CKR name and value of a binding error, or undefined for another error. */
export function ckrOf(err: unknown): { name: string; value: number } | undefined {
  if (!(err instanceof Error)) return undefined;
  const m = /(CKR_[A-Z0-9_]+)/.exec(err.message);
  if (!m) return undefined;
  const value = (err as { code?: unknown }).code;
  return { name: m[1]!, value: typeof value === 'number' ? value : -1 };
}

/** One open connection to the token: the module initialised, a slot, logged-in sessions. */
interface Connection {
  slot: Handle;
  idle: Handle[];
  mechanisms: Set<number>;
  /** CKA_ID (hex) → private key object handle, valid for this connection only. */
  objects: Map<string, Handle>;
  /** Sessions a failed signature may have left with an operation active: replaced on release. */
  unsettled: Set<Handle>;
}

/**
 * One PKCS#11 token: the module loaded once, a small pool of sessions, login once per
 * connection (C_Login applies to every session of the application, PKCS#11 §5.6).
 * A request that meets a dead session, a removed token or a re-initialised module
 * (RECONNECT_CKR) drops the connection; the next request reconnects — C_Finalize and
 * C_Initialize, since some modules (SoftHSM) only rescan their tokens then — and
 * retries once. While the token is away every request fails at once with
 * KEYD_TOKEN_ABSENT; keyd itself keeps serving other keys.
 */
export class Pkcs11Token {
  private readonly lib = new pkcs11js.PKCS11();
  private loaded = false;
  private initialised = false;
  private connection?: Connection;
  private connecting?: Promise<Connection>;
  private busy = 0;
  private readonly drained: (() => void)[] = [];
  private readonly waiting: ((c: Connection | Error) => void)[] = [];
  /** The last PKCS#11 failure that dropped the connection, named in KEYD_TOKEN_ABSENT. */
  private lastLoss?: string;
  /** SHA-256 of a PIN the token refused: not tried again (tokens lock after a few tries). */
  private refusedPin?: string;

  constructor(
    readonly config: TokenConfig,
    private readonly logger?: Logger,
  ) {}

  get label(): string {
    return this.config.label;
  }

  /** Runs `fn` on a logged-in session of its own; reconnects and retries once when the session is gone. */
  async withSession<T>(what: TokenErrorContext, fn: (session: Handle, c: Connection) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const c = await this.connect(what);
      const session = await this.acquire(c);
      try {
        return await fn(session, c);
      } catch (err) {
        const ckr = ckrOf(err);
        if (ckr && RECONNECT_CKR.has(ckr.name)) {
          this.lastLoss = `${ckrMethod(err) ?? what.operation} returned ${ckr.name}`;
          this.drop(this.lastLoss);
          if (attempt === 0) continue;
        }
        throw err instanceof KeydError ? err : tokenErrorFromCkr(err, { ...what, token: this.label });
      } finally {
        this.release(c, session);
      }
    }
  }

  /** The private key object with this CKA_ID (cached per connection). */
  findPrivateKey(session: Handle, c: Connection, id: Buffer): Handle {
    const key = id.toString('hex');
    const cached = c.objects.get(key);
    if (cached) return cached;
    this.lib.C_FindObjectsInit(session, [
      { type: CKA.CLASS, value: CKO_PRIVATE_KEY },
      { type: CKA.ID, value: id },
    ]);
    let found: Handle[];
    try {
      found = this.lib.C_FindObjects(session, 2);
    } finally {
      this.lib.C_FindObjectsFinal(session);
    }
    if (found.length === 0) throw new KeydError('KEYD_TOKEN_KEY_MISSING', `token ${JSON.stringify(this.label)} has no private key with CKA_ID ${key} (deleted from the token?)`);
    if (found.length > 1) throw new KeydError('KEYD_TOKEN_KEY_MISSING', `token ${JSON.stringify(this.label)} has several private keys with CKA_ID ${key}; keyd needs exactly one`);
    c.objects.set(key, found[0]!);
    return found[0]!;
  }

  /** Whether the token holds an object of any class with this CKA_ID (visible to the logged-in user). */
  hasObjectWithId(id: Buffer): Promise<boolean> {
    return this.withSession({ operation: 'C_FindObjects' }, async (session) => {
      this.lib.C_FindObjectsInit(session, [{ type: CKA.ID, value: id }]);
      try {
        return this.lib.C_FindObjects(session, 1).length > 0;
      } finally {
        this.lib.C_FindObjectsFinal(session);
      }
    });
  }

  /**
   * C_SignInit + C_Sign (the latter on libuv's thread pool: a slow token does not block keyd).
   * Returns the signature and the object handle that made it: the same Buffer for as long as
   * this connection keeps the object, a new one once it is found again (after a reconnection).
   */
  sign(id: Buffer, mechanism: pkcs11js.Mechanism, data: Buffer, maxLength: number): Promise<{ signature: Buffer; object: Handle }> {
    return this.withSession({ operation: 'C_Sign', detail: mechanismName(mechanism.mechanism) }, async (session, c) => {
      if (!c.mechanisms.has(mechanism.mechanism)) {
        throw new KeydError('KEYD_TOKEN_MECHANISM', `token ${JSON.stringify(this.label)} does not offer ${mechanismName(mechanism.mechanism)}`);
      }
      const key = this.findPrivateKey(session, c, id);
      try {
        this.lib.C_SignInit(session, mechanism, key);
        return { signature: await this.lib.C_SignAsync(session, data, Buffer.alloc(maxLength)), object: key };
      } catch (err) {
        // C_Sign that returns CKR_BUFFER_TOO_SMALL leaves the signing operation active
        // (PKCS#11 v2.40 §5.11, C_Sign), and C_SignInit then returns CKR_OPERATION_ACTIVE on
        // this session for every key: the session is replaced, not put back as it is.
        c.unsettled.add(session);
        throw err;
      }
    });
  }

  /** Whether the token offers a mechanism (checked before generating or importing a key). */
  async requireMechanism(mechanism: number, purpose: string): Promise<void> {
    const c = await this.connect({ operation: 'C_GetMechanismList' });
    if (!c.mechanisms.has(mechanism)) {
      throw new KeydError('KEYD_TOKEN_MECHANISM', `token ${JSON.stringify(this.label)} does not offer ${mechanismName(mechanism)}, needed for ${purpose}`);
    }
  }

  /** C_GenerateKeyPair; returns the public key object's attributes asked for. */
  generateKeyPair(mechanism: number, publicTemplate: TemplateAttribute[], privateTemplate: TemplateAttribute[], read: number[]): Promise<Map<number, Buffer>> {
    return this.withSession({ operation: 'C_GenerateKeyPair', detail: mechanismName(mechanism) }, async (session) => {
      const keys = await this.lib.C_GenerateKeyPairAsync(session, { mechanism }, publicTemplate, privateTemplate);
      const attrs = this.lib.C_GetAttributeValue(session, keys.publicKey, read.map((type) => ({ type })));
      return new Map(attrs.map((a) => [a.type, a.value as Buffer]));
    });
  }

  /** C_CreateObject of a private key (the template holds its components: wiped by the caller). */
  createObject(template: TemplateAttribute[]): Promise<void> {
    return this.withSession({ operation: 'C_CreateObject' }, async (session) => {
      this.lib.C_CreateObject(session, template);
    });
  }

  /** Reads attributes of the private key `id`; throws the token's CKR for refused ones (tests read CKA_VALUE). */
  readPrivateKeyAttributes(id: Buffer, types: number[]): Promise<Map<number, Buffer | boolean>> {
    return this.withSession({ operation: 'C_GetAttributeValue' }, async (session, c) => {
      const key = this.findPrivateKey(session, c, id);
      const attrs = this.lib.C_GetAttributeValue(session, key, types.map((type) => ({ type })));
      return new Map(attrs.map((a) => [a.type, a.value as Buffer]));
    });
  }

  /** A fresh CKA_ID for a new key (16 random bytes). */
  static newObjectId(): Buffer {
    return randomBytes(16);
  }

  async close(): Promise<void> {
    await this.waitIdle();
    this.finalize();
    if (this.loaded) {
      try {
        this.lib.close();
      } catch {
        // already closed
      }
      this.loaded = false;
    }
  }

  private connect(what: TokenErrorContext): Promise<Connection> {
    if (this.connection) return Promise.resolve(this.connection);
    this.connecting ??= this.open(what).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async open(what: TokenErrorContext): Promise<Connection> {
    // Sessions of a dropped connection are finished before the module is reset.
    await this.waitIdle();
    this.finalize();
    const ctx = { ...what, token: this.label };
    try {
      if (!this.loaded) {
        this.lib.load(this.config.module);
        this.loaded = true;
      }
      // CKF_OS_LOCKING_OK: C_Sign runs on libuv's threads while other sessions are used here.
      this.lib.C_Initialize({ flags: CKF_OS_LOCKING_OK });
      this.initialised = true;
      const slot = this.lib.C_GetSlotList(true).find((s) => this.lib.C_GetTokenInfo(s).label.trimEnd() === this.label);
      if (slot === undefined) {
        const seen = this.lastLoss ? `; before that ${this.lastLoss}` : '';
        throw new KeydError('KEYD_TOKEN_ABSENT', `token ${JSON.stringify(this.label)} is not present in module ${this.config.module} (removed, or not initialised)${seen}`);
      }
      const mechanisms = new Set(this.lib.C_GetMechanismList(slot));
      const sessions: Handle[] = [];
      for (let i = 0; i < this.config.sessions; i++) sessions.push(this.lib.C_OpenSession(slot, CKF_RW_SESSION | CKF_SERIAL_SESSION));
      await this.login(sessions[0]!);
      const connection: Connection = { slot, idle: sessions, mechanisms, objects: new Map(), unsettled: new Set() };
      this.connection = connection;
      this.lastLoss = undefined;
      this.logger?.info({ token: this.label, sessions: sessions.length }, `PKCS#11 token ${this.label}: connected, ${sessions.length} session(s)`);
      return connection;
    } catch (err) {
      this.finalize();
      throw err instanceof KeydError ? err : tokenErrorFromCkr(err, { ...ctx, operation: ckrMethod(err) ?? ctx.operation });
    }
  }

  private async login(session: Handle): Promise<void> {
    const pin = await this.readPin();
    const digest = createHash('sha256').update(pin).digest('hex');
    if (this.refusedPin === digest) {
      throw new KeydError('KEYD_TOKEN_PIN', `token ${JSON.stringify(this.label)} refused this PIN before (CKR_PIN_INCORRECT); keyd does not retry it (tokens lock after a few wrong PINs): correct ${this.pinSource()}`);
    }
    try {
      this.lib.C_Login(session, CKU_USER, pin);
    } catch (err) {
      const ckr = ckrOf(err);
      if (ckr?.name === 'CKR_USER_ALREADY_LOGGED_IN') return;
      if (ckr?.name === 'CKR_PIN_INCORRECT') this.refusedPin = digest;
      throw tokenErrorFromCkr(err, { operation: 'C_Login', token: this.label, detail: `PIN from ${this.pinSource()}` });
    }
    this.refusedPin = undefined;
  }

  private pinSource(): string {
    return this.config.pinFile !== undefined ? `pin file ${this.config.pinFile}` : `environment variable ${this.config.pinEnv}`;
  }

  /** The PIN, read at each (re)connection so that fixing the file needs no restart. Never logged. */
  private async readPin(): Promise<string> {
    if (this.config.pinEnv !== undefined) {
      const pin = takeEnvironmentPin(this.config.pinEnv);
      if (!pin) throw new KeydError('KEYD_TOKEN_PIN', `token ${JSON.stringify(this.label)}: environment variable ${this.config.pinEnv} (its PIN) is not set`);
      return pin;
    }
    return readPinFile(this.label, this.config.pinFile!);
  }

  /** Forgets the connection; in-flight requests finish (and fail) on their own. */
  private drop(reason: string): void {
    if (!this.connection) return;
    this.logger?.warn({ token: this.label, reason }, `PKCS#11 token ${this.label}: connection lost (${reason}); reconnecting on the next request`);
    this.connection = undefined;
  }

  private finalize(): void {
    this.connection = undefined;
    if (!this.initialised) return;
    try {
      this.lib.C_Finalize();
    } catch {
      // a module in a broken state: C_Initialize decides
    }
    this.initialised = false;
  }

  private acquire(c: Connection): Promise<Handle> {
    const session = c.idle.pop();
    if (session) {
      this.busy++;
      return Promise.resolve(session);
    }
    // All sessions busy: wait for one (bounded by keyd's maxPending per connection).
    return new Promise((resolve, reject) => {
      this.waiting.push((next) => {
        if (next instanceof Error) return reject(next);
        if (next !== c) return reject(new KeydError('KEYD_TOKEN_ABSENT', `token ${JSON.stringify(this.label)} reconnected while the request waited; retry`));
        const s = c.idle.pop()!;
        this.busy++;
        resolve(s);
      });
    });
  }

  private release(c: Connection, session: Handle): void {
    this.busy--;
    if (this.connection === c && c.unsettled.delete(session)) {
      const fresh = this.replaceSession(c, session);
      if (fresh) session = fresh;
    }
    if (this.connection === c) {
      c.idle.push(session);
      const next = this.waiting.shift();
      if (next) next(c);
    } else {
      for (const wake of this.waiting.splice(0)) wake(new KeydError('KEYD_TOKEN_ABSENT', `token ${JSON.stringify(this.label)}: connection lost while the request waited`));
    }
    if (this.busy === 0) for (const done of this.drained.splice(0)) done();
  }

  /**
   * A new session for one whose operation state is unknown. Opened before the old one is
   * closed: closing an application's last session logs it out (PKCS#11 v2.40 §5.6). A
   * token that refuses drops the connection (the next request reconnects).
   */
  private replaceSession(c: Connection, old: Handle): Handle | undefined {
    try {
      const fresh = this.lib.C_OpenSession(c.slot, CKF_RW_SESSION | CKF_SERIAL_SESSION);
      try {
        this.lib.C_CloseSession(old);
      } catch {
        // already gone with its operation: the fresh session serves instead
      }
      return fresh;
    } catch (err) {
      this.lastLoss = `C_OpenSession returned ${ckrOf(err)?.name ?? (err as Error).message.split('\n')[0]}`;
      this.drop(this.lastLoss);
      return undefined;
    }
  }

  private waitIdle(): Promise<void> {
    if (this.busy === 0) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }
}

function ckrMethod(err: unknown): string | undefined {
  const method = (err as { method?: unknown }).method;
  return typeof method === 'string' ? method : undefined;
}
