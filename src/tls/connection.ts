import { TlsAlert, TlsPeerAlert, AlertDescription, toAlert } from './alert.js';
import type { ConnectionInfo, HandshakeContext } from './handshake/context.js';
import { receiveClientHello } from './handshake/driver.js';
import type { Expect12, ServerHandshake12 } from './handshake/server12.js';
import type { AwaitSecondClientHello, Established13, ExpectClientCertificateVerify, ExpectClientFinished, ServerHandshake13 } from './handshake/server13.js';
import { TicketKeyRing } from './handshake/ticket-keys.js';
import { encodeKeyUpdate } from './messages/server-messages.js';
import type { ResolvedOptions } from './options.js';
import { MAX_BUFFERED_BEFORE_ANSWER, RecordLayer, type ReceivePolicy } from './record/record-layer.js';
import { HandshakeType } from './wire/codepoints.js';

/**
 * Sans-I/O TLS server connection (RFC 8446, RFC 5246): bytes in through `receive`, bytes out and
 * events through the `on*` callbacks. It never touches a socket or a timer; the node:net
 * adapter (socket.ts) does that.
 *
 * The connection holds the phase between messages and routes what the record layer
 * (record/record-layer.ts) delivers: a ClientHello to the driver (handshake/driver.ts),
 * which hands it to the negotiated version's handshake (handshake/server13.ts); the
 * client Finished back to that handshake; alerts, application data and KeyUpdate here.
 *
 * Every protocol error is a TlsAlert thrown where it is found; `fail` is the one place
 * that turns it into an alert record and closes. Anything else thrown is a bug and is
 * reported as internal_error.
 */

/** What exists in each phase is a field of that phase. */
type Phase =
  | { readonly kind: 'awaitClientHello' }
  | AwaitSecondClientHello
  /** Waiting for resolveIdentity / the Signer; records wait in the record layer. */
  | { readonly kind: 'negotiating' }
  /** We sent a CertificateRequest (§4.3.2): the client's Certificate comes first. */
  | { readonly kind: 'awaitClientCertificate'; readonly server: ServerHandshake13; readonly expect: ExpectClientFinished }
  | { readonly kind: 'awaitClientCertificateVerify'; readonly server: ServerHandshake13; readonly state: ExpectClientCertificateVerify }
  | { readonly kind: 'awaitFinished'; readonly server: ServerHandshake13; readonly expect: ExpectClientFinished }
  /** TLS 1.2 (handshake/server12.ts): the client's ClientKeyExchange, ChangeCipherSpec or Finished is next. */
  | { readonly kind: 'handshake12'; readonly server: ServerHandshake12; readonly expect: Expect12 }
  /** `tls12`: a ClientHello here is a renegotiation, refused (RFC 5746 §4.4); otherwise a KeyUpdate may come. */
  | { readonly kind: 'traffic'; readonly keyUpdates: KeyUpdateWindow; readonly tls12: boolean }
  | { readonly kind: 'closed' };

type PhaseKind = Phase['kind'];

/** KeyUpdates received in the current window (§4.6.3 gives no limit; we do, per options). */
interface KeyUpdateWindow {
  start: number;
  count: number;
}

/**
 * The one handshake message each receiving phase accepts. Post-handshake authentication
 * (§4.6.2) is not offered: we never send a CertificateRequest after the handshake, so a
 * client Certificate in traffic is unexpected_message (docs/EDGE.md, client certificates).
 */
const EXPECTED_MESSAGE: Partial<Record<PhaseKind, number>> = {
  awaitClientHello: HandshakeType.client_hello,
  awaitSecondClientHello: HandshakeType.client_hello,
  awaitClientCertificate: HandshakeType.certificate,
  awaitClientCertificateVerify: HandshakeType.certificate_verify,
  awaitFinished: HandshakeType.finished,
  traffic: HandshakeType.key_update,
};
/** A KeyUpdate body is one byte (§4.6.3). */
const MAX_KEY_UPDATE_SIZE = 1;
/** CertificateVerify: scheme, signature<0..2^16-1> (§4.4.3). */
const MAX_CERTIFICATE_VERIFY_SIZE = 2 + 2 + 0xffff;

