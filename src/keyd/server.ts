import type { Socket } from 'node:net';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { SCHEMES } from '../tls/signature-schemes.js';
import type { AdminService } from './admin-service.js';
import type { AdminCaller, AuditEntry } from './audit.js';
import { newestEntriesWithin } from './audit-reader.js';
import { issueDelegatedCredential } from './delegation.js';
import { KeydError } from './errors.js';
import type { FairScheduler, Queue } from './fair-scheduler.js';
import type { Keyring } from './keyring.js';
import type { LimitReporter } from './limit-reporter.js';
import type { KeydLimits } from './limits.js';
import { patternCovers } from './names.js';
import type { GenerateKeyType } from './pki.js';
import {
  ADMIN_OPCODES,
  SIGNING_OPCODES,
  FrameDecoder,
  FrameError,
  Opcode,
  decodeAdmin,
  decodeHandshakeContentRequest,
  decodeDelegationRequest,
  decodeIdentityRequest,
  decodePing,
  decodeServerKeyExchangeRequest,
  decodeSignRequest,
  encodeAdmin,
  encodeChanged,
  encodeDelegationReply,
  encodeError,
  encodeFrame,
  MAX_ADMIN_REPLY_JSON,
  MAX_PAYLOAD,
  encodeIdentityReply,
  encodePing,
  encodeSignature,
  requestPayloadLimit,
  type Frame,
} from './protocol.js';
import {
  certificateVerifyContent,
  checkSchemeForKind,
  schemeFitsKey,
  checkServerKeyExchangeContent,
  classifyHandshakeContent,
  type CheckedContent,
  type SignedContentPolicy,
} from './signed-content.js';
import type { SigningLedger } from './signing-ledger.js';
import type { SignatureBuckets } from './token-bucket.js';

/** Who is on the other end of a connection, and what it may do. */
export interface Peer {
  /** Counter / log / audit id: the local principal ("local", a configured name, "admin") or the mTLS subject. */
  id: string;
  /** Admin socket: admin operations allowed. */
  admin: boolean;
  /** Names (`name`, `*.domain`, or `*` for all) this peer may sign for. */
  allowed: readonly string[];
  /** For the audit log (admin connections). */
  caller?: AdminCaller;
}

export interface ServerDeps {
  keyring: Keyring;
  adminService: AdminService;
  ledger: SigningLedger;
  logger: Logger;
  maxPending: number;
  limits: KeydLimits;
  reporter: LimitReporter;
  scheduler: FairScheduler;
  buckets: SignatureBuckets;
  /** What handshake content keyd signs (config "allowTls12OnlyServers", signed-content.ts). */
  signingPolicy: SignedContentPolicy;
  delegation: DelegationDeps;
}

/** What issuing delegated credentials (opcode 0x06, delegation.ts) needs beyond signing. */
export interface DelegationDeps {
  /** One audit line per issued credential. */
  audit(entry: Omit<AuditEntry, 'time'>): Promise<void>;
  /** Per-client issuance rate (limits.delegatedCredentialsPerMinute): each issuance is an audit line. */
  buckets: SignatureBuckets;
  now(): number;
}

/** A signing request, decoded: who asks for which key, and its content still to be checked. */
interface SigningRequest {
  keyRef: string;
  serverName: string;
  scheme: number;
  /** Builds or checks the content (signed-content.ts); throws the refusal's KeydError. */
  content(policy: SignedContentPolicy): CheckedContent;
}

/** Decodes the request of a signing opcode (docs/PROTOCOL.md 0x03, 0x04, 0x05). */
function decodeSigningRequest(opcode: number, payload: Uint8Array): SigningRequest {
  switch (opcode) {
    case Opcode.signCertificateVerify: {
      const { keyRef, serverName, scheme, transcriptHash } = decodeSignRequest(payload);
      return { keyRef, serverName, scheme, content: () => ({ kind: 'tls13-certificate-verify', content: certificateVerifyContent(transcriptHash) }) };
    }
    case Opcode.signServerKeyExchange: {
      const { keyRef, serverName, scheme, content } = decodeServerKeyExchangeRequest(payload);
      return {
        keyRef,
        serverName,
        scheme,
        content: (policy) => {
          checkServerKeyExchangeContent(content, policy);
          return { kind: 'tls12-server-key-exchange', content: Buffer.from(content) };
        },
      };
    }
    case Opcode.signHandshakeContent: {
      const { keyRef, serverName, scheme, content } = decodeHandshakeContentRequest(payload);
      return { keyRef, serverName, scheme, content: (policy) => classifyHandshakeContent(content, policy) };
    }
    default:
      throw new KeydError('KEYD_UNKNOWN_OPCODE', `opcode 0x${opcode.toString(16).padStart(2, '0')} does not sign`);
  }
}

