/**
 * A scripted TLS 1.3 client for negative tests (RFC 8446). Well-behaved clients never send
 * a wrong Finished, a wrong binder or an oversized record, so only a client that can be
 * told to lie proves the server's checks exist. This one has its own ephemeral X25519 key
 * and runs the handshake step by step; every step takes an `alter` hook that rewrites the
 * message (or the sealed record) before it goes out.
 *
 * It reuses the engine's key schedule (src/tls/handshake/key-schedule.ts, checked against
 * RFC 8448 in test/tls/rfc8448.test.ts) and record protection, and keeps its own
 * transcript and message parsing. It runs over any `Transport`: in memory against a
 * TlsServerConnection (`memoryTransport`), or over TCP (`socketTransport`).
 */
import { constants, createHash, createPublicKey, diffieHellman, sign, timingSafeEqual, type KeyObject } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { TlsAlert, TlsPeerAlert } from '../../src/tls/alert.js';
import { TlsServerConnection } from '../../src/tls/connection.js';
import { SUITES, type SuiteInfo } from '../../src/tls/crypto/suites.js';
import { EarlySecrets, finishedVerifyData, nextTrafficSecret, resumptionPsk, type MasterSecrets } from '../../src/tls/handshake/key-schedule.js';
import type { ResolvedOptions } from '../../src/tls/options.js';
import { RecordProtection } from '../../src/tls/record/protection.js';
import { encodeClientHello, ext, extensions, typicalExtensions, type RawExtension } from '../tls/client-hello-builder.js';
import { montgomeryKeyPair } from './montgomery-keys.js';

const HANDSHAKE = 22;
const ALERT = 21;
const APPLICATION_DATA = 23;
const CHANGE_CIPHER_SPEC = 20;
const HS_SERVER_HELLO = 2;
const HS_NEW_SESSION_TICKET = 4;
const HS_ENCRYPTED_EXTENSIONS = 8;
const HS_CERTIFICATE = 11;
const HS_CERTIFICATE_REQUEST = 13;
const HS_CERTIFICATE_VERIFY = 15;
const HS_FINISHED = 20;
const HS_KEY_UPDATE = 24;
const EXT_PRE_SHARED_KEY = 41;
const EXT_KEY_SHARE = 51;
const X25519 = 0x001d;

/** Where the client's bytes go and the server's come from. */
export interface Transport {
  send(bytes: Buffer): void;
  /** The next bytes from the server; null once the server has nothing more to say (closed, or waiting for us). */
  read(): Promise<Buffer | null>;
  close(): void;
}

/** What an in-memory server did, seen from the server's side. */
export interface ServerSide {
  conn: TlsServerConnection;
  /** Application data the server delivered to its application. */
  delivered: Buffer[];
  /** The error the server reported (alert sent or received), if any. */
  error: TlsAlert | TlsPeerAlert | undefined;
  handshakeComplete: boolean;
}

/** Lets pending promises of the server (identity lookup, signing) run. */
function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A TlsServerConnection driven in memory; `now` is the server's clock. */
export function memoryTransport(options: ResolvedOptions, now: () => number = Date.now): Transport & { server: ServerSide } {
  const conn = new TlsServerConnection(options, now);
  const server: ServerSide = { conn, delivered: [], error: undefined, handshakeComplete: false };
  const queue: Buffer[] = [];
  conn.onSend = (b) => queue.push(Buffer.from(b));
  conn.onApplicationData = (d) => server.delivered.push(Buffer.from(d));
  conn.onHandshakeComplete = () => (server.handshakeComplete = true);
  conn.onError = (err) => (server.error = err);
  return {
    server,
    send: (bytes) => conn.receive(bytes),
    async read() {
      // The server answers synchronously except while it waits for its identity and
      // signer (promises): a few turns of the event loop settle those.
      for (let i = 0; i < 20; i++) {
        if (queue.length) return queue.shift()!;
        if (conn.closed) return null;
        await tick();
      }
      return null;
    },
    close: () => conn.close(),
  };
}

