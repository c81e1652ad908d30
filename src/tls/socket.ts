import { Duplex } from 'node:stream';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { AlertDescription, TlsAlert, TlsPeerAlert } from './alert.js';
import { TlsServerConnection } from './connection.js';
import type { ClientIdentity, ConnectionInfo } from './handshake/context.js';
import { resolveOptions, type ResolvedOptions, type TlsServerOptions } from './options.js';
import { MAX_PLAINTEXT } from './record/protection.js';
import { UpstreamRelay, type RelayHost } from './relay.js';
import { retainMsForTicketLifetime } from './handshake/ticket-keys.js';

/**
 * The node:net adapter around the sans-I/O connection: a Duplex of decrypted
 * application data with backpressure both ways, plus the negotiated parameters.
 */
export class TlsSocket extends Duplex implements RelayHost {
  private readonly connection: TlsServerConnection;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private failure: Error | undefined;
  /**
   * 'secure' was emitted: the application holds this socket (and listens for 'error'). The
   * handshake can complete in the engine and still fail before that (a NewSessionTicket that
   * cannot be sent with the client Finished): such a failure is a handshake failure, reported
   * as tlsClientError, never an 'error' event nobody listens to (which would end the process).
   */
  private secured = false;
  private lingering = false;
  private lingerBytes = 0;
  /** The application's stream is full (push returned false): wait for _read. */
  private readerFull = false;
  /** Our output is over the TCP socket's high-water mark: wait for 'drain'. */
  private writerFull = false;
  /** The TCP socket is corked until the end of this tick: what we send in one turn is one writev. */
  private outputCorked = false;
  private ticketTimer: NodeJS.Timeout | undefined;
  /** The upstream this connection's data goes to without the stream layers (relayTo), if any. */
  private relay: UpstreamRelay | undefined;
  /** The relay's upstream is full: wait for its 'drain'. */
  private upstreamFull = false;

  constructor(
    readonly rawSocket: Socket,
    private readonly options: ResolvedOptions,
    allowHalfOpen = false,
    /** Called once when the connection has failed and starts lingering. */
    private readonly onLinger?: () => void,
  ) {
    // Without allowHalfOpen, the end of the peer's stream ends ours too (like node:net),
    // after what was already written; with it the application decides (RFC 8446 §6.1).
    super({ allowHalfOpen });
    const conn = (this.connection = new TlsServerConnection(options));
    conn.onSend = (bytes) => this.sendToPeer(bytes);
    conn.onSendParts = (parts) => this.sendPartsToPeer(parts);
    conn.deferSessionTickets = options.ticketDelayMs > 0;
    conn.onHandshakeComplete = () => {
      this.clearHandshakeTimer();
      if (conn.sessionTicketsPending) {
        this.ticketTimer = setTimeout(() => {
          this.ticketTimer = undefined;
          conn.flushSessionTickets();
        }, options.ticketDelayMs);
        this.ticketTimer.unref();
      }
      this.secured = true;
      this.emit('secure');
    };
    conn.onApplicationData = (data) => {
      const relay = this.relay;
      if (relay?.relaysClient) return relay.fromClient(data);
      if (!this.push(data)) {
        this.readerFull = true;
        rawSocket.pause();
      }
    };
    conn.onPeerClose = () => {
      if (!this.connection.handshakeComplete) {
        const err = Object.assign(new Error('tls: peer sent close_notify during the handshake'), { code: 'TLS_CLOSED_IN_HANDSHAKE' });
        return this.fail(err);
      }
      this.push(null);
    };
    conn.onError = (err) => this.fail(err);
    rawSocket.on('data', (chunk: Buffer) => {
      if (this.lingering) return this.discard(chunk.length);
      // Relaying: the records of one read go to the upstream in one writev, not one write each.
      const upstream = this.relay?.relaysClient ? this.relay.upstream : undefined;
      if (upstream) {
        upstream.cork();
        conn.receive(chunk);
        upstream.uncork();
      } else {
        conn.receive(chunk);
      }
      // Records the engine sends by itself (KeyUpdate answers, alerts, tickets) must not
      // pile up behind a peer that does not read: stop reading until our output drains.
      if (rawSocket.writableLength > rawSocket.writableHighWaterMark && !this.writerFull) {
        this.writerFull = true;
        rawSocket.pause();
        rawSocket.once('drain', () => {
          this.writerFull = false;
          this.updateFlow();
        });
      }
    });
    rawSocket.on('end', () => {
      // TCP FIN without close_notify: a truncated connection (§6.1).
      if (!conn.handshakeComplete) {
        const err = Object.assign(new Error('tls: connection closed by peer during the handshake'), { code: 'TLS_EOF_IN_HANDSHAKE' });
        this.fail(err);
      } else {
        this.push(null);
      }
    });
    rawSocket.on('error', (err) => this.fail(err));
    rawSocket.on('close', () => {
      this.clearHandshakeTimer();
      if (!this.destroyed) this.destroy();
    });
    // A hard deadline from accept: nothing the peer sends moves it.
    this.handshakeTimer = setTimeout(() => {
      this.handshakeTimer = undefined;
      conn.cancelHandshake();
      const err = Object.assign(new Error(`tls: handshake not completed within ${options.handshakeTimeoutMs} ms`), {
        code: 'TLS_HANDSHAKE_TIMEOUT',
        alert: AlertDescription.user_canceled,
      });
      this.fail(err);
    }, options.handshakeTimeoutMs);
    this.handshakeTimer.unref();
  }

