import { LinearReassembler } from '../../lib/reassembler.js';
import { TlsAlert } from '../alert.js';
import type { SuiteInfo } from '../crypto/suites.js';
import { nextTrafficSecret } from '../handshake/key-schedule.js';
import { ContentType } from '../wire/codepoints.js';
import { Deframer, type RawRecord } from './deframer.js';
import { MAX_CIPHERTEXT, MAX_PLAINTEXT, RecordProtection } from './protection.js';
import type { RecordProtection12 } from './protection12.js';

/** §4.2.10: how much rejected 0-RTT data we skip before giving up. */
const MAX_SKIPPED_EARLY_DATA = 2 ** 16;

/**
 * What a client may send before our answer to its ClientHello, while that answer waits for
 * the identity and the signature: at most the 0-RTT data we skip (§4.2.10) with a header
 * per record, and one record in progress. A TLS 1.2 client has nothing to send then (its
 * next flight answers our ServerKeyExchange), a TLS 1.3 client a change_cipher_spec at most.
 */
export const MAX_BUFFERED_BEFORE_ANSWER = 2 * MAX_SKIPPED_EARLY_DATA + 5 + MAX_CIPHERTEXT;

/**
 * Application data records from this size on are sealed in pieces (no copy into a record
 * buffer); smaller ones are joined, since for them one buffer is cheaper than the two
 * extra writes and a writev that the pieces cost (measured with bench:bulk's 100-byte
 * exchanges). Below 4 KiB Node allocates from its pool anyway.
 */
const SEAL_IN_PARTS_FROM = 4096;

/** The compatibility change_cipher_spec record (§D.4): type 20, legacy version 0x0303, one byte 0x01. */
const COMPATIBILITY_CCS = Buffer.from([ContentType.change_cipher_spec, 3, 3, 0, 1, 1]);

/** What the peer sent, once the record layer has checked and unprotected it. */
export type Received =
  | { readonly kind: 'handshake'; readonly type: number; readonly raw: Buffer }
  | { readonly kind: 'alert'; readonly level: number; readonly description: number }
  /** TLS 1.2 only (RFC 5246 §7.1): the peer's ChangeCipherSpec, which the handshake answers by installing read keys. */
  | { readonly kind: 'changeCipherSpec' }
  | { readonly kind: 'applicationData'; readonly data: Buffer };

/**
 * What the handshake phase allows of the records the peer sends. The record layer asks;
 * the connection answers from its current phase.
 */
export interface ReceivePolicy {
  /** §5, §D.4: a change_cipher_spec is accepted between the first ClientHello and the client Finished. */
  readonly acceptsChangeCipherSpec: boolean;
  /**
   * A client that could not process our flight (e.g. unknown CA) has no handshake keys to
   * protect its alert with: while we wait for its Finished, a plaintext alert is accepted.
   */
  readonly acceptsPlaintextAlert: boolean;
  /** §4.2.10 / §4.1.2: 0-RTT data sent after a first ClientHello that we answered with a retry is skipped. */
  readonly skipsPlaintextEarlyData: boolean;
  /** Application data only once the handshake is complete (we never accept 0-RTT). */
  readonly acceptsApplicationData: boolean;
  /** Checks a handshake message header as soon as it is buffered, before its body (throws the alert). */
  checkHandshakeHeader(type: number, length: number): void;
}

export type Direction = 'read' | 'write';

/**
 * The record layer (RFC 8446 §5; RFC 5246 §6 after `useTls12()`): deframing, handshake-message reassembly across
 * records (§5.1), both directions of protection and their key changes, the rules for
 * change_cipher_spec, alert and empty records, and the records we write. It knows nothing
 * of the handshake beyond the `ReceivePolicy` it is handed.
 */
export class RecordLayer {
  private readonly deframer = new Deframer();
  /** Handshake messages across records (§5.1), joined without re-copying per record. */
  private readonly handshakeBuffer = new LinearReassembler();
  private readProtection: RecordProtection | RecordProtection12 | undefined;
  private writeProtection: RecordProtection | RecordProtection12 | undefined;
  /** TLS 1.2 record rules (RFC 5246 §6.2): real content types outside, ChangeCipherSpec is a protocol message. */
  private tls12 = false;
  /** The largest plaintext we put in one record: 2^14, or less when the peer sent record_size_limit (RFC 8449). */
  private peerRecordLimit = MAX_PLAINTEXT;
  /**
   * The largest TLSInnerPlaintext we read: 2^14 + 1 (§5.2) until our own record_size_limit is
   * announced (announceRecordLimit). RFC 8449 §4 makes a record over the *advertised* limit
   * record_overflow; we advertise only to a client that sent the extension, so one that did not
   * was told no limit and may send 2^14 bytes.
   */
  private readLimit = MAX_PLAINTEXT + 1;
  private receivedCcs = false;
  private sentCompatibilityCcs = false;
  private skippingEarlyData = false;
  private skippedEarlyData = 0;
  private ignoredRecords = 0;

