import { EventEmitter } from 'node:events';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { tls12SchemesForKeyType, type KeyType } from '../tls/signature-schemes.js';
import { serverKeyExchangeContent, type SignRequest, type Signer } from '../tls/signer.js';
import { KeydError } from './errors.js';
import {
  FrameDecoder,
  Opcode,
  decodeAdmin,
  decodeChanged,
  decodeDelegationReply,
  decodeError,
  decodeIdentityReply,
  decodePing,
  decodeSignature,
  encodeAdmin,
  encodeDelegationRequest,
  encodeFrame,
  encodeHandshakeContentRequest,
  encodeIdentityRequest,
  encodeServerKeyExchangeRequest,
  encodePing,
  encodeSignRequest,
  type AdminPayload,
  type DelegationReply,
  type DelegationRequest,
  type Frame,
} from './protocol.js';

export { KeydError };

export type KeydEndpoint =
  | { socketPath: string }
  | { host: string; port: number; tls: { cert: string | Buffer; key: string | Buffer; ca: string | Buffer; servername?: string } };

export interface KeydClientOptions {
  /** Per-request timeout (default 5000 ms); a request not answered in time fails with KEYD_TIMEOUT. */
  requestTimeoutMs?: number;
  /** Connect timeout (default: the request timeout). */
  connectTimeoutMs?: number;
}

export interface KeydIdentity {
  names: string[];
  keyRef: string;
  keyType: KeyType;
  /** TLS 1.3 CertificateVerify schemes, as keyd lists them. */
  schemes: number[];
  /**
   * TLS 1.2 ServerKeyExchange schemes (signServerKeyExchange): the key type's, with
   * rsa_pkcs1_* for RSA keys (src/tls/signature-schemes.ts). Absent: no TLS 1.2.
   */
  tls12Schemes?: number[];
  certificateChain: Uint8Array[];
  version: number;
}

interface PendingRequest {
  opcode: number;
  resolve(payload: Uint8Array): void;
  reject(err: KeydError): void;
  deadline: number;
}

/**
 * The client side of docs/PROTOCOL.md over one connection: requests are pipelined,
 * answers matched by request id (in any order). When the connection is down every
 * pending and every new request fails at once with KEYD_UNAVAILABLE — never a hang.
 *
 * Events: 'change' ({ names }) when keyd announces changed keys/chains; 'close' once,
 * when the connection ends.
 */
export class KeydClient extends EventEmitter {
  private readonly pending = new Map<number, PendingRequest>();
  private readonly decoder = new FrameDecoder();
  private nextId = 1;
  private down: KeydError | undefined;
  private outbox: Buffer[] = [];
  private flushScheduled = false;
  private readonly sweeper: NodeJS.Timeout;
  private readonly requestTimeoutMs: number;

