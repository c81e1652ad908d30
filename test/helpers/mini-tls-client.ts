/**
 * A minimal sans-I/O TLS 1.3 client (x25519, TLS_AES_128_GCM_SHA256, no certificate checks)
 * for tests and attack benches that need to do what real clients do not: send KeyUpdate
 * floods, never read, send handshake messages in 1-byte records. It uses the engine's key
 * schedule and record protection (their correctness is covered by the RFC 8448 vectors
 * and the interop tests); what it adds is a client's side of the handshake.
 */
import { createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';
import { EarlySecrets, finishedVerifyData, nextTrafficSecret, type MasterSecrets } from '../../src/tls/handshake/key-schedule.js';
import { Transcript } from '../../src/tls/handshake/transcript.js';
import { SUITES } from '../../src/tls/crypto/suites.js';
import { Deframer } from '../../src/tls/record/deframer.js';
import { RecordProtection } from '../../src/tls/record/protection.js';
import { LinearReassembler } from '../../src/lib/reassembler.js';
import { NamedGroup } from '../../src/tls/wire/codepoints.js';
import { encodeClientHello, extensions as E, handshakeRecords, typicalExtensions, type RawExtension } from '../tls/client-hello-builder.js';
import { montgomeryKeyPair } from './montgomery-keys.js';

const AES_128_GCM_SHA256 = 0x1301;
const suite = SUITES.get(AES_128_GCM_SHA256)!;

export interface MiniClientEvents {
  /** Alert descriptions received (plaintext or protected). */
  alerts: number[];
  /** KeyUpdate messages received from the server. */
  keyUpdates: number;
  /** Application data bytes received. */
  appBytes: number;
}

export class MiniTlsClient {
  readonly events: MiniClientEvents = { alerts: [], keyUpdates: 0, appBytes: 0 };
  handshakeComplete = false;
  private readonly privateKey: KeyObject;
  private readonly publicRaw: Buffer;
  private readonly transcript = new Transcript();
  private readonly deframer = new Deframer();
  private readonly messages = new LinearReassembler();
  private readProtection: RecordProtection | undefined;
  private writeProtection: RecordProtection | undefined;
  private clientHandshakeSecret: Buffer | undefined;
  private serverHandshakeSecret: Buffer | undefined;
  private handshakeSecrets: ReturnType<EarlySecrets['withSharedSecret']> | undefined;
  private master: MasterSecrets | undefined;

  constructor(private readonly serverName = 'example.test') {
    const { privateKey, publicRaw } = montgomeryKeyPair('x25519');
    this.privateKey = privateKey;
    this.publicRaw = publicRaw;
    this.transcript.start(suite.hash);
  }

  /**
   * The ClientHello in records of `fragment` bytes. `padTo` grows it with a padding
   * extension (RFC 7685) and a long cipher-suite list up to about that many bytes.
   */
  clientHello(opts: { fragment?: number; padTo?: number } = {}): Buffer {
    const exts: RawExtension[] = typicalExtensions(this.publicRaw, this.serverName).filter((e) => e.type !== 16 /* ALPN */);
    let cipherSuites = [AES_128_GCM_SHA256];
    if (opts.padTo) {
      // Distinct suites no TLS 1.3 server knows (0x4000…), which it skips (§4.1.2).
      const suiteBytes = Math.min(0xfffe - 2, Math.max(0, Math.floor((opts.padTo - 0xffff) / 2) * 2));
      cipherSuites = [AES_128_GCM_SHA256, ...Array.from({ length: suiteBytes / 2 }, (_, i) => 0x4000 + i)];
      const used = encodeClientHello({ cipherSuites, extensions: exts }).length;
      const room = Math.min(0xffff - 4 - exts.reduce((n, e) => n + 4 + e.data.length, 0), opts.padTo - used - 4);
      if (room > 0) exts.push(E.raw(21, Buffer.alloc(room))); // padding (RFC 7685)
    }
    const message = encodeClientHello({ cipherSuites, extensions: exts });
    this.transcript.add(message);
    return handshakeRecords(message, opts.fragment ?? 16384);
  }

  /** Feeds bytes from the server; returns what the client must send in answer (its Finished). */
  receive(bytes: Buffer): Buffer {
    this.deframer.push(bytes);
    const out: Buffer[] = [];
    for (let record = this.deframer.next(); record; record = this.deframer.next()) {
      if (record.type === 20) continue; // compatibility CCS
      let type = record.type;
      let content = record.body;
      if (record.type === 23) {
        const opened = this.readProtection!.tryOpen(record.header, record.body);
        if (!opened) throw new Error('mini client: record authentication failed');
        type = opened.type;
        content = opened.content;
      }
      if (type === 21) {
        this.events.alerts.push(content[1]!);
        continue;
      }
      if (type === 23) {
        this.events.appBytes += content.length;
        continue;
      }
      this.messages.push(content);
      while (this.messages.length >= 4) {
        const head = this.messages.peek();
        const length = head.readUIntBE(1, 3);
        if (this.messages.length < 4 + length) break;
        const message = Buffer.from(this.messages.take(4 + length));
        const answer = this.handleMessage(message);
        if (answer) out.push(answer);
      }
    }
    return Buffer.concat(out);
  }

  private handleMessage(message: Buffer): Buffer | undefined {
    const type = message[0]!;
    if (type === 2) {
      this.transcript.add(message);
      const serverShare = findKeyShare(message);
      const peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: serverShare.toString('base64url') }, format: 'jwk' });
      const shared = diffieHellman({ privateKey: this.privateKey, publicKey: peer });
      this.handshakeSecrets = new EarlySecrets(suite.hash).withSharedSecret(shared);
      const helloHash = this.transcript.current();
      this.serverHandshakeSecret = this.handshakeSecrets.serverHandshakeTrafficSecret(helloHash);
      this.clientHandshakeSecret = this.handshakeSecrets.clientHandshakeTrafficSecret(helloHash);
      this.readProtection = new RecordProtection(suite, this.serverHandshakeSecret);
      return undefined;
    }
    if (type === 20 && !this.handshakeComplete) {
      this.transcript.add(message);
      const serverFinishedHash = this.transcript.current();
      this.master = this.handshakeSecrets!.master();
      const finished = Buffer.concat([
        Buffer.from([20, 0, 0, suite.hashLength]),
        finishedVerifyData(suite.hash, this.clientHandshakeSecret!, serverFinishedHash),
      ]);
      const handshakeWrite = new RecordProtection(suite, this.clientHandshakeSecret!);
      const record = handshakeWrite.seal(22, finished);
      this.readProtection = new RecordProtection(suite, this.master.serverApplicationTrafficSecret(serverFinishedHash));
      this.writeProtection = new RecordProtection(suite, this.master.clientApplicationTrafficSecret(serverFinishedHash));
      this.handshakeComplete = true;
      return record;
    }
    if (type === 24) {
      this.events.keyUpdates++;
      this.readProtection = new RecordProtection(suite, nextTrafficSecret(suite.hash, this.readProtection!.trafficSecret));
      return undefined;
    }
    if (!this.handshakeComplete) this.transcript.add(message); // EncryptedExtensions, Certificate, CertificateVerify
    return undefined; // NewSessionTicket and the rest: ignored
  }

  /** A protected KeyUpdate record; our sending keys move on (§4.6.3). */
  keyUpdate(updateRequested: boolean): Buffer {
    const record = this.writeProtection!.seal(22, Buffer.from([24, 0, 0, 1, updateRequested ? 1 : 0]));
    this.writeProtection = new RecordProtection(suite, nextTrafficSecret(suite.hash, this.writeProtection!.trafficSecret));
    return record;
  }

  applicationData(data: Uint8Array): Buffer {
    return this.writeProtection!.seal(23, data);
  }
}

/** The server's x25519 share from a ServerHello (§4.1.3, §4.2.8). */
function findKeyShare(serverHello: Buffer): Buffer {
  let off = 4 + 2 + 32;
  off += 1 + serverHello[off]!; // legacy_session_id_echo
  off += 2 + 1; // cipher_suite, legacy_compression_method
  const end = off + 2 + serverHello.readUInt16BE(off);
  off += 2;
  while (off < end) {
    const type = serverHello.readUInt16BE(off);
    const length = serverHello.readUInt16BE(off + 2);
    if (type === 51) {
      if (serverHello.readUInt16BE(off + 4) !== NamedGroup.x25519) throw new Error('mini client: server chose a group other than x25519');
      return serverHello.subarray(off + 8, off + 8 + serverHello.readUInt16BE(off + 6));
    }
    off += 4 + length;
  }
  throw new Error('mini client: ServerHello without key_share');
}