  constructor(
    /** Our record_size_limit: the largest plaintext (+1 for the content type) we accept once we have announced it. */
    private readonly recordSizeLimit: number,
    /** Consecutive records that carry nothing before the peer is cut off. */
    private readonly maxIgnoredRecords: number,
    private readonly output: (bytes: Buffer) => void,
    /** Application data records as pieces of one gathered write (header, ciphertext, tail), not joined. */
    private readonly outputParts: (parts: readonly Buffer[]) => void = (parts) => output(Buffer.concat(parts)),
  ) {}

  /** Bytes from the network. */
  push(data: Buffer): void {
    this.deframer.push(data);
  }

  /** Bytes received and not handled yet: records, and the start of a handshake message. */
  get buffered(): number {
    return this.deframer.pending + this.handshakeBuffer.length;
  }

  /**
   * The next complete thing the peer sent, or undefined when more bytes are needed.
   * Records that carry nothing for the caller (a CCS, part of a handshake message,
   * skipped early data, an empty application data record) are consumed here.
   */
  next(policy: ReceivePolicy): Received | undefined {
    for (;;) {
      const message = this.bufferedHandshake(policy);
      if (message) return message;
      const record = this.deframer.next();
      if (!record) return undefined;
      const received = this.handleRecord(record, policy);
      if (received) return received;
    }
  }

  /** §5.1: a message that changes keys must end at a record boundary. */
  requireRecordBoundary(what: string): void {
    if (this.handshakeBuffer.length) {
      throw new TlsAlert('unexpected_message', `handshake data after ${what} in the same record (spans a key change)`);
    }
  }

  /** RFC 8449: the peer's record_size_limit bounds the records we write. */
  limitPeerRecords(recordSizeLimit: number): void {
    this.peerRecordLimit = Math.min(MAX_PLAINTEXT, recordSizeLimit - 1);
  }

  /** RFC 8449 §4: our record_size_limit went to the peer (EncryptedExtensions); it bounds the protected records we read from now on. */
  announceRecordLimit(): void {
    this.readLimit = this.recordSizeLimit;
  }

  /**
   * Switches one direction to keys from a new traffic secret (§7.3). Reading with
   * `skipEarlyData` skips records that do not authenticate until one does: the 0-RTT data
   * of a client whose early data we reject (§4.2.10).
   */
  installKeys(direction: Direction, suite: SuiteInfo, trafficSecret: Buffer, skipEarlyData = false): void {
    const protection = new RecordProtection(suite, trafficSecret);
    if (direction === 'read') {
      this.readProtection = protection;
      this.skippingEarlyData = skipEarlyData;
    } else {
      this.writeProtection = protection;
    }
  }

  /**
   * From now on the TLS 1.2 record rules apply (RFC 5246 §6.2, §7.1): protected records keep
   * their content type in the header, and ChangeCipherSpec is delivered to the handshake,
   * which installs the read keys it announces.
   */
  useTls12(): void {
    this.tls12 = true;
  }

  /** TLS 1.2: one direction's keys from the key block (RFC 5246 §6.3), after the ChangeCipherSpec of that direction. */
  installKeys12(direction: Direction, protection: RecordProtection12): void {
    if (direction === 'read') this.readProtection = protection;
    else this.writeProtection = protection;
  }

  /** TLS 1.2 (RFC 5246 §7.1): our ChangeCipherSpec record, sent in plaintext or under the old keys. */
  changeCipherSpecRecord(): Buffer {
    return this.writeProtection ? this.writeProtection.seal(ContentType.change_cipher_spec, Buffer.of(1)) : COMPATIBILITY_CCS;
  }

  /** §4.6.3, §7.2: the next generation of one direction's traffic secret (KeyUpdate). */
  updateKeys(direction: Direction): void {
    const current = direction === 'read' ? this.readProtection : this.writeProtection;
    if (!(current instanceof RecordProtection)) throw new Error(`no TLS 1.3 ${direction} keys to update`);
    const next = new RecordProtection(current.suite, nextTrafficSecret(current.suite.hash, current.trafficSecret));
    if (direction === 'read') this.readProtection = next;
    else this.writeProtection = next;
  }

  // ---- receiving ------------------------------------------------------------