  get serverName(): string | undefined {
    return this.connection.info.serverName;
  }

  get alpnProtocol(): string | undefined {
    return this.connection.info.alpnProtocol;
  }
  get cipherSuite(): string | undefined {
    return this.connection.info.cipherSuite;
  }
  get group(): string | undefined {
    return this.connection.info.group;
  }
  get signatureScheme(): string | undefined {
    return this.connection.info.signatureScheme;
  }
  /** CertificateVerify was signed with a delegated credential (RFC 9345) rather than through the identity's signer. */
  get delegatedCredential(): boolean {
    return this.connection.info.delegatedCredential === true;
  }

  get resumed(): boolean {
    return this.connection.info.resumed;
  }
  /**
   * What the handshake negotiated, in one read-only copy: version, group, suite, whether a
   * HelloRetryRequest happened, whether a ticket resumed the session, and the scheme of the
   * CertificateVerify (absent on resumption: nothing was signed).
   */
  get handshakeInfo(): Readonly<ConnectionInfo> {
    return { ...this.connection.info };
  }
  /** The verified client certificate (RFC 8446 §4.4.2), from this handshake or the session it resumed. */
  get clientCertificate(): ClientIdentity | undefined {
    return this.connection.info.clientCertificate;
  }
  /** The certificate chain of the identity that served this connection. */
  get serverCertificateChain(): readonly Uint8Array[] | undefined {
    return this.connection.info.serverCertificateChain;
  }
  /** True once our flight asked for a client certificate (RFC 8446 §4.3.2). */
  get clientCertificateRequested(): boolean {
    return this.connection.info.clientCertificateRequested ?? false;
  }
  /** True when `clientCertificate` was verified in the full handshake this connection resumed. */
  get clientCertificateFromSession(): boolean {
    return this.connection.info.clientCertificateFromSession ?? false;
  }
  get remoteAddress(): string | undefined {
    return this.rawSocket.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.rawSocket.remotePort;
  }
  get handshakeComplete(): boolean {
    return this.connection.handshakeComplete;
  }

  keyUpdate(requestPeer: boolean): void {
    this.connection.keyUpdate(requestPeer);
  }

  /**
   * Relays this connection's application data to and from `upstream` directly (relay.ts),
   * instead of `pipe` both ways: the bulk path without the stream layers. The Duplex still
   * carries the life cycle ('end', 'finish', 'close', 'error', end(), destroy()); nothing
   * else may read or write its data once relaying. Half-close passes through both ways.
   */
  relayTo(upstream: Socket): void {
    if (this.relay) throw new Error('tls: this connection already relays to an upstream');
    this.relay = new UpstreamRelay(this, upstream);
  }

  /** @internal RelayHost: upstream data, sealed for the client now. */
  sealForClient(data: Uint8Array): void {
    this.connection.write(data);
  }

  /** @internal RelayHost: the relay batches the turn's upstream data; uncorkOutput seals it. */
  holdOutputForTurn(): boolean {
    const raw = this.rawSocket;
    if (raw.destroyed || raw.writableEnded) return false;
    this.corkOutput();
    return true;
  }

  /** @internal RelayHost: the client is read only while the upstream keeps up. */
  setUpstreamBackpressure(full: boolean): void {
    this.upstreamFull = full;
    if (full) this.rawSocket.pause();
    else this.updateFlow();
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
  }

  /**
   * Everything the connection sends in one turn of the event loop (tickets and a
   * close_notify that arrived with the client Finished, data and close_notify) leaves in
   * one writev: each write syscall on a TCP socket costs more than the bytes it carries
   * (docs/BENCHMARKS.md, profiles). The cork lasts until the turn's callbacks, promise
   * jobs and ticks have run (setImmediate); end() uncorks at once, so the FIN goes last.
   */
  private sendToPeer(bytes: Buffer): void {
    const raw = this.rawSocket;
    if (raw.destroyed || raw.writableEnded) return;
    this.corkOutput();
    raw.write(bytes);
  }

