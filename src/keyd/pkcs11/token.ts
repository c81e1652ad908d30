import { createHash, randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { Logger } from 'pino';
import { KeydError } from '../errors.js';
import { DEFAULT_GENERATE_TIMEOUT_MS, DEFAULT_SIGN_TIMEOUT_MS, readPinFile, takeEnvironmentPin, type TokenConfig } from './config.js';
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

/** libuv's thread pool size (UV_THREADPOOL_SIZE, read by libuv at its first use; default 4, at most 1024). */
export function threadPoolSize(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number.parseInt(env.UV_THREADPOOL_SIZE ?? '', 10);
  return Number.isInteger(n) && n > 0 ? Math.min(n, 1024) : 4;
}

/**
 * How many calls one token may have on libuv's thread pool at once: C_Sign and
 * C_GenerateKeyPair together (pkcs11js's C_SignAsync, C_GenerateKeyPairAsync). The pool
 * is the one keyd's fs and crypto work (store, audit log, PIN file) shares; a call the
 * token never answers holds its thread for good. All tokens together may hold at most
 * half the pool (default pool 4, one token: 2), so hung tokens can never take the threads
 * keyd's own I/O needs; at least one per token.
 */
export function tokenCallBound(poolSize: number, tokens: number): number {
  return Math.max(1, Math.floor(poolSize / (2 * Math.max(1, tokens))));
}

/** Requests that may wait for a call slot (beyond: refused at once). */
const MAX_CALLS_WAITING = 256;

/**
 * A call into the token on libuv's thread pool: what it is, and how long it may take
 * (waiting for a slot included) before its request fails with KEYD_TOKEN_ABSENT.
 */
interface TokenCall {
  operation: 'C_Sign' | 'C_GenerateKeyPair';
  /** The mechanism, named in errors. */
  detail: string;
  timeoutMs: number;
}

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
 *
 * A token that does not answer: at most `callBound` C_Sign and C_GenerateKeyPair calls are
 * in the token at once (tokenCallBound); a signature not made within `signTimeoutMs`, or a
 * key pair not generated within `generateTimeoutMs` (slot wait included), fails with
 * KEYD_TOKEN_ABSENT, but its call stays counted, and its session out of the pool, until
 * the token really returns — so hung calls never exceed the bound, and a session still
 * busy in the token is never handed to another request.
 */
export class Pkcs11Token {
  private readonly lib: pkcs11js.PKCS11;
  /** C_Sign and C_GenerateKeyPair calls in the token at once (see tokenCallBound). */
  readonly callBound: number;
  private readonly signTimeoutMs: number;
  private readonly generateTimeoutMs: number;
  /** Calls in the token now (slots taken), and those of them that outlived their timeout. */
  private callsInFlight = 0;
  private readonly callsHung: TokenCall[] = [];
  private readonly callWaiting: { call: TokenCall; wake: (err?: KeydError) => void; timer: NodeJS.Timeout }[] = [];
  /** Sessions whose call outlived its timeout: out of the pool until the call returns. */
  private readonly heldByToken = new Set<Handle>();
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

  /**
   * `options.lib`: the PKCS#11 binding object (default a new pkcs11js.PKCS11; tests pass a
   * wrapper around a real one); `options.tokens`: how many tokens keyd has (tokenCallBound).
   */
  constructor(
    readonly config: TokenConfig,
    private readonly logger?: Logger,
    options: { lib?: pkcs11js.PKCS11; tokens?: number } = {},
  ) {
    this.lib = options.lib ?? new pkcs11js.PKCS11();
    this.callBound = Math.min(config.sessions, tokenCallBound(threadPoolSize(), options.tokens ?? 1));
    this.signTimeoutMs = config.signTimeoutMs ?? DEFAULT_SIGN_TIMEOUT_MS;
    this.generateTimeoutMs = config.generateTimeoutMs ?? DEFAULT_GENERATE_TIMEOUT_MS;
  }

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
        // A KeydError is keyd's answer already, never retried: e.g. a generation that failed
        // after the token made the key pair (a retry would make another under the same CKA_ID).
        const ckr = err instanceof KeydError ? undefined : ckrOf(err);
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
    const detail = mechanismName(mechanism.mechanism);
    return this.inToken({ operation: 'C_Sign', detail, timeoutMs: this.signTimeoutMs }, async (session, c, run) => {
      if (!c.mechanisms.has(mechanism.mechanism)) {
        throw new KeydError('KEYD_TOKEN_MECHANISM', `token ${JSON.stringify(this.label)} does not offer ${detail}`);
      }
      const key = this.findPrivateKey(session, c, id);
      try {
        this.lib.C_SignInit(session, mechanism, key);
        return { signature: await run(() => this.lib.C_SignAsync(session, data, Buffer.alloc(maxLength))), object: key };
      } catch (err) {
        // C_Sign that returns CKR_BUFFER_TOO_SMALL leaves the signing operation active
        // (PKCS#11 v2.40 §5.11, C_Sign), and C_SignInit then returns CKR_OPERATION_ACTIVE on
        // this session for every key: the session is replaced, not put back as it is.
        c.unsettled.add(session);
        throw err;
      }
    });
  }

  /**
   * Runs `body` on a session (withSession) with a call slot: `run` starts the one call that
   * goes to libuv's thread pool and hands the slot to it, which gives it back when the token
   * returns from it; a retry after a reconnection takes another. The request fails at
   * `call.timeoutMs` from now (see callWithin); `abandoned` gets what a call returns after
   * that, while its session is still held.
   */
  private async inToken<T>(
    call: TokenCall,
    body: (session: Handle, c: Connection, run: <R>(start: () => Promise<R>, abandoned?: (result: R, session: Handle) => void) => Promise<R>) => Promise<T>,
  ): Promise<T> {
    const deadline = performance.now() + call.timeoutMs;
    await this.takeCallSlot(call);
    let haveSlot = true;
    try {
      return await this.withSession({ operation: call.operation, detail: call.detail }, async (session, c) => {
        if (!haveSlot) {
          await this.takeCallSlot(call);
          haveSlot = true;
        }
        return body(session, c, (start, abandoned) => {
          const pending = start();
          haveSlot = false;
          return this.callWithin(pending, deadline, session, c, call, abandoned);
        });
      });
    } finally {
      if (haveSlot) this.freeCallSlot();
    }
  }

  /**
   * The call's result, or KEYD_TOKEN_ABSENT at the deadline. A call that outlives it keeps
   * its slot and its session (heldByToken) until it returns: the token is still working in
   * that session (PKCS#11 v2.40 §5.11: one operation per session at a time), and finalising or
   * reusing it under a call in progress is undefined.
   */
  private callWithin<R>(pending: Promise<R>, deadline: number, session: Handle, c: Connection, call: TokenCall, abandoned?: (result: R, session: Handle) => void): Promise<R> {
    return new Promise((resolve, reject) => {
      let hung = false;
      const timer = setTimeout(() => {
        hung = true;
        this.heldByToken.add(session);
        this.callsHung.push(call);
        this.logger?.warn({ token: this.label, timeoutMs: call.timeoutMs }, `PKCS#11 token ${this.label}: ${call.operation} did not return within ${call.timeoutMs} ms; its session is held until it does`);
        if (this.callsHung.length >= this.callBound) this.refuseCallWaiting();
        reject(this.callTimedOut(call, `${call.operation} did not return within ${call.timeoutMs} ms`));
      }, Math.max(0, deadline - performance.now()));
      const returned = (result?: { value: R }) => {
        clearTimeout(timer);
        this.freeCallSlot(hung ? call : undefined);
        if (hung) {
          this.logger?.info({ token: this.label }, `PKCS#11 token ${this.label}: a ${call.operation} that outlived its timeout returned; its session is replaced`);
          if (result && abandoned) abandoned(result.value, session);
          this.heldByToken.delete(session);
          c.unsettled.add(session);
          this.release(c, session);
        }
      };
      pending.then(
        (value) => {
          returned({ value });
          resolve(value);
        },
        (err: unknown) => {
          returned();
          reject(err);
        },
      );
    });
  }

  private callTimedOut(call: TokenCall, why: string): KeydError {
    return new KeydError('KEYD_TOKEN_ABSENT', `token ${JSON.stringify(this.label)}: ${call.operation} (${call.detail}): ${why}; the token is not answering`);
  }

  /** A call slot (callBound), waiting up to the call's timeout while calls within their time hold them all. */
  private takeCallSlot(call: TokenCall): Promise<void> {
    if (this.callsInFlight < this.callBound) {
      this.callsInFlight++;
      return Promise.resolve();
    }
    if (this.callsHung.length >= this.callBound) return Promise.reject(this.allSlotsHung(call));
    if (this.callWaiting.length >= MAX_CALLS_WAITING) {
      return Promise.reject(this.callTimedOut(call, `${this.callBound} call(s) in the token and ${MAX_CALLS_WAITING} request(s) already waiting`));
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        call,
        wake: (err?: KeydError) => {
          clearTimeout(waiter.timer);
          if (err) return reject(err);
          this.callsInFlight++;
          resolve();
        },
        timer: setTimeout(() => {
          this.callWaiting.splice(this.callWaiting.indexOf(waiter), 1);
          reject(this.callTimedOut(call, `no ${call.operation} slot came free within ${call.timeoutMs} ms (${this.callBound} in the token at once)`));
        }, call.timeoutMs),
      };
      this.callWaiting.push(waiter);
    });
  }

  /** A slot comes back; `hung`: the call that had outlived its timeout. */
  private freeCallSlot(hung?: TokenCall): void {
    this.callsInFlight--;
    if (hung) this.callsHung.splice(this.callsHung.indexOf(hung), 1);
    this.callWaiting.shift()?.wake();
  }

  /** "2 C_Sign call(s) have not returned after 10000 ms", one clause per operation among the hung calls. */
  private hungCalls(): string {
    const byOperation = new Map<string, { count: number; timeouts: Set<number> }>();
    for (const call of this.callsHung) {
      const entry = byOperation.get(call.operation) ?? { count: 0, timeouts: new Set<number>() };
      entry.count++;
      entry.timeouts.add(call.timeoutMs);
      byOperation.set(call.operation, entry);
    }
    return [...byOperation].map(([operation, { count, timeouts }]) => `${count} ${operation} call(s) have not returned after ${[...timeouts].join(' or ')} ms`).join(' and ');
  }

  private allSlotsHung(call: TokenCall): KeydError {
    return this.callTimedOut(call, `${this.hungCalls()}, and keyd has at most ${this.callBound} in the token at once (each holds one of libuv's threads)`);
  }

  /** Every slot held by a call past its timeout: the requests waiting for one fail now. */
  private refuseCallWaiting(): void {
    for (const waiter of this.callWaiting.splice(0)) waiter.wake(this.allSlotsHung(waiter.call));
  }

  /** Whether the token offers a mechanism (checked before generating or importing a key). */
  async requireMechanism(mechanism: number, purpose: string): Promise<void> {
    const c = await this.connect({ operation: 'C_GetMechanismList' });
    if (!c.mechanisms.has(mechanism)) {
      throw new KeydError('KEYD_TOKEN_MECHANISM', `token ${JSON.stringify(this.label)} does not offer ${mechanismName(mechanism)}, needed for ${purpose}`);
    }
  }

  /**
   * C_GenerateKeyPair (on libuv's thread pool, like C_Sign: it takes a call slot, and fails
   * after `generateTimeoutMs`); reads the public key object's attributes `read` and returns
   * what `accept` makes of them (the public key). A key pair the token makes after its
   * request failed is destroyed at once, and so is one whose public key cannot be read or
   * is refused by `accept` (it throws): the operator is told the generation failed, and
   * keyd never records that key.
   */
  generateKeyPair<T>(mechanism: number, publicTemplate: TemplateAttribute[], privateTemplate: TemplateAttribute[], read: number[], accept: (attrs: Map<number, Buffer>) => T): Promise<T> {
    const call: TokenCall = { operation: 'C_GenerateKeyPair', detail: mechanismName(mechanism), timeoutMs: this.generateTimeoutMs };
    return this.inToken(call, async (session, _c, run) => {
      const keys = await run(
        () => this.lib.C_GenerateKeyPairAsync(session, { mechanism }, publicTemplate, privateTemplate),
        (late, heldSession) => this.destroyUnrecordedKeyPair(heldSession, late, publicTemplate, 'generated after its request timed out'),
      );
      let attrs: Map<number, Buffer>;
      try {
        attrs = new Map(this.lib.C_GetAttributeValue(session, keys.publicKey, read.map((type) => ({ type }))).map((a) => [a.type, a.value as Buffer]));
      } catch (err) {
        const ckr = ckrOf(err);
        const failure = tokenErrorFromCkr(err, { operation: 'C_GetAttributeValue', token: this.label, detail: 'the public key of the key pair just generated' });
        throw this.failedAfterGeneration(session, keys, publicTemplate, failure, ckr?.name);
      }
      try {
        return accept(attrs);
      } catch (err) {
        const why = err instanceof KeydError ? err.message : `it does not decode: ${(err as Error).message}`;
        const failure = new KeydError('KEYD_TOKEN_ERROR', `token ${JSON.stringify(this.label)}: C_GenerateKeyPair (${call.detail}) gave a public key keyd cannot use (${why})`);
        throw this.failedAfterGeneration(session, keys, publicTemplate, failure);
      }
    });
  }

  /**
   * The request's error once a key pair exists that keyd will not record: the pair is
   * destroyed, and the error says whether it was. Not retried (withSession never retries a
   * KeydError); a CKR that says the session is gone drops the connection here instead.
   */
  private failedAfterGeneration(session: Handle, keys: pkcs11js.KeyPair, template: TemplateAttribute[], failure: KeydError, ckr?: string): KeydError {
    const destroyFailure = this.destroyUnrecordedKeyPair(session, keys, template, 'generated for a request that failed');
    const lost = [ckr, destroyFailure].find((name) => name !== undefined && RECONNECT_CKR.has(name));
    if (lost) {
      this.lastLoss = `${lost === ckr ? 'C_GetAttributeValue' : 'C_DestroyObject'} returned ${lost}`;
      this.drop(this.lastLoss);
    }
    const id = idOf(template);
    const outcome =
      destroyFailure === undefined
        ? `the key pair (CKA_ID ${id}) was destroyed`
        : `the key pair (CKA_ID ${id}) could not be destroyed (${destroyFailure}): remove it with the token's own tools`;
    return new KeydError(failure.code, `${failure.message}; ${outcome}`);
  }

  /**
   * Destroys a key pair keyd will not record (see generateKeyPair), both objects even if one
   * is refused; logs the outcome. Returns the CKR (or message) of a refusal, undefined when
   * both are gone.
   */
  private destroyUnrecordedKeyPair(session: Handle, keys: pkcs11js.KeyPair, template: TemplateAttribute[], why: string): string | undefined {
    const idText = idOf(template);
    let refused: string | undefined;
    for (const object of [keys.privateKey, keys.publicKey]) {
      try {
        this.lib.C_DestroyObject(session, object);
      } catch (err) {
        refused ??= refusalOf(err);
      }
    }
    if (refused === undefined) {
      this.logger?.info({ token: this.label, id: idText }, `PKCS#11 token ${this.label}: the key pair with CKA_ID ${idText}, ${why}, was destroyed`);
    } else {
      this.logger?.warn({ token: this.label, id: idText }, `PKCS#11 token ${this.label}: the key pair with CKA_ID ${idText}, ${why}, could not be destroyed (${refused}); remove it with the token's own tools`);
    }
    return refused;
  }

  /**
   * Destroys every object with this CKA_ID (a key pair keyd generated or put into the token
   * for a change that then failed before keyd recorded it: admin-service.ts). Returns the CKR
   * (or message) of a refusal, undefined when none is left; logs the outcome.
   */
  async destroyObjectsWithId(id: Buffer, why: string): Promise<string | undefined> {
    const idText = id.toString('hex');
    let refused: string | undefined;
    try {
      refused = await this.withSession({ operation: 'C_DestroyObject' }, async (session, c) => {
        c.objects.delete(idText);
        this.lib.C_FindObjectsInit(session, [{ type: CKA.ID, value: id }]);
        let found: Handle[];
        try {
          found = this.lib.C_FindObjects(session, 16);
        } finally {
          this.lib.C_FindObjectsFinal(session);
        }
        let first: string | undefined;
        for (const object of found) {
          try {
            this.lib.C_DestroyObject(session, object);
          } catch (err) {
            first ??= refusalOf(err);
          }
        }
        return first;
      });
    } catch (err) {
      refused = refusalOf(err);
    }
    if (refused === undefined) {
      this.logger?.info({ token: this.label, id: idText }, `PKCS#11 token ${this.label}: the objects with CKA_ID ${idText}, ${why}, were destroyed`);
    } else {
      this.logger?.warn({ token: this.label, id: idText }, `PKCS#11 token ${this.label}: the objects with CKA_ID ${idText}, ${why}, could not be destroyed (${refused}); remove them with the token's own tools`);
    }
    return refused;
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
    if (this.heldByToken.size > 0) {
      // C_Finalize or unloading the module under a call in progress is undefined: leave both.
      this.logger?.warn({ token: this.label, calls: this.heldByToken.size }, `PKCS#11 token ${this.label}: ${this.heldByToken.size} call(s) past their timeout still in the token (${this.hungCalls()}); module left loaded`);
      return;
    }
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
    const ctx = { ...what, token: this.label };
    if (this.heldByToken.size > 0) {
      // No C_Finalize while a call is in the token: reconnect once it returns.
      throw new KeydError('KEYD_TOKEN_ABSENT', `token ${JSON.stringify(this.label)}: cannot reconnect while calls past their timeout are still in the token (${this.hungCalls()})`);
    }
    this.finalize();
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
    // A session whose call is still in the token stays out: released when that returns
    // (callWithin), and not waited for (waitIdle).
    if (!this.heldByToken.has(session)) {
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
    }
    if (this.busy === this.heldByToken.size) for (const done of this.drained.splice(0)) done();
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

  /** Until every session is back, but for those held by a call past its timeout (never waited for). */
  private waitIdle(): Promise<void> {
    if (this.busy === this.heldByToken.size) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }
}

/** How a refusal is named in logs and errors: the CKR, or the binding's message. */
function refusalOf(err: unknown): string {
  if (err instanceof KeydError) return err.message;
  return ckrOf(err)?.name ?? (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
}

/** The CKA_ID of a template, hex ("?" without one). */
function idOf(template: TemplateAttribute[]): string {
  const id = template.find((a) => a.type === CKA.ID)?.value;
  return Buffer.isBuffer(id) ? id.toString('hex') : '?';
}

function ckrMethod(err: unknown): string | undefined {
  const method = (err as { method?: unknown }).method;
  return typeof method === 'string' ? method : undefined;
}