/** A TCP connection to a server (e.g. socket.ts createServer on loopback). */
export async function socketTransport(port: number, host = '127.0.0.1'): Promise<Transport & { socket: Socket }> {
  const socket = connect({ port, host });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const queue: Buffer[] = [];
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  socket.on('data', (d: Buffer) => {
    queue.push(d);
    notify();
  });
  socket.on('end', () => {
    ended = true;
    notify();
  });
  socket.on('close', () => {
    ended = true;
    notify();
  });
  socket.on('error', () => {
    ended = true;
    notify();
  });
  return {
    socket,
    send: (bytes) => {
      if (!socket.destroyed) socket.write(bytes);
    },
    async read() {
      // Waits for data or the end of the connection: over a socket, "nothing more" is only
      // known when the server closes, so tests read only what the server must send.
      while (!queue.length && !ended) await new Promise<void>((resolve) => (wake = resolve));
      return queue.shift() ?? null;
    },
    close: () => socket.destroy(),
  };
}

export interface TicketOffer {
  /** The ticket bytes from NewSessionTicket. */
  ticket: Buffer;
  psk: Buffer;
  /** obfuscated_ticket_age to send (ticket_age_add already added). */
  obfuscatedAge: number;
  /** Rewrites the computed binder (e.g. flip a bit). */
  alterBinder?: (binder: Buffer) => Buffer;
  /** Identities offered before the ticket (with zero binders), so the ticket's index is their count. */
  decoys?: Buffer[];
}

export interface ClientOptions {
  serverName?: string;
  cipherSuite?: number;
  /** record_size_limit extension to offer (RFC 8449). */
  recordSizeLimit?: number;
  psk?: TicketOffer;
  /** Offer delegated credentials (RFC 9345 §4.1.1) for these CertificateVerify schemes. */
  delegatedCredentialSchemes?: number[];
  /** Replaces signature_algorithms (default: ECDSA P-256, RSA-PSS-RSAE SHA-256, Ed25519). */
  signatureAlgorithms?: number[];
  /** Replaces psk_key_exchange_modes (default: psk_dhe_ke (1) only; RFC 8446 §4.2.9). */
  pskModes?: number[];
  /** Offer 0-RTT: the early_data extension (RFC 8446 §4.2.10), before pre_shared_key. */
  earlyData?: boolean;
}

/** What the server authenticated with (§4.4.2, §4.4.3), as received. */
export interface ServerAuthentication {
  /** The Certificate message. */
  certificate: Buffer;
  /** The CertificateVerify message. */
  certificateVerify: Buffer;
  /** Transcript-Hash(ClientHello … Certificate): what CertificateVerify signs (§4.4.3). */
  transcriptHashBeforeVerify: Buffer;
}

export interface ReceivedTicket {
  lifetime: number;
  ageAdd: number;
  nonce: Buffer;
  ticket: Buffer;
  psk: Buffer;
}

/** One record from the server, decrypted when keys are in use. */
export interface ServerRecord {
  type: number;
  content: Buffer;
}

export interface ParsedServerHello {
  cipherSuite: number;
  /** pre_shared_key.selected_identity, when the server accepted a PSK. */
  selectedIdentity: number | undefined;
  extensionTypes: number[];
}

/** The server's CertificateRequest (RFC 8446 §4.3.2), parsed by hand. */
export interface ParsedCertificateRequest {
  context: Buffer;
  signatureAlgorithms: number[];
  /** certificate_authorities, DER DistinguishedNames; undefined when absent. */
  certificateAuthorities: Buffer[] | undefined;
  extensionTypes: number[];
}

