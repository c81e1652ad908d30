import { DecodeError, Reader } from '../lib/reader.js';
import { Writer } from '../lib/writer.js';
import { KeydError } from './errors.js';
import { LinearReassembler } from '../lib/reassembler.js';

/**
 * keyd frame codec (docs/PROTOCOL.md). Pure bytes in / bytes out: no sockets here.
 *
 * Header: version u8 | opcode u8 | reserved u16 | request id u32 | payload length u32.
 */
export const PROTOCOL_VERSION = 2;
export const HEADER_LENGTH = 12;
export const MAX_PAYLOAD = 1 << 20;

export const Opcode = {
  ping: 0x01,
  identity: 0x02,
  signCertificateVerify: 0x03,
  signServerKeyExchange: 0x04,
  signHandshakeContent: 0x05,
  issueDelegatedCredential: 0x06,
  put: 0x10,
  generate: 0x11,
  setChain: 0x12,
  delete: 0x13,
  list: 0x14,
  show: 0x15,
  audit: 0x16,
  stats: 0x17,
  changed: 0x40,
  replyFlag: 0x80,
  error: 0xff,
} as const;

/** Requests that sign (docs/PROTOCOL.md): served by the fair scheduler, granted by name, rate-limited, counted. */
export const SIGNING_OPCODES: ReadonlySet<number> = new Set([Opcode.signCertificateVerify, Opcode.signServerKeyExchange, Opcode.signHandshakeContent]);

/** Admin opcodes, accepted on the admin socket only. */
export const ADMIN_OPCODES: ReadonlySet<number> = new Set([
  Opcode.put,
  Opcode.generate,
  Opcode.setChain,
  Opcode.delete,
  Opcode.list,
  Opcode.show,
  Opcode.audit,
  Opcode.stats,
]);

/**
 * Largest request payload keyd reads per opcode, checked as soon as a frame header is
 * complete so that an oversized body is refused before it is buffered (docs/PROTOCOL.md,
 * "Limits"). Signing-path requests are a few hundred bytes at most: key_ref and
 * server_name are <1..255> each, the hash <0..255>. Only `put` and `setChain` carry
 * keys and chains; every other admin request is a small JSON header.
 */
export const SMALL_REQUEST_PAYLOAD = 1024;
export const ADMIN_REQUEST_PAYLOAD = 16 * 1024;
const LARGE_ADMIN_OPCODES: ReadonlySet<number> = new Set([Opcode.put, Opcode.setChain]);

/** The request payload limit for `opcode` on a signing (admin = false) or admin connection. */
export function requestPayloadLimit(opcode: number, admin: boolean): number {
  if (!admin || !ADMIN_OPCODES.has(opcode)) return SMALL_REQUEST_PAYLOAD;
  return LARGE_ADMIN_OPCODES.has(opcode) ? MAX_PAYLOAD : ADMIN_REQUEST_PAYLOAD;
}

export interface Frame {
  opcode: number;
  requestId: number;
  payload: Uint8Array;
}

export function encodeFrame(opcode: number, requestId: number, payload: Uint8Array): Buffer {
  if (payload.length > MAX_PAYLOAD) {
    throw new KeydError('KEYD_BAD_REQUEST', `payload of ${payload.length} bytes exceeds the ${MAX_PAYLOAD}-byte maximum`);
  }
  const out = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  out[0] = PROTOCOL_VERSION;
  out[1] = opcode;
  out.writeUInt16BE(0, 2);
  out.writeUInt32BE(requestId >>> 0, 4);
  out.writeUInt32BE(payload.length, 8);
  out.set(payload, HEADER_LENGTH);
  return out;
}

/**
 * Streaming deframer: feed it chunks as they arrive; it returns the complete frames.
 * A bad header throws KEYD_BAD_FRAME (with the request id when it could be read),
 * after which the stream cannot be trusted and must be closed. It owns the chunks it is
 * given: bytes of an incomplete frame are zeroed once copied into a larger buffer.
 */
export class FrameDecoder {
  /** Frames split across chunks are joined without re-copying per chunk (src/lib/reassembler.ts). */
  private readonly buffer = new LinearReassembler();

  /** `maxPayload`: one limit for every opcode, or a limit per opcode (keyd's requestPayloadLimit). */
  constructor(private readonly maxPayload: number | ((opcode: number) => number) = MAX_PAYLOAD) {}

  /** Bytes received but not yet part of a complete frame. */
  get pending(): number {
    return this.buffer.length;
  }

