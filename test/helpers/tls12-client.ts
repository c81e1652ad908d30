/**
 * A scripted TLS 1.2 client (RFC 5246 with ECDHE, RFC 8422) that drives a sans-I/O
 * TlsServerConnection in memory, one step at a time, so tests can send the wrong thing
 * at any point: a bad point, a bad Finished, a ChangeCipherSpec too early, a flood of
 * warning alerts, a renegotiating ClientHello. Real clients never do these; the interop
 * tests cover the well-behaved path with real clients. The PRF it uses is checked
 * against published vectors in test/tls/prf12.test.ts.
 */
import { constants, createECDH, createHash, createPublicKey, diffieHellman, sign, type KeyObject } from 'node:crypto';
import { TlsServerConnection } from '../../src/tls/connection.js';
import type { ResolvedOptions } from '../../src/tls/options.js';
import { extendedMasterSecret, finishedVerifyData12, keyBlock12, masterSecret } from '../../src/tls/crypto/prf12.js';
import { SUITES12 } from '../../src/tls/crypto/suites12.js';
import { RecordProtection12 } from '../../src/tls/record/protection12.js';
import { CipherSuite, ExtensionType as X, NamedGroup, SignatureScheme } from '../../src/tls/wire/codepoints.js';
import { encodeClientHello, ext, extensions, type RawExtension } from '../tls/client-hello-builder.js';
import { montgomeryKeyPair } from './montgomery-keys.js';

export interface ServerMessage {
  readonly type: number;
  readonly body: Buffer;
  readonly raw: Buffer;
}

export interface Tls12Hello {
  cipherSuites?: number[];
  extensions?: RawExtension[];
  sessionId?: Uint8Array;
  random?: Uint8Array;
}

/** The extensions of a typical TLS 1.2-only ClientHello (no supported_versions). */
export function tls12Extensions(opts: { ems?: boolean; ticket?: Uint8Array; serverName?: string } = {}): RawExtension[] {
  const list = [
    extensions.serverName(opts.serverName ?? 'example.test'),
    extensions.supportedGroups([NamedGroup.secp256r1, NamedGroup.x25519]),
    ext(X.ec_point_formats, (w) => w.vec(1, (l) => l.u8(0))),
    extensions.signatureAlgorithms([SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pkcs1_sha256]),
    ext(X.renegotiation_info, (w) => w.u8(0)),
  ];
  if (opts.ems !== false) list.push(extensions.raw(X.extended_master_secret));
  if (opts.ticket) list.push(extensions.raw(X.session_ticket, opts.ticket));
  return list;
}

export class Tls12TestClient {
  readonly conn: TlsServerConnection;
  /** Everything the server sent, not yet parsed. */
  private inbound: Buffer = Buffer.alloc(0);
  readonly alerts: { level: number; description: number }[] = [];
  readonly appData: Buffer[] = [];
  errors: unknown[] = [];
  completed = false;
  private transcript: Buffer[] = [];
  clientRandom = Buffer.alloc(32, 0x11);
  serverRandom: Buffer = Buffer.alloc(0);
  suite = SUITES12.get(CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)!;
  ems = false;
  master: Buffer = Buffer.alloc(0);
  private read: RecordProtection12 | undefined;
  private write: RecordProtection12 | undefined;
  private pendingRead: RecordProtection12 | undefined;
  private pendingWrite: RecordProtection12 | undefined;
  serverHello: ServerMessage | undefined;
  serverKeyExchange: ServerMessage | undefined;
  ticket: Buffer | undefined;
  sessionId = Buffer.alloc(0);

  constructor(options: ResolvedOptions, now: () => number = () => 1_700_000_000_000) {
    this.conn = new TlsServerConnection(options, now);
    this.conn.onSend = (b) => {
      this.inbound = Buffer.concat([this.inbound, b]);
    };
    this.conn.onError = (e) => this.errors.push(e);
    this.conn.onHandshakeComplete = () => {
      this.completed = true;
    };
    this.conn.onApplicationData = (d) => this.appData.push(Buffer.from(d));
  }

  /** Sends a record (plaintext, or protected once our ChangeCipherSpec went out). */
  sendRecord(type: number, body: Buffer): void {
    this.conn.receive(this.sealRecord(type, body));
  }