/** What the client answers a CertificateRequest with (§4.4.2, §4.4.3). */
export interface ClientCertificateFlight {
  /** DER chain, leaf first; empty = the client has no certificate. */
  chain: Uint8Array[];
  /** Signs the CertificateVerify (omitted for an empty chain). */
  key?: KeyObject;
  /** The scheme to claim and sign with; default from the key type. */
  scheme?: number;
  /** Rewrites the signature (e.g. one bit flipped). */
  alterSignature?: (signature: Buffer) => Buffer;
  /** Leaves the CertificateVerify out after a non-empty Certificate. */
  omitCertificateVerify?: boolean;
  /** certificate_request_context to echo; default the one received. */
  requestContext?: Buffer;
  /** The end-entity CertificateEntry's extensions block, without its length (default none). */
  leafExtensions?: Buffer;
}

type Alter = (bytes: Buffer) => Buffer;
const same: Alter = (b) => b;

/** Flips one bit of `bytes` (a copy): bit `bit` of byte `index` (negative = from the end). */
export function flipBit(bytes: Buffer, index = -1, bit = 0): Buffer {
  const copy = Buffer.from(bytes);
  const i = index < 0 ? copy.length + index : index;
  copy[i]! ^= 1 << bit;
  return copy;
}

export class Tls13Client {
  readonly suite: SuiteInfo;
  /** The extension types of the server's EncryptedExtensions (§4.3.1), in order, once read. */
  encryptedExtensionTypes: number[] = [];
  private readonly privateKey: KeyObject;
  private readonly publicKeyRaw: Buffer;
  private readonly transcriptMessages: Buffer[] = [];
  private incoming: Buffer = Buffer.alloc(0);
  private handshakeIn: Buffer = Buffer.alloc(0);
  private readProtection: RecordProtection | undefined;
  private writeProtection: RecordProtection | undefined;
  private clientHandshakeSecret: Buffer | undefined;
  private serverHandshakeSecret: Buffer | undefined;
  private master: MasterSecrets | undefined;
  private clientApplicationSecret: Buffer | undefined;
  private serverApplicationSecret: Buffer | undefined;
  private serverFinishedHash: Buffer | undefined;
  serverHello: ParsedServerHello | undefined;
  /** The server's CertificateRequest, when its flight had one. */
  certificateRequest: ParsedCertificateRequest | undefined;
  /** The Certificate and CertificateVerify received (undefined on resumption). */
  authentication: ServerAuthentication | undefined;
  /** Alerts received from the server (description codes), in order. */
  readonly alerts: number[] = [];

  constructor(
    readonly transport: Transport,
    readonly options: ClientOptions = {},
  ) {
    const suite = SUITES.get(options.cipherSuite ?? 0x1301);
    if (!suite) throw new Error('unknown cipher suite');
    this.suite = suite;
    const { privateKey, publicRaw } = montgomeryKeyPair('x25519');
    this.privateKey = privateKey;
    this.publicKeyRaw = publicRaw;
  }

  private transcriptHash(): Buffer {
    const h = createHash(this.suite.hash);
    for (const m of this.transcriptMessages) h.update(m);
    return h.digest();
  }

  // ---- ClientHello -------------------------------------------------------------

