import { Duplex } from 'node:stream';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { TlsAlert, TlsPeerAlert } from './alert.js';
import { resolveOptions, TlsServerConnection } from './connection.js';
import type { ResolvedOptions, TlsServerOptions } from './options.js';

/** A failed connection drains input after its alert until the peer is idle this long... */
const LINGER_IDLE_MS = 2_000;
/** ...or at most this long. */
const LINGER_MAX_MS = 300_000;

/**
 * The node:net adapter around the sans-I/O connection: a Duplex of decrypted
 * application data with backpressure both ways, plus the negotiated parameters.
 */
export class TlsSocket extends Duplex {
  private readonly connection: TlsServerConnection;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private failure: Error | undefined;
  private lingering = false;

  constructor(readonly rawSocket: Socket, options: ResolvedOptions, allowHalfOpen = false) {
    // Without allowHalfOpen, the end of the peer's stream ends ours too (like node:net),
    // after what was already written; with it the application decides (RFC 8446 §6.1).
    super({ allowHalfOpen });
    const conn = (this.connection = new TlsServerConnection(options));
    conn.onSend = (bytes) => {
      if (!rawSocket.destroyed) rawSocket.write(bytes);
    };
    conn.onHandshakeComplete = () => {
      this.clearHandshakeTimer();
      this.emit('secure');
    };
    conn.onApplicationData = (data) => {
      if (!this.push(data)) rawSocket.pause();
    };
    conn.onPeerClose = () => {
      if (!this.connection.handshakeComplete) {
        const err = Object.assign(new Error('tls: peer sent close_notify during the handshake'), { code: 'TLS_CLOSED_IN_HANDSHAKE' });
        return this.fail(err);
      }
      this.push(null);
    };
    conn.onError = (err) => this.fail(err);
    rawSocket.on('data', (chunk: Buffer) => conn.receive(chunk));
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
    this.handshakeTimer = setTimeout(() => {
      const err = Object.assign(new Error(`tls: handshake not completed within ${options.handshakeTimeoutMs} ms`), {
        code: 'TLS_HANDSHAKE_TIMEOUT',
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
  get resumed(): boolean {
    return this.connection.info.resumed;
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

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
  }

  /** Any failure: remember it, tell the server (before the handshake), flush the alert, close. */
  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.clearHandshakeTimer();
    const during = !this.connection.handshakeComplete;
    if (err instanceof TlsAlert && !this.connection.closed) this.connection.abort(err);
    this.emit('tlsError', err, during);
    // end() lets the alert already queued reach the peer before the FIN. Reading on (and
    // discarding) for a moment avoids a TCP reset, which can make the peer lose the alert
    // while it is still sending (e.g. a long handshake message).
    // The drain ends when the peer closes, after LINGER_IDLE_MS without input, or at LINGER_MAX_MS.
    this.lingering = true;
    this.rawSocket.end();
    this.rawSocket.resume();
    const raw = this.rawSocket;
    raw.setTimeout(LINGER_IDLE_MS, () => raw.destroy());
    const cap = setTimeout(() => raw.destroy(), LINGER_MAX_MS);
    cap.unref();
    raw.once('close', () => clearTimeout(cap));
    setImmediate(() => this.destroy(during ? undefined : err instanceof TlsPeerAlert ? undefined : err));
  }

  override _read(): void {
    if (this.rawSocket.isPaused()) this.rawSocket.resume();
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

  override _final(callback: (error?: Error | null) => void): void {
    this.connection.close();
    this.rawSocket.end(callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.clearHandshakeTimer();
    if (!this.lingering) this.rawSocket.destroy();
    callback(err);
  }
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
export function createServer(
  options: TlsServerOptions,
  onSecureConnection?: (socket: TlsSocket) => void,
): Server {
  const resolved = resolveOptions(options);
  const allowHalfOpen = options.allowHalfOpen ?? false;
  const server = createNetServer({ allowHalfOpen: true, noDelay: true } as never, (raw) => {
    raw.setNoDelay(true);
    const socket = new TlsSocket(raw, resolved, allowHalfOpen);
    socket.once('secure', () => server.emit('secureConnection', socket));
    socket.on('tlsError', (err: Error, duringHandshake: boolean) => {
      if (duringHandshake) server.emit('tlsClientError', err, socket);
    });
  });
  if (onSecureConnection) server.on('secureConnection', onSecureConnection);
  return server;
}