/** Phases between our flight and the client Finished: the client's second flight (§4.4). */
function inClientFlight(kind: PhaseKind): boolean {
  return kind === 'awaitClientCertificate' || kind === 'awaitClientCertificateVerify' || kind === 'awaitFinished';
}
/** TLS 1.2 (RFC 5246): the message each server12 phase expects, and its largest body (RFC 8422 §5.7: point<1..255>; §7.4.9: 12 bytes). */
const EXPECTED_MESSAGE12: Record<Expect12['kind'], { type: number; max: number } | undefined> = {
  // §7.4.6: certificate_list<0..2^24-1>; capped like every handshake message of ours (128 KiB).
  expectClientCertificate: { type: HandshakeType.certificate, max: 0x20000 },
  expectClientKeyExchange: { type: HandshakeType.client_key_exchange, max: 256 },
  // §7.4.8: scheme, signature<0..2^16-1>.
  expectCertificateVerify: { type: HandshakeType.certificate_verify, max: 4 + 0xffff },
  expectChangeCipherSpec: undefined,
  expectClientFinished: { type: HandshakeType.finished, max: 12 },
};
/**
 * TLS 1.2 warning alerts (other than close_notify) are ignored (RFC 5246 §7.2), and
 * renegotiations are refused with a warning (RFC 5746 §4.4), but only this many of both
 * in a row: a peer that floods them only makes us work (CVE-2016-8610), and each refused
 * renegotiation costs us a sealed alert record for as little as a 4-byte ClientHello.
 */
const MAX_WARNING_ALERTS = 4;

/**
 * What the current phase allows of the peer's records (record/record-layer.ts asks).
 * A class, not an object literal with getters: a literal's getters are fresh closures per
 * connection, which V8 keeps in per-instance hidden classes that old space points at, so
 * every scavenge kept whole finished connections alive (measured: 4x the promoted bytes).
 */
class PhaseReceivePolicy implements ReceivePolicy {
  constructor(
    private readonly phase: () => Phase,
    readonly checkHandshakeHeader: (type: number, length: number) => void,
  ) {}

  get acceptsChangeCipherSpec(): boolean {
    const phase = this.phase();
    if (phase.kind === 'handshake12') return phase.expect.kind === 'expectChangeCipherSpec';
    const k = phase.kind;
    return k === 'awaitSecondClientHello' || inClientFlight(k) || k === 'negotiating';
  }

  get acceptsPlaintextAlert(): boolean {
    return inClientFlight(this.phase().kind);
  }

  get skipsPlaintextEarlyData(): boolean {
    const phase = this.phase();
    return phase.kind === 'awaitSecondClientHello' && phase.earlyDataInFirstHello;
  }

  get acceptsApplicationData(): boolean {
    return this.phase().kind === 'traffic';
  }
}

/** What the connection lends the handshake; a class for the same reason as PhaseReceivePolicy. */
class ConnectionContext implements HandshakeContext {
  constructor(
    readonly options: ResolvedOptions,
    readonly now: () => number,
    readonly ticketKeys: TicketKeyRing,
    readonly records: RecordLayer,
    readonly info: ConnectionInfo,
    private readonly isClosed: () => boolean,
  ) {}

  get closed(): boolean {
    return this.isClosed();
  }
}

export class TlsServerConnection {
  /** Bytes to put on the wire. */
  onSend: (bytes: Buffer) => void = () => {};
  /**
   * Optional: an application data record in pieces to put on the wire in this order, for a
   * gathered write (socket.ts). Unset, the pieces are joined and go through onSend.
   */
  onSendParts: ((parts: readonly Buffer[]) => void) | undefined;
  onHandshakeComplete: () => void = () => {};
  onApplicationData: (data: Buffer) => void = () => {};
  /** The peer sent close_notify: its side is closed; ours stays open until close(). */
  onPeerClose: () => void = () => {};
  /** The connection failed; an alert was sent (TlsAlert) or received (TlsPeerAlert). */
  onError: (err: TlsAlert | TlsPeerAlert) => void = () => {};

  /**
   * Hold the NewSessionTickets after the client Finished until `flushSessionTickets`, our
   * first application data or KeyUpdate, or our close_notify (socket.ts sets this and
   * flushes on a timer): they then share a write with what follows. Off: tickets go out
   * with the client Finished.
   */
  deferSessionTickets = false;