  /** Sends the ClientHello (with a correct binder, unless `psk.alterBinder` changes it). */
  sendClientHello(): Buffer {
    let exts: RawExtension[] = typicalExtensions(this.publicKeyRaw, this.options.serverName ?? 'example.test');
    if (this.options.signatureAlgorithms) {
      const algorithms = extensions.signatureAlgorithms(this.options.signatureAlgorithms);
      exts = exts.map((e) => (e.type === algorithms.type ? algorithms : e));
    }
    if (this.options.pskModes) {
      const modes = extensions.pskModes(this.options.pskModes);
      exts = exts.map((e) => (e.type === modes.type ? modes : e));
    }
    if (this.options.delegatedCredentialSchemes) {
      const schemes = this.options.delegatedCredentialSchemes;
      exts.push(ext(34, (w) => w.vec(2, (l) => schemes.forEach((s) => l.u16(s)))));
    }
    if (this.options.recordSizeLimit !== undefined) exts.push(extensions.recordSizeLimit(this.options.recordSizeLimit));
    if (this.options.earlyData) exts.push(extensions.earlyData());
    const psk = this.options.psk;
    const binderLength = this.suite.hashLength;
    // §4.2.11: pre_shared_key is the last extension; its binders (the last 2 + 1 + hash
    // length bytes of the message) are computed over the ClientHello truncated before them.
    const decoys = psk?.decoys ?? [];
    if (psk) {
      const identities = [...decoys.map((identity) => ({ identity, age: 0 })), { identity: psk.ticket, age: psk.obfuscatedAge }];
      exts.push(extensions.preSharedKey(identities, identities.map(() => Buffer.alloc(binderLength))));
    }
    const hello = encodeClientHello({ cipherSuites: [this.suite.id], extensions: exts });
    if (psk) {
      const bindersLength = 2 + (1 + decoys.length) * (1 + binderLength);
      const truncated = hello.subarray(0, hello.length - bindersLength);
      const binderKey = new EarlySecrets(this.suite.hash, psk.psk).resumptionBinderKey();
      const binder = finishedVerifyData(this.suite.hash, binderKey, createHash(this.suite.hash).update(truncated).digest());
      (psk.alterBinder ?? same)(binder).copy(hello, hello.length - binderLength);
    }
    this.transcriptMessages.push(hello);
    // A ClientHello longer than one record is fragmented (RFC 8446 §5.1: at most 2^14 bytes each).
    const records: Buffer[] = [];
    for (let offset = 0; offset < hello.length; offset += 16384) {
      const fragment = hello.subarray(offset, offset + 16384);
      const record = Buffer.alloc(5);
      record[0] = HANDSHAKE;
      record.writeUInt16BE(0x0301, 1);
      record.writeUInt16BE(fragment.length, 3);
      records.push(record, fragment);
    }
    this.transport.send(Buffer.concat(records));
    return hello;
  }

  // ---- reading ----------------------------------------------------------------

  /** The next record from the server (decrypted once keys are in use); null when it sent nothing more. */
  async readRecord(): Promise<ServerRecord | null> {
    for (;;) {
      if (this.incoming.length >= 5) {
        const length = this.incoming.readUInt16BE(3);
        if (this.incoming.length >= 5 + length) {
          const header = this.incoming.subarray(0, 5);
          const body = this.incoming.subarray(5, 5 + length);
          this.incoming = this.incoming.subarray(5 + length);
          const type = header[0]!;
          if (type === CHANGE_CIPHER_SPEC) continue; // middlebox compatibility (§D.4)
          if (type === APPLICATION_DATA && this.readProtection) {
            const opened = this.readProtection.tryOpen(header, body);
            if (!opened) throw new Error('scripted client: a server record did not authenticate');
            return this.noteAlert({ type: opened.type, content: opened.content });
          }
          return this.noteAlert({ type, content: Buffer.from(body) });
        }
      }
      const more = await this.transport.read();
      if (!more) return null;
      this.incoming = Buffer.concat([this.incoming, more]);
    }
  }

  private noteAlert(record: ServerRecord): ServerRecord {
    if (record.type === ALERT && record.content.length === 2) this.alerts.push(record.content[1]!);
    return record;
  }

  /** The next handshake message from the server; throws on an alert or the end of the stream. */
  private async readHandshakeMessage(): Promise<Buffer> {
    for (;;) {
      if (this.handshakeIn.length >= 4) {
        const length = this.handshakeIn.readUIntBE(1, 3);
        if (this.handshakeIn.length >= 4 + length) {
          const message = Buffer.from(this.handshakeIn.subarray(0, 4 + length));
          this.handshakeIn = this.handshakeIn.subarray(4 + length);
          return message;
        }
      }
      const record = await this.readRecord();
      if (!record) throw new Error('scripted client: the server sent nothing more while a handshake message was expected');
      if (record.type === ALERT) throw new Error(`scripted client: server alert ${record.content[1]} while a handshake message was expected`);
      if (record.type !== HANDSHAKE) throw new Error(`scripted client: record type ${record.type} while a handshake message was expected`);
      this.handshakeIn = Buffer.concat([this.handshakeIn, record.content]);
    }
  }