/** Stop reading from a client that does not read its answers (bytes queued for it). */
const WRITE_HIGH_WATER = 4 * 1024 * 1024;

/**
 * One keyd connection: deframes requests (each opcode with its own payload limit, checked
 * on the header), queues ping / identity / sign requests for the round-robin scheduler
 * (fair-scheduler.ts) and answers each with a reply or an error frame carrying the same
 * request id; admin operations are asynchronous and count against `maxPending` too.
 * Time is bounded: an idle connection is closed, and a frame must arrive whole within
 * `frameTimeoutMs` of its first byte (trickling bytes does not extend it). Nothing a
 * client sends can crash the daemon: every failure is an error frame.
 * Signatures by keys in keyd's memory are made within the turn; by keys in a token (which
 * may take milliseconds) in one of the connection's `maxPending` slots.
 */
export class KeydConnection implements Queue {
  private readonly decoder: FrameDecoder;
  /** Requests not yet served from `head` on; a served slot is emptied (undefined) at once. */
  private queue: (Frame | undefined)[] = [];
  private head = 0;
  private pending = 0;
  private closed = false;
  /** Replies made during a scheduler turn, sent together when it ends (endTurn). */
  private outgoing: Buffer[] | undefined;
  private frameTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly socket: Socket,
    readonly peer: Peer,
    private readonly deps: ServerDeps,
  ) {
    this.decoder = new FrameDecoder((opcode) => requestPayloadLimit(opcode, peer.admin));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => deps.logger.debug({ err: err.message, peer: peer.id }, 'keyd connection error'));
    socket.on('close', () => this.onClose());
    socket.on('drain', () => this.updateFlow());
    socket.setTimeout(deps.limits.idleTimeoutMs);
    // 'on', not setTimeout's callback (a once listener): the timeout may fire more than once.
    socket.on('timeout', () => {
      // A connection with a request still being answered is waiting for keyd, not idle: a key
      // generation in a token may run for minutes (generateTimeoutMs, docs/KEYD.md). Closing it
      // lost the answer. The timer starts again; the reply's write (or any byte) resets it.
      if (this.pending > 0) {
        socket.setTimeout(deps.limits.idleTimeoutMs);
        return;
      }
      this.refuseForLimit('idle', `connection idle for ${deps.limits.idleTimeoutMs} ms`);
      socket.destroy();
    });
  }

  get queued(): number {
    return this.queue.length - this.head;
  }

  /** Whether a change to `names` concerns this peer (for 'changed' pushes). */
  concerns(names: readonly string[]): boolean {
    return !this.peer.admin && (names.length === 0 || names.some((n) => this.mayUseName(n)));
  }

  pushChanged(names: readonly string[]): void {
    if (this.closed) return;
    const visible = this.peer.allowed.includes('*') ? names : names.filter((n) => this.mayUseName(n));
    this.send(encodeFrame(Opcode.changed, 0, encodeChanged(visible)));
  }

  /** Refuses and closes: a limit of the listener or the client was reached before any request. */
  refuseConnection(limit: 'client-connections' | 'socket-exposed', code: string, message: string): void {
    this.refuseForLimit(limit, message);
    this.closed = true;
    this.socket.end(encodeFrame(Opcode.error, 0, encodeError(code, message)));
    this.socket.removeAllListeners('data');
  }

  private onClose(): void {
    this.closed = true;
    clearTimeout(this.frameTimer);
    this.queue = [];
    this.head = 0;
    this.deps.scheduler.forget(this);
  }

  private refuseForLimit(limit: Parameters<LimitReporter['refused']>[1], detail: string): void {
    this.deps.reporter.refused(this.peer.id, limit, detail);
  }

  private onData(chunk: Buffer): void {
    const before = this.decoder.pending;
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const fe = err as FrameError;
      if (fe.oversized) this.refuseForLimit('payload', fe.message);
      this.deps.logger.warn({ peer: this.peer.id, code: fe.code }, `closing keyd connection: ${fe.message}`);
      this.socket.end(encodeFrame(Opcode.error, fe.requestId ?? 0, encodeError('KEYD_BAD_FRAME', fe.message)));
      this.closed = true;
      clearTimeout(this.frameTimer);
      this.socket.removeAllListeners('data');
      return;
    }
    this.armFrameDeadline(before, frames.length);
    for (const frame of frames) this.accept(frame);
    if (this.queued > 0) this.deps.scheduler.wake(this);
    this.updateFlow();
  }

  /**
   * A partial frame gets `frameTimeoutMs` from its first byte; later bytes of the same
   * frame do not re-arm the timer (a slow-loris trickle cannot hold the connection).
   */
  private armFrameDeadline(pendingBefore: number, completed: number): void {
    const pendingNow = this.decoder.pending;
    if (pendingNow === 0) {
      clearTimeout(this.frameTimer);
      this.frameTimer = undefined;
      return;
    }
    if (this.frameTimer && pendingBefore > 0 && completed === 0) return;
    clearTimeout(this.frameTimer);
    const ms = this.deps.limits.frameTimeoutMs;
    this.frameTimer = setTimeout(() => {
      this.refuseForLimit('frame-timeout', `a frame did not arrive whole within ${ms} ms`);
      this.socket.destroy();
    }, ms);
    this.frameTimer.unref();
  }

  /** Signing-path requests join the fair queue; admin requests run at once (asynchronously). */
  private accept(frame: Frame): void {
    const { opcode, requestId } = frame;
    if (opcode === Opcode.ping || opcode === Opcode.identity || SIGNING_OPCODES.has(opcode) || opcode === Opcode.issueDelegatedCredential) {
      // The fair queue holds at most maxPending unserved requests (reading pauses there);
      // more within one read are refused at once.
      if (this.queued >= this.deps.maxPending) {
        this.refuseForLimit('pending', `more than ${this.deps.maxPending} requests queued on one connection`);
        return this.fail(requestId, new KeydError('KEYD_TOO_MANY_PENDING', `more than ${this.deps.maxPending} requests pending on this connection`));
      }
      this.queue.push(frame);
      return;
    }
    try {
      if (!ADMIN_OPCODES.has(opcode)) {
        throw new KeydError('KEYD_UNKNOWN_OPCODE', `unknown opcode 0x${opcode.toString(16).padStart(2, '0')} (keyd signs only the handshake content it builds or checks itself)`);
      }
      if (!this.peer.admin) throw new KeydError('KEYD_NOT_AUTHORISED', 'admin operations are only accepted on the admin socket');
      this.settle(opcode, requestId, () => this.admin(opcode, frame.payload));
    } catch (err) {
      this.fail(requestId, err);
    }
  }

  /**
   * Queue: one request, synchronously. Replies of one turn are collected and leave in one
   * write when the turn ends: a read that brought several requests costs one write, and a
   * lone request no cork/uncork.
   */
  serveOne(): void {
    const frame = this.queue[this.head]!;
    // Let go of the request at once: the array is compacted only past 1024 served slots,
    // and each frame's payload is a view keeping its whole read chunk alive.
    this.queue[this.head++] = undefined;
    this.outgoing ??= [];
    const { opcode, requestId, payload } = frame;
    try {
      switch (opcode) {
        case Opcode.ping:
          return this.reply(opcode, requestId, encodePing(decodePing(payload)));
        case Opcode.identity:
          return this.reply(opcode, requestId, this.identity(decodeIdentityRequest(payload)));
        case Opcode.issueDelegatedCredential:
          return this.settle(opcode, requestId, () => this.delegate(payload));
        default: {
          const signed = this.sign(opcode, payload);
          if (signed instanceof Uint8Array) return this.reply(opcode, requestId, signed);
          return this.settle(opcode, requestId, signed);
        }
      }
    } catch (err) {
      this.fail(requestId, err);
    }
  }

  /** Runs an asynchronous request (admin, a token signature) in one of the connection's `maxPending` slots. */
  private settle(opcode: number, requestId: number, run: () => Promise<Uint8Array>): void {
    if (this.pending >= this.deps.maxPending) {
      this.refuseForLimit('pending', `more than ${this.deps.maxPending} requests pending on one connection`);
      throw new KeydError('KEYD_TOO_MANY_PENDING', `more than ${this.deps.maxPending} requests pending on this connection`);
    }
    this.pending++;
    run()
      .then((reply) => this.reply(opcode, requestId, reply))
      // A reply that cannot be sent (one over the frame maximum) is this request's error: as
      // a second argument to then() the throw escaped as an unhandled rejection, which ends keyd.
      .catch((err: unknown) => this.fail(requestId, err))
      .finally(() => {
        this.pending--;
        this.updateFlow();
      });
  }

  endTurn(): void {
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    const outgoing = this.outgoing;
    this.outgoing = undefined;
    if (outgoing && outgoing.length > 0 && !this.closed) {
      this.socket.write(outgoing.length === 1 ? outgoing[0]! : Buffer.concat(outgoing));
    }
    this.updateFlow();
  }

  /**
   * Read while there is room: fewer than maxPending unserved requests queued and not too
   * many reply bytes unread. Requests waiting in a slot (admin, token) do not stop reading:
   * the connection stays answerable, and a request beyond the slots is refused at once.
   */
  private updateFlow(): void {
    if (this.closed) return;
    const full = this.queued >= this.deps.maxPending || this.socket.writableLength > WRITE_HIGH_WATER;
    if (full && !this.socket.isPaused()) this.socket.pause();
    else if (!full && this.socket.isPaused()) this.socket.resume();
  }

  private reply(opcode: number, requestId: number, payload: Uint8Array): void {
    if (payload.length > MAX_PAYLOAD) {
      throw new KeydError('KEYD_BAD_REQUEST', `the reply would be ${payload.length} bytes, over the ${MAX_PAYLOAD}-byte frame maximum (docs/PROTOCOL.md): ask for less`);
    }
    this.send(encodeFrame(opcode | Opcode.replyFlag, requestId, payload));
  }

  /** Within a turn, joins the turn's replies (in order); otherwise writes at once. */
  private send(frame: Buffer): void {
    if (this.closed) return;
    if (this.outgoing) this.outgoing.push(frame);
    else this.socket.write(frame);
  }

  private fail(requestId: number, err: unknown): void {
    let code = 'KEYD_INTERNAL';
    let message = 'internal error (logged by keyd)';
    if (err instanceof KeydError) {
      code = err.code;
      message = err.message;
    } else {
      this.deps.logger.error({ err, peer: this.peer.id }, 'keyd request failed unexpectedly');
    }
    this.send(encodeFrame(Opcode.error, requestId, encodeError(code, message)));
  }

  private identity(serverName: string): Uint8Array {
    if (!this.mayUseName(serverName.toLowerCase())) {
      throw new KeydError('KEYD_NOT_AUTHORISED', `client ${this.peer.id} may not use ${serverName}`);
    }
    const entry = this.deps.keyring.lookup(serverName);
    return encodeIdentityReply(
      entry && {
        names: entry.names,
        keyRef: entry.id,
        keyType: entry.keyType,
        schemes: entry.schemes,
        certificateChain: entry.chain,
        version: entry.version,
      },
    );
  }

  /**
   * signCertificateVerify, signServerKeyExchange and signHandshakeContent: keyd signs only
   * the two fixed-format handshake contents that signed-content.ts builds or checks, so no
   * caller can make it sign a digest or message of its choosing (docs/KEYD.md). A key
   * reference is not a capability: the request names the server name it serves, which
   * must be granted to this client, and the key must be the one identity(server name)
   * returns. Every refusal is counted and audited by the ledger.
   */
  private sign(opcode: number, payload: Uint8Array): Uint8Array | (() => Promise<Uint8Array>) {
    const { ledger, keyring } = this.deps;
    let keyRef: string | undefined;
    try {
      const request = decodeSigningRequest(opcode, payload);
      const { scheme } = request;
      const serverName = request.serverName.toLowerCase();
      if (!this.mayUseName(serverName)) throw new KeydError('KEYD_NOT_AUTHORISED', `client ${this.peer.id} may not use ${serverName}`);
      const entry = keyring.get(request.keyRef);
      if (!entry) throw new KeydError('KEYD_UNKNOWN_KEY', `unknown key reference ${request.keyRef} (replaced or deleted?)`);
      keyRef = entry.id;
      if (keyring.lookup(serverName)?.id !== entry.id) {
        throw new KeydError('KEYD_NOT_AUTHORISED', `key ${entry.id} does not serve ${serverName}: sign with the key identity(${serverName}) returns`);
      }
      const { kind, content } = request.content(this.deps.signingPolicy);
      // Allowed for the kind (rsa_pkcs1_* only for TLS 1.2, never SHA-1), then bound to the key's type.
      if (!schemeFitsKey(kind, checkSchemeForKind(kind, scheme), entry.keyType)) {
        throw new KeydError('KEYD_SCHEME_UNSUPPORTED', `key ${entry.id} (${entry.keyType}) cannot sign with scheme 0x${scheme.toString(16).padStart(4, '0')}`);
      }
      if (!this.deps.buckets.take(this.peer.id)) {
        this.refuseForLimit('signature-rate', `more than ${this.deps.limits.signaturesPerSecond} signatures/s (burst ${this.deps.limits.signatureBurst})`);
        throw new KeydError('KEYD_THROTTLED', `client ${this.peer.id} exceeds its ${this.deps.limits.signaturesPerSecond} signatures per second`);
      }
      const timing = { backend: entry.key.location, startedAt: performance.now() };
      const key = entry.key;
      const client = this.peer.id;
      if (key.signNow) {
        const signature = key.signNow(scheme, content);
        ledger.signed(client, entry.id, timing);
        return encodeSignature(signature);
      }
      // A key outside keyd's memory (a token): answered when the token is, in a pending slot.
      const id = entry.id;
      return () =>
        key.sign(scheme, content).then(
          (signature) => {
            ledger.signed(client, id, timing);
            return encodeSignature(signature);
          },
          (err: unknown) => {
            ledger.refused(client, id, err instanceof KeydError ? err.code : 'KEYD_INTERNAL', timing.backend);
            throw err;
          },
        );
    } catch (err) {
      ledger.refused(this.peer.id, keyRef, err instanceof KeydError ? err.code : 'KEYD_INTERNAL');
      throw err;
    }
  }

  /**
   * issueDelegatedCredential (RFC 9345): the same grant and key checks as signing, then
   * delegation.ts checks the certificate, lifetime, scheme and key and signs the §4 content
   * it builds itself. Each issuance is an audit line; refusals are counted like signing
   * refusals (aggregated per window), so a client cannot write a line per bad request.
   */
  private async delegate(payload: Uint8Array): Promise<Uint8Array> {
    const { keyring, ledger, limits, delegation } = this.deps;
    const client = this.peer.id;
    let keyRef: string | undefined;
    try {
      const request = decodeDelegationRequest(payload);
      const serverName = request.serverName.toLowerCase();
      if (!this.mayUseName(serverName)) throw new KeydError('KEYD_NOT_AUTHORISED', `client ${client} may not use ${serverName}`);
      const entry = keyring.get(request.keyRef);
      if (!entry) throw new KeydError('KEYD_UNKNOWN_KEY', `unknown key reference ${request.keyRef} (replaced or deleted?)`);
      keyRef = entry.id;
      if (keyring.lookup(serverName)?.id !== entry.id) {
        throw new KeydError('KEYD_NOT_AUTHORISED', `key ${entry.id} does not serve ${serverName}: delegate from the key identity(${serverName}) returns`);
      }
      if (limits.delegatedCredentialsPerMinute === 0 || !delegation.buckets.take(client)) {
        this.refuseForLimit('delegation-rate', `more than ${limits.delegatedCredentialsPerMinute} delegated credentials per minute`);
        throw new KeydError('KEYD_THROTTLED', `client ${client} exceeds its ${limits.delegatedCredentialsPerMinute} delegated credentials per minute`);
      }
      const issued = await issueDelegatedCredential(entry, request, limits.delegatedCredentialMaxSeconds, delegation.now());
      await delegation.audit({
        op: 'delegate',
        caller: { kind: 'client', id: client },
        names: [serverName],
        keyRef: entry.id,
        keyType: entry.keyType,
        ok: true,
        message:
          `delegated credential for ${serverName}: key sha256:${issued.spkiSha256.slice(0, 32)} signs ${SCHEMES.get(issued.scheme)?.name}, ` +
          `certified with ${SCHEMES.get(issued.algorithm)?.name}, expires ${issued.notAfter.toISOString()}`,
      });
      return encodeDelegationReply({ certificate: issued.certificate, delegatedCredential: issued.delegatedCredential });
    } catch (err) {
      ledger.refused(client, keyRef, err instanceof KeydError ? err.code : 'KEYD_INTERNAL');
      throw err;
    }
  }

  private mayUseName(name: string): boolean {
    return this.peer.allowed.some((p) => patternCovers(p, name));
  }

  private async admin(opcode: number, payload: Uint8Array): Promise<Uint8Array> {
    const { json, attachments } = decodeAdmin(payload);
    const service = this.deps.adminService;
    const caller = this.peer.caller ?? { kind: 'local' as const, id: this.peer.id };
    const name = () => stringField(json, 'name');
    switch (opcode) {
      case Opcode.put: {
        const names = json.names;
        if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
          throw new KeydError('KEYD_BAD_REQUEST', 'put: "names" must be an array of strings');
        }
        const [keyDer, ...chain] = attachments;
        if (!keyDer) throw new KeydError('KEYD_BAD_REQUEST', 'put: the private key attachment is missing');
        const privateKey = privateKeyFromDer(keyDer);
        return encodeAdmin(await service.put(caller, names as string[], privateKey, chain, optionalStringField(json, 'token')));
      }
      case Opcode.generate:
        return encodeAdmin(
          await service.generate(caller, name(), stringField(json, 'keyType') as GenerateKeyType, stringField(json, 'subject'), optionalStringField(json, 'token')),
        );
      case Opcode.setChain:
        return encodeAdmin(await service.setChain(caller, name(), attachments));
      case Opcode.delete:
        await service.delete(caller, name());
        return encodeAdmin({});
      case Opcode.list:
        return encodeAdmin({ keys: await service.list(caller) });
      case Opcode.show:
        return encodeAdmin(await service.show(caller, name()));
      case Opcode.audit: {
        const limit = typeof json.limit === 'number' ? json.limit : undefined;
        const since = typeof json.since === 'string' ? json.since : undefined;
        // One reply is one frame: the newest entries that fit, marked when older ones are left out.
        return encodeAdmin(newestEntriesWithin(await service.audit(caller, { ...(limit ? { limit } : {}), ...(since ? { since } : {}) }), MAX_ADMIN_REPLY_JSON));
      }
      case Opcode.stats:
        return encodeAdmin({ clients: await service.stats(caller) });
      default:
        throw new KeydError('KEYD_UNKNOWN_OPCODE', `unknown admin opcode 0x${opcode.toString(16)}`);
    }
  }
}

function stringField(json: Record<string, unknown>, field: string): string {
  const v = json[field];
  if (typeof v !== 'string' || v.length === 0) throw new KeydError('KEYD_BAD_REQUEST', `"${field}" must be a non-empty string`);
  return v;
}

function optionalStringField(json: Record<string, unknown>, field: string): string | undefined {
  return json[field] === undefined ? undefined : stringField(json, field);
}

function privateKeyFromDer(der: Uint8Array): KeyObject {
  const copy = Buffer.from(der);
  try {
    return createPrivateKey({ key: copy, format: 'der', type: 'pkcs8' });
  } catch (err) {
    throw new KeydError('KEYD_BAD_KEY', `the private key attachment is not a PKCS#8 DER private key (${(err as Error).message})`);
  } finally {
    // Wipe both our copy and the bytes in the received frame: only the KeyObject remains.
    copy.fill(0);
    der.fill(0);
  }
}
