import { timingSafeEqual } from 'node:crypto';
import { randomBytesFromPool } from './crypto/random-pool.js';
import { TlsAlert, TlsPeerAlert, AlertDescription, toAlert } from './alert.js';
import { DEFAULT_GROUPS, groupName, keyExchange } from './crypto/key-exchange.js';
import { DEFAULT_CIPHER_SUITES, type SuiteInfo } from './crypto/suites.js';
import { openCookie, sealCookie } from './handshake/cookie.js';
import {
  EarlySecrets,
  finishedVerifyData,
  nextTrafficSecret,
  resumptionPsk,
  type MasterSecrets,
} from './handshake/key-schedule.js';
import {
  checkClientHello,
  offersPskDhe,
  retryConsistencyDigest,
  selectAlpn,
  selectCipherSuite,
  selectGroup,
  selectSignatureScheme,
} from './handshake/negotiate.js';
import { openTicket, sealTicket, type TicketState } from './handshake/session-ticket.js';
import { TicketKeyRing } from './handshake/ticket-keys.js';
import { messageHash, Transcript } from './handshake/transcript.js';
import { decodeClientHello, type ClientHello } from './messages/client-hello.js';
import {
  encodeCertificate,
  encodeCertificateVerify,
  encodeEncryptedExtensions,
  encodeFinished,
  encodeHelloRetryRequest,
  encodeKeyUpdate,
  encodeNewSessionTicket,
  encodeServerHello,
} from './messages/server-messages.js';
import type { ResolvedOptions, TlsServerOptions } from './options.js';
import { LinearReassembler } from '../lib/reassembler.js';
import { Deframer, type RawRecord } from './record/deframer.js';
import { MAX_PLAINTEXT, RecordProtection } from './record/protection.js';
import { SCHEMES } from './signature-schemes.js';
import type { Identity } from './signer.js';
import { ContentType, HandshakeType } from './wire/codepoints.js';

/**
 * Sans-I/O TLS 1.3 server connection (RFC 8446): bytes in through `receive`, bytes out
 * and events through the `on*` callbacks. It never touches a socket or a timer; the
 * node:net adapter (socket.ts) does that.
 *
 * Every protocol error is a TlsAlert thrown where it is found; `fail` is the one place
 * that turns it into an alert record and closes. Anything else thrown is a bug and is
 * reported as internal_error.
 */

type State =
  | 'awaitClientHello'
  | 'awaitSecondClientHello'
  | 'negotiating' // waiting for resolveIdentity / Signer
  | 'awaitFinished'
  | 'traffic'
  | 'closed';

export interface ConnectionInfo {
  serverName?: string;
  alpnProtocol?: string;
  cipherSuite?: string;
  group?: string;
  signatureScheme?: string;
  resumed: boolean;
}

/** §4.2.10: how much rejected 0-RTT data we skip before giving up. */
const MAX_SKIPPED_EARLY_DATA = 2 ** 16;
/** §4.6.1: ticket ages must match within this tolerance for the PSK to be used. */
const TICKET_AGE_TOLERANCE_MS = 10_000;
/**
 * The largest ClientHello the wire format allows: 2^16-2 bytes of cipher suites plus a
 * 2^16-1 byte extension block plus the fixed fields (§4.1.2). Real ones are far smaller,
 * but conformance suites send maximal lists, and refusing them would be wrong.
 */
const MAX_CLIENT_HELLO_SIZE = 2 + 32 + 33 + 2 + 0xfffe + 256 + 2 + 0xffff;
/** The one handshake message each receiving state accepts (we never request client certificates). */
const EXPECTED_MESSAGE: Partial<Record<State, number>> = {
  awaitClientHello: HandshakeType.client_hello,
  awaitSecondClientHello: HandshakeType.client_hello,
  awaitFinished: HandshakeType.finished,
  traffic: HandshakeType.key_update,
};
/** Header sizes of the handshake messages whose size is fixed or bounded once expected. */
const MAX_KEY_UPDATE_SIZE = 1;

/** Certificate messages are encoded once per chain, not once per handshake. */
const certificateMessages = new WeakMap<readonly Uint8Array[], Buffer>();
function certificateMessage(chain: readonly Uint8Array[]): Buffer {
  let message = certificateMessages.get(chain);
  if (!message) {
    message = encodeCertificate(chain);
    certificateMessages.set(chain, message);
  }
  return message;
}