  /**
   * Reads records until an alert, application data, or the end of what the server sends;
   * returns the alert's description code, or undefined when application data or the end
   * came first (so a server that wrongly accepts does not leave a socket test waiting).
   * Handshake messages (tickets) on the way are skipped.
   */
  async readAlert(): Promise<number | undefined> {
    for (;;) {
      const record = await this.readRecord();
      if (!record || record.type === APPLICATION_DATA) return undefined;
      if (record.type === ALERT) return record.content[1];
    }
  }

  // ---- server flight -------------------------------------------------------------

  /** Reads ServerHello … server Finished, checks the server Finished, derives the traffic keys. */
  async readServerFlight(): Promise<ParsedServerHello> {
    const serverHello = await this.readHandshakeMessage();
    if (serverHello[0] !== HS_SERVER_HELLO) throw new Error(`scripted client: expected ServerHello, got type ${serverHello[0]}`);
    const parsed = parseServerHello(serverHello);
    if (parsed.cipherSuite !== this.suite.id) throw new Error('scripted client: server chose another cipher suite');
    this.serverHello = parsed;
    this.transcriptMessages.push(serverHello);
    const sharedSecret = diffieHellman({
      privateKey: this.privateKey,
      publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: parsed.serverShare.toString('base64url') }, format: 'jwk' }),
    });
    const psk = parsed.selectedIdentity !== undefined ? this.options.psk?.psk : undefined;
    const secrets = new EarlySecrets(this.suite.hash, psk).withSharedSecret(sharedSecret);
    const helloHash = this.transcriptHash();
    this.clientHandshakeSecret = secrets.clientHandshakeTrafficSecret(helloHash);
    this.serverHandshakeSecret = secrets.serverHandshakeTrafficSecret(helloHash);
    this.master = secrets.master();
    this.readProtection = new RecordProtection(this.suite, this.serverHandshakeSecret);

    for (const expected of parsed.selectedIdentity !== undefined
      ? [HS_ENCRYPTED_EXTENSIONS]
      : [HS_ENCRYPTED_EXTENSIONS, HS_CERTIFICATE, HS_CERTIFICATE_VERIFY]) {
      let m = await this.readHandshakeMessage();
      if (expected === HS_CERTIFICATE && m[0] === HS_CERTIFICATE_REQUEST) {
        this.certificateRequest = parseCertificateRequest(m);
        this.transcriptMessages.push(m);
        m = await this.readHandshakeMessage();
      }
      if (m[0] !== expected) throw new Error(`scripted client: expected handshake type ${expected}, got ${m[0]}`);
      if (expected === HS_ENCRYPTED_EXTENSIONS) this.encryptedExtensionTypes = extensionTypesOf(m.subarray(6, 6 + m.readUInt16BE(4)));
      if (expected === HS_CERTIFICATE_VERIFY) {
        this.authentication = { certificate: this.transcriptMessages.at(-1)!, certificateVerify: m, transcriptHashBeforeVerify: this.transcriptHash() };
      }
      this.transcriptMessages.push(m);
    }
    const finished = await this.readHandshakeMessage();
    if (finished[0] !== HS_FINISHED) throw new Error(`scripted client: expected Finished, got ${finished[0]}`);
    const expectedServerFinished = finishedVerifyData(this.suite.hash, this.serverHandshakeSecret, this.transcriptHash());
    const verifyData = finished.subarray(4);
    if (verifyData.length !== expectedServerFinished.length || !timingSafeEqual(verifyData, expectedServerFinished)) {
      throw new Error('scripted client: the server Finished does not verify');
    }
    this.transcriptMessages.push(finished);
    this.serverFinishedHash = this.transcriptHash();
    this.clientApplicationSecret = this.master.clientApplicationTrafficSecret(this.serverFinishedHash);
    this.serverApplicationSecret = this.master.serverApplicationTrafficSecret(this.serverFinishedHash);
    // §7.1: the server sends with its application keys right after its Finished.
    this.readProtection = new RecordProtection(this.suite, this.serverApplicationSecret);
    this.writeProtection = new RecordProtection(this.suite, this.clientHandshakeSecret);
    return parsed;
  }

  // ---- client flight and traffic ----------------------------------------------------

  /** The client Finished message a correct client sends now. */
  finishedMessage(): Buffer {
    // §4.4.4: over everything so far (the server Finished, or our Certificate/CertificateVerify).
    const verifyData = finishedVerifyData(this.suite.hash, this.clientHandshakeSecret!, this.transcriptHash());
    return handshakeMessage(HS_FINISHED, verifyData);
  }

  /**
   * The client's Certificate and, for a non-empty chain, CertificateVerify (§4.4.2, §4.4.3),
   * added to the transcript. The signed content is built here from the RFC text, not with the
   * engine's code: 64 spaces, "TLS 1.3, client CertificateVerify", 0, the transcript hash.
   */
  certificateMessages(flight: ClientCertificateFlight): Buffer[] {
    const context = flight.requestContext ?? this.certificateRequest?.context ?? Buffer.alloc(0);
    const extensionsOf = (i: number) => {
      const ext = i === 0 ? flight.leafExtensions : undefined;
      return ext ? Buffer.concat([Buffer.of(ext.length >> 8, ext.length & 0xff), ext]) : Buffer.alloc(2);
    };
    const entries = Buffer.concat(flight.chain.map((der, i) => Buffer.concat([u24(der.length), der, extensionsOf(i)])));
    const certificate = handshakeMessage(HS_CERTIFICATE, Buffer.concat([Buffer.of(context.length), context, u24(entries.length), entries]));
    this.transcriptMessages.push(certificate);
    if (flight.chain.length === 0 || flight.omitCertificateVerify) return [certificate];
    const key = flight.key!;
    const scheme = flight.scheme ?? defaultScheme(key);
    const content = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify', 'latin1'), Buffer.of(0), this.transcriptHash()]);
    const signature = (flight.alterSignature ?? same)(signContent(key, scheme, content));
    const body = Buffer.alloc(4 + signature.length);
    body.writeUInt16BE(scheme, 0);
    body.writeUInt16BE(signature.length, 2);
    signature.copy(body, 4);
    const verify = handshakeMessage(HS_CERTIFICATE_VERIFY, body);
    this.transcriptMessages.push(verify);
    return [certificate, verify];
  }

  /**
   * Sends the client Finished (rewritten by `alter`, e.g. one bit flipped), protected with the
   * client handshake keys, then switches to the client application keys. With `thenData`,
   * an application data record follows in the same write (so a server that does not check
   * the Finished before accepting data would deliver it).
   */
  sendFinished(opts: { alter?: Alter; thenData?: Buffer; certificate?: ClientCertificateFlight } = {}): void {
    const out: Buffer[] = [];
    // §5.1: a message larger than a record (a big client Certificate) goes in fragments of 2^14 bytes.
    if (opts.certificate) {
      for (const m of this.certificateMessages(opts.certificate)) {
        for (let off = 0; off < m.length; off += 16384) out.push(this.writeProtection!.seal(HANDSHAKE, m.subarray(off, off + 16384)));
      }
    }
    const correct = this.finishedMessage();
    const message = (opts.alter ?? same)(correct);
    out.push(this.writeProtection!.seal(HANDSHAKE, message));
    this.transcriptMessages.push(correct);
    this.writeProtection = new RecordProtection(this.suite, this.clientApplicationSecret!);
    if (opts.thenData) out.push(this.writeProtection.seal(APPLICATION_DATA, opts.thenData));
    this.transport.send(Buffer.concat(out));
  }

  /** Runs ClientHello … client Finished correctly. */
  async handshake(): Promise<ParsedServerHello> {
    this.sendClientHello();
    const sh = await this.readServerFlight();
    this.sendFinished();
    return sh;
  }

  /** Seals one record with the current write keys; `alter` rewrites the sealed record (header included). */
  sealRecord(type: number, content: Uint8Array, opts: { padding?: number; alter?: Alter } = {}): Buffer {
    return (opts.alter ?? same)(this.writeProtection!.seal(type, content, opts.padding ?? 0));
  }

  sendApplicationData(data: Uint8Array, opts: { padding?: number; alter?: Alter } = {}): void {
    this.transport.send(this.sealRecord(APPLICATION_DATA, data, opts));
  }

  /**
   * Sends KeyUpdate (§4.6.3). With `switchKeys` false the client keeps sending with the old
   * keys afterwards, as a broken peer would.
   */
  sendKeyUpdate(opts: { requestUpdate?: boolean; switchKeys?: boolean } = {}): void {
    this.transport.send(this.sealRecord(HANDSHAKE, handshakeMessage(HS_KEY_UPDATE, Buffer.of(opts.requestUpdate ? 1 : 0))));
    if (opts.switchKeys ?? true) {
      this.clientApplicationSecret = nextTrafficSecret(this.suite.hash, this.clientApplicationSecret!);
      this.writeProtection = new RecordProtection(this.suite, this.clientApplicationSecret);
    }
  }

  /** Reads `count` NewSessionTickets (sent after our Finished) and derives each one's PSK (§4.6.1). */
  async readTickets(count: number): Promise<ReceivedTicket[]> {
    const resumptionSecret = this.master!.resumptionMasterSecret(this.transcriptHash());
    const tickets: ReceivedTicket[] = [];
    while (tickets.length < count) {
      const m = await this.readHandshakeMessage();
      if (m[0] !== HS_NEW_SESSION_TICKET) throw new Error(`scripted client: expected NewSessionTicket, got ${m[0]}`);
      let o = 4;
      const lifetime = m.readUInt32BE(o);
      const ageAdd = m.readUInt32BE(o + 4);
      o += 8;
      const nonce = Buffer.from(m.subarray(o + 1, o + 1 + m[o]!));
      o += 1 + nonce.length;
      const ticketLength = m.readUInt16BE(o);
      const ticket = Buffer.from(m.subarray(o + 2, o + 2 + ticketLength));
      tickets.push({ lifetime, ageAdd, nonce, ticket, psk: resumptionPsk(this.suite.hash, resumptionSecret, nonce) });
    }
    return tickets;
  }

  /** Reads application data records until `length` bytes arrived (skipping tickets). */
  async readApplicationData(length: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let got = 0;
    while (got < length) {
      const record = await this.readRecord();
      if (!record) throw new Error(`scripted client: stream ended after ${got} of ${length} bytes`);
      if (record.type === ALERT) throw new Error(`scripted client: alert ${record.content[1]} while reading data`);
      if (record.type !== APPLICATION_DATA) continue;
      parts.push(record.content);
      got += record.content.length;
    }
    return Buffer.concat(parts);
  }
}