  /** A record as sendRecord would send it, not sent: several can go to the server in one read. */
  sealRecord(type: number, body: Buffer): Buffer {
    if (this.write) return this.write.seal(type, body);
    const h = Buffer.from([type, 3, 3, 0, 0]);
    h.writeUInt16BE(body.length, 3);
    return Buffer.concat([h, body]);
  }

  sendHandshake(message: Buffer): void {
    this.transcript.push(message);
    // RFC 5246 §6.2.1: a message larger than a record travels in fragments of 2^14 bytes.
    for (let off = 0; off < message.length; off += 16384) this.sendRecord(22, message.subarray(off, off + 16384));
  }

  hello(spec: Tls12Hello = {}): void {
    if (spec.random) this.clientRandom = Buffer.from(spec.random);
    const message = encodeClientHello({
      legacyVersion: 0x0303,
      random: this.clientRandom,
      sessionId: spec.sessionId ?? new Uint8Array(0),
      cipherSuites: spec.cipherSuites ?? [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256],
      extensions: spec.extensions ?? tls12Extensions(),
    });
    this.ems = (spec.extensions ?? tls12Extensions()).some((e) => e.type === X.extended_master_secret);
    this.sendHandshake(message);
  }

  /** The server's handshake messages and other records so far (alerts and app data recorded on the side). */
  receive(): ServerMessage[] {
    const messages: ServerMessage[] = [];
    while (this.inbound.length >= 5) {
      const length = this.inbound.readUInt16BE(3);
      if (this.inbound.length < 5 + length) break;
      // A ChangeCipherSpec before we know the keys (resumption): stop until installFromMaster().
      if (this.inbound[0] === 20 && !this.pendingRead) break;
      const header = this.inbound.subarray(0, 5);
      let body = this.inbound.subarray(5, 5 + length);
      const type = header[0]!;
      this.inbound = this.inbound.subarray(5 + length);
      if (type === 20) {
        this.read = this.pendingRead;
        continue;
      }
      if (this.read) {
        const opened = this.read.tryOpen(header, body);
        if (!opened) throw new Error('server record does not authenticate');
        body = opened.content;
      }
      if (type === 21) this.alerts.push({ level: body[0]!, description: body[1]! });
      else if (type === 23) this.appData.push(Buffer.from(body));
      else if (type === 22) {
        for (let off = 0; off < body.length; ) {
          const len = body.readUIntBE(off + 1, 3);
          const raw = Buffer.from(body.subarray(off, off + 4 + len));
          const message = { type: raw[0]!, body: raw.subarray(4), raw };
          this.absorb(message);
          messages.push(message);
          off += 4 + len;
        }
      }
    }
    return messages;
  }

  private absorb(m: ServerMessage): void {
    if (m.type === 2) {
      this.serverHello = m;
      this.serverRandom = Buffer.from(m.body.subarray(2, 34));
      const idLength = m.body[34]!;
      this.sessionId = Buffer.from(m.body.subarray(35, 35 + idLength));
      const suite = m.body.readUInt16BE(35 + idLength);
      this.suite = SUITES12.get(suite)!;
    }
    if (m.type === 12) this.serverKeyExchange = m;
    if (m.type === 4) this.ticket = Buffer.from(m.body.subarray(6));
    this.transcript.push(m.raw);
  }