  private constructor(
    private readonly socket: Socket,
    readonly endpointName: string,
    opts: KeydClientOptions,
  ) {
    super();
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => this.shutdown(`connection to keyd at ${endpointName} failed: ${err.code ?? err.message}`));
    socket.on('close', () => this.shutdown(`connection to keyd at ${endpointName} closed`));
    // One timer for all requests: cheaper than a timer per request under pipelining.
    this.sweeper = setInterval(() => this.expire(), Math.max(10, Math.min(250, this.requestTimeoutMs / 4)));
    this.sweeper.unref();
  }

  static connect(endpoint: KeydEndpoint, opts: KeydClientOptions = {}): Promise<KeydClient> {
    const name = 'socketPath' in endpoint ? `unix:${endpoint.socketPath}` : `${endpoint.host}:${endpoint.port}`;
    const timeoutMs = opts.connectTimeoutMs ?? opts.requestTimeoutMs ?? 5000;
    return new Promise((resolve, reject) => {
      let socket: Socket;
      const readyEvent = 'socketPath' in endpoint ? 'connect' : 'secureConnect';
      if ('socketPath' in endpoint) {
        socket = netConnect({ path: endpoint.socketPath });
      } else {
        socket = tlsConnect({
          host: endpoint.host,
          port: endpoint.port,
          cert: endpoint.tls.cert,
          key: endpoint.tls.key,
          ca: endpoint.tls.ca,
          servername: endpoint.tls.servername ?? (/^[\d.:]+$/.test(endpoint.host) ? undefined : endpoint.host),
          minVersion: 'TLSv1.3',
        } as import('node:tls').ConnectionOptions);
      }
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new KeydError('KEYD_UNAVAILABLE', `keyd at ${name} did not accept the connection within ${timeoutMs} ms`));
      }, timeoutMs);
      const onError = (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        socket.destroy();
        const hint = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? ' (is keyd running?)' : '';
        reject(new KeydError('KEYD_UNAVAILABLE', `cannot connect to keyd at ${name}: ${err.code ?? err.message}${hint}`));
      };
      socket.once('error', onError);
      socket.once(readyEvent, () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve(new KeydClient(socket, name, opts));
      });
    });
  }

  /** True once the connection is gone (every request now fails with KEYD_UNAVAILABLE). */
  get closed(): boolean {
    return this.down !== undefined;
  }

  async ping(): Promise<void> {
    decodePing(await this.request(Opcode.ping, encodePing(new Uint8Array(0))));
  }

  /** The identity serving `serverName` (exact, then one-label wildcard), or undefined. */
  async identity(serverName: string): Promise<KeydIdentity | undefined> {
    const reply = decodeIdentityReply(await this.request(Opcode.identity, encodeIdentityRequest(serverName)));
    if (!reply) return undefined;
    const keyType = reply.keyType as KeyType;
    return { ...reply, keyType, tls12Schemes: tls12SchemesForKeyType(keyType) };
  }

  /**
   * Signs the CertificateVerify content for `transcriptHash` with the key `keyRef` (keyd
   * builds the content), for a handshake serving `serverName`: keyd signs only when this
   * client may use that name and `keyRef` is the key identity(serverName) returns.
   */
  async sign(keyRef: string, serverName: string, scheme: number, transcriptHash: Uint8Array): Promise<Uint8Array> {
    return decodeSignature(await this.request(Opcode.signCertificateVerify, encodeSignRequest(keyRef, serverName, scheme, transcriptHash)));
  }

  /**
   * Signs a TLS 1.2 ECDHE ServerKeyExchange (RFC 5246 §7.4.3) with the key `keyRef` for a
   * handshake serving `serverName`: keyd checks client_random, server_random (the
   * downgrade sentinel) and the ServerECDHParams before it signs them (docs/PROTOCOL.md).
   */
  async signServerKeyExchange(
    keyRef: string,
    serverName: string,
    scheme: number,
    clientRandom: Uint8Array,
    serverRandom: Uint8Array,
    serverParams: Uint8Array,
  ): Promise<Uint8Array> {
    const content = serverKeyExchangeContent(clientRandom, serverRandom, serverParams);
    return decodeSignature(await this.request(Opcode.signServerKeyExchange, encodeServerKeyExchangeRequest(keyRef, serverName, scheme, content)));
  }

  /**
   * Signs `content` as a TLS server would (signHandshakeContent): keyd signs it only if it
   * is a TLS 1.3 server CertificateVerify content or a TLS 1.2 ECDHE ServerKeyExchange
   * content (docs/PROTOCOL.md). For signers that only see the bytes to sign.
   */
  async signHandshakeContent(keyRef: string, serverName: string, scheme: number, content: Uint8Array): Promise<Uint8Array> {
    return decodeSignature(await this.request(Opcode.signHandshakeContent, encodeHandshakeContentRequest(keyRef, serverName, scheme, content)));
  }

  /** Signs what a TLS-engine sign request describes, each kind with its own opcode (docs/PROTOCOL.md). */
  signRequest(keyRef: string, serverName: string, request: SignRequest): Promise<Uint8Array> {
    if (request.kind === 'tls13-certificate-verify') return this.sign(keyRef, serverName, request.scheme, request.transcriptHash);
    return this.signServerKeyExchange(keyRef, serverName, request.scheme, request.clientRandom, request.serverRandom, request.serverParams);
  }

  /**
   * Asks keyd for an RFC 9345 delegated credential for the key `request.keyRef`, serving
   * `request.serverName`: keyd builds and signs the credential for the given public key
   * (opcode 0x06, docs/PROTOCOL.md) and answers with the leaf it is bound to.
   */
  async issueDelegatedCredential(request: DelegationRequest): Promise<DelegationReply> {
    return decodeDelegationReply(await this.request(Opcode.issueDelegatedCredential, encodeDelegationRequest(request)));
  }

  /** A TLS-engine Signer backed by this connection (the RemoteSigner), bound to the name it serves. */
  signer(identity: KeydIdentity, serverName: string): Signer {
    const { keyRef, schemes, tls12Schemes } = identity;
    return {
      schemes: [...schemes],
      ...(tls12Schemes ? { tls12Schemes: [...tls12Schemes] } : {}),
      sign: (request) => this.signRequest(keyRef, serverName, request),
    };
  }

  /** An admin operation (admin socket only): JSON header + binary attachments both ways. */
  async admin(opcode: number, json: object, attachments: readonly Uint8Array[] = []): Promise<AdminPayload> {
    return decodeAdmin(await this.request(opcode, encodeAdmin(json, attachments)));
  }

  close(): void {
    this.shutdown(`connection to keyd at ${this.endpointName} closed by this client`);
    this.socket.end();
  }

  private request(opcode: number, payload: Uint8Array): Promise<Uint8Array> {
    if (this.down) return Promise.reject(this.down);
    const requestId = this.nextId;
    this.nextId = this.nextId === 0xffffffff ? 1 : this.nextId + 1;
    return new Promise<Uint8Array>((resolve, reject) => {
      this.pending.set(requestId, { opcode, resolve, reject, deadline: Date.now() + this.requestTimeoutMs });
      this.outbox.push(encodeFrame(opcode, requestId, payload));
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // Requests made in the same turn of the event loop leave in one write, sent once
        // the turn's I/O callbacks have run (setImmediate): handshakes whose messages
        // arrived in the same poll share one write here and one read and one write in
        // keyd, instead of a write and a keyd wake-up each.
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length === 0 || this.down) return;
    const data = this.outbox.length === 1 ? this.outbox[0]! : Buffer.concat(this.outbox);
    this.outbox = [];
    this.socket.write(data);
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      this.shutdown(`keyd at ${this.endpointName} sent a bad frame: ${(err as Error).message}`);
      this.socket.destroy();
      return;
    }
    for (const frame of frames) this.onFrame(frame);
  }

  private onFrame({ opcode, requestId, payload }: Frame): void {
    if (opcode === Opcode.changed && requestId === 0) {
      let names: string[] = [];
      try {
        names = decodeChanged(payload);
      } catch {
        // An undecodable notice still means "something changed": drop everything cached.
      }
      this.emit('change', { names });
      return;
    }
    const req = this.pending.get(requestId);
    // No such request: it timed out already, or keyd complains about a frame it could not
    // read (and closes; 'close' then fails everything pending).
    if (!req) return;
    this.pending.delete(requestId);
    if (opcode === Opcode.error) {
      let err: KeydError;
      try {
        err = decodeError(payload);
      } catch {
        err = new KeydError('KEYD_BAD_REQUEST', 'keyd sent an undecodable error frame');
      }
      req.reject(err);
    } else if (opcode === (req.opcode | Opcode.replyFlag)) {
      req.resolve(payload);
    } else {
      req.reject(new KeydError('KEYD_BAD_REQUEST', `keyd answered opcode 0x${req.opcode.toString(16)} with opcode 0x${opcode.toString(16)}`));
    }
  }

  private expire(): void {
    if (this.pending.size === 0) return;
    const now = Date.now();
    for (const [id, req] of this.pending) {
      if (req.deadline <= now) {
        this.pending.delete(id);
        req.reject(new KeydError('KEYD_TIMEOUT', `keyd at ${this.endpointName} did not answer within ${this.requestTimeoutMs} ms`));
      }
    }
  }

  private shutdown(reason: string): void {
    if (this.down) return;
    this.down = new KeydError('KEYD_UNAVAILABLE', reason);
    clearInterval(this.sweeper);
    this.outbox = [];
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const req of pending) req.reject(this.down);
    this.emit('close');
  }
}