/** The types of an extensions block's entries (type u16, extension_data<0..2^16-1>). */
function extensionTypesOf(block: Buffer): number[] {
  const types: number[] = [];
  for (let at = 0; at + 4 <= block.length; at += 4 + block.readUInt16BE(at + 2)) types.push(block.readUInt16BE(at));
  return types;
}

function u24(n: number): Buffer {
  const b = Buffer.alloc(3);
  b.writeUIntBE(n, 0, 3);
  return b;
}

/** The scheme a client would pick for its key (RFC 8446 §4.2.3). */
function defaultScheme(key: KeyObject): number {
  if (key.asymmetricKeyType === 'rsa') return 0x0804; // rsa_pss_rsae_sha256
  if (key.asymmetricKeyType === 'ed25519') return 0x0807;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  return curve === 'secp384r1' ? 0x0503 : curve === 'secp521r1' ? 0x0603 : 0x0403;
}

/** Signs with node:crypto as the scheme says: PSS with salt = hash length for rsa_pss_*, DER ECDSA, plain Ed25519. */
function signContent(key: KeyObject, scheme: number, content: Buffer): Buffer {
  const hash = ({ 0x04: 'sha256', 0x05: 'sha384', 0x06: 'sha512' } as Record<number, string>)[scheme >> 8];
  if (scheme === 0x0807) return sign(null, content, key);
  if (scheme >= 0x0804 && scheme <= 0x0806) {
    const pssHash = ['sha256', 'sha384', 'sha512'][scheme - 0x0804]!;
    return sign(pssHash, content, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
  }
  if ((scheme & 0xff) === 0x01) return sign(hash!, content, { key, padding: constants.RSA_PKCS1_PADDING });
  return sign(hash!, content, key);
}

/** CertificateRequest (§4.3.2): context, then extensions; signature_algorithms and certificate_authorities read. */
export function parseCertificateRequest(m: Buffer): ParsedCertificateRequest {
  let o = 4;
  const context = Buffer.from(m.subarray(o + 1, o + 1 + m[o]!));
  o += 1 + context.length;
  const end = o + 2 + m.readUInt16BE(o);
  o += 2;
  const signatureAlgorithms: number[] = [];
  let certificateAuthorities: Buffer[] | undefined;
  const extensionTypes: number[] = [];
  while (o < end) {
    const type = m.readUInt16BE(o);
    const data = m.subarray(o + 4, o + 4 + m.readUInt16BE(o + 2));
    extensionTypes.push(type);
    if (type === 13) for (let i = 2; i < 2 + data.readUInt16BE(0); i += 2) signatureAlgorithms.push(data.readUInt16BE(i));
    if (type === 47) {
      certificateAuthorities = [];
      for (let i = 2; i < 2 + data.readUInt16BE(0); ) {
        const length = data.readUInt16BE(i);
        certificateAuthorities.push(Buffer.from(data.subarray(i + 2, i + 2 + length)));
        i += 2 + length;
      }
    }
    o += 4 + data.length;
  }
  return { context, signatureAlgorithms, certificateAuthorities, extensionTypes };
}

function handshakeMessage(type: number, body: Uint8Array): Buffer {
  const m = Buffer.alloc(4 + body.length);
  m[0] = type;
  m.writeUIntBE(body.length, 1, 3);
  m.set(body, 4);
  return m;
}

/** ServerHello (§4.1.3): the fields the client needs, read by hand (not with the engine's codec). */
export function parseServerHello(m: Buffer): ParsedServerHello & { serverShare: Buffer } {
  let o = 4 + 2 + 32;
  o += 1 + m[o]!; // legacy_session_id_echo
  const cipherSuite = m.readUInt16BE(o);
  o += 2 + 1; // + legacy_compression_method
  const end = o + 2 + m.readUInt16BE(o);
  o += 2;
  let selectedIdentity: number | undefined;
  let serverShare: Buffer | undefined;
  const extensionTypes: number[] = [];
  while (o < end) {
    const type = m.readUInt16BE(o);
    const length = m.readUInt16BE(o + 2);
    const data = m.subarray(o + 4, o + 4 + length);
    extensionTypes.push(type);
    if (type === EXT_PRE_SHARED_KEY) selectedIdentity = data.readUInt16BE(0);
    if (type === EXT_KEY_SHARE) {
      if (data.readUInt16BE(0) !== X25519) throw new Error('scripted client: server key share is not X25519');
      serverShare = Buffer.from(data.subarray(4, 4 + data.readUInt16BE(2)));
    }
    o += 4 + length;
  }
  if (!serverShare) throw new Error('scripted client: ServerHello without key_share (HelloRetryRequest?)');
  return { cipherSuite, selectedIdentity, extensionTypes, serverShare };
}

export const RecordType = { handshake: HANDSHAKE, alert: ALERT, applicationData: APPLICATION_DATA } as const;