  /** ClientKeyExchange with our share for the server's group (or `point` as given). */
  keyExchange(point?: Buffer): void {
    const ske = this.serverKeyExchange;
    if (!ske) throw new Error('no ServerKeyExchange');
    const group = ske.body.readUInt16BE(1);
    const serverPoint = ske.body.subarray(4, 4 + ske.body[3]!);
    let ours: Buffer;
    let pms: Buffer;
    if (group === NamedGroup.secp256r1) {
      const ecdh = createECDH('prime256v1');
      ours = ecdh.generateKeys();
      pms = ecdh.computeSecret(serverPoint);
    } else if (group === NamedGroup.x25519) {
      const { privateKey, publicRaw } = montgomeryKeyPair('x25519');
      ours = publicRaw;
      const peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(serverPoint).toString('base64url') }, format: 'jwk' });
      pms = diffieHellman({ privateKey, publicKey: peer });
    } else throw new Error(`the scripted client does not do group ${group}`);
    const message = Buffer.concat([Buffer.from([16, 0, 0, 0]), Buffer.of((point ?? ours).length), point ?? ours]);
    message.writeUIntBE(message.length - 4, 1, 3);
    this.sendHandshake(message);
    if (point) return;
    this.deriveKeys(pms);
  }

  private hash(): Buffer {
    return createHash(this.suite.hash).update(Buffer.concat(this.transcript)).digest();
  }

  private deriveKeys(pms: Buffer): void {
    this.master = this.ems
      ? extendedMasterSecret(this.suite.hash, pms, this.hash())
      : masterSecret(this.suite.hash, pms, this.clientRandom, this.serverRandom);
    this.installFromMaster();
  }

  /** For resumption: the key block of a known master secret. */
  installFromMaster(master = this.master): void {
    this.master = master;
    const keys = keyBlock12(this.suite.hash, master, this.clientRandom, this.serverRandom, this.suite.keyLength, this.suite.fixedIvLength);
    this.pendingWrite = new RecordProtection12(this.suite, keys.clientWriteKey, keys.clientWriteIv);
    this.pendingRead = new RecordProtection12(this.suite, keys.serverWriteKey, keys.serverWriteIv);
  }

  /** The client's Certificate (RFC 5246 §7.4.6): DER chain, leaf first; empty = no certificate. */
  certificate(chain: readonly Uint8Array[]): void {
    const entries = Buffer.concat(chain.map((der) => Buffer.concat([u24(der.length), der])));
    const body = Buffer.concat([u24(entries.length), entries]);
    this.sendHandshake(Buffer.concat([Buffer.of(11), u24(body.length), body]));
  }

  /**
   * CertificateVerify (RFC 5246 §7.4.8): `scheme` and a signature with `key` over every
   * handshake message so far, built here with node:crypto; `alter` rewrites the signature.
   */
  certificateVerify(key: KeyObject, scheme: number, alter: (signature: Buffer) => Buffer = (s) => s): void {
    const content = Buffer.concat(this.transcript);
    const hash = ({ 0x03: 'sha224', 0x04: 'sha256', 0x05: 'sha384', 0x06: 'sha512' } as Record<number, string>)[scheme >> 8];
    let signature: Buffer;
    if (scheme >= 0x0804 && scheme <= 0x0806) {
      signature = sign(['sha256', 'sha384', 'sha512'][scheme - 0x0804]!, content, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
    } else if ((scheme & 0xff) === 0x01) {
      signature = sign(hash!, content, { key, padding: constants.RSA_PKCS1_PADDING });
    } else {
      signature = sign(hash!, content, key);
    }
    signature = alter(signature);
    const body = Buffer.alloc(4);
    body.writeUInt16BE(scheme, 0);
    body.writeUInt16BE(signature.length, 2);
    const message = Buffer.concat([Buffer.of(15), u24(4 + signature.length), body, signature]);
    this.sendHandshake(message);
  }

  changeCipherSpec(): void {
    this.sendRecord(20, Buffer.of(1));
    this.write = this.pendingWrite;
  }

  finished(corrupt = false): void {
    const message = this.finishedMessage();
    if (corrupt) message[4]! ^= 1;
    this.sendHandshake(message);
  }

  /** Our Finished message over the transcript so far, not sent (for tests that alter it). */
  finishedMessage(): Buffer {
    return Buffer.concat([Buffer.from([20, 0, 0, 12]), finishedVerifyData12(this.suite.hash, this.master, 'client', this.hash())]);
  }

  /** The server Finished verifies against our transcript (call after receive()). */
  serverFinishedVerifies(): boolean {
    const last = this.transcript[this.transcript.length - 1];
    if (!last || last[0] !== 20) return false;
    const before = createHash(this.suite.hash).update(Buffer.concat(this.transcript.slice(0, -1))).digest();
    return finishedVerifyData12(this.suite.hash, this.master, 'server', before).equals(last.subarray(4));
  }

  /** A complete full handshake; returns the server's messages of the last flight. */
  async fullHandshake(spec: Tls12Hello = {}): Promise<ServerMessage[]> {
    this.hello(spec);
    for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    this.receive();
    this.keyExchange();
    this.changeCipherSpec();
    this.finished();
    return this.receive();
  }
}

function u24(n: number): Buffer {
  const b = Buffer.alloc(3);
  b.writeUIntBE(n, 0, 3);
  return b;
}