  /** A record in pieces (header, ciphertext, tail): written one after the other into the cork, joined by the writev, never copied. */
  private sendPartsToPeer(parts: readonly Buffer[]): void {
    const raw = this.rawSocket;
    if (raw.destroyed || raw.writableEnded) return;
    this.corkOutput();
    for (const part of parts) raw.write(part);
  }

  private corkOutput(): void {
    if (this.outputCorked) return;
    this.outputCorked = true;
    this.rawSocket.cork();
    setImmediate(uncorkOutput, this);
  }

  /** @internal */
  uncorkOutput(): void {
    // The relay's batch of this turn's upstream data is sealed into the same writev.
    this.relay?.sealBatch();
    this.outputCorked = false;
    withoutStackTraces(() => this.rawSocket.uncork());
  }

  /** Any failure: remember it, tell the server (before the handshake), flush the alert, close. */
  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.clearHandshakeTimer();
    this.clearTicketTimer();
    const during = !this.secured;
    if (err instanceof TlsAlert && !this.connection.closed) this.connection.abort(err);
    this.emit('tlsError', err, during);
    // end() lets the alert already queued reach the peer before the FIN. Reading on (and
    // discarding) avoids a TCP reset, which can make the peer lose the alert while it is
    // still sending (e.g. a 2^24-byte handshake message). The linger ends when the peer
    // closes, after lingerIdleMs without input, after lingerMaxBytes, or at lingerMs from
    // now whatever the peer sends; and a lingering socket no longer counts toward
    // maxConnections (the server keeps at most maxLingering of them), so a peer that
    // keeps trickling holds no connection slot (docs/EDGE.md, limits).
    this.lingering = true;
    // A socket that failed (EPIPE, ECONNRESET) is already closing: end() would only build
    // another Error for it.
    if (!this.rawSocket.destroyed && !this.rawSocket.errored) this.rawSocket.end();
    this.rawSocket.resume();
    const raw = this.rawSocket;
    raw.setTimeout(this.options.lingerIdleMs, () => raw.destroy());
    const cap = setTimeout(() => raw.destroy(), this.options.lingerMs);
    cap.unref();
    raw.once('close', () => clearTimeout(cap));
    this.onLinger?.();
    setImmediate(() => this.destroy(during ? undefined : err instanceof TlsPeerAlert ? undefined : err));
  }

  private discard(bytes: number): void {
    this.lingerBytes += bytes;
    if (this.lingerBytes > this.options.lingerMaxBytes) this.rawSocket.destroy();
  }

  /** Reads from the peer only while both the application and the peer's side of our output keep up. */
  private updateFlow(): void {
    if (this.lingering) return;
    if (!this.readerFull && !this.writerFull && !this.upstreamFull && this.rawSocket.isPaused()) this.rawSocket.resume();
  }

  override _read(): void {
    this.readerFull = false;
    this.updateFlow();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      this.connection.write(chunk);
    } catch (err) {
      return callback(err as Error);
    }
    if (this.rawSocket.writableNeedDrain) this.rawSocket.once('drain', () => callback());
    else callback();
  }

  /**
   * Writes that queued while we waited for 'drain' are sealed together: small ones are
   * joined into records of up to 2^14 bytes (one AEAD call and 22 bytes of overhead per
   * record instead of per write); large ones go as they are, without a copy.
   */
  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    try {
      let batch: Buffer[] = [];
      let size = 0;
      const flush = () => {
        if (batch.length) this.connection.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch, size));
        batch = [];
        size = 0;
      };
      for (const { chunk } of chunks) {
        if (size + chunk.length > MAX_PLAINTEXT) flush();
        batch.push(chunk);
        size += chunk.length;
      }
      flush();
    } catch (err) {
      return callback(err as Error);
    }
    if (this.rawSocket.writableNeedDrain) this.rawSocket.once('drain', () => callback());
    else callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    // Relayed upstream data still batched goes before our close_notify.
    this.relay?.sealBatch();
    this.clearTicketTimer();
    this.connection.close();
    withoutStackTraces(() => this.rawSocket.end(callback));
  }

  private clearTicketTimer(): void {
    if (this.ticketTimer) clearTimeout(this.ticketTimer);
    this.ticketTimer = undefined;
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.clearHandshakeTimer();
    this.clearTicketTimer();
    if (!this.lingering) this.rawSocket.destroy();
    callback(err);
  }
}