  readonly info: ConnectionInfo = { resumed: false, helloRetryRequest: false };
  private pendingTickets: { readonly server: ServerHandshake13; readonly established: Established13 } | undefined;
  private phase: Phase = { kind: 'awaitClientHello' };
  private readonly records: RecordLayer;
  private readonly policy: ReceivePolicy;
  private readonly context: HandshakeContext;
  private completed = false;
  /** TLS 1.2 warning alerts received and renegotiations refused since the last message that carried something. */
  private warningAlerts = 0;
  private sentCloseNotify = false;
  private peerClosed = false;
  /** TLS 1.2: the handshake, kept for its session id, which a fatal alert invalidates (RFC 5246 §7.2). */
  private server12: ServerHandshake12 | undefined;

  constructor(private readonly options: ResolvedOptions, private readonly now: () => number = Date.now) {
    this.records = new RecordLayer(
      options.recordSizeLimit,
      options.maxIgnoredRecords,
      (bytes) => this.onSend(bytes),
      (parts) => (this.onSendParts ? this.onSendParts(parts) : this.onSend(Buffer.concat(parts))),
    );
    this.policy = new PhaseReceivePolicy(
      () => this.phase,
      (type, length) => this.checkExpectedMessage(type, length),
    );
    this.context = new ConnectionContext(options, now, options.ticketKeys ?? new TicketKeyRing(), this.records, this.info, () => this.phase.kind === 'closed');
  }

  /** True once the client Finished verified (stays true after close). */
  get handshakeComplete(): boolean {
    return this.completed;
  }

  get closed(): boolean {
    return this.phase.kind === 'closed';
  }

  receive(data: Buffer): void {
    if (this.phase.kind === 'closed' || this.peerClosed) return;
    this.records.push(data);
    if (this.phase.kind === 'negotiating' && this.records.buffered > MAX_BUFFERED_BEFORE_ANSWER) {
      // Nothing is read while the signature is made; what piles up meanwhile is bounded.
      return this.fail(new TlsAlert('unexpected_message', `more than ${MAX_BUFFERED_BEFORE_ANSWER} bytes sent before our answer to the ClientHello`));
    }
    this.pump();
  }

  /** Sends application data, fragmented to the peer's record size limit. */
  write(data: Uint8Array): void {
    if (this.phase.kind !== 'traffic' || this.sentCloseNotify) throw new Error('TLS connection is not open for writing');
    this.flushSessionTickets();
    if (this.phase.kind !== 'traffic') throw new Error('TLS connection is not open for writing');
    this.records.sendApplicationData(data);
  }

  /** True while deferred NewSessionTickets wait for flushSessionTickets or our next write. */
  get sessionTicketsPending(): boolean {
    return this.pendingTickets !== undefined;
  }

  /** Sends the deferred NewSessionTickets now (§4.6.1 lets the server send them any time after the client Finished). */
  flushSessionTickets(): void {
    const pending = this.pendingTickets;
    if (!pending) return;
    this.pendingTickets = undefined;
    if (this.phase.kind !== 'traffic' || this.sentCloseNotify) return;
    try {
      pending.server.sendSessionTickets(pending.established);
    } catch (err) {
      // This also runs from the socket adapter's ticket timer, where a throw reaches no
      // caller and ends the process: the connection ends with internal_error instead
      // (RFC 8446 §6.2), and only this connection.
      this.fail(err);
    }
  }

  /** Sends close_notify (§6.1); reading continues until the peer closes too. */
  close(): void {
    if (this.phase.kind === 'closed' || this.sentCloseNotify) return;
    // Deferred tickets go out with our close_notify: a client that closed first may still
    // read up to our close_notify (gnutls does, and resumes with them).
    this.flushSessionTickets();
    // Sealing the tickets may have failed and closed the connection (re-read: TS narrowed phase above).
    const phase: { kind: string } = this.phase;
    if (phase.kind === 'closed') return;
    this.sentCloseNotify = true;
    this.sendAlert(AlertDescription.close_notify);
    if (this.phase.kind !== 'traffic' || this.peerClosed) this.phase = { kind: 'closed' };
  }

