import { parseHostPort } from '../lib/host-port.js';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { AddressInfo, Socket } from 'node:net';
import { resolve } from 'node:path';
import * as tls from 'node:tls';
import { errorCode, errorMessage, ProvisionError } from './errors.js';
import { encodeFrame, FrameDecoder } from './frames.js';
import { checkSealedHeader, openSealedKey, parseSealedKey } from './hpke-seal.js';
import {
  auditResponse,
  GENERATE_KEY_TYPES,
  PROTOCOL_VERSION,
  toWire,
  type AdminCaller,
  type GenerateKeyType,
  type Greeting,
  type ProvisioningAdmin,
  type Request,
  type Response,
} from './protocol.js';
import { loadOrCreateProvisioningKey, type SecretStore } from './provisioning-key.js';
import { ReplayGuard } from './replay-guard.js';
import { ATTESTATION_NONCE_LENGTH, quoteQualifyingData } from './attestation/binding.js';
import type { Attester, AttesterSession } from '../keyd/tpm/attester.js';
import { parseListenerLimits } from './listener-limits.js';
import { RefusalLimiter, truncate } from './refusal-limiter.js';
import { AUDIT_FIELD_LIMITS, type AuditEntry } from '../keyd/audit.js';
import { normalizeSubject, OPERATIONS, OperatorRoles, parseProvisioningConfig, roleAllows, type Operation, type ProvisioningConfig, type Role } from './roles.js';

/**
 * keyd's provisioning listener: TLS 1.3, a client certificate from the operator CA required,
 * roles from config, keys arriving HPKE-sealed to keyd's own provisioning key.
 *
 * Why `rejectUnauthorized: false`: with `true`, node:tls drops a connection whose certificate
 * fails verification without telling either side why (the client sees a bare close, the server
 * "socket hang up"). We verify in `authenticate` instead and answer every unauthenticated
 * connection with exactly one `refused` frame naming the reason, then close: no operation is
 * reachable without a verified operator certificate.
 */

/** Minimal pino-compatible logger. */
export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** An audit entry for something refused before keyd's AdminService was reached. */
export interface ProvisionAuditEvent {
  op: string;
  caller: AdminCaller;
  ok: false;
  code: string;
  message: string;
  remote: string;
  names?: string[];
  /** A summary entry: how many refusals it stands for. */
  count?: number;
}

export type AuditSink = (event: ProvisionAuditEvent) => Promise<void> | void;

export interface ProvisioningListenerOptions {
  /** HOST:PORT (port 0 picks a free one). */
  listen: string;
  /** The operator CA: a PEM file path (or PEM text). */
  operatorCa: string;
  /** keyd's parsed config; provisioning reads its `provisioning` section (roles.ts). */
  config: unknown;
  adminService: ProvisioningAdmin;
  store: SecretStore;
  logger?: Logger;
  /** TLS server certificate chain / key for this listener (path or PEM); default config.provisioning.tlsCert/tlsKey. */
  tlsCert?: string;
  tlsKey?: string;
  /** Directory that relative paths in the config are relative to (the config file's); default the working directory. */
  configDir?: string;
  /**
   * Where refusals that never reach the AdminService are audited. Default: the admin
   * service's `recordAudit(entry)` when it has one, else the logger.
   */
  audit?: AuditSink;
  /** Clock, for tests. */
  now?: () => number;
  /** TPM evidence for attested provisioning (keyd with --root-key tpm); absent: attestation is refused. */
  attester?: Attester;
  /** Window of the refusal budget (default one minute; tests shorten it). */
  refusalWindowMs?: number;
}

export interface ProvisioningListener {
  readonly host: string;
  readonly port: number;
  /** keyd's provisioning key fingerprint (what `delegator admin … trust` shows). */
  readonly fingerprint: string;
  /** Authenticated connections whose reading is paused because their replies are not read (tests, metrics). */
  readonly pausedForReplies: number;
  /**
   * keyd's SIGHUP: checks the new config's "provisioning" section (throws PROVISION_USAGE,
   * nothing changed, when it does not parse or changes what only a restart applies) and
   * returns the step that applies its operators (see OperatorReload).
   */
  prepareReload(config: unknown): () => OperatorReload;
  close(): Promise<void>;
}

