import { EventEmitter } from 'node:events';
import type { KeydEndpoint, KeydIdentity } from '../keyd/client.js';
import type { DelegationReply, DelegationRequest } from '../keyd/protocol.js';
import type { SignRequest, Signer } from '../tls/index.js';
import { EdgeError } from './errors.js';

/**
 * The edge's link to keyd: one pipelined connection at a time (per worker), chosen from an
 * ordered list of endpoints. When the connection drops, every request fails at once (the
 * keyd client fails pending requests with KEYD_UNAVAILABLE; we refuse new ones while
 * down), and we reconnect in the background: each round tries the endpoints in order —
 * the first is preferred, the others are failover — then waits with exponential backoff.
 */

/** Where keyd listens (a unix socket, or TCP with mutual TLS), and what it answers for a name. */
export type { KeydEndpoint } from '../keyd/client.js';
export type KeydIdentityLike = KeydIdentity;

/** The part of keyd's `KeydClient` the edge uses (src/keyd/client.ts). */
export interface KeydConnection extends EventEmitter {
  ping(): Promise<void>;
  identity(serverName: string): Promise<KeydIdentityLike | undefined>;
  sign(keyRef: string, serverName: string, scheme: number, transcriptHash: Uint8Array): Promise<Uint8Array>;
  signServerKeyExchange(keyRef: string, serverName: string, scheme: number, clientRandom: Uint8Array, serverRandom: Uint8Array, serverParams: Uint8Array): Promise<Uint8Array>;
  /** Absent on stand-ins that cannot issue (tests, benchmarks): no credentials then. */
  issueDelegatedCredential?(request: DelegationRequest): Promise<DelegationReply>;
  close(): void;
}

export type ConnectKeyd = (endpoint: KeydEndpoint, opts: { requestTimeoutMs: number }) => Promise<KeydConnection>;

export interface KeydPoolOptions {
  requestTimeoutMs?: number;
  connectTimeoutMs?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export type KeydPoolState = 'connecting' | 'connected' | 'down' | 'closed';

export function describeEndpoint(endpoint: KeydEndpoint): string {
  return 'socketPath' in endpoint ? `unix:${endpoint.socketPath}` : `tls://${endpoint.host}:${endpoint.port}`;
}

function unavailable(detail: string): EdgeError {
  return new EdgeError('KEYD_UNAVAILABLE', `keyd is unavailable: ${detail}`);
}

/**
 * Events: 'state' (state, endpoint description | undefined), 'connected' (endpoint description),
 * 'change' ({ names?: string[] }) forwarded from keyd, 'error' is never emitted.
 */
export class KeydPool extends EventEmitter {
  private client: KeydConnection | undefined;
  private current: string | undefined;
  private stateValue: KeydPoolState = 'connecting';
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private failedRounds = 0;
  /** When the connection in use was adopted (Date.now()). */
  private adoptedAt = 0;
  private lastError = 'not connected yet';
  private connecting: Promise<void> | undefined;
  private requestTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  private list: readonly KeydEndpoint[];
  /** Connections replaced by a reload, closed once their requests in flight have timed out. */
  private readonly retiring = new Map<NodeJS.Timeout, KeydConnection>();

  constructor(
    endpoints: readonly KeydEndpoint[],
    private readonly connectKeyd: ConnectKeyd,
    opts: KeydPoolOptions = {},
  ) {
    super();
    if (endpoints.length === 0) throw new EdgeError('EDGE_CONFIG', 'at least one keyd endpoint is needed');
    this.list = [...endpoints];
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 2000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 2000;
    this.minBackoffMs = opts.minBackoffMs ?? 100;
    this.maxBackoffMs = opts.maxBackoffMs ?? 5000;
  }

  /** The endpoints, in order of preference. */
  get endpoints(): readonly KeydEndpoint[] {
    return this.list;
  }

  /**
   * A reload: new endpoints (and request timeout, for connections made from now on). When
   * the endpoint in use is still listed it stays; otherwise the pool connects to the new
   * list first and moves to it, and closes the old connection only after every request in
   * flight on it has had its timeout, so no handshake fails for the switch. Resolves with
   * what happened; when no new endpoint answers, the old connection is kept until it drops.
   */
  async setEndpoints(endpoints: readonly KeydEndpoint[], requestTimeoutMs = this.requestTimeoutMs): Promise<'kept' | 'moved' | 'unreachable'> {
    if (endpoints.length === 0) throw new EdgeError('EDGE_CONFIG', 'at least one keyd endpoint is needed');
    this.list = [...endpoints];
    this.requestTimeoutMs = requestTimeoutMs;
    const old = this.client;
    if (this.closed || !old || endpoints.some((e) => describeEndpoint(e) === this.current)) return 'kept';
    for (const endpoint of this.list) {
      try {
        const client = await this.connectWithTimeout(endpoint);
        if (this.closed) {
          client.close();
          return 'kept';
        }
        this.adopt(client, describeEndpoint(endpoint)); // the old one's 'close' is no longer ours
        const retire = setTimeout(() => {
          this.retiring.delete(retire);
          old.close();
        }, this.requestTimeoutMs);
        this.retiring.set(retire, old);
        return 'moved';
      } catch (err) {
        this.lastError = `${describeEndpoint(endpoint)}: ${(err as Error).message}`;
      }
    }
    return 'unreachable';
  }

  get state(): KeydPoolState {
    return this.stateValue;
  }

  /** The endpoint in use, when connected. */
  get endpoint(): string | undefined {
    return this.current;
  }