  /** One complete handshake message if buffered; its header is checked as soon as it is there. */
  private bufferedHandshake(policy: ReceivePolicy): Received | undefined {
    const buf = this.handshakeBuffer;
    if (buf.length < 4) return undefined;
    const type = buf.byteAt(0);
    const length = (buf.byteAt(1) << 16) | (buf.byteAt(2) << 8) | buf.byteAt(3);
    policy.checkHandshakeHeader(type, length);
    if (buf.length < 4 + length) return undefined;
    return { kind: 'handshake', type, raw: buf.take(4 + length) };
  }

  private handleRecord(record: RawRecord, policy: ReceivePolicy): Received | undefined {
    if (this.tls12 && this.readProtection) return this.handleProtectedRecord12(record, this.readProtection, policy);
    if (record.type === ContentType.change_cipher_spec) return this.handleChangeCipherSpec(record.body, policy);
    if (this.readProtection) {
      if (record.type === ContentType.alert && policy.acceptsPlaintextAlert && record.body.length === 2) {
        return this.handleAlert(record.body);
      }
      if (record.type !== ContentType.application_data) {
        // §5.2: once keys are in use every record is TLSCiphertext (outer type application_data).
        throw new TlsAlert('unexpected_message', `unprotected record of type ${record.type} after keys were established`);
      }
      const opened = this.readProtection.tryOpen(record.header, record.body);
      if (!opened) {
        if (this.skippingEarlyData) return this.skipEarlyData(record.body.length);
        throw new TlsAlert('bad_record_mac', 'record authentication failed');
      }
      this.skippingEarlyData = false;
      if (opened.content.length > this.readLimit - 1) {
        throw new TlsAlert('record_overflow', `record plaintext of ${opened.content.length} bytes exceeds our record_size_limit`);
      }
      return this.handleContent(opened.type, opened.content, policy);
    }
    // §4.2.10: early data skipped after a HelloRetryRequest is TLSCiphertext (up to 2^14 + 256
    // bytes, bounded by the deframer), so it is skipped before the plaintext size check.
    if (record.type === ContentType.application_data && policy.skipsPlaintextEarlyData) return this.skipEarlyData(record.body.length);
    if (record.body.length > MAX_PLAINTEXT) {
      throw new TlsAlert('record_overflow', `plaintext record of ${record.body.length} bytes exceeds 2^14`);
    }
    if (record.type === ContentType.application_data) throw new TlsAlert('unexpected_message', 'application data before the handshake');
    return this.handleContent(record.type, record.body, policy);
  }

  /** RFC 5246 §6.2.3: every record after the peer's ChangeCipherSpec is protected, whatever its type. */
  private handleProtectedRecord12(record: RawRecord, protection: RecordProtection | RecordProtection12, policy: ReceivePolicy): Received | undefined {
    const opened = protection.tryOpen(record.header, record.body);
    if (!opened) throw new TlsAlert('bad_record_mac', 'record authentication failed');
    if (opened.content.length > MAX_PLAINTEXT) {
      throw new TlsAlert('record_overflow', `record plaintext of ${opened.content.length} bytes exceeds 2^14`);
    }
    if (opened.type === ContentType.change_cipher_spec) {
      throw new TlsAlert('unexpected_message', 'second change_cipher_spec');
    }
    return this.handleContent(opened.type, opened.content, policy);
  }

  private skipEarlyData(length: number): undefined {
    // An empty record counts as one byte: otherwise a client could send empty records
    // until the handshake deadline, each costing us a record's work and nothing towards the limit.
    this.skippedEarlyData += length || 1;
    if (this.skippedEarlyData > MAX_SKIPPED_EARLY_DATA) {
      throw new TlsAlert('unexpected_message', 'too much rejected early data');
    }
    return undefined;
  }

  private countIgnored(): undefined {
    if (++this.ignoredRecords > this.maxIgnoredRecords) {
      throw new TlsAlert('unexpected_message', `more than ${this.maxIgnoredRecords} records in a row without data`);
    }
    return undefined;
  }

  /**
   * §5: the middlebox-compatibility CCS is one byte 0x01, only between the first ClientHello
   * and the client Finished. In TLS 1.2 (RFC 5246 §7.1) it is the message that switches the
   * peer's keys, delivered to the handshake.
   */
  private handleChangeCipherSpec(body: Buffer, policy: ReceivePolicy): Received | undefined {
    if (!policy.acceptsChangeCipherSpec) throw new TlsAlert('unexpected_message', 'change_cipher_spec outside the handshake');
    if (body.length !== 1 || body[0] !== 0x01) {
      throw new TlsAlert('unexpected_message', 'change_cipher_spec must be a single byte 0x01');
    }
    if (this.tls12) {
      if (this.handshakeBuffer.length) throw new TlsAlert('unexpected_message', 'change_cipher_spec inside a handshake message');
      return { kind: 'changeCipherSpec' };
    }
    if (this.receivedCcs) throw new TlsAlert('unexpected_message', 'second change_cipher_spec');
    if (this.handshakeBuffer.length) throw new TlsAlert('unexpected_message', 'change_cipher_spec inside a handshake message');
    this.receivedCcs = true;
    return undefined;
  }