  push(chunk: Uint8Array): Frame[] {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (buf.length === 0) return [];
    const pendingBefore = this.buffer.length > 0 ? this.buffer.peek() : undefined;
    this.buffer.push(buf);
    if (pendingBefore) {
      // Joined with bytes already pending, `buf` was copied, and so were those bytes if they
      // moved to a larger buffer. Wipe what was copied, so that a frame split across reads
      // (a put's PKCS#8 key) leaves no copy behind in buffers that nothing else would zero.
      buf.fill(0);
      const pendingNow = this.buffer.peek();
      if (pendingNow.buffer !== pendingBefore.buffer || pendingNow.byteOffset !== pendingBefore.byteOffset) pendingBefore.fill(0);
    }
    const frames: Frame[] = [];
    while (this.buffer.length >= HEADER_LENGTH) {
      const data = this.buffer.peek();
      const version = data[0]!;
      const opcode = data[1]!;
      const reserved = data.readUInt16BE(2);
      const requestId = data.readUInt32BE(4);
      const length = data.readUInt32BE(8);
      if (version !== PROTOCOL_VERSION) {
        throw new FrameError(`unsupported protocol version ${version} (expected ${PROTOCOL_VERSION})`, requestId);
      }
      if (reserved !== 0) throw new FrameError(`reserved header field is 0x${reserved.toString(16)}, must be 0`, requestId);
      const limit = typeof this.maxPayload === 'number' ? this.maxPayload : this.maxPayload(opcode);
      if (length > limit) {
        throw new FrameError(`payload length ${length} exceeds the ${limit}-byte maximum for opcode 0x${opcode.toString(16).padStart(2, '0')}`, requestId, true);
      }
      if (data.length - HEADER_LENGTH < length) break;
      const frame = this.buffer.take(HEADER_LENGTH + length);
      frames.push({ opcode, requestId, payload: frame.subarray(HEADER_LENGTH) });
    }
    return frames;
  }
}

/** A framing error: the connection must be closed after reporting it. */
export class FrameError extends KeydError {
  constructor(
    message: string,
    readonly requestId: number,
    /** The frame was well-formed but larger than the opcode's limit (a limit refusal). */
    readonly oversized = false,
  ) {
    super('KEYD_BAD_FRAME', message);
  }
}

// ---- payload codecs -------------------------------------------------------------

const ascii = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Runs a payload decoder; a decode failure (short read, bad length, trailing bytes) becomes KEYD_BAD_REQUEST. */
function decodePayload<T>(what: string, payload: Uint8Array, body: (r: Reader) => T): T {
  try {
    const r = new Reader(payload, what);
    const value = body(r);
    r.end();
    return value;
  } catch (err) {
    if (err instanceof DecodeError) throw new KeydError('KEYD_BAD_REQUEST', err.message);
    if (err instanceof KeydError) throw err;
    throw new KeydError('KEYD_BAD_REQUEST', `${what}: ${(err as Error).message}`);
  }
}

function str(bytes: Uint8Array): string {
  return ascii.decode(bytes);
}

function writeStr(w: Writer, width: 1 | 2, s: string): void {
  w.opaque(width, Buffer.from(s, 'latin1'));
}

export function encodePing(data: Uint8Array): Buffer {
  return new Writer(data.length + 1).opaque(1, data).finish();
}

export function decodePing(payload: Uint8Array): Uint8Array {
  return decodePayload('ping', payload, (r) => r.vec(1, 0, 64, 'data'));
}

export function encodeIdentityRequest(serverName: string): Buffer {
  return new Writer(serverName.length + 1).opaque(1, Buffer.from(serverName, 'latin1')).finish();
}

export function decodeIdentityRequest(payload: Uint8Array): string {
  return decodePayload('identity', payload, (r) => str(r.vec(1, 1, 255, 'server_name')));
}

export interface SignRequest {
  keyRef: string;
  /** The server name the handshake serves: keyd checks it against the grants and the key's names. */
  serverName: string;
  scheme: number;
  transcriptHash: Uint8Array;
}

export function encodeSignRequest(keyRef: string, serverName: string, scheme: number, transcriptHash: Uint8Array): Buffer {
  const w = new Writer(keyRef.length + serverName.length + transcriptHash.length + 8);
  writeStr(w, 1, keyRef);
  writeStr(w, 1, serverName);
  w.u16(scheme);
  w.opaque(1, transcriptHash);
  return w.finish();
}

export function decodeSignRequest(payload: Uint8Array): SignRequest {
  return decodePayload('signCertificateVerify', payload, (r) => ({
    keyRef: str(r.vec(1, 1, 255, 'key_ref')),
    serverName: str(r.vec(1, 1, 255, 'server_name')),
    scheme: r.u16('scheme'),
    transcriptHash: r.vec(1, 0, 255, 'transcript_hash'),
  }));
}