/** What a reload of provisioning.operators did to the operators connected now. */
export interface OperatorReload {
  operators: number;
  /** Connected operators no longer listed: their connections were closed. */
  revoked: string[];
  /** Connected operators whose role changed: their next request is judged by the new one. */
  changed: string[];
}

const NONCES_SECRET = 'provisioning-nonces';
const MAX_QUEUED_REQUESTS = 16;
/**
 * Reply bytes queued for an operator that does not read them, past which its connection is
 * no longer read (resumed on 'drain'): without it, requests paced under MAX_QUEUED_REQUESTS
 * made keyd queue replies (up to a 1 MiB frame each) without bound. One frame's worth.
 */
const REPLY_HIGH_WATER = 1 << 20;

async function pemFrom(value: string, what: string): Promise<string> {
  if (value.includes('-----BEGIN')) return value;
  try {
    return await readFile(value, 'utf8');
  } catch (err) {
    throw new ProvisionError('PROVISION_USAGE', `cannot read ${what} ${value}: ${errorMessage(err)}`);
  }
}

/** `--provision-listen HOST:PORT` (src/lib/host-port.ts), as a usage error. */
function listenAddress(value: string): { host: string; port: number } {
  try {
    return parseHostPort(value, '--provision-listen');
  } catch (err) {
    throw new ProvisionError('PROVISION_USAGE', (err as Error).message);
  }
}

interface Session {
  operator: string;
  /** undefined once a reload took the operator out of provisioning.operators. */
  role: Role | undefined;
  caller: AdminCaller;
  remote: string;
  /** The attestation in progress on this connection (one at a time). */
  attestation?: AttesterSession;
  /** Set when the connection has closed; requests already queued still run. */
  closed?: boolean;
}