  /** §4.6.3: update our sending keys; with `requestPeer` ask the peer to update its too. */
  keyUpdate(requestPeer: boolean): void {
    if (this.phase.kind !== 'traffic' || this.sentCloseNotify) throw new Error('KeyUpdate needs an established connection');
    if (this.phase.tls12) throw new Error('KeyUpdate does not exist in TLS 1.2');
    this.sendKeyUpdate(requestPeer);
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
    if (this.phase.kind === 'closed' || this.completed) return;
    this.phase = { kind: 'closed' };
    try {
      this.sendAlert(AlertDescription.user_canceled);
      this.sentCloseNotify = true;
      this.sendAlert(AlertDescription.close_notify);
    } catch {
      // Best effort, as in fail().
    }
  }

  // ---- input ------------------------------------------------------------------

  /** Handles what the record layer delivers until it needs more bytes or the phase stops reading. */
  private pump(): void {
    try {
      // RFC 5246 §7.2.1, RFC 8446 §6.1: "any data received after a closure alert is
      // ignored", also the records that came in the same read as the close_notify.
      while (this.phase.kind !== 'closed' && this.phase.kind !== 'negotiating' && !this.peerClosed) {
        const received = this.records.next(this.policy);
        if (!received) break;
        switch (received.kind) {
          case 'handshake':
            this.handleHandshake(received.raw);
            break;
          case 'changeCipherSpec':
            this.handleChangeCipherSpec12();
            break;
          case 'alert':
            this.handleAlert(received.level, received.description);
            break;
          case 'applicationData':
            this.warningAlerts = 0;
            this.onApplicationData(received.data);
            break;
        }
      }
    } catch (err) {
      this.fail(err);
    }
  }

  /** Fails as soon as the header shows a message that cannot be right, without buffering its body. */
  private checkExpectedMessage(type: number, length: number): void {
    const phase = this.phase;
    if (phase.kind === 'handshake12' || (phase.kind === 'traffic' && phase.tls12)) return this.checkExpectedMessage12(phase, type, length);
    if (EXPECTED_MESSAGE[phase.kind] !== type) {
      throw new TlsAlert('unexpected_message', `handshake message type ${type} not expected in state ${phase.kind}`);
    }
    const max =
      phase.kind === 'awaitFinished' ? phase.expect.suite.hashLength
      : phase.kind === 'traffic' ? MAX_KEY_UPDATE_SIZE
      : phase.kind === 'awaitClientCertificateVerify' ? MAX_CERTIFICATE_VERIFY_SIZE
      : this.options.maxHandshakeMessageSize;
    if (length > max) throw new TlsAlert('decode_error', `handshake message type ${type} of ${length} bytes is too long`);
  }

  /** TLS 1.2: the message the server12 phase expects; once established only a ClientHello (renegotiation, refused). */
  private checkExpectedMessage12(phase: Phase, type: number, length: number): void {
    const expected =
      phase.kind === 'handshake12' ? EXPECTED_MESSAGE12[phase.expect.kind] : { type: HandshakeType.client_hello, max: this.options.maxHandshakeMessageSize };
    if (!expected || expected.type !== type) {
      const where = phase.kind === 'handshake12' ? phase.expect.kind : 'traffic (TLS 1.2)';
      throw new TlsAlert('unexpected_message', `handshake message type ${type} not expected in state ${where}`);
    }
    if (length > expected.max) throw new TlsAlert('decode_error', `handshake message type ${type} of ${length} bytes is too long`);
  }