  private handleContent(type: number, content: Buffer, policy: ReceivePolicy): Received | undefined {
    if (type !== ContentType.handshake && this.handshakeBuffer.length) {
      // §5.1: handshake messages must not be interleaved with other record types.
      throw new TlsAlert('unexpected_message', 'record of another type inside a fragmented handshake message');
    }
    switch (type) {
      case ContentType.handshake:
        if (content.length === 0) throw new TlsAlert('unexpected_message', 'zero-length handshake record');
        this.ignoredRecords = 0;
        this.handshakeBuffer.push(content);
        return undefined;
      case ContentType.alert:
        return this.handleAlert(content);
      case ContentType.application_data:
        if (!policy.acceptsApplicationData) throw new TlsAlert('unexpected_message', 'application data before the handshake finished');
        if (content.length === 0) return this.countIgnored();
        this.ignoredRecords = 0;
        return { kind: 'applicationData', data: content };
      case ContentType.change_cipher_spec:
        throw new TlsAlert('unexpected_message', 'change_cipher_spec inside a protected record');
      default:
        throw new TlsAlert('unexpected_message', `record of unknown content type ${type}`);
    }
  }

  private handleAlert(content: Buffer): Received {
    // §5.1: an alert record holds exactly one alert; an empty one is not an alert at all.
    if (content.length === 0) throw new TlsAlert('unexpected_message', 'empty alert record');
    if (content.length !== 2) throw new TlsAlert('decode_error', `alert of ${content.length} bytes (must be 2)`);
    return { kind: 'alert', level: content.readUInt8(0), description: content.readUInt8(1) };
  }

  // ---- sending ----------------------------------------------------------------

  /** Writes bytes built by the methods below as one write. */
  send(records: readonly Buffer[]): void {
    const only = records.length === 1 ? records[0] : undefined;
    this.output(only ?? Buffer.concat(records));
  }

  /** A TLSPlaintext record (before keys): legacy_record_version 0x0303 (§5.1). */
  plaintextRecord(type: number, body: Buffer): Buffer {
    const out = Buffer.allocUnsafe(5 + body.length);
    out[0] = type;
    out[1] = 3;
    out[2] = 3;
    out.writeUInt16BE(body.length, 3);
    body.copy(out, 5);
    return out;
  }

  /** §D.4: the compatibility CCS goes out once, before our first protected record; undefined after. */
  compatibilityCcs(): Buffer | undefined {
    if (this.sentCompatibilityCcs) return undefined;
    this.sentCompatibilityCcs = true;
    return COMPATIBILITY_CCS;
  }

  /** Packs handshake messages into as few protected records as the peer's limit allows. */
  protectHandshake(messages: readonly Buffer[]): Buffer[] {
    const all = (messages.length === 1 ? messages[0] : undefined) ?? Buffer.concat(messages);
    const records: Buffer[] = [];
    for (let off = 0; off < all.length; off += this.peerRecordLimit) {
      records.push(this.requireWriteKeys().seal(ContentType.handshake, all.subarray(off, off + this.peerRecordLimit)));
    }
    return records;
  }

  /**
   * Application data, fragmented to the peer's record size limit. Each record is handed
   * over on its own, a large one in the pieces the cipher produced (no concatenation:
   * bulk data is not copied again); the socket adapter corks, so the records of one write
   * still leave in one writev.
   */
  sendApplicationData(data: Uint8Array): void {
    const max = this.peerRecordLimit;
    const keys = this.requireWriteKeys();
    for (let off = 0; off < data.length; off += max) {
      const content = data.subarray(off, off + max);
      if (content.length < SEAL_IN_PARTS_FROM) this.output(keys.seal(ContentType.application_data, content));
      else this.outputParts(keys.sealParts(ContentType.application_data, content));
    }
  }

  /** One alert record, protected once we have write keys (§6). */
  sendAlert(level: 1 | 2, description: number): void {
    const body = Buffer.of(level, description);
    this.output(this.writeProtection ? this.writeProtection.seal(ContentType.alert, body) : this.plaintextRecord(ContentType.alert, body));
  }

  private requireWriteKeys(): RecordProtection | RecordProtection12 {
    if (!this.writeProtection) throw new Error('no write keys installed');
    return this.writeProtection;
  }
}
