import { X509Certificate, type KeyObject } from 'node:crypto';
import * as tls from 'node:tls';
import { errorMessage, ProvisionError } from './errors.js';
import { fingerprintOf } from './fingerprint.js';
import { encodeFrame, FrameDecoder } from './frames.js';
import { sealPrivateKey } from './hpke-seal.js';
import { normalizeSubject } from './roles.js';
import { fromWire, PROTOCOL_VERSION, type GenerateKeyType, type Greeting, type RequestOp, type Response, type Welcome } from './protocol.js';
import type { AuditEntry, AuditReply } from '../keyd/audit.js';

/** keyd's answer to a request that succeeded. */
type Answer = Extract<Response, { ok: true }>;

/**
 * The operator's side of the provisioning channel: connects with the operator certificate,
 * reads keyd's greeting, and offers the admin operations. `put` refuses to run until the
 * caller has checked keyd's provisioning key against a pin (`trust`), because that key is
 * what the private key gets sealed to.
 */

export interface RemoteEndpoint {
  host: string;
  port: number;
  /** Operator certificate and key (PEM text), and the CA that issued keyd's TLS certificate. */
  cert?: string;
  key?: string;
  ca: string;
  /** Name to verify in keyd's certificate (default: host). */
  servername?: string;
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** OpenSSL/node verification codes that mean "keyd's certificate is not trusted by --ca". */
const SERVER_TRUST_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function connectError(endpoint: RemoteEndpoint, err: Error & { code?: string }): ProvisionError {
  const where = `${endpoint.host}:${endpoint.port}`;
  if (err.code && SERVER_TRUST_CODES.has(err.code)) {
    return new ProvisionError('PROVISION_SERVER_NOT_TRUSTED', `keyd's TLS certificate at ${where} is not trusted by --ca (${err.code}: ${err.message})`);
  }
  if (err.code === 'ECONNREFUSED' || err.code === 'EHOSTUNREACH' || err.code === 'ENOTFOUND' || err.code === 'ETIMEDOUT') {
    return new ProvisionError('PROVISION_UNAVAILABLE', `cannot reach keyd's provisioning listener at ${where} (${err.code})`);
  }
  return new ProvisionError('PROVISION_UNAVAILABLE', `TLS connection to keyd at ${where} failed: ${err.code ?? ''} ${err.message.split('\n')[0]}`.replace('  ', ' '));
}

export class RemoteAdminClient {
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, { resolve(v: Answer): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  private nextId = 1;
  private closedError: ProvisionError | undefined;
  private verifiedFingerprint: string | undefined;

  private constructor(
    private readonly socket: tls.TLSSocket,
    readonly welcome: Welcome,
    /** keyd's raw X25519 provisioning public key, as announced in the greeting. */
    readonly keydPublicKey: Uint8Array,
    private readonly timeoutMs: number,
  ) {}

  /** Connects and waits for keyd's greeting; throws keyd's refusal (e.g. PROVISION_UNKNOWN_OPERATOR) as is. */
  static connect(endpoint: RemoteEndpoint): Promise<RemoteAdminClient> {
    const timeoutMs = endpoint.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    let ownSubject: string | undefined;
    if (endpoint.cert !== undefined) {
      try {
        ownSubject = normalizeSubject(new X509Certificate(endpoint.cert).subject);
      } catch (err) {
        return Promise.reject(new ProvisionError('PROVISION_USAGE', `operator certificate is not a PEM certificate: ${errorMessage(err)}`));
      }
    }
    return new Promise((resolve, reject) => {
      const socket = tls.connect({
        host: endpoint.host,
        port: endpoint.port,
        ...(endpoint.cert !== undefined && endpoint.key !== undefined ? { cert: endpoint.cert, key: endpoint.key } : {}),
        ca: endpoint.ca,
        minVersion: 'TLSv1.3',
        ...(endpoint.servername !== undefined ? { servername: endpoint.servername } : {}),
      });
      const decoder = new FrameDecoder();
      let settled = false;
      const fail = (err: ProvisionError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      };
      const timer = setTimeout(
        () => fail(new ProvisionError('PROVISION_TIMEOUT', `no answer from keyd at ${endpoint.host}:${endpoint.port} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const onData = (chunk: Buffer): void => {
        let frames: unknown[];
        try {
          frames = decoder.push(chunk);
        } catch (err) {
          fail(err instanceof ProvisionError ? err : new ProvisionError('PROVISION_BAD_REQUEST', errorMessage(err)));
          return;
        }
        if (frames.length === 0 || settled) return;
        const greeting = frames[0] as Greeting;
        if (greeting.type === 'refused') {
          fail(new ProvisionError(greeting.code, `keyd refused: ${greeting.message}`));
          return;
        }
        if (greeting.type !== 'welcome' || typeof greeting.keyd?.publicKey !== 'string') {
          fail(new ProvisionError('PROVISION_BAD_REQUEST', 'keyd sent an unexpected greeting'));
          return;
        }
        // A keyd of another protocol version may give the same fields another meaning
        // (what is sealed to what, which AAD): speak only the version this CLI knows.
        if (greeting.v !== PROTOCOL_VERSION) {
          const theirs = typeof greeting.v === 'number' ? String(greeting.v) : 'an unknown';
          fail(new ProvisionError('PROVISION_BAD_REQUEST', `keyd speaks provisioning protocol version ${theirs}; this delegator speaks version ${PROTOCOL_VERSION}: use matching releases`));
          return;
        }
        if (ownSubject !== undefined && greeting.operator !== ownSubject) {
          // keyd binds sealed keys to the operator it authenticated; if that is not us,
          // something between us and keyd re-authenticated the connection.
          fail(
            new ProvisionError(
              'PROVISION_OPERATOR_MISMATCH',
              `keyd authenticated this connection as "${greeting.operator}", but your certificate is "${ownSubject}": ` +
                'something between you and keyd terminates TLS',
            ),
          );
          return;
        }
        const publicKey = new Uint8Array(Buffer.from(greeting.keyd.publicKey, 'base64'));
        if (publicKey.length !== 32 || fingerprintOf(publicKey) !== greeting.keyd.fingerprint) {
          fail(new ProvisionError('PROVISION_BAD_REQUEST', 'keyd greeting: provisioning key and fingerprint do not match'));
          return;
        }
        settled = true;
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('error', onError);
        socket.off('close', onClose);
        const client = new RemoteAdminClient(socket, greeting, publicKey, timeoutMs);
        client.attach(frames.slice(1));
        resolve(client);
      };
      const onError = (err: Error & { code?: string }): void => fail(connectError(endpoint, err));
      const onClose = (): void =>
        fail(new ProvisionError('PROVISION_CONNECTION_CLOSED', `keyd at ${endpoint.host}:${endpoint.port} closed the connection before greeting`));
      socket.on('data', onData);
      socket.on('error', onError);
      socket.on('close', onClose);
    });
  }

  private attach(early: unknown[]): void {
    for (const frame of early) this.dispatch(frame);
    this.socket.on('data', (chunk: Buffer) => {
      try {
        for (const frame of this.decoder.push(chunk)) this.dispatch(frame);
      } catch (err) {
        this.shutdown(err instanceof ProvisionError ? err : new ProvisionError('PROVISION_BAD_REQUEST', errorMessage(err)));
      }
    });
    this.socket.on('error', (err) => this.shutdown(new ProvisionError('PROVISION_CONNECTION_CLOSED', `connection to keyd failed: ${err.message}`)));
    this.socket.on('close', () => this.shutdown(new ProvisionError('PROVISION_CONNECTION_CLOSED', 'keyd closed the connection')));
  }

  private dispatch(frame: unknown): void {
    const response = frame as Response;
    const waiter = this.pending.get(response.id);
    if (!waiter) return;
    this.pending.delete(response.id);
    clearTimeout(waiter.timer);
    if (response.ok) waiter.resolve(response);
    else waiter.reject(new ProvisionError(response.error.code, response.error.message));
  }

  private shutdown(err: ProvisionError): void {
    this.closedError ??= err;
    for (const [id, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      this.pending.delete(id);
      waiter.reject(err);
    }
    this.socket.destroy();
  }

  /** keyd's TLS certificate on this connection (DER): attestation binds it. */
  get peerCertificateDer(): Uint8Array {
    const cert = this.socket.getPeerX509Certificate();
    if (!cert) throw new ProvisionError('PROVISION_SERVER_NOT_TRUSTED', 'keyd presented no TLS certificate');
    return new Uint8Array(cert.raw);
  }

  /** Sends one request; resolves with keyd's result or rejects with keyd's error code and message. */
  async request(op: RequestOp, args: Record<string, unknown> = {}): Promise<unknown> {
    return fromWire((await this.exchange(op, args)).result);
  }

  /** Sends one request; resolves with keyd's whole answer (result and what it says beside it) within `timeoutMs`. */
  private exchange(op: RequestOp, args: Record<string, unknown>, timeoutMs = this.timeoutMs): Promise<Answer> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ProvisionError('PROVISION_TIMEOUT', `keyd did not answer ${op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.write(encodeFrame({ id, op, args }));
    });
  }

  get fingerprint(): string {
    return this.welcome.keyd.fingerprint;
  }

  /**
   * Checks keyd's provisioning key against the operator's pin. On a mismatch keyd is told
   * (so it audits the refusal too), the connection is closed, and the error is thrown.
   */
  async verifyFingerprint(expected: string, source: string): Promise<void> {
    if (expected === this.fingerprint) {
      this.verifiedFingerprint = expected;
      return;
    }
    const err = new ProvisionError(
      'PROVISION_KEYD_FINGERPRINT_MISMATCH',
      `keyd's provisioning key is ${this.fingerprint} but ${source} expects ${expected}: ` +
        'refusing to talk to it (someone may be impersonating keyd, or its key was replaced)',
    );
    await this.request('clientRefused', { code: err.code, message: `fingerprint ${this.fingerprint} does not match the pinned ${expected}` }).catch(() => {});
    this.close();
    throw err;
  }

  async put(names: string[], privateKey: KeyObject, chainDer: Uint8Array[], opts: { now?: number } = {}): Promise<unknown> {
    if (this.verifiedFingerprint !== this.fingerprint) {
      throw new ProvisionError('PROVISION_KEYD_NOT_TRUSTED', 'put: keyd\'s provisioning key was not checked against a pin');
    }
    const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
    let sealed;
    try {
      sealed = await sealPrivateKey({
        keydPublicKey: this.keydPublicKey,
        operator: this.welcome.operator,
        binding: { names, chainDer },
        privateKeyPkcs8: pkcs8,
        ...(opts.now !== undefined ? { now: opts.now } : {}),
      });
    } finally {
      pkcs8.fill(0);
    }
    return this.request('put', { names, chain: chainDer.map((c) => Buffer.from(c).toString('base64')), sealed });
  }

  /** `timeoutMs`: how long to wait for this generation (default: the connection's timeout). */
  async generate(name: string, keyType: GenerateKeyType, subject: string, timeoutMs?: number): Promise<unknown> {
    return fromWire((await this.exchange('generate', { name, keyType, subject }, timeoutMs)).result);
  }

  setChain(name: string, chainDer: Uint8Array[]): Promise<unknown> {
    return this.request('setChain', { name, chain: chainDer.map((c) => Buffer.from(c).toString('base64')) });
  }

  delete(name: string): Promise<unknown> {
    return this.request('delete', { name });
  }

  list(): Promise<unknown> {
    return this.request('list');
  }

  show(name: string): Promise<unknown> {
    return this.request('show', { name });
  }

  audit(filter?: { limit?: number; since?: string }): Promise<unknown> {
    return this.request('audit', filter ? { filter } : {});
  }

  /**
   * The audit entries with keyd's note of older ones left out: an answer passing one frame
   * is trimmed to the newest entries that fit, and says how many it left out beside its
   * result (protocol.ts auditResponse). A keyd that never trims answers without the note.
   */
  async auditReply(filter?: { limit?: number; since?: string }): Promise<AuditReply> {
    const answer = await this.exchange('audit', filter ? { filter } : {});
    const entries = fromWire(answer.result) as AuditEntry[];
    const { truncated, omitted } = answer;
    return truncated === true && Number.isSafeInteger(omitted) && omitted! > 0 ? { entries, truncated, omitted: omitted! } : { entries };
  }

  /** Per-client, per-key signing counts (durable across keyd restarts). */
  stats(): Promise<unknown> {
    return this.request('stats');
  }

  close(): void {
    this.shutdown(new ProvisionError('PROVISION_CONNECTION_CLOSED', 'client closed the connection'));
  }
}

/** DER certificates of a PEM bundle, leaf first, each checked to parse. */
export function parsePemChain(pem: string, file: string): Uint8Array[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new ProvisionError('PROVISION_USAGE', `${file}: no PEM certificate found`);
  return blocks.map((block, index) => {
    try {
      return new Uint8Array(new X509Certificate(block).raw);
    } catch (err) {
      throw new ProvisionError('PROVISION_USAGE', `${file}: certificate ${index + 1} is invalid: ${errorMessage(err)}`);
    }
  });
}