/**
 * signServerKeyExchange and signHandshakeContent: the parts every signing request starts
 * with, then the content exactly as TLS signs it (keyd checks it, signed-content.ts).
 */
export interface SignContentRequest {
  keyRef: string;
  serverName: string;
  scheme: number;
  content: Uint8Array;
}

function writeSigningHeader(w: Writer, keyRef: string, serverName: string, scheme: number): void {
  writeStr(w, 1, keyRef);
  writeStr(w, 1, serverName);
  w.u16(scheme);
}

/**
 * signServerKeyExchange (0x04): key_ref, server_name, scheme, then client_random[32],
 * server_random[32] and ServerECDHParams to the end of the payload — the RFC 5246
 * §7.4.3 signed content itself.
 */
export function encodeServerKeyExchangeRequest(keyRef: string, serverName: string, scheme: number, content: Uint8Array): Buffer {
  const w = new Writer(keyRef.length + serverName.length + content.length + 4);
  writeSigningHeader(w, keyRef, serverName, scheme);
  w.bytes(content);
  return w.finish();
}

export function decodeServerKeyExchangeRequest(payload: Uint8Array): SignContentRequest {
  return decodePayload('signServerKeyExchange', payload, (r) => ({
    keyRef: str(r.vec(1, 1, 255, 'key_ref')),
    serverName: str(r.vec(1, 1, 255, 'server_name')),
    scheme: r.u16('scheme'),
    content: r.rest(),
  }));
}

/** signHandshakeContent (0x05): key_ref, server_name, scheme, opaque content<1..2^16-1>. */
export function encodeHandshakeContentRequest(keyRef: string, serverName: string, scheme: number, content: Uint8Array): Buffer {
  const w = new Writer(keyRef.length + serverName.length + content.length + 6);
  writeSigningHeader(w, keyRef, serverName, scheme);
  w.opaque(2, content);
  return w.finish();
}

export function decodeHandshakeContentRequest(payload: Uint8Array): SignContentRequest {
  return decodePayload('signHandshakeContent', payload, (r) => ({
    keyRef: str(r.vec(1, 1, 255, 'key_ref')),
    serverName: str(r.vec(1, 1, 255, 'server_name')),
    scheme: r.u16('scheme'),
    content: r.vec(2, 1, 0xffff, 'content'),
  }));
}

export function encodeSignature(signature: Uint8Array): Buffer {
  return new Writer(signature.length + 2).opaque(2, signature).finish();
}

export function decodeSignature(payload: Uint8Array): Uint8Array {
  return decodePayload('signature', payload, (r) => r.vec(2, 1, 0xffff, 'signature'));
}

/** issueDelegatedCredential (RFC 9345): what the edge asks keyd to certify. */
export interface DelegationRequest {
  keyRef: string;
  serverName: string;
  /** The scheme the credential's key will sign CertificateVerify with. */
  dcCertVerifyAlgorithm: number;
  /** Requested lifetime from now, in seconds. */
  lifetimeSeconds: number;
  /** DER SubjectPublicKeyInfo of the credential's key. */
  subjectPublicKeyInfo: Uint8Array;
}

export function encodeDelegationRequest(request: DelegationRequest): Buffer {
  const w = new Writer(request.keyRef.length + request.serverName.length + request.subjectPublicKeyInfo.length + 12);
  writeStr(w, 1, request.keyRef);
  writeStr(w, 1, request.serverName);
  w.u16(request.dcCertVerifyAlgorithm);
  w.u32(request.lifetimeSeconds);
  w.opaque(2, request.subjectPublicKeyInfo);
  return w.finish();
}

export function decodeDelegationRequest(payload: Uint8Array): DelegationRequest {
  return decodePayload('issueDelegatedCredential', payload, (r) => ({
    keyRef: str(r.vec(1, 1, 255, 'key_ref')),
    serverName: str(r.vec(1, 1, 255, 'server_name')),
    dcCertVerifyAlgorithm: r.u16('dc_cert_verify_algorithm'),
    lifetimeSeconds: r.u32('lifetime_seconds'),
    subjectPublicKeyInfo: r.vec(2, 1, 0xffff, 'subject_public_key_info'),
  }));
}

/** The answer: the leaf the credential is bound to, and the encoded DelegatedCredential (RFC 9345 §4). */
export interface DelegationReply {
  certificate: Uint8Array;
  delegatedCredential: Uint8Array;
}

export function encodeDelegationReply(reply: DelegationReply): Buffer {
  return new Writer(reply.certificate.length + reply.delegatedCredential.length + 8)
    .opaque(3, reply.certificate)
    .opaque(3, reply.delegatedCredential)
    .finish();
}

