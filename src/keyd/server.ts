import type { Socket } from 'node:net';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { certificateVerifyContent } from '../tls/signer.js';
import { TRANSCRIPT_HASH_LENGTHS } from '../tls/signature-schemes.js';
import type { AdminService } from './admin-service.js';
import type { AdminCaller, SigningCounters } from './audit.js';
import { KeydError } from './errors.js';
import type { KeyEntry, Keyring } from './keyring.js';
import { patternCovers } from './names.js';
import type { GenerateKeyType } from './pki.js';
import {
  ADMIN_OPCODES,
  FrameDecoder,
  FrameError,
  Opcode,
  decodeAdmin,
  decodeIdentityRequest,
  decodePing,
  decodeSignRequest,
  encodeAdmin,
  encodeChanged,
  encodeError,
  encodeFrame,
  encodeIdentityReply,
  encodePing,
  encodeSignature,
  type Frame,
} from './protocol.js';

/** Who is on the other end of a connection, and what it may do. */
export interface Peer {
  /** Counter / log id: "local" for the unix socket, the certificate subject for mTLS. */
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
  counters: SigningCounters;
  logger: Logger;
  maxPending: number;
}

/** Stop reading from a client that does not read its answers (bytes queued for it). */
const WRITE_HIGH_WATER = 4 * 1024 * 1024;

/**
 * One keyd connection: deframes requests, dispatches on the opcode table, answers each
 * with a reply or an error frame carrying the same request id. Identity, and signatures
 * by keys in keyd's memory, are answered synchronously within the same 'data' event, so
 * a pipelined burst becomes one corked write; signatures by keys in a token (the token
 * may take milliseconds) and admin operations are asynchronous and count against
 * `maxPending`. Nothing a client sends can crash the daemon: every failure is an error frame.
 */
export class KeydConnection {
  private readonly decoder = new FrameDecoder();
  private pending = 0;
  private closed = false;