export function resolveOptions(o: TlsServerOptions): ResolvedOptions {
  const recordSizeLimit = o.recordSizeLimit ?? MAX_PLAINTEXT + 1;
  if (recordSizeLimit < 64 || recordSizeLimit > MAX_PLAINTEXT + 1) {
    throw new RangeError('recordSizeLimit must be between 64 and 2^14 + 1');
  }
  const ticketLifetimeSeconds = o.ticketLifetimeSeconds ?? 7200;
  if (ticketLifetimeSeconds <= 0 || ticketLifetimeSeconds > 604_800) {
    throw new RangeError('ticketLifetimeSeconds must be in (0, 604800] (RFC 8446 §4.6.1)');
  }
  return {
    resolveIdentity: o.resolveIdentity,
    alpnProtocols: o.alpnProtocols ?? [],
    groups: o.groups ?? DEFAULT_GROUPS,
    cipherSuites: o.cipherSuites ?? DEFAULT_CIPHER_SUITES,
    ticketCount: o.ticketCount ?? 2,
    ticketLifetimeSeconds,
    ticketKeys: o.ticketKeys ?? new TicketKeyRing(),
    handshakeTimeoutMs: o.handshakeTimeoutMs ?? 10_000,
    maxHandshakeMessageSize: o.maxHandshakeMessageSize ?? MAX_CLIENT_HELLO_SIZE,
    maxIgnoredRecords: o.maxIgnoredRecords ?? 32,
    recordSizeLimit,
    maxKeyUpdates: positive(o.maxKeyUpdates, 64, 'maxKeyUpdates'),
    keyUpdateWindowMs: positive(o.keyUpdateWindowMs, 60_000, 'keyUpdateWindowMs'),
    lingerMs: positive(o.lingerMs, 120_000, 'lingerMs'),
    lingerIdleMs: positive(o.lingerIdleMs, 2000, 'lingerIdleMs'),
    lingerMaxBytes: positive(o.lingerMaxBytes, 2 ** 24 + 2 ** 20, 'lingerMaxBytes'),
    maxLingering: positive(o.maxLingering, 1024, 'maxLingering'),
  };
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer`);
  return value;
}

export class TlsServerConnection {
  /** Bytes to put on the wire. */
  onSend: (bytes: Buffer) => void = () => {};
  onHandshakeComplete: () => void = () => {};
  onApplicationData: (data: Buffer) => void = () => {};
  /** The peer sent close_notify: its side is closed; ours stays open until close(). */
  onPeerClose: () => void = () => {};
  /** The connection failed; an alert was sent (TlsAlert) or received (TlsPeerAlert). */
  onError: (err: TlsAlert | TlsPeerAlert) => void = () => {};

  readonly info: ConnectionInfo = { resumed: false };
  private state: State = 'awaitClientHello';
  private readonly deframer = new Deframer();
  /** Handshake messages across records (§5.1), joined without re-copying per record. */
  private readonly handshakeBuffer = new LinearReassembler();
  private readProtection: RecordProtection | undefined;
  private writeProtection: RecordProtection | undefined;
  private transcript = new Transcript();
  private suite: SuiteInfo | undefined;
  private master: MasterSecrets | undefined;
  private clientHandshakeSecret: Buffer | undefined;
  private expectedClientFinished: Buffer | undefined;
  /** Whether the first ClientHello offered 0-RTT data, which we then skip (§4.2.10). */
  private earlyDataInFirstHello = false;
  private retried = false;
  private sentCompatibilityCcs = false;
  private receivedCcs = false;
  private skippingEarlyData = false;
  private skippedEarlyData = 0;
  private ignoredRecords = 0;
  private peerRecordLimit = MAX_PLAINTEXT;
  private peerOfferedPskDhe = false;
  private sentCloseNotify = false;
  private peerClosed = false;
  /** KeyUpdates received in the current window (§4.6.3 gives no limit; we do, per options). */
  private keyUpdatesInWindow = 0;
  private keyUpdateWindowStart = 0;
  private readonly ticketKeys: TicketKeyRing;

  constructor(private readonly options: ResolvedOptions, private readonly now: () => number = Date.now) {
    this.ticketKeys = options.ticketKeys ?? new TicketKeyRing();
  }

  /** True once the client Finished verified (stays true after close). */
  get handshakeComplete(): boolean {
    return this.completed;
  }
  private completed = false;

  get closed(): boolean {
    return this.state === 'closed';
  }

  receive(data: Buffer): void {
    if (this.state === 'closed' || this.peerClosed) return;
    this.deframer.push(data);
    this.pump();
  }

  /** Sends application data, fragmented to the peer's record size limit. */
  write(data: Uint8Array): void {
    if (this.state !== 'traffic' || this.sentCloseNotify) throw new Error('TLS connection is not open for writing');
    const max = this.peerRecordLimit;
    const records: Buffer[] = [];
    for (let off = 0; off < data.length; off += max) {
      records.push(this.writeProtection!.seal(ContentType.application_data, data.subarray(off, off + max)));
    }
    if (records.length) this.onSend(records.length === 1 ? records[0]! : Buffer.concat(records));
  }

  /** Sends close_notify (§6.1); reading continues until the peer closes too. */
  close(): void {
    if (this.state === 'closed' || this.sentCloseNotify) return;
    this.sentCloseNotify = true;
    this.sendAlert(AlertDescription.close_notify);
    if (this.state !== 'traffic' || this.peerClosed) this.state = 'closed';
  }

  /** §4.6.3: update our sending keys; with `requestPeer` ask the peer to update its too. */
  keyUpdate(requestPeer: boolean): void {
    if (this.state !== 'traffic' || this.sentCloseNotify) throw new Error('KeyUpdate needs an established connection');
    this.sendEncryptedHandshake([encodeKeyUpdate(requestPeer)]);
    this.updateWriteKeys();
  }

  /** Aborts the handshake (e.g. timeout) with the given alert. */
  abort(alert: TlsAlert): void {
    this.fail(alert);
  }

  /**
   * Gives up on a handshake for a reason that is not a protocol error (its deadline
   * passed): user_canceled, then close_notify, as §6.1 describes for cancelling a
   * handshake. Does not call onError: the caller reports its own reason.
   */
  cancelHandshake(): void {
    if (this.state === 'closed' || this.completed) return;
    this.state = 'closed';
    try {
      this.sendAlert(AlertDescription.user_canceled);
      this.sentCloseNotify = true;
      this.sendAlert(AlertDescription.close_notify);
    } catch {
      // Best effort, as in fail().
    }
  }

  // ---- record layer -------------------------------------------------------

  private pump(): void {
    try {
      while (this.state !== 'closed' && this.state !== 'negotiating') {
        if (this.processBufferedHandshake()) continue;
        const record = this.deframer.next();
        if (!record) break;
        this.handleRecord(record);
      }
    } catch (err) {
      this.fail(err);
    }
  }

  private handleRecord(record: RawRecord): void {
    if (record.type === ContentType.change_cipher_spec) return this.handleChangeCipherSpec(record.body);
    if (this.readProtection) {
      if (record.type === ContentType.alert && this.state === 'awaitFinished' && record.body.length === 2) {
        // A client that could not process our flight (e.g. unknown CA) has no handshake
        // keys to protect its alert with; take the plaintext alert as the end of the handshake.
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
      if (opened.content.length > this.options.recordSizeLimit - 1) {
        throw new TlsAlert('record_overflow', `record plaintext of ${opened.content.length} bytes exceeds our record_size_limit`);
      }
      return this.handleContent(opened.type, opened.content);
    }
    if (record.body.length > MAX_PLAINTEXT) {
      throw new TlsAlert('record_overflow', `plaintext record of ${record.body.length} bytes exceeds 2^14`);
    }
    if (record.type === ContentType.application_data) {
      // §4.2.10 / §4.1.2: 0-RTT data sent after the first ClientHello is skipped when we asked for a retry.
      if (this.state === 'awaitSecondClientHello' && this.earlyDataInFirstHello) {
        return this.skipEarlyData(record.body.length);
      }
      throw new TlsAlert('unexpected_message', 'application data before the handshake');
    }
    return this.handleContent(record.type, record.body);
  }

  private skipEarlyData(length: number): void {
    this.skippedEarlyData += length;
    if (this.skippedEarlyData > MAX_SKIPPED_EARLY_DATA) {
      throw new TlsAlert('unexpected_message', 'too much rejected early data');
    }
  }

  private countIgnored(): void {
    if (++this.ignoredRecords > this.options.maxIgnoredRecords) {
      throw new TlsAlert('unexpected_message', `more than ${this.options.maxIgnoredRecords} records in a row without data`);
    }
  }

  /** §5: the middlebox-compatibility CCS is one byte 0x01, only between the first ClientHello and the client Finished. */
  private handleChangeCipherSpec(body: Buffer): void {
    const duringHandshake =
      this.state === 'awaitSecondClientHello' || this.state === 'awaitFinished' || this.state === 'negotiating';
    if (!duringHandshake) throw new TlsAlert('unexpected_message', 'change_cipher_spec outside the handshake');
    if (body.length !== 1 || body[0] !== 0x01) {
      throw new TlsAlert('unexpected_message', 'change_cipher_spec must be a single byte 0x01');
    }
    if (this.receivedCcs) throw new TlsAlert('unexpected_message', 'second change_cipher_spec');
    if (this.handshakeBuffer.length) throw new TlsAlert('unexpected_message', 'change_cipher_spec inside a handshake message');
    this.receivedCcs = true;
  }

  private handleContent(type: number, content: Buffer): void {
    if (type !== ContentType.handshake && this.handshakeBuffer.length) {
      // §5.1: handshake messages must not be interleaved with other record types.
      throw new TlsAlert('unexpected_message', 'record of another type inside a fragmented handshake message');
    }
    switch (type) {
      case ContentType.handshake:
        if (content.length === 0) throw new TlsAlert('unexpected_message', 'zero-length handshake record');
        this.ignoredRecords = 0;
        this.handshakeBuffer.push(content);
        return;
      case ContentType.alert:
        return this.handleAlert(content);
      case ContentType.application_data:
        if (this.state !== 'traffic') throw new TlsAlert('unexpected_message', 'application data before the handshake finished');
        if (content.length === 0) return this.countIgnored();
        this.ignoredRecords = 0;
        this.onApplicationData(content);
        return;
      case ContentType.change_cipher_spec:
        throw new TlsAlert('unexpected_message', 'change_cipher_spec inside a protected record');
      default:
        throw new TlsAlert('unexpected_message', `record of unknown content type ${type}`);
    }
  }

  private handleAlert(content: Buffer): void {
    // §5.1: an alert record holds exactly one alert; an empty one is not an alert at all.
    if (content.length === 0) throw new TlsAlert('unexpected_message', 'empty alert record');
    if (content.length !== 2) throw new TlsAlert('decode_error', `alert of ${content.length} bytes (must be 2)`);
    const description = content[1]!;
    if (description === AlertDescription.close_notify) {
      if (this.state !== 'traffic') {
        // close_notify during the handshake: answer it; the handshake is over.
        this.close();
        this.state = 'closed';
      } else if (this.sentCloseNotify) {
        this.state = 'closed'; // both directions are now closed
      }
      // §6.1: close_notify closes only the peer's write side; we may still send until
      // the application ends its side (which sends our close_notify). Anything the peer
      // sends after its close_notify is ignored.
      this.peerClosed = true;
      this.onPeerClose();
      return;
    }
    // §6: every other alert (user_canceled included) ends the connection.
    this.state = 'closed';
    this.onError(new TlsPeerAlert(description));
  }

  // ---- handshake message layer ------------------------------------------

  /** Processes one complete handshake message if buffered; true when it did. */
  private processBufferedHandshake(): boolean {
    const buf = this.handshakeBuffer;
    if (buf.length < 4) return false;
    const type = buf.byteAt(0);
    const length = (buf.byteAt(1) << 16) | (buf.byteAt(2) << 8) | buf.byteAt(3);
    this.checkExpectedMessage(type, length);
    if (buf.length < 4 + length) return false;
    const raw = buf.take(4 + length);
    this.handleHandshake(type, raw);
    return true;
  }

  /** Fails as soon as the header shows a message that cannot be right, without buffering its body. */
  private checkExpectedMessage(type: number, length: number): void {
    if (EXPECTED_MESSAGE[this.state] !== type) {
      throw new TlsAlert('unexpected_message', `handshake message type ${type} not expected in state ${this.state}`);
    }
    const max =
      type === HandshakeType.finished ? this.suite!.hashLength
      : type === HandshakeType.key_update ? MAX_KEY_UPDATE_SIZE
      : this.options.maxHandshakeMessageSize;
    if (length > max) throw new TlsAlert('decode_error', `handshake message type ${type} of ${length} bytes is too long`);
  }

  private handleHandshake(type: number, raw: Buffer): void {
    switch (type) {
      case HandshakeType.client_hello:
        return this.handleClientHello(raw);
      case HandshakeType.finished:
        return this.handleClientFinished(raw);
      case HandshakeType.key_update:
        return this.handleKeyUpdate(raw);
    }
  }

  /** §5.1: a message that changes keys must end at a record boundary. */
  private requireRecordBoundary(what: string): void {
    if (this.handshakeBuffer.length) {
      throw new TlsAlert('unexpected_message', `handshake data after ${what} in the same record (spans a key change)`);
    }
  }

  // ---- ClientHello ----------------------------------------------------------

  private handleClientHello(raw: Buffer): void {
    const ch = decodeClientHello(raw);
    checkClientHello(ch);
    this.requireRecordBoundary('ClientHello');
    this.peerOfferedPskDhe = offersPskDhe(ch);
    if (ch.recordSizeLimit !== undefined) this.peerRecordLimit = Math.min(MAX_PLAINTEXT, ch.recordSizeLimit - 1);
    if (this.state === 'awaitSecondClientHello') return this.handleSecondClientHello(ch);

    const suite = selectCipherSuite(ch, this.options.cipherSuites);
    const choice = selectGroup(ch, this.options.groups);
    if (choice.kind === 'retry') return this.sendHelloRetryRequest(ch, suite, choice.group);
    if (ch.cookie) {
      // We never asked for this ClientHello to carry a cookie (§4.2.2).
      throw new TlsAlert('illegal_parameter', 'cookie in a first ClientHello');
    }
    this.suite = suite;
    this.transcript.start(suite.hash);
    this.negotiate(ch, choice.group, choice.share.keyExchange, raw);
  }

  /** §4.1.4: stateless HelloRetryRequest; the cookie carries what the second ClientHello is checked against. */
  private sendHelloRetryRequest(ch: ClientHello, suite: SuiteInfo, group: number): void {
    const transcript = new Transcript();
    transcript.start(suite.hash);
    transcript.add(ch.raw);
    const cookie = sealCookie(this.ticketKeys, {
      issuedAt: this.now(),
      cipherSuite: suite.id,
      group,
      clientHello1Hash: transcript.current(),
      consistencyDigest: retryConsistencyDigest(ch),
    });
    const hrr = encodeHelloRetryRequest({ legacySessionIdEcho: ch.legacySessionId, cipherSuite: suite.id, selectedGroup: group, cookie });
    this.earlyDataInFirstHello = ch.earlyData;
    this.retried = true;
    this.state = 'awaitSecondClientHello';
    this.sendPlaintextHandshake(hrr, ch.legacySessionId.length > 0);
  }

  /** §4.1.2: the second ClientHello must match the first except where the RFC allows. */
  private handleSecondClientHello(ch: ClientHello): void {
    if (!ch.cookie) throw new TlsAlert('missing_extension', 'second ClientHello without the cookie from HelloRetryRequest');
    const cookie = openCookie(this.ticketKeys, ch.cookie, this.now());
    if (!cookie) throw new TlsAlert('illegal_parameter', 'HelloRetryRequest cookie is invalid or expired');
    if (!retryConsistencyDigest(ch).equals(cookie.consistencyDigest)) {
      throw new TlsAlert('illegal_parameter', 'second ClientHello differs from the first beyond what §4.1.2 allows');
    }
    if (ch.earlyData) throw new TlsAlert('illegal_parameter', 'early_data in the second ClientHello');
    const shares = ch.keyShares ?? [];
    if (shares.length !== 1 || shares[0]!.group !== cookie.group) {
      throw new TlsAlert('illegal_parameter', `second ClientHello must offer exactly one key share, for ${groupName(cookie.group)}`);
    }
    const suite = selectCipherSuite(ch, this.options.cipherSuites);
    if (suite.id !== cookie.cipherSuite) throw new TlsAlert('illegal_parameter', 'cipher suite changed after HelloRetryRequest');
    this.suite = suite;
    this.transcript.start(suite.hash);
    this.transcript.add(messageHash(cookie.clientHello1Hash));
    this.transcript.add(
      encodeHelloRetryRequest({ legacySessionIdEcho: ch.legacySessionId, cipherSuite: suite.id, selectedGroup: cookie.group, cookie: ch.cookie }),
    );
    this.negotiate(ch, cookie.group, shares[0]!.keyExchange, ch.raw);
  }

  /** Tries the offered tickets (§4.2.11); returns the PSK and identity index to use, if any. */
  private acceptPsk(ch: ClientHello, raw: Buffer, serverName: string): { psk: Buffer; index: number; ticket: TicketState } | undefined {
    const offer = ch.preSharedKey;
    if (!offer || !this.peerOfferedPskDhe || this.options.ticketCount === 0) return undefined;
    const suite = this.suite!;
    const now = this.now();
    for (let index = 0; index < offer.identities.length && index < 8; index++) {
      const id = offer.identities[index]!;
      const ticket = openTicket(this.ticketKeys, id.identity);
      if (!ticket) continue;
      const ticketSuite = this.options.cipherSuites.includes(ticket.cipherSuite) ? ticket.cipherSuite : -1;
      // §4.2.11: a PSK is usable only with a suite of the same hash.
      if (ticketSuite < 0 || (ticket.psk.length === 48) !== (suite.hash === 'sha384')) continue;
      if (ticket.serverName !== serverName) continue;
      const serverAge = now - ticket.issuedAt;
      if (serverAge < 0 || serverAge > ticket.lifetimeSeconds * 1000) continue;
      const clientAge = (id.obfuscatedTicketAge - ticket.ageAdd) >>> 0;
      if (Math.abs(clientAge - serverAge) > TICKET_AGE_TOLERANCE_MS) continue;
      // §4.2.11.2: the binder covers the transcript up to the truncated ClientHello.
      const early = new EarlySecrets(suite.hash, ticket.psk);
      // The transcript holds everything before this ClientHello (nothing, or message_hash + HRR).
      const truncatedHash = this.transcript.peekWith(raw.subarray(0, offer.bindersOffset));
      const expected = finishedVerifyData(suite.hash, early.resumptionBinderKey(), truncatedHash);
      const binder = offer.binders[index]!;
      if (binder.length !== expected.length || !timingSafeEqual(binder, expected)) {
        throw new TlsAlert('decrypt_error', 'PSK binder does not verify');
      }
      return { psk: ticket.psk, index, ticket };
    }
    return undefined;
  }

  /** Called with the transcript holding everything before this ClientHello. */
  private negotiate(ch: ClientHello, group: number, clientShare: Uint8Array, raw: Buffer): void {
    const serverName = ch.serverName;
    this.info.serverName = serverName;
    this.info.cipherSuite = this.suite!.name;
    const resumed = this.acceptPsk(ch, raw, serverName ?? '');
    this.transcript.add(raw);
    const exchange = keyExchange(group, clientShare); // validates the client's share (illegal_parameter)
    this.info.group = groupName(group);
    this.state = 'negotiating';
    // The identity is resolved on resumption too: a name no longer served is not resumed,
    // and the identity may carry its own ALPN list (e.g. one per edge route).
    const identityOrPromise = this.options.resolveIdentity(serverName);
    const proceed = (identity: Identity | undefined) => {
      if (this.state === 'closed') return;
      if (!identity) {
        throw serverName !== undefined
          ? new TlsAlert('unrecognized_name', `no certificate for server name "${serverName}"`)
          : new TlsAlert('handshake_failure', 'no default certificate for a ClientHello without server_name');
      }
      const alpnProtocol = selectAlpn(ch, identity.alpnProtocols ?? this.options.alpnProtocols);
      this.info.alpnProtocol = alpnProtocol;
      this.info.resumed = resumed !== undefined;
      return this.sendServerFlight(ch, exchange, group, alpnProtocol, resumed, resumed ? undefined : identity);
    };
    if (identityOrPromise instanceof Promise) {
      identityOrPromise.then(proceed, (e) => {
        throw new TlsAlert('internal_error', `identity lookup failed: ${e instanceof Error ? e.message : String(e)}`);
      }).catch((e) => this.fail(e));
    } else {
      Promise.resolve().then(() => proceed(identityOrPromise)).catch((e) => this.fail(e));
    }
  }

  /** ServerHello … Finished (§2, §4.1.3–§4.4.4), sent as one write. */
  private async sendServerFlight(
    ch: ClientHello,
    exchange: { serverShare: Buffer; sharedSecret: Buffer },
    group: number,
    alpnProtocol: string | undefined,
    resumed: { psk: Buffer; index: number } | undefined,
    identity: Identity | undefined,
  ): Promise<void> {
    const suite = this.suite!;
    const scheme = identity ? selectSignatureScheme(ch, identity.signer.schemes) : undefined;
    const serverHello = encodeServerHello({
      random: randomBytesFromPool(32),
      legacySessionIdEcho: ch.legacySessionId,
      cipherSuite: suite.id,
      keyShare: { group, keyExchange: exchange.serverShare },
      selectedIdentity: resumed?.index,
    });
    this.transcript.add(serverHello);
    const handshakeSecrets = new EarlySecrets(suite.hash, resumed?.psk).withSharedSecret(exchange.sharedSecret);
    const helloHash = this.transcript.current();
    const serverHandshakeSecret = handshakeSecrets.serverHandshakeTrafficSecret(helloHash);
    this.clientHandshakeSecret = handshakeSecrets.clientHandshakeTrafficSecret(helloHash);
    const messages: Buffer[] = [];
    const add = (m: Buffer) => {
      this.transcript.add(m);
      messages.push(m);
    };
    add(
      encodeEncryptedExtensions({
        serverNameAcknowledged: ch.serverName !== undefined && !resumed,
        alpnProtocol,
        recordSizeLimit: ch.recordSizeLimit !== undefined ? this.options.recordSizeLimit : undefined,
      }),
    );
    if (identity && scheme !== undefined) {
      add(certificateMessage(identity.certificateChain));
      const signature = await identity.signer.sign(scheme, this.transcript.current()).catch((e: unknown) => {
        throw new TlsAlert('internal_error', `signing failed: ${e instanceof Error ? e.message : String(e)}`);
      });
      if (this.state === 'closed') return;
      add(encodeCertificateVerify(scheme, signature));
      this.info.signatureScheme = SCHEMES.get(scheme)?.name;
    }
    add(encodeFinished(finishedVerifyData(suite.hash, serverHandshakeSecret, this.transcript.current())));
    const serverFinishedHash = this.transcript.current();
    this.master = handshakeSecrets.master();

    const out: Buffer[] = [this.plaintextRecord(ContentType.handshake, serverHello)];
    if (!this.sentCompatibilityCcs && ch.legacySessionId.length > 0) {
      this.sentCompatibilityCcs = true;
      out.push(Buffer.from([ContentType.change_cipher_spec, 3, 3, 0, 1, 1]));
    }
    this.writeProtection = new RecordProtection(suite, serverHandshakeSecret);
    out.push(...this.encryptHandshake(messages));
    this.writeProtection = new RecordProtection(suite, this.master.serverApplicationTrafficSecret(serverFinishedHash));
    this.clientApplicationSecret = this.master.clientApplicationTrafficSecret(serverFinishedHash);
    this.expectedClientFinished = finishedVerifyData(suite.hash, this.clientHandshakeSecret, serverFinishedHash);
    this.readProtection = new RecordProtection(suite, this.clientHandshakeSecret);
    this.skippingEarlyData = ch.earlyData && !this.retried;
    this.state = 'awaitFinished';
    this.onSend(Buffer.concat(out));
    this.pump();
  }

  private clientApplicationSecret: Buffer | undefined;

  // ---- client Finished, tickets, KeyUpdate ------------------------------------

  private handleClientFinished(raw: Buffer): void {
    const verifyData = raw.subarray(4);
    if (verifyData.length !== this.expectedClientFinished!.length) {
      throw new TlsAlert('decode_error', `Finished of ${verifyData.length} bytes, expected ${this.expectedClientFinished!.length}`);
    }
    if (!timingSafeEqual(verifyData, this.expectedClientFinished!)) {
      throw new TlsAlert('decrypt_error', 'client Finished does not verify');
    }
    this.requireRecordBoundary('Finished');
    this.transcript.add(raw);
    this.readProtection = new RecordProtection(this.suite!, this.clientApplicationSecret!);
    this.state = 'traffic';
    this.completed = true;
    this.ignoredRecords = 0;
    // Tickets go out after the client Finished, not in our flight (which §4.6.1 would
    // allow): clients and conformance suites expect nothing but alerts before their
    // Finished is accepted.
    if (this.options.ticketCount > 0) {
      this.sendEncryptedHandshake(this.makeTickets(this.master!.resumptionMasterSecret(this.transcript.current())));
    }
    this.onHandshakeComplete();
  }

  /**
   * NewSessionTicket messages (§4.6.1). A client that did not offer psk_key_exchange_modes
   * may still offer psk_dhe_ke when it resumes, so it gets tickets too.
   */
  private makeTickets(resumptionSecret: Buffer): Buffer[] {
    const count = this.options.ticketCount;
    const suite = this.suite!;
    const tickets: Buffer[] = [];
    const issuedAt = this.now();
    for (let i = 0; i < count; i++) {
      const nonce = Buffer.of(i);
      const ageAdd = randomBytesFromPool(4).readUInt32BE(0);
      const ticket = sealTicket(this.ticketKeys, {
        cipherSuite: suite.id,
        psk: resumptionPsk(suite.hash, resumptionSecret, nonce),
        issuedAt,
        ageAdd,
        lifetimeSeconds: this.options.ticketLifetimeSeconds,
        serverName: this.info.serverName ?? '',
        alpnProtocol: this.info.alpnProtocol ?? '',
      });
      tickets.push(encodeNewSessionTicket({ lifetime: this.options.ticketLifetimeSeconds, ageAdd, nonce, ticket }));
    }
    return tickets;
  }

  private handleKeyUpdate(raw: Buffer): void {
    if (raw.length !== 5) throw new TlsAlert('decode_error', 'KeyUpdate must carry exactly one byte');
    const request = raw[4]!;
    if (request > 1) throw new TlsAlert('illegal_parameter', `KeyUpdate request_update ${request} is neither 0 nor 1`);
    this.requireRecordBoundary('KeyUpdate');
    this.countKeyUpdate();
    const next = nextTrafficSecret(this.suite!.hash, this.readProtection!.trafficSecret);
    this.readProtection = new RecordProtection(this.suite!, next);
    // §4.6.3: answer update_requested with our own KeyUpdate before sending more data.
    if (request === 1 && !this.sentCloseNotify) {
      this.sendEncryptedHandshake([encodeKeyUpdate(false)]);
      this.updateWriteKeys();
    }
  }

  /**
   * Each KeyUpdate costs us two key derivations and, with update_requested, a record to
   * send; a peer sending them without end only makes us work. Past the limit the peer is
   * not a proper implementation: unexpected_message (§6.2: "should never be observed in
   * communication between proper implementations"; docs/EDGE.md says why this alert).
   */
  private countKeyUpdate(): void {
    const now = this.now();
    if (now - this.keyUpdateWindowStart >= this.options.keyUpdateWindowMs || now < this.keyUpdateWindowStart) {
      this.keyUpdateWindowStart = now;
      this.keyUpdatesInWindow = 0;
    }
    if (++this.keyUpdatesInWindow > this.options.maxKeyUpdates) {
      throw new TlsAlert(
        'unexpected_message',
        `more than ${this.options.maxKeyUpdates} KeyUpdates within ${this.options.keyUpdateWindowMs} ms`,
      );
    }
  }

  private updateWriteKeys(): void {
    const next = nextTrafficSecret(this.suite!.hash, this.writeProtection!.trafficSecret);
    this.writeProtection = new RecordProtection(this.suite!, next);
  }

  // ---- output -------------------------------------------------------------------

  private plaintextRecord(type: number, body: Buffer): Buffer {
    const out = Buffer.allocUnsafe(5 + body.length);
    out[0] = type;
    out[1] = 3;
    out[2] = 3;
    out.writeUInt16BE(body.length, 3);
    body.copy(out, 5);
    return out;
  }

  private sendPlaintextHandshake(message: Buffer, withCompatibilityCcs: boolean): void {
    const out = [this.plaintextRecord(ContentType.handshake, message)];
    if (withCompatibilityCcs && !this.sentCompatibilityCcs) {
      this.sentCompatibilityCcs = true;
      out.push(Buffer.from([ContentType.change_cipher_spec, 3, 3, 0, 1, 1]));
    }
    this.onSend(Buffer.concat(out));
  }

  /** Packs handshake messages into as few protected records as the peer's limit allows. */
  private encryptHandshake(messages: Buffer[]): Buffer[] {
    const all = messages.length === 1 ? messages[0]! : Buffer.concat(messages);
    const records: Buffer[] = [];
    for (let off = 0; off < all.length; off += this.peerRecordLimit) {
      records.push(this.writeProtection!.seal(ContentType.handshake, all.subarray(off, off + this.peerRecordLimit)));
    }
    return records;
  }

  private sendEncryptedHandshake(messages: Buffer[]): void {
    this.onSend(Buffer.concat(this.encryptHandshake(messages)));
  }

  private sendAlert(description: number): void {
    // §6: close_notify and user_canceled are the two non-error alerts (level warning).
    const warning = description === AlertDescription.close_notify || description === AlertDescription.user_canceled;
    const body = Buffer.of(warning ? 1 : 2, description);
    this.onSend(
      this.writeProtection ? this.writeProtection.seal(ContentType.alert, body) : this.plaintextRecord(ContentType.alert, body),
    );
  }

  private fail(err: unknown): void {
    if (this.state === 'closed') return;
    const alert = toAlert(err);
    this.state = 'closed';
    try {
      this.sendAlert(alert.alert);
    } catch {
      // The alert is best effort; the connection is closing anyway.
    }
    this.onError(alert);
  }
}