export function decodeDelegationReply(payload: Uint8Array): DelegationReply {
  return decodePayload('issueDelegatedCredential reply', payload, (r) => ({
    certificate: Uint8Array.from(r.vec(3, 1, 0xffffff, 'certificate')),
    delegatedCredential: Uint8Array.from(r.vec(3, 1, 0xffffff, 'delegated_credential')),
  }));
}

/** The identity as it travels (the client's KeydIdentity is the same shape). */
export interface WireIdentity {
  names: string[];
  keyRef: string;
  keyType: string;
  schemes: number[];
  certificateChain: Uint8Array[];
  version: number;
}

export function encodeIdentityReply(identity: WireIdentity | undefined): Buffer {
  const w = new Writer(256);
  if (!identity) return w.u8(0).finish();
  w.u8(1);
  writeStr(w, 1, identity.keyRef);
  writeStr(w, 1, identity.keyType);
  w.u32(identity.version);
  w.vec(2, () => identity.names.forEach((n) => writeStr(w, 1, n)));
  w.vec(1, () => identity.schemes.forEach((s) => w.u16(s)));
  w.vec(3, () => identity.certificateChain.forEach((c) => w.opaque(3, c)));
  return w.finish();
}

export function decodeIdentityReply(payload: Uint8Array): WireIdentity | undefined {
  return decodePayload('identity reply', payload, (r) => {
    const found = r.u8('found');
    if (found === 0) return undefined;
    if (found !== 1) throw new KeydError('KEYD_BAD_REQUEST', `identity reply: found flag ${found}`);
    const keyRef = str(r.vec(1, 1, 255, 'key_ref'));
    const keyType = str(r.vec(1, 1, 255, 'key_type'));
    const version = r.u32('version');
    const names: string[] = [];
    const nr = r.sub(2, 0, 0xffff, 'names');
    while (nr.remaining > 0) names.push(str(nr.vec(1, 1, 255, 'name')));
    const schemes = r.u16List(1, 2, 254, 'schemes');
    const certificateChain: Uint8Array[] = [];
    const cr = r.sub(3, 0, 0xffffff, 'chain');
    while (cr.remaining > 0) certificateChain.push(Uint8Array.from(cr.vec(3, 1, 0xffffff, 'cert_der')));
    return { names, keyRef, keyType, schemes, certificateChain, version };
  });
}

export function encodeChanged(names: readonly string[]): Buffer {
  const w = new Writer(64);
  w.vec(2, () => names.forEach((n) => writeStr(w, 1, n)));
  return w.finish();
}

export function decodeChanged(payload: Uint8Array): string[] {
  return decodePayload('changed', payload, (r) => {
    const names: string[] = [];
    const nr = r.sub(2, 0, 0xffff, 'names');
    while (nr.remaining > 0) names.push(str(nr.vec(1, 1, 255, 'name')));
    return names;
  });
}

export function encodeError(code: string, message: string): Buffer {
  const w = new Writer(code.length + message.length + 3);
  writeStr(w, 1, code);
  w.opaque(2, Buffer.from(message.slice(0, 4000), 'utf8'));
  return w.finish();
}

export function decodeError(payload: Uint8Array): KeydError {
  return decodePayload('error', payload, (r) => {
    const code = str(r.vec(1, 1, 255, 'code'));
    const message = Buffer.from(r.vec(2, 0, 0xffff, 'message')).toString('utf8');
    return new KeydError(code, message);
  });
}

/** Admin payload: JSON header plus binary attachments (keys, certificates). */
export interface AdminPayload {
  json: Record<string, unknown>;
  attachments: Uint8Array[];
}

/** The most JSON an admin reply without attachments can carry: one frame less encodeAdmin's 3-byte length. */
export const MAX_ADMIN_REPLY_JSON = MAX_PAYLOAD - 3;

export function encodeAdmin(json: object, attachments: readonly Uint8Array[] = []): Buffer {
  const w = new Writer(1024);
  w.opaque(3, Buffer.from(JSON.stringify(json), 'utf8'));
  for (const a of attachments) w.opaque(3, a);
  return w.finish();
}

export function decodeAdmin(payload: Uint8Array): AdminPayload {
  return decodePayload('admin', payload, (r) => {
    let json: unknown;
    try {
      json = JSON.parse(utf8.decode(r.vec(3, 0, 0xffffff, 'json')));
    } catch (err) {
      throw new KeydError('KEYD_BAD_REQUEST', `admin: JSON header does not parse (${(err as Error).message})`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new KeydError('KEYD_BAD_REQUEST', 'admin: JSON header must be an object');
    }
    const attachments: Uint8Array[] = [];
    while (r.remaining > 0) attachments.push(r.vec(3, 0, 0xffffff, 'attachment'));
    return { json: json as Record<string, unknown>, attachments };
  });
}