  constructor(
    readonly socket: Socket,
    readonly peer: Peer,
    private readonly deps: ServerDeps,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => deps.logger.debug({ err: err.message, peer: peer.id }, 'keyd connection error'));
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('drain', () => socket.resume());
  }

  /** Whether a change to `names` concerns this peer (for 'changed' pushes). */
  concerns(names: readonly string[]): boolean {
    return !this.peer.admin && (names.length === 0 || names.some((n) => this.mayUseName(n)));
  }

  pushChanged(names: readonly string[]): void {
    if (this.closed) return;
    const visible = this.peer.allowed.includes('*') ? names : names.filter((n) => this.mayUseName(n));
    this.socket.write(encodeFrame(Opcode.changed, 0, encodeChanged(visible)));
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const fe = err as FrameError;
      this.deps.logger.warn({ peer: this.peer.id, code: fe.code }, `closing keyd connection: ${fe.message}`);
      this.socket.end(encodeFrame(Opcode.error, fe.requestId ?? 0, encodeError('KEYD_BAD_FRAME', fe.message)));
      this.closed = true;
      this.socket.removeAllListeners('data');
      return;
    }
    if (frames.length === 0) return;
    this.socket.cork();
    for (const frame of frames) this.dispatch(frame);
    this.socket.uncork();
    if (this.socket.writableLength > WRITE_HIGH_WATER) this.socket.pause();
  }

  private dispatch(frame: Frame): void {
    const { opcode, requestId, payload } = frame;
    try {
      switch (opcode) {
        case Opcode.ping:
          return this.reply(opcode, requestId, encodePing(decodePing(payload)));
        case Opcode.identity:
          return this.reply(opcode, requestId, this.identity(decodeIdentityRequest(payload)));
        case Opcode.signCertificateVerify: {
          const signed = this.sign(payload);
          if (signed instanceof Uint8Array) return this.reply(opcode, requestId, signed);
          try {
            return this.settle(opcode, requestId, signed);
          } catch (err) {
            this.deps.counters.refused(this.peer.id);
            throw err;
          }
        }
        default:
          if (!ADMIN_OPCODES.has(opcode)) {
            throw new KeydError('KEYD_UNKNOWN_OPCODE', `unknown opcode 0x${opcode.toString(16).padStart(2, '0')} (keyd signs only CertificateVerify content it builds itself)`);
          }
          if (!this.peer.admin) throw new KeydError('KEYD_NOT_AUTHORISED', 'admin operations are only accepted on the admin socket');
          return this.settle(opcode, requestId, () => this.admin(opcode, payload));
      }
    } catch (err) {
      this.fail(requestId, err);
    }
  }

  /** Runs an asynchronous request in one of the connection's `maxPending` slots. */
  private settle(opcode: number, requestId: number, run: () => Promise<Uint8Array>): void {
    if (this.pending >= this.deps.maxPending) {
      throw new KeydError('KEYD_TOO_MANY_PENDING', `more than ${this.deps.maxPending} requests pending on this connection`);
    }
    this.pending++;
    run().then(
      (reply) => this.reply(opcode, requestId, reply),
      (err: unknown) => this.fail(requestId, err),
    ).finally(() => this.pending--);
  }

  private reply(opcode: number, requestId: number, payload: Uint8Array): void {
    if (!this.closed) this.socket.write(encodeFrame(opcode | Opcode.replyFlag, requestId, payload));
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
    if (!this.closed) this.socket.write(encodeFrame(Opcode.error, requestId, encodeError(code, message)));
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
   * signCertificateVerify: the only signing operation. keyd builds the RFC 8446 §4.4.3
   * content itself from the transcript hash, so no caller can make it sign a digest or
   * message of its choosing (DESIGN.md rule 2).
   */
  private sign(payload: Uint8Array): Uint8Array | (() => Promise<Uint8Array>) {
    const { counters } = this.deps;
    try {
      const { keyRef, scheme, transcriptHash } = decodeSignRequest(payload);
      if (!TRANSCRIPT_HASH_LENGTHS.includes(transcriptHash.length)) {
        throw new KeydError('KEYD_BAD_HASH_LENGTH', `transcript hash is ${transcriptHash.length} bytes; a TLS 1.3 transcript hash is 32 (SHA-256) or 48 (SHA-384)`);
      }
      const entry = this.deps.keyring.get(keyRef);
      if (!entry) throw new KeydError('KEYD_UNKNOWN_KEY', `unknown key reference ${keyRef} (replaced or deleted?)`);
      if (!this.mayUseKey(entry)) throw new KeydError('KEYD_NOT_AUTHORISED', `client ${this.peer.id} may not use key ${keyRef}`);
      if (!entry.schemes.includes(scheme)) {
        throw new KeydError('KEYD_SCHEME_UNSUPPORTED', `key ${keyRef} (${entry.keyType}) cannot sign with scheme 0x${scheme.toString(16).padStart(4, '0')}`);
      }
      const content = certificateVerifyContent(transcriptHash);
      const key = entry.key;
      if (key.signNow) {
        const signature = key.signNow(scheme, content);
        counters.signed(this.peer.id);
        return encodeSignature(signature);
      }
      // A key outside keyd's memory (a token): answered when the token is, in a pending slot.
      return () =>
        key.sign(scheme, content).then(
          (signature) => {
            counters.signed(this.peer.id);
            return encodeSignature(signature);
          },
          (err: unknown) => {
            counters.refused(this.peer.id);
            throw err;
          },
        );
    } catch (err) {
      counters.refused(this.peer.id);
      throw err;
    }
  }

  private mayUseName(name: string): boolean {
    return this.peer.allowed.some((p) => patternCovers(p, name));
  }

  /** A key may be used when one of its names is permitted, or a wildcard key covers a permitted name. */
  private mayUseKey(entry: KeyEntry): boolean {
    return entry.names.some((n) => this.peer.allowed.some((p) => patternCovers(p, n) || patternCovers(n, p)));
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
        return encodeAdmin({ entries: await service.audit(caller, { ...(limit ? { limit } : {}), ...(since ? { since } : {}) }) });
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