  /** Starts connecting; resolves after the first round (connected or not — never rejects). */
  start(): Promise<void> {
    return this.connectRound();
  }

  private setState(state: KeydPoolState): void {
    if (this.stateValue === state) return;
    this.stateValue = state;
    this.emit('state', state, this.current);
  }

  private connectRound(): Promise<void> {
    if (this.connecting) return this.connecting;
    this.connecting = (async () => {
      for (const endpoint of this.list) {
        if (this.closed) return;
        try {
          const client = await this.connectWithTimeout(endpoint);
          if (this.closed) {
            client.close();
            return;
          }
          this.adopt(client, describeEndpoint(endpoint));
          return;
        } catch (err) {
          this.lastError = `${describeEndpoint(endpoint)}: ${(err as Error).message}`;
        }
      }
      this.failedRounds++;
      this.setState('down');
      this.scheduleReconnect();
    })().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async connectWithTimeout(endpoint: KeydEndpoint): Promise<KeydConnection> {
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const attempt = this.connectKeyd(endpoint, { requestTimeoutMs: this.requestTimeoutMs });
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        // A connection that completes after we gave up must not leak.
        attempt.then(
          (late) => late.close(),
          () => undefined,
        );
        reject(new Error(`connect timed out after ${this.connectTimeoutMs} ms`));
      }, this.connectTimeoutMs);
    });
    try {
      const client = await Promise.race([attempt, timeout]);
      if (timedOut) throw new Error(`connect timed out after ${this.connectTimeoutMs} ms`);
      return client;
    } finally {
      clearTimeout(timer);
    }
  }

  private adopt(client: KeydConnection, endpoint: string): void {
    this.client = client;
    this.current = endpoint;
    this.adoptedAt = Date.now();
    client.on('change', (change: { names?: string[] } | undefined) => this.emit('change', change ?? {}));
    client.once('close', () => {
      if (this.client !== client) return;
      this.client = undefined;
      this.lastError = `${endpoint}: connection closed`;
      this.setState(this.closed ? 'closed' : 'down');
      this.current = undefined;
      if (this.closed) return;
      // Reconnect at once the first time (a keyd restart is quick), then back off. Only a
      // connection that lasted counts as "the first time": one keyd dropped soon after
      // accepting it (refusing this edge, overloaded, restarting in a loop) is a failed round,
      // or the accept, which used to reset the backoff, would make a loop without pause.
      if (Date.now() - this.adoptedAt >= this.maxBackoffMs) {
        this.failedRounds = 0;
        void this.connectRound();
      } else {
        this.failedRounds++;
        this.scheduleReconnect();
      }
    });
    this.setState('connected');
    this.emit('connected', endpoint);
  }

  private scheduleReconnect(): void {
    if (this.closed || this.timer) return;
    const exp = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** Math.min(this.failedRounds - 1, 20));
    const delay = exp / 2 + Math.random() * (exp / 2); // jitter: edges restarted together do not stampede keyd
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.connectRound();
    }, delay);
  }

  private connected(): KeydConnection {
    if (!this.client) throw unavailable(this.lastError);
    return this.client;
  }

  identity(serverName: string): Promise<KeydIdentityLike | undefined> {
    try {
      return this.connected().identity(serverName);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  sign(keyRef: string, serverName: string, scheme: number, transcriptHash: Uint8Array): Promise<Uint8Array> {
    try {
      return this.connected().sign(keyRef, serverName, scheme, transcriptHash);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Each kind of sign request goes to its own keyd operation (docs/PROTOCOL.md: 0x03, 0x04). */
  signRequest(keyRef: string, serverName: string, request: SignRequest): Promise<Uint8Array> {
    try {
      const client = this.connected();
      if (request.kind === 'tls13-certificate-verify') return client.sign(keyRef, serverName, request.scheme, request.transcriptHash);
      return client.signServerKeyExchange(keyRef, serverName, request.scheme, request.clientRandom, request.serverRandom, request.serverParams);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** An RFC 9345 delegated credential from keyd (edge/delegated-credentials.ts asks for it). */
  issueDelegatedCredential(request: DelegationRequest): Promise<DelegationReply> {
    try {
      const client = this.connected();
      if (!client.issueDelegatedCredential) throw new EdgeError('KEYD_UNAVAILABLE', 'this keyd connection cannot issue delegated credentials');
      return client.issueDelegatedCredential(request);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * A Signer for one keyd key, serving `serverName` (keyd checks the name against this
   * edge's grants and the key's names), that follows the pool across reconnects and
   * failover. It offers TLS 1.2 when keyd's identity lists TLS 1.2 schemes.
   */
  signer(identity: KeydIdentityLike, serverName: string, observe?: (seconds: number, ok: boolean) => void): Signer {
    const { keyRef } = identity;
    const schemes = [...identity.schemes];
    const tls12Schemes = identity.tls12Schemes ? [...identity.tls12Schemes] : undefined;
    return {
      schemes,
      ...(tls12Schemes ? { tls12Schemes } : {}),
      sign: async (request) => {
        if (!observe) return this.signRequest(keyRef, serverName, request);
        const start = performance.now();
        try {
          const signature = await this.signRequest(keyRef, serverName, request);
          observe((performance.now() - start) / 1000, true);
          return signature;
        } catch (err) {
          observe((performance.now() - start) / 1000, false);
          throw err;
        }
      },
    };
  }

  close(): void {
    this.closed = true;
    for (const [timer, old] of this.retiring) {
      clearTimeout(timer);
      old.close();
    }
    this.retiring.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
    const client = this.client;
    this.client = undefined;
    this.setState('closed');
    client?.close();
  }
}