  /** The message type was checked against the phase with its header (checkExpectedMessage). */
  private handleHandshake(raw: Buffer): void {
    const phase = this.phase;
    // A renegotiation carries nothing: it counts with the warning alerts, every other message resets them.
    if (phase.kind === 'traffic' && phase.tls12) return this.refuseRenegotiation();
    this.warningAlerts = 0;
    switch (phase.kind) {
      case 'awaitClientHello':
        return this.handleClientHello(raw, undefined);
      case 'awaitSecondClientHello':
        return this.handleClientHello(raw, phase);
      case 'awaitClientCertificate': {
        const next = phase.server.readClientCertificate(phase.expect, raw);
        this.phase = next
          ? { kind: 'awaitClientCertificateVerify', server: phase.server, state: next }
          : { kind: 'awaitFinished', server: phase.server, expect: phase.expect };
        return;
      }
      case 'awaitClientCertificateVerify':
        this.phase = { kind: 'awaitFinished', server: phase.server, expect: phase.server.readClientCertificateVerify(phase.state, raw) };
        return;
      case 'awaitFinished':
        return this.handleClientFinished(raw, phase.server, phase.expect);
      case 'handshake12':
        return this.handleHandshake12(raw, phase.server, phase.expect);
      case 'traffic':
        return this.handleKeyUpdate(raw, phase.keyUpdates);
    }
  }

  // ---- TLS 1.2 (handshake/server12.ts) ------------------------------------------------

  private handleHandshake12(raw: Buffer, server: ServerHandshake12, expect: Expect12): void {
    switch (expect.kind) {
      case 'expectClientCertificate':
        this.phase = { kind: 'handshake12', server, expect: server.readClientCertificate(expect, raw) };
        return;
      case 'expectClientKeyExchange':
        this.phase = { kind: 'handshake12', server, expect: server.readClientKeyExchange(expect, raw) };
        return;
      case 'expectCertificateVerify':
        this.phase = { kind: 'handshake12', server, expect: server.readClientCertificateVerify(expect, raw) };
        return;
      case 'expectClientFinished':
        server.readClientFinished(expect, raw);
        this.phase = { kind: 'traffic', keyUpdates: { start: 0, count: 0 }, tls12: true };
        this.completed = true;
        this.onHandshakeComplete();
        return;
      case 'expectChangeCipherSpec':
        // checkExpectedMessage refused any handshake message in this phase.
        throw new TlsAlert('unexpected_message', 'handshake message where ChangeCipherSpec was expected');
    }
  }

  /** RFC 5246 §7.1: the record layer accepted a ChangeCipherSpec only where the phase expects one. */
  private handleChangeCipherSpec12(): void {
    const phase = this.phase;
    if (phase.kind !== 'handshake12' || phase.expect.kind !== 'expectChangeCipherSpec') {
      throw new TlsAlert('unexpected_message', 'change_cipher_spec not expected here');
    }
    this.phase = { kind: 'handshake12', server: phase.server, expect: phase.server.readChangeCipherSpec(phase.expect) };
  }

  /**
   * RFC 5246 §7.2.2, RFC 5746 §4.4: a ClientHello after the handshake asks to renegotiate,
   * which this server never does: a warning no_renegotiation, and the connection goes on;
   * past MAX_WARNING_ALERTS in a row (with the warning alerts received) it does not.
   */
  private refuseRenegotiation(): void {
    this.countWarning();
    if (!this.sentCloseNotify) this.records.sendAlert(1, AlertDescription.no_renegotiation);
  }

  private handleClientHello(raw: Buffer, retry: AwaitSecondClientHello | undefined): void {
    const next = receiveClientHello(this.context, raw, retry);
    if (next.kind === 'awaitSecondClientHello') {
      this.phase = next;
      return;
    }
    this.phase = { kind: 'negotiating' };
    if (next.kind === 'negotiating12') {
      this.server12 = next.server;
      next.flight
        .then((expect) => {
          if (!expect || this.phase.kind === 'closed') return;
          this.phase = { kind: 'handshake12', server: next.server, expect };
          this.pump();
        })
        .catch((e) => this.fail(e));
      return;
    }
    next.flight
      .then((expect) => {
        if (!expect || this.phase.kind === 'closed') return;
        this.phase = expect.certificateRequest
          ? { kind: 'awaitClientCertificate', server: next.server, expect }
          : { kind: 'awaitFinished', server: next.server, expect };
        this.pump();
      })
      .catch((e) => this.fail(e));
  }

  private handleClientFinished(raw: Buffer, server: ServerHandshake13, expect: ExpectClientFinished): void {
    const established = server.readClientFinished(expect, raw);
    this.phase = { kind: 'traffic', keyUpdates: { start: 0, count: 0 }, tls12: false };
    this.completed = true;
    if (this.deferSessionTickets && this.options.ticketCount > 0) this.pendingTickets = { server, established };
    else server.sendSessionTickets(established);
    this.onHandshakeComplete();
  }