export async function startProvisioningListener(opts: ProvisioningListenerOptions): Promise<ProvisioningListener> {
  const config = parseProvisioningConfig(opts.config);
  const limits = parseListenerLimits(opts.config);
  let roles = new OperatorRoles(config.operators);
  /** Authenticated connections, for a reload of the operators' roles. */
  const sessions = new Map<tls.TLSSocket, Session>();
  const logger = opts.logger;
  const now = opts.now ?? Date.now;
  const { host, port } = listenAddress(opts.listen);
  const fromConfig = (path: string | undefined): string | undefined => (path === undefined ? undefined : resolve(opts.configDir ?? '.', path));
  const certSource = opts.tlsCert ?? fromConfig(config.tlsCert);
  const keySource = opts.tlsKey ?? fromConfig(config.tlsKey);
  if (!certSource || !keySource) {
    throw new ProvisionError(
      'PROVISION_USAGE',
      'the provisioning listener needs a TLS server certificate and key: set "provisioning.tlsCert" and "provisioning.tlsKey" in keyd\'s config',
    );
  }
  const operatorCaPem = await pemFrom(opts.operatorCa, 'operator CA');
  let operatorCa: X509Certificate;
  try {
    operatorCa = new X509Certificate(operatorCaPem);
  } catch (err) {
    throw new ProvisionError('PROVISION_USAGE', `operator CA ${opts.operatorCa} is not a PEM certificate: ${errorMessage(err)}`);
  }
  const { key: provisioningKey, created } = await loadOrCreateProvisioningKey(opts.store);
  const replay = new ReplayGuard(config.replayWindowSeconds * 1000, now);
  const storedNonces = await opts.store.getSecret(NONCES_SECRET);
  if (storedNonces) replay.restore(JSON.parse(Buffer.from(storedNonces).toString('utf8')) as Record<string, number>);

  const audit: AuditSink = opts.audit ?? defaultAuditSink(opts.adminService);
  const safeAudit = async (event: ProvisionAuditEvent): Promise<void> => {
    try {
      await audit(event);
    } catch (err) {
      logger?.error({ err: errorMessage(err), code: event.code }, 'provisioning: could not write audit entry');
    }
  };
  // Unauthenticated refusals: individually within a byte budget per window, then summarised.
  const refusals = new RefusalLimiter(limits.refusalBytesPerMinute, opts.refusalWindowMs ?? 60_000, (summary) => {
    const codes = Object.entries(summary.byCode).map(([code, n]) => `${code} ×${n}`).join(', ');
    const message = `${summary.count} refusal(s) of unauthenticated peers not logged individually (budget ${limits.refusalBytesPerMinute} bytes per window): ${codes}`;
    logger?.warn({ count: summary.count, codes: summary.byCode }, `provisioning: ${message}`);
    void safeAudit({ op: 'connect', caller: { kind: 'operator', id: '(unauthenticated peers)' }, ok: false, code: 'PROVISION_REFUSALS_SUMMARISED', message, remote: '(several)', count: summary.count });
  });
  refusals.start();
  const refuseUnauthenticated = (event: ProvisionAuditEvent, logMessage: string): void => {
    if (!refusals.admit(event.code, event.message.length + event.caller.id.length + 200)) return;
    logger?.warn({ code: event.code, remote: event.remote, operator: event.caller.id }, logMessage);
    void safeAudit(event);
  };

  const tlsCertPem = await pemFrom(certSource, 'provisioning TLS certificate');
  const tlsCertificateDer = new Uint8Array(new X509Certificate(tlsCertPem).raw);
  const server = tls.createServer({
    cert: tlsCertPem,
    key: await pemFrom(keySource, 'provisioning TLS key'),
    ca: operatorCaPem,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.3',
    handshakeTimeout: limits.handshakeTimeoutMs,
  });
  server.maxConnections = limits.maxConnections;
  server.on('drop', (data?: { remoteAddress?: string }) =>
    refuseUnauthenticated(
      { op: 'connect', caller: { kind: 'operator', id: '(before TLS)' }, ok: false, code: 'PROVISION_TOO_MANY_CONNECTIONS', message: `listener at its ${limits.maxConnections} connections`, remote: data?.remoteAddress ?? '?' },
      'provisioning: connection dropped, listener full',
    ),
  );
  // Every TCP connection, handshaking or not, so close() ends them all at once; and per
  // address, so that one peer's silent connections cannot lock operators out.
  const sockets = new Set<Socket>();
  const perAddress = new Map<string, number>();
  const pausedForReplies = new Set<tls.TLSSocket>();
  /** After a reply: stop reading a connection whose replies pile up unread, until they drain. */
  const holdWhileUnread = (socket: tls.TLSSocket): void => {
    if (socket.destroyed || pausedForReplies.has(socket) || socket.writableLength <= REPLY_HIGH_WATER) return;
    pausedForReplies.add(socket);
    socket.pause();
    socket.once('drain', () => {
      if (pausedForReplies.delete(socket)) socket.resume();
    });
  };
  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress ?? '?';
    const open = (perAddress.get(address) ?? 0) + 1;
    perAddress.set(address, open);
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left > 0) perAddress.set(address, left);
      else perAddress.delete(address);
    });
    if (open > limits.maxConnectionsPerAddress) {
      socket.destroy();
      refuseUnauthenticated(
        { op: 'connect', caller: { kind: 'operator', id: '(before TLS)' }, ok: false, code: 'PROVISION_TOO_MANY_CONNECTIONS', message: `${address} already has ${limits.maxConnectionsPerAddress} connections open`, remote: address },
        'provisioning: connection refused, per-address cap',
      );
    }
  });

  /** Verifies the operator certificate and role; throws the precise refusal. */
  function authenticate(socket: tls.TLSSocket): Session & { role: Role } {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    const peer = socket.getPeerX509Certificate();
    if (!peer) {
      throw new ProvisionError('PROVISION_NO_CLIENT_CERT', 'no client certificate: keyd provisioning requires an operator certificate (--cert/--key)');
    }
    // Attacker-controlled until verified: quoted truncated in messages (refusal-limiter.ts).
    // The role lookup and the session use the whole subject: a truncated one never equals a
    // configured subject over 256 characters, so that operator would be refused.
    const fullSubject = normalizeSubject(peer.subject);
    const subject = truncate(fullSubject);
    if (!socket.authorized) {
      const reason = (socket.authorizationError as unknown as { code?: string } | undefined)?.code ?? String(socket.authorizationError);
      if (reason === 'CERT_HAS_EXPIRED') {
        throw new ProvisionError('PROVISION_CLIENT_CERT_EXPIRED', `operator certificate "${subject}" expired on ${new Date(peer.validTo).toISOString()}`);
      }
      if (reason === 'CERT_NOT_YET_VALID') {
        throw new ProvisionError('PROVISION_CLIENT_CERT_EXPIRED', `operator certificate "${subject}" is not valid before ${new Date(peer.validFrom).toISOString()}`);
      }
      // OpenSSL also checks the chain's purpose (ssl_client): an operator CA certificate without
      // clientAuth ends here, and "not from keyd's operator CA" would send its owner after the
      // wrong fault. (A foreign CA's certificate reports its chain error, as below.)
      if (reason === 'INVALID_PURPOSE') {
        throw new ProvisionError(
          'PROVISION_UNTRUSTED_CLIENT_CERT',
          `operator certificate "${subject}" issued by "${truncate(normalizeSubject(peer.issuer))}" is not valid for TLS client authentication (INVALID_PURPOSE: its extendedKeyUsage does not allow clientAuth)`,
        );
      }
      // The operator CA's own name is not told to an unauthenticated peer (nor logged as if it were news).
      throw new ProvisionError(
        'PROVISION_UNTRUSTED_CLIENT_CERT',
        `operator certificate "${subject}" issued by "${truncate(normalizeSubject(peer.issuer))}" is not from keyd's operator CA (${reason})`,
      );
    }
    // RFC 5280 §4.2.1.12: when EKU is present it must allow TLS client authentication. OpenSSL's
    // purpose check (INVALID_PURPOSE above) refuses such a certificate first; kept so the rule
    // does not rest on node's verification defaults alone.
    if (peer.keyUsage !== undefined && peer.keyUsage.length > 0 && !peer.keyUsage.includes('1.3.6.1.5.5.7.3.2') && !peer.keyUsage.includes('2.5.29.37.0')) {
      throw new ProvisionError('PROVISION_UNTRUSTED_CLIENT_CERT', `operator certificate "${subject}" is not valid for TLS client authentication (extendedKeyUsage)`);
    }
    const role = roles.roleOf(fullSubject);
    if (!role) {
      throw new ProvisionError(
        'PROVISION_UNKNOWN_OPERATOR',
        `operator "${subject}" has a valid certificate but no role in keyd's config (provisioning.operators)`,
      );
    }
    return { operator: fullSubject, role, caller: { kind: 'operator', id: fullSubject }, remote };
  }

  function send(socket: tls.TLSSocket, message: Greeting | Response): void {
    if (!socket.destroyed) socket.write(encodeFrame(message));
  }

  async function handle(session: Session, request: Request): Promise<unknown> {
    const { caller } = session;
    const args = request.args;
    // Requests queued before a reload revoked this operator still run: refused, whatever they are.
    if (session.role === undefined) {
      throw new ProvisionError('PROVISION_UNKNOWN_OPERATOR', `operator "${session.operator}" was removed from provisioning.operators by a reload`);
    }
    if (request.op === 'clientRefused') {
      // The CLI refused keyd (its pinned fingerprint differs): audit it here too, then it hangs up.
      // The operator's strings, quoted truncated in the log as in the audit (keyd/audit.ts).
      const code = typeof args.code === 'string' ? truncate(args.code) : 'PROVISION_KEYD_FINGERPRINT_MISMATCH';
      const message = typeof args.message === 'string' ? args.message.slice(0, 500) : 'operator refused this keyd';
      await safeAudit({ op: 'connect', caller, ok: false, code, message: `operator refused keyd: ${message}`, remote: session.remote });
      logger?.warn({ operator: session.operator, code }, 'provisioning: operator refused this keyd\'s provisioning key');
      return null;
    }
    if (request.op === 'attestStart' || request.op === 'attestQuote') return attest(session, request.op, args);
    if (!OPERATIONS.includes(request.op)) {
      throw new ProvisionError('PROVISION_BAD_REQUEST', `unknown operation "${String(request.op)}"`);
    }
    const op: Operation = request.op;
    if (!roleAllows(session.role, op)) {
      throw new ProvisionError('PROVISION_FORBIDDEN', `operator "${session.operator}" has role ${session.role}, which may not ${op}`);
    }
    switch (op) {
      case 'put':
        return put(session, args);
      case 'generate': {
        const keyType = args.keyType;
        if (!GENERATE_KEY_TYPES.includes(keyType as GenerateKeyType)) {
          throw new ProvisionError('PROVISION_BAD_REQUEST', `gen: --type must be one of ${GENERATE_KEY_TYPES.join(', ')}`);
        }
        return opts.adminService.generate(caller, stringArg(args, 'name'), keyType as GenerateKeyType, stringArg(args, 'subject'));
      }
      case 'setChain':
        return opts.adminService.setChain(caller, stringArg(args, 'name'), chainArg(args));
      case 'delete':
        return opts.adminService.delete(caller, stringArg(args, 'name'));
      case 'list':
        return opts.adminService.list(caller);
      case 'show':
        return opts.adminService.show(caller, stringArg(args, 'name'));
      case 'stats':
        return opts.adminService.stats(caller);
      case 'audit': {
        const filter = args.filter;
        return opts.adminService.audit(caller, typeof filter === 'object' && filter !== null ? (filter as Record<string, unknown>) : undefined);
      }
    }
  }

  /** TPM evidence (src/keyd/tpm/attester.ts): the EK certificate and a fresh AK, then one quote. */
  async function attest(session: Session, op: 'attestStart' | 'attestQuote', args: Record<string, unknown>): Promise<unknown> {
    if (!opts.attester) {
      throw new ProvisionError('PROVISION_ATTESTATION_UNAVAILABLE', 'this keyd has no TPM to attest with (start it with --root-key tpm)');
    }
    if (op === 'attestStart') {
      // Requests queued on a connection that has since closed still run, one at a time.
      // An attestStart among them would hold the TPM (EK and AK creation: seconds on a
      // hardware TPM) for an answer nobody reads.
      if (session.closed) throw new ProvisionError('PROVISION_CONNECTION_CLOSED', 'attestStart: the connection closed');
      const previous = session.attestation;
      session.attestation = undefined;
      await previous?.close();
      const started = await opts.attester.begin();
      // The connection may have closed while the TPM worked (or before this queued request
      // ran): its close handler found nothing to close then, so the new session's work
      // directory would outlive the connection. Close it here instead.
      if (session.closed) {
        await started.close();
        throw new ProvisionError('PROVISION_CONNECTION_CLOSED', 'attestStart: the connection closed');
      }
      session.attestation = started;
      return { ekCertificate: started.start.ekCertificate, akPublic: started.start.akPublic };
    }
    const attestation = session.attestation;
    if (!attestation) throw new ProvisionError('PROVISION_BAD_REQUEST', 'attestQuote: no attestStart on this connection');
    session.attestation = undefined;
    try {
      const nonce = Buffer.from(stringArg(args, 'nonce'), 'base64');
      if (nonce.length !== ATTESTATION_NONCE_LENGTH) throw new ProvisionError('PROVISION_BAD_REQUEST', `attestQuote: the nonce must be ${ATTESTATION_NONCE_LENGTH} bytes`);
      const credential = Buffer.from(stringArg(args, 'credential'), 'base64');
      if (credential.length === 0 || credential.length > 4096) throw new ProvisionError('PROVISION_BAD_REQUEST', 'attestQuote: bad credential');
      const pcrs = stringArg(args, 'pcrs');
      const bound = { nonce, provisioningPublicKey: provisioningKey.publicKey, tlsCertificateDer };
      const quote = await attestation.quote(credential, quoteQualifyingData(bound), pcrs);
      return { ...quote, bound };
    } finally {
      await attestation.close();
    }
  }

  async function put(session: Session, args: Record<string, unknown>): Promise<unknown> {
    const names = args.names;
    if (!Array.isArray(names) || names.length === 0 || !names.every((n) => typeof n === 'string' && n.length > 0)) {
      throw new ProvisionError('PROVISION_BAD_REQUEST', 'put: "names" must be a non-empty list of names');
    }
    const chainDer = chainArg(args);
    const sealed = parseSealedKey(args.sealed);
    checkSealedHeader(sealed, provisioningKey.fingerprint, session.operator);
    replay.check(sealed.nonce, sealed.issuedAt);
    // Held from the check until accepted: another connection's copy is a replay meanwhile.
    replay.hold(sealed.nonce);
    let pkcs8: Buffer;
    try {
      pkcs8 = await openSealedKey({
        sealed,
        keydPublicKey: provisioningKey.publicKey,
        keydPrivateKey: provisioningKey.rawPrivateKey(),
        operator: session.operator,
        binding: { names: names as string[], chainDer },
      });
      // Remember the nonce before anything else can fail: an authenticated payload is used once.
      replay.accept(sealed.nonce, sealed.issuedAt);
    } finally {
      replay.release(sealed.nonce);
    }
    let privateKey;
    try {
      try {
        await opts.store.putSecret(NONCES_SECRET, Buffer.from(JSON.stringify(replay.snapshot())));
      } catch (err) {
        // keyd's own failure (disk full, I/O), not the payload's: said as such, detail in the log.
        logger?.error({ err: errorMessage(err) }, 'provisioning: could not save the replay record');
        throw new ProvisionError('PROVISION_INTERNAL', 'put: keyd could not save its replay record (see its log); the key was not installed: seal the key again and re-run the command');
      }
      privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    } catch (err) {
      if (err instanceof ProvisionError) throw err;
      throw new ProvisionError('PROVISION_BAD_REQUEST', `put: the sealed payload does not hold a PKCS#8 private key`);
    } finally {
      pkcs8.fill(0);
    }
    return opts.adminService.put(session.caller, names as string[], privateKey, chainDer);
  }

  server.on('secureConnection', (socket: tls.TLSSocket) => {
    socket.setTimeout(limits.idleTimeoutMs, () => socket.destroy());
    socket.on('error', (err) => logger?.warn({ err: err.message }, 'provisioning connection error'));
    let session: Session & { role: Role };
    try {
      session = authenticate(socket);
    } catch (err) {
      const code = errorCode(err);
      const message = errorMessage(err);
      const peer = socket.getPeerX509Certificate();
      const caller: AdminCaller = { kind: 'operator', id: peer ? truncate(normalizeSubject(peer.subject)) : '(no certificate)' };
      const remote = `${socket.remoteAddress}:${socket.remotePort}`;
      refuseUnauthenticated({ op: 'connect', caller, ok: false, code, message, remote }, `provisioning refused: ${message}`);
      // end() waits for the peer's own close: a refused peer that never closes would hold its
      // connection (and per-address slot) for the authenticated idle timeout. It gets the
      // handshake's time to read its refusal, then is destroyed.
      socket.setTimeout(limits.handshakeTimeoutMs, () => socket.destroy());
      send(socket, { type: 'refused', code, message });
      socket.end();
      return;
    }
    logger?.info({ operator: session.operator, role: session.role, remote: session.remote }, 'provisioning: operator connected');
    sessions.set(socket, session);
    socket.on('close', () => {
      sessions.delete(socket);
      pausedForReplies.delete(socket);
      session.closed = true;
      // rm with force: true still rejects on EACCES/EBUSY: an unheard rejection ends keyd.
      session.attestation?.close().catch((err: unknown) => logger?.error({ err }, 'provisioning: removing an attestation work directory failed'));
    });
    send(socket, {
      type: 'welcome',
      v: PROTOCOL_VERSION,
      operator: session.operator,
      role: session.role,
      keyd: { publicKey: Buffer.from(provisioningKey.publicKey).toString('base64'), fingerprint: provisioningKey.fingerprint },
    });

    const decoder = new FrameDecoder();
    // One request at a time per connection, in order: admin changes are rare and must not interleave.
    let queue: Promise<void> = Promise.resolve();
    let queued = 0;
    socket.on('data', (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
        if (queued + messages.length > MAX_QUEUED_REQUESTS) {
          throw new ProvisionError('PROVISION_BAD_REQUEST', `more than ${MAX_QUEUED_REQUESTS} requests waiting on one connection`);
        }
      } catch (err) {
        send(socket, { id: 0, ok: false, error: { code: errorCode(err), message: errorMessage(err) } });
        socket.end();
        pausedForReplies.delete(socket); // a later 'drain' must not resume it
        socket.pause();
        return;
      }
      for (const message of messages) {
        queued++;
        queue = queue.then(() => respond(session, socket, message)).finally(() => void queued--);
      }
    });
  });

  async function respond(session: Session, socket: tls.TLSSocket, message: unknown): Promise<void> {
    const request = message as Partial<Request>;
    const id = typeof request.id === 'number' ? request.id : 0;
    const op = typeof request.op === 'string' ? request.op : '(none)';
    const args = typeof request.args === 'object' && request.args !== null ? (request.args as Record<string, unknown>) : {};
    try {
      const result = await handle(session, { id, op: op as Request['op'], args });
      // An audit answer is trimmed to one frame, the newest entries kept (protocol.ts auditResponse).
      send(socket, op === 'audit' ? auditResponse(id, result as AuditEntry[]) : { id, ok: true, result: toWire(result ?? null) });
    } catch (err) {
      const code = errorCode(err);
      const text = errorMessage(err);
      // Refusals decided here never reach the AdminService, which audits its own calls.
      if (err instanceof ProvisionError) {
        const names = Array.isArray(args.names) ? (args.names as unknown[]).filter((n): n is string => typeof n === 'string') : typeof args.name === 'string' ? [args.name] : undefined;
        await safeAudit({ op, caller: session.caller, ok: false, code, message: text, remote: session.remote, ...(names ? { names } : {}) });
      }
      // The log gets the operator's strings quoted truncated, as the audit does (keyd/audit.ts).
      const quotedOp = truncate(op);
      logger?.warn({ operator: session.operator, op: quotedOp, code }, `provisioning: ${quotedOp} refused: ${truncate(text, AUDIT_FIELD_LIMITS.message)}`);
      send(socket, { id, ok: false, error: { code, message: text } });
    }
    holdWhileUnread(socket);
  }

  // With a 'tlsClientError' listener node:tls leaves the socket open: a silent peer would
  // outlive the handshake timeout. Destroy it, and count it within the refusal budget.
  server.on('tlsClientError', (err: Error & { code?: string }, socket: tls.TLSSocket) => {
    socket.destroy();
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    const code = err.code ?? 'TLS_ERROR';
    if (refusals.admit(code, 200)) logger?.warn({ code, remote }, `provisioning: TLS handshake failed: ${err.message.split('\n')[0]!.slice(0, 200)}`);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  logger?.info(
    { listen: `${address.address}:${address.port}`, fingerprint: provisioningKey.fingerprint, created, operators: roles.size },
    `provisioning listener on ${address.address}:${address.port}, provisioning key ${provisioningKey.fingerprint}`,
  );

  return {
    host: address.address,
    port: address.port,
    fingerprint: provisioningKey.fingerprint,
    get pausedForReplies() {
      return pausedForReplies.size;
    },
    prepareReload(nextConfig: unknown) {
      const next = parseProvisioningConfig(nextConfig);
      // The listener's certificate, its limits and the replay window are set up at start.
      const restartOnly = (c: ProvisioningConfig, l: unknown) => JSON.stringify([c.tlsCert ?? null, c.tlsKey ?? null, c.replayWindowSeconds, l]);
      if (restartOnly(next, parseListenerLimits(nextConfig)) !== restartOnly(config, limits)) {
        throw new ProvisionError('PROVISION_USAGE', 'config "provisioning": tlsCert, tlsKey, replayWindowSeconds or limits changed: a restart applies that (only "operators" is reloaded)');
      }
      return () => {
        roles = new OperatorRoles(next.operators);
        const result: OperatorReload = { operators: roles.size, revoked: [], changed: [] };
        for (const [socket, session] of sessions) {
          const role = roles.roleOf(session.operator);
          if (role === session.role) continue;
          session.role = role;
          if (role !== undefined) {
            result.changed.push(session.operator);
            continue;
          }
          // A revoked operator's open connection must not keep its old role until it hangs up.
          result.revoked.push(session.operator);
          void safeAudit({ op: 'connect', caller: session.caller, ok: false, code: 'PROVISION_UNKNOWN_OPERATOR', message: 'operator removed from provisioning.operators by a reload: connection closed', remote: session.remote });
          socket.destroy();
        }
        logger?.info({ operators: result.operators, revoked: result.revoked.length, changed: result.changed.length }, 'provisioning: operators reloaded');
        return result;
      };
    },
    close: () =>
      new Promise<void>((resolve) => {
        refusals.stop();
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}

/** Refusals decided by the listener go to keyd's audit log, next to the admin operations. */
function defaultAuditSink(adminService: ProvisioningAdmin): AuditSink {
  return (event) => adminService.recordAudit(event);
}

function stringArg(args: Record<string, unknown>, name: string): string {
  const value = args[name];
  if (typeof value !== 'string' || value.length === 0) {
    throw new ProvisionError('PROVISION_BAD_REQUEST', `"${name}" must be a non-empty string`);
  }
  return value;
}

function chainArg(args: Record<string, unknown>): Uint8Array[] {
  const chain = args.chain;
  if (!Array.isArray(chain) || chain.length === 0 || !chain.every((c) => typeof c === 'string' && c.length > 0)) {
    throw new ProvisionError('PROVISION_BAD_REQUEST', '"chain" must be a non-empty list of base64 DER certificates');
  }
  return chain.map((c: string) => new Uint8Array(Buffer.from(c, 'base64')));
}