/**
 * Runs a write to the peer's socket without stack traces for the errors it creates. A
 * peer that closes right after its last record (most clients after their close_notify)
 * makes our next write fail with EPIPE or ECONNRESET, synchronously inside `uncork()` /
 * `end()`; Node builds an ErrnoException and formats its stack at once (Writable's
 * `onwrite` reads `err.stack`), which cost ≈ 4 % of the edge's busy time under load
 * (docs/BENCHMARKS.md). The error still carries its code and message, and is reported as
 * before; only the frames, which name Node's stream internals, are left out.
 */
function withoutStackTraces(write: () => void): void {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    write();
  } finally {
    Error.stackTraceLimit = limit;
  }
}

function uncorkOutput(socket: TlsSocket): void {
  socket.uncorkOutput();
}

export interface TlsServerEvents {
  secureConnection: (socket: TlsSocket) => void;
  tlsClientError: (err: Error & { code?: string; alert?: number }, socket: TlsSocket) => void;
}

/**
 * `createServer(options, onSecureConnection)` in the spirit of node:tls: a node:net
 * Server whose 'secureConnection' event gives a TlsSocket after a completed handshake,
 * and whose 'tlsClientError' reports handshakes that failed (with the alert sent).
 */
/** The engine's server: a node:net Server whose TLS options can be replaced while it runs. */
export interface TlsServer extends Server {
  /**
   * Options for connections accepted from now on (a reload); connections already open or
   * handshaking keep the options they started with. Throws, changing nothing, when invalid.
   */
  setTlsOptions(options: TlsServerOptions): void;
}

export function createServer(
  options: TlsServerOptions,
  onSecureConnection?: (socket: TlsSocket) => void,
): TlsServer {
  let resolved = resolveOptions(options);
  /** Whether resolved.ticketKeys is the default ring this server made (no ticketKeys option). */
  let ownTicketRing = options.ticketKeys === undefined;
  let allowHalfOpen = options.allowHalfOpen ?? false;
  let maxConnections = options.maxConnections ?? Infinity;
  let admitted = 0;
  /** Failed connections still draining input, oldest first. */
  const lingering = new Set<Socket>();
  const server = createNetServer({ allowHalfOpen: true, noDelay: true } as never, (raw) => {
    // The cap counts connections that are handshaking or open, not lingering ones: a
    // failed peer that keeps sending must not keep a new client out.
    if (admitted >= maxConnections) {
      raw.destroy();
      server.emit('connectionRefused', raw);
      return;
    }
    admitted++;
    let counted = true;
    const release = () => {
      if (counted) {
        counted = false;
        admitted--;
      }
    };
    raw.once('close', () => {
      release();
      lingering.delete(raw);
    });
    raw.setNoDelay(true);
    const socket = new TlsSocket(raw, resolved, allowHalfOpen, () => {
      release();
      if (raw.destroyed) return;
      lingering.add(raw);
      if (lingering.size > resolved.maxLingering) {
        const oldest = lingering.values().next().value!;
        lingering.delete(oldest);
        oldest.destroy();
      }
    });
    socket.once('secure', () => server.emit('secureConnection', socket));
    socket.on('tlsError', (err: Error, duringHandshake: boolean) => {
      if (duringHandshake) server.emit('tlsClientError', err, socket);
    });
  });
  if (onSecureConnection) server.on('secureConnection', onSecureConnection);
  return Object.assign(server, {
    setTlsOptions(next: TlsServerOptions): void {
      let nextResolved = resolveOptions(next);
      // The default ticket ring survives a reload: a new one would leave every ticket issued
      // so far unopenable, though its NewSessionTicket promised up to ticket_lifetime (RFC 8446
      // §4.6.1). Its keys are kept for the new lifetime from now on. A ring the caller gives
      // (next.ticketKeys) is used as given.
      if (next.ticketKeys === undefined && ownTicketRing && resolved.ticketKeys) {
        resolved.ticketKeys.setRetainMs(retainMsForTicketLifetime(nextResolved.ticketLifetimeSeconds));
        nextResolved = { ...nextResolved, ticketKeys: resolved.ticketKeys };
      }
      ownTicketRing = next.ticketKeys === undefined;
      // TLS 1.2 sessions cached by id survive a reload too.
      resolved = next.sessionCacheSize === undefined ? { ...nextResolved, sessionCache12: resolved.sessionCache12 } : nextResolved;
      allowHalfOpen = next.allowHalfOpen ?? false;
      maxConnections = next.maxConnections ?? Infinity;
    },
  });
}