  private handleAlert(level: number, description: number): void {
    if (this.info.version === 'TLSv1.2' && level === 1 && description !== AlertDescription.close_notify) {
      // RFC 5246 §7.2: a warning alert does not end a TLS 1.2 connection; a flood of them does.
      this.countWarning();
      return;
    }
    if (description === AlertDescription.close_notify) {
      if (this.phase.kind !== 'traffic') {
        // close_notify during the handshake: answer it; the handshake is over.
        this.close();
        this.phase = { kind: 'closed' };
      } else if (this.sentCloseNotify) {
        this.phase = { kind: 'closed' }; // both directions are now closed
      }
      // §6.1: close_notify closes only the peer's write side; we may still send until
      // the application ends its side (which sends our close_notify). Anything the peer
      // sends after its close_notify is ignored.
      this.peerClosed = true;
      this.onPeerClose();
      return;
    }
    // §6: every other alert (user_canceled included) ends the connection.
    this.phase = { kind: 'closed' };
    this.server12?.forgetSession();
    this.onError(new TlsPeerAlert(description));
  }

  /** TLS 1.2: one more thing in a row that carried nothing (MAX_WARNING_ALERTS). */
  private countWarning(): void {
    if (++this.warningAlerts > MAX_WARNING_ALERTS) {
      throw new TlsAlert('unexpected_message', `more than ${MAX_WARNING_ALERTS} warning alerts and refused renegotiations in a row`);
    }
  }

  // ---- KeyUpdate (§4.6.3) ---------------------------------------------------------

  private handleKeyUpdate(raw: Buffer, window: KeyUpdateWindow): void {
    if (raw.length !== 5) throw new TlsAlert('decode_error', 'KeyUpdate must carry exactly one byte');
    const request = raw.readUInt8(4);
    if (request > 1) throw new TlsAlert('illegal_parameter', `KeyUpdate request_update ${request} is neither 0 nor 1`);
    this.records.requireRecordBoundary('KeyUpdate');
    this.countKeyUpdate(window);
    this.records.updateKeys('read');
    // §4.6.3: answer update_requested with our own KeyUpdate before sending more data.
    if (request === 1 && !this.sentCloseNotify) this.sendKeyUpdate(false);
  }

  /**
   * Each KeyUpdate costs us two key derivations and, with update_requested, a record to
   * send; a peer sending them without end only makes us work. Past the limit the peer is
   * not a proper implementation: unexpected_message (§6.2: "should never be observed in
   * communication between proper implementations"; docs/EDGE.md says why this alert).
   */
  private countKeyUpdate(window: KeyUpdateWindow): void {
    const now = this.now();
    if (now - window.start >= this.options.keyUpdateWindowMs || now < window.start) {
      window.start = now;
      window.count = 0;
    }
    if (++window.count > this.options.maxKeyUpdates) {
      throw new TlsAlert(
        'unexpected_message',
        `more than ${this.options.maxKeyUpdates} KeyUpdates within ${this.options.keyUpdateWindowMs} ms`,
      );
    }
  }

  private sendKeyUpdate(requestPeer: boolean): void {
    // Tickets held back are protected with the keys they were issued under (§4.6.1, §4.6.3).
    this.flushSessionTickets();
    this.records.send(this.records.protectHandshake([encodeKeyUpdate(requestPeer)]));
    this.records.updateKeys('write');
  }

  // ---- alerts and failure ---------------------------------------------------------

  private sendAlert(description: number): void {
    // §6: close_notify and user_canceled are the two non-error alerts (level warning).
    const warning = description === AlertDescription.close_notify || description === AlertDescription.user_canceled;
    this.records.sendAlert(warning ? 1 : 2, description);
  }

  private fail(err: unknown): void {
    if (this.phase.kind === 'closed') return;
    const alert = toAlert(err);
    this.phase = { kind: 'closed' };
    this.pendingTickets = undefined;
    this.server12?.forgetSession();
    try {
      this.sendAlert(alert.alert);
    } catch {
      // The alert is best effort; the connection is closing anyway.
    }
    this.onError(alert);
  }
}
