/**
 * An in-process stand-in for keyd's client (the edge's KeydConnection): identities and
 * signatures from in-process keys, a switch to take it "down". For edge tests that are
 * about the edge; the end-to-end tests use the real keyd.
 */
import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import type { ConnectKeyd, KeydConnection, KeydIdentityLike } from '../../src/edge/keyd-pool.js';
import { LocalSigner, keyTypeOf, type SignRequest } from '../../src/tls/signer.js';

interface Installed {
  identity: KeydIdentityLike;
  signer: LocalSigner;
}

export class FakeKeydService {
  up = true;
  signCount = 0;
  readonly connections = new Set<FakeKeydConnection>();
  private readonly keys = new Map<string, Installed>();
  private version = 0;

  /** Installs (or replaces) the key + chain for exact names and `*.` wildcards, and pushes a change. */
  put(names: string[], key: KeyObject, chain: Uint8Array[]): void {
    const signer = new LocalSigner(key);
    const identity: KeydIdentityLike = {
      names,
      keyRef: `key-${++this.version}`,
      keyType: keyTypeOf(key)!, // LocalSigner above already refused keys TLS 1.3 cannot use
      schemes: [...signer.schemes],
      tls12Schemes: [...signer.tls12Schemes],
      certificateChain: chain,
      version: this.version,
    };
    for (const name of names) this.keys.set(name, { identity, signer });
    for (const c of this.connections) c.emit('change', { names });
  }

  lookup(serverName: string): KeydIdentityLike | undefined {
    const exact = this.keys.get(serverName);
    if (exact) return exact.identity;
    const dot = serverName.indexOf('.');
    return dot > 0 ? this.keys.get(`*${serverName.slice(dot)}`)?.identity : undefined;
  }

  async sign(keyRef: string, request: SignRequest): Promise<Uint8Array> {
    for (const { identity, signer } of this.keys.values()) {
      if (identity.keyRef === keyRef) {
        this.signCount++;
        return signer.sign(request);
      }
    }
    throw Object.assign(new Error(`unknown key ${keyRef}`), { code: 'KEYD_UNKNOWN_KEY' });
  }

  /** keyd dies: every connection drops, new ones are refused. */
  kill(): void {
    this.up = false;
    for (const c of [...this.connections]) c.close();
  }

  start(): void {
    this.up = true;
  }

  connect: ConnectKeyd = async () => {
    if (!this.up) throw Object.assign(new Error('connect ECONNREFUSED (fake keyd is down)'), { code: 'ECONNREFUSED' });
    const c = new FakeKeydConnection(this);
    this.connections.add(c);
    return c;
  };
}

class FakeKeydConnection extends EventEmitter implements KeydConnection {
  private closed = false;
  constructor(private readonly service: FakeKeydService) {
    super();
  }
  private check(): void {
    if (this.closed) throw Object.assign(new Error('keyd connection closed'), { code: 'KEYD_UNAVAILABLE' });
  }
  async ping(): Promise<void> {
    this.check();
  }
  async identity(serverName: string): Promise<KeydIdentityLike | undefined> {
    this.check();
    return this.service.lookup(serverName);
  }
  async sign(keyRef: string, _serverName: string, scheme: number, hash: Uint8Array): Promise<Uint8Array> {
    this.check();
    return this.service.sign(keyRef, { kind: 'tls13-certificate-verify', scheme, transcriptHash: hash });
  }
  async signServerKeyExchange(
    keyRef: string,
    _serverName: string,
    scheme: number,
    clientRandom: Uint8Array,
    serverRandom: Uint8Array,
    serverParams: Uint8Array,
  ): Promise<Uint8Array> {
    this.check();
    return this.service.sign(keyRef, { kind: 'tls12-server-key-exchange', scheme, clientRandom, serverRandom, serverParams });
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.service.connections.delete(this);
    this.emit('close');
  }
}
