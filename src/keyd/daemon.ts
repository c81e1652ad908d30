import { lstat, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { createServer as createNetServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { pino, type Logger } from 'pino';
import { AdminService, type ChangeEvent } from './admin-service.js';
import { AuditLog } from './audit.js';
import { loadConfig, normaliseSubject, type KeydConfig } from './config.js';
import { KeydError } from './errors.js';
import { FairScheduler } from './fair-scheduler.js';
import { Keyring, entryFromStored } from './keyring.js';
import { LimitReporter } from './limit-reporter.js';
import { KeydMetrics } from './metrics.js';
import { ADMIN_SOCKET_MODE, SocketGuard, type LocalPrincipal } from './principals.js';
import { KeydConnection, type Peer, type ServerDeps } from './server.js';
import { SigningLedger } from './signing-ledger.js';
import { SealedStore } from './store.js';
import { verifyAuditLog } from './root/audit-chain.js';
import { loadRoot, parseRootKeySpec } from './root/root-key.js';
import { TpmAttester } from './tpm/attester.js';
import { parseTokenConfigs } from './pkcs11/config.js';
import { TokenKeys } from './pkcs11/token-keys.js';
import { SignatureBuckets } from './token-bucket.js';
import { startMetricsServer } from '../edge/metrics-server.js';
import { ExpiryWatch } from '../lib/expiry.js';
import { parseHostPort } from '../lib/host-port.js';

/**
 * What keyd hands its provisioning listener (src/provision/listener.ts). The caller passes the
 * listener's start function in (`delegator keyd` does), so keyd never imports provision/:
 * provision/ depends on keyd (the admin service, the store), not the other way round.
 */
export interface ProvisioningStart {
  listen: string;
  operatorCa: string;
  config: KeydConfig;
  configDir: string | undefined;
  adminService: AdminService;
  store: SealedStore;
  logger: Logger;
  attester?: TpmAttester;
}

export interface RunningProvisioning {
  readonly host: string;
  readonly port: number;
  /** keyd's provisioning key fingerprint. */
  readonly fingerprint: string;
  /** Operator connections not read while their replies are not read (provision/listener.ts). */
  readonly pausedForReplies: number;
  /** SIGHUP: checks the new "provisioning" section (throws when a restart is needed) and returns the step applying its operators. */
  prepareReload(config: unknown): () => { operators: number; revoked: string[]; changed: string[] };
  close(): Promise<void>;
}

/** Options of `startKeyd`; they mirror `delegator keyd`'s flags. */
export interface KeydOptions {
  /** --data DIR */
  data: string;
  /** --root-key FILE | tpm[:OPTIONS] (root/root-key.ts); default: the config's "rootKey". */
  rootKey?: string;
  /** --socket PATH: signing socket for local edges (mode 0660). */
  socket: string;
  /** --admin-socket PATH: admin socket (mode 0600). */
  adminSocket: string;
  /** --config FILE, or the parsed object. */
  config?: string | object;
  /** --listen HOST:PORT: signing over TCP with mutual TLS (needs tlsCert, tlsKey, clientCa). */
  listen?: string;
  tlsCert?: string;
  tlsKey?: string;
  clientCa?: string;
  /** --provision-listen HOST:PORT and its operator CA (docs/PROVISIONING.md). */
  provisionListen?: string;
  operatorCa?: string;
  /** Starts the provisioning listener (src/provision/listener.ts startProvisioningListener); needed with provisionListen. */
  startProvisioning?: (opts: ProvisioningStart) => Promise<RunningProvisioning>;
  /** Default /etc/machine-id (tests override it). */
  machineIdPath?: string;
  /** --metrics HOST:PORT: Prometheus /metrics (overrides the config's "metricsListen"). */
  metrics?: string;
  /** The clock for certificate expiry warnings (tests move it). */
  now?: () => number;
  logger?: Logger;
  logLevel?: string;
}

/** How often keyd re-checks certificate expiry besides at start and after each key change. */
const EXPIRY_CHECK_INTERVAL_MS = 6 * 60 * 60 * 1000;

export interface RunningKeyd {
  socketPath: string;
  adminSocketPath: string;
  /** Port of the mTLS listener, when --listen was given. */
  tlsPort?: number;
  /** The provisioning listener (docs/PROVISIONING.md), when --provision-listen was given. */
  provisioning?: RunningProvisioning;
  adminService: AdminService;
  store: SealedStore;
  /** Records refused at start (tampered, rolled back, deleted and restored), each naming its record. */
  refusedRecords: KeydError[];
  keyring: Keyring;
  ledger: SigningLedger;
  metrics: KeydMetrics;
  /** Port of the /metrics server, when config "metricsListen" is set. */
  metricsPort?: number;
  /** The principal sockets of config "principals" (name → path). */
  principalSockets: Record<string, string>;
  logger: Logger;
  /**
   * Reads the config again and applies its grants — "clients" (mTLS subject → names) and the
   * names of each "principals" entry — to new and open connections alike (a revoked name is
   * refused from the next request). A config that does not parse, or that adds, removes or
   * moves a principal's socket (a restart does that), is refused: logged, nothing changed.
   */
  reloadGrants(): Promise<{ ok: true } | { ok: false; reason: string }>;
  close(): Promise<void>;
}

export async function startKeyd(opts: KeydOptions): Promise<RunningKeyd> {
  const logger = opts.logger ?? pino({ name: 'keyd', level: opts.logLevel ?? 'info' }, pino.destination(2));
  logger.info({ data: opts.data }, 'keyd starting');
  const config = await loadConfig(opts.config);
  // Token keys: the native PKCS#11 binding is loaded only when a configured token is used.
  // A relative "pinFile" is from the config file's directory, as the config's other paths.
  const tokens = new TokenKeys(parseTokenConfigs(config.pkcs11, typeof opts.config === 'string' ? dirname(resolve(opts.config)) : undefined) ?? [], logger);
  const socketPath = resolve(opts.socket);
  const adminSocketPath = resolve(opts.adminSocket);
  if (socketPath === adminSocketPath) throw new KeydError('KEYD_CONFIG', 'the signing socket and the admin socket must be different paths');
  for (const p of config.principals) {
    // Else the later listen fails with a bare EADDRINUSE that names neither the principal nor the flag.
    if (p.socket === socketPath || p.socket === adminSocketPath) {
      throw new KeydError('KEYD_CONFIG', `config "principals"."${p.name}": socket ${p.socket} is ${p.socket === adminSocketPath ? '--admin-socket' : '--socket (the "local" principal\'s)'}; give it a path of its own`);
    }
  }
  // Before touching the store: a second keyd on the same sockets must not start.
  await prepareSocketPath(socketPath);
  await prepareSocketPath(adminSocketPath);

  const rootSpecText = opts.rootKey ?? (typeof config.rootKey === 'string' ? config.rootKey : undefined);
  if (!rootSpecText) throw new KeydError('KEYD_CONFIG', 'keyd needs a root key: --root-key FILE, --root-key tpm[:OPTIONS], or "rootKey" in the config');
  if (config.rootKey !== undefined && typeof config.rootKey !== 'string') throw new KeydError('KEYD_CONFIG', 'config "rootKey" must be a string: a file path or tpm[:OPTIONS]');
  if (config.tpmTcti !== undefined && typeof config.tpmTcti !== 'string') throw new KeydError('KEYD_CONFIG', 'config "tpmTcti" must be a string');
  const rootSpec = parseRootKeySpec(rootSpecText, config.tpmTcti as string | undefined);
  if (opts.rootKey === undefined && typeof opts.config === 'string') {
    // The config's "rootKey" is relative to the config file, like its other paths; the
    // flag is relative to the working directory ("/" under systemd, where a relative
    // "rootKey" would have been looked for, or created, at the filesystem root).
    const configDir = dirname(resolve(opts.config));
    if (rootSpec.kind === 'file') rootSpec.path = resolve(configDir, rootSpec.path);
    else if (rootSpec.sealedDir !== undefined) rootSpec.sealedDir = resolve(configDir, rootSpec.sealedDir);
  }
  const root = await loadRoot(rootSpec, opts.data);
  const store = await SealedStore.open({ dataDir: opts.data, root, ...(opts.machineIdPath ? { machineIdPath: opts.machineIdPath } : {}) });
  logger.info({ rootKey: root.kind, location: root.location }, `keyd: ${store.binding}`);
  if (!store.guard.hasCounter) {
    logger.warn('keyd: no monotonic counter: the manifest refuses an old or deleted record, but a rollback of the whole data directory is only detectable with --root-key tpm');
  }
  for (const line of store.guard.recovered) logger.warn(`keyd store: ${line}`);
  const keyring = new Keyring();
  const { keys, failures } = await store.loadKeys((reference) => tokens.resolve(reference));
  for (const key of keys) {
    try {
      keyring.set(entryFromStored(key));
    } catch (err) {
      failures.push(new KeydError('KEYD_STORE_CORRUPT', `key record ${key.id}: ${(err as Error).message}`));
    }
  }
  for (const failure of failures) logger.error({ code: failure.code }, failure.message);
  // Records that a newer put took names from (a crash between the two steps of a put,
  // admin-service.ts install): the put is finished on disk as it would have been. A record
  // left claiming a name would serve it again, with the replaced key, once the newer record
  // is deleted and keyd restarts.
  const stored = new Map(keys.map((key) => [key.id, key] as const));
  for (const entry of keyring.entries()) {
    const record = stored.get(entry.id)!;
    if (entry.names.length === record.names.length) continue;
    if (entry.names.length === 0) {
      await store.deleteKey(entry.id);
      keyring.remove(entry.id);
    } else {
      keyring.set(entryFromStored(await store.putKey({ ...record, names: entry.names })));
    }
  }

  // The audit log must still hold what the manifest committed (its hash-chain head).
  const auditPath = join(store.dataDir, 'audit.log');
  const auditHead = await verifyAuditLog(auditPath, store.guard.committedAuditHead);
  const auditLog = await AuditLog.open(auditPath, auditHead, config.auditLog, () => store.commitAuditHead());
  store.guard.setAuditHeadSource(() => auditLog.head);
  const { limits } = config;
  const metrics = new KeydMetrics();
  metrics.watchKeyring(keyring, root.kind);
  const expiry = new ExpiryWatch(logger, config.expiryWarningDays, opts.now ?? Date.now);
  const checkExpiry = () => expiry.check(keyring.entries().map((e) => ({ names: e.names, keyRef: e.id, notAfter: e.notAfter })));
  const audit = (entry: Parameters<AuditLog['append']>[0]) => auditLog.append(entry);
  const reporter = new LimitReporter(audit, metrics, logger, limits.auditIntervalMs);
  const ledger = await SigningLedger.open({ totalsPath: join(store.dataDir, 'signing-totals.json'), audit, metrics, logger, intervalMs: limits.auditIntervalMs });
  const adminService = new AdminService(store, keyring, auditLog, ledger, logger, tokens);
  const connections = new Set<KeydConnection>();
  /** Open connections' peers and their listener: a grants reload updates what each may sign for. */
  const openPeers = new Map<Peer, string>();
  const sockets = new Set<Socket>();
  const perClient = new Map<string, number>();
  const deps: ServerDeps = {
    keyring,
    adminService,
    ledger,
    logger,
    maxPending: config.maxPending,
    limits,
    reporter,
    scheduler: new FairScheduler(limits.schedulerBatch),
    buckets: new SignatureBuckets(limits.signaturesPerSecond, limits.signatureBurst),
    signingPolicy: { allowTls12OnlyServers: config.allowTls12OnlyServers },
    delegation: {
      audit,
      buckets: new SignatureBuckets(limits.delegatedCredentialsPerMinute / 60, limits.delegatedCredentialsPerMinute),
      now: Date.now,
    },
  };

  /** Serves a connection whose peer is known; enforces the per-client connection cap. */
  const track = (socket: Socket, peer: Peer, listener: string) => {
    sockets.add(socket);
    metrics.connections.inc({ listener });
    const conn = new KeydConnection(socket, peer, deps);
    connections.add(conn);
    openPeers.set(peer, listener);
    const open = (perClient.get(peer.id) ?? 0) + 1;
    perClient.set(peer.id, open);
    socket.on('close', () => {
      sockets.delete(socket);
      connections.delete(conn);
      openPeers.delete(peer);
      metrics.connections.dec({ listener });
      const left = (perClient.get(peer.id) ?? 1) - 1;
      if (left > 0) perClient.set(peer.id, left);
      else perClient.delete(peer.id);
    });
    if (open > limits.maxConnectionsPerClient) {
      conn.refuseConnection('client-connections', 'KEYD_TOO_MANY_CONNECTIONS', `client ${peer.id} already has ${limits.maxConnectionsPerClient} connections open (limits.maxConnectionsPerClient)`);
    }
    return conn;
  };

  /** A unix listener for one principal: its socket is re-checked on every connection. */
  const unixListener = (guard: SocketGuard, listener: string, peerFor: (n: number) => Peer) => {
    let n = 0;
    const server = createNetServer((socket) => {
      const peer = peerFor(++n);
      socket.on('error', () => undefined);
      void guard.check().then((problem) => {
        if (socket.destroyed) return;
        const conn = track(socket, peer, listener);
        if (!problem) return;
        logger.error({ principal: peer.id, problem }, `keyd refused a connection: ${problem} (repaired; the caller cannot be trusted to be ${peer.id})`);
        conn.refuseConnection('socket-exposed', 'KEYD_SOCKET_EXPOSED', `refused: ${problem}`);
      });
    });
    capListener(server, listener);
    return server;
  };
  const capListener = (server: Server, listener: string) => {
    server.maxConnections = limits.maxConnectionsPerListener;
    server.on('drop', () => reporter.refused(listener, 'listener-connections', `listener ${listener} is at its ${limits.maxConnectionsPerListener} connections (limits.maxConnectionsPerListener)`));
  };

  const localPrincipal = config.principals.find((p) => p.name === 'local')!;
  const guards = new Map<LocalPrincipal, SocketGuard>();
  const guardOf = (p: LocalPrincipal, path: string) => {
    const g = new SocketGuard(path, p.mode, p.uid, p.gid);
    guards.set(p, g);
    return g;
  };
  const signingGuard = guardOf(localPrincipal, socketPath);
  const signingServer = unixListener(signingGuard, 'local', () => ({ id: 'local', admin: false, allowed: localPrincipal.names }));
  const adminGuard = new SocketGuard(adminSocketPath, ADMIN_SOCKET_MODE);
  const adminServer = unixListener(adminGuard, 'admin', (n) => ({
    id: 'admin',
    admin: true,
    allowed: ['*'],
    caller: { kind: 'local', id: `admin via ${adminGuard.describe()}, connection ${n}` },
  }));
  const principalServers = config.principals
    .filter((p) => p.socket !== undefined)
    .map((p) => ({ principal: p, server: unixListener(guardOf(p, p.socket!), p.name, () => ({ id: p.name, admin: false, allowed: p.names })) }));
  const servers: Server[] = [];
  const stopServers = async () => {
    const closed = servers.map((srv) => new Promise<void>((r) => srv.close(() => r())));
    for (const sock of sockets) sock.destroy();
    await Promise.all(closed);
  };

  let tlsPort: number | undefined;
  let metricsServer: Server | undefined;
  let provisioning: RunningProvisioning | undefined;
  try {
    for (const { principal } of principalServers) await prepareSocketPath(principal.socket!);
    servers.push(signingServer);
    await listenUnix(signingServer, socketPath, signingGuard);
    servers.push(adminServer);
    await listenUnix(adminServer, adminSocketPath, adminGuard);
    for (const { principal, server } of principalServers) {
      servers.push(server);
      await listenUnix(server, principal.socket!, guards.get(principal)!);
    }
    if (opts.listen) {
      const tlsServer = await listenMutualTls(opts, config, (s, p) => track(s, p, 'mtls'), logger, reporter);
      capListener(tlsServer, 'mtls');
      servers.push(tlsServer);
      tlsPort = (tlsServer.address() as { port: number }).port;
    }
    const metricsListen = opts.metrics ?? config.metricsListen;
    if (metricsListen) {
      metricsServer = await startMetricsServer(listenAddress(metricsListen, '--metrics'), async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }));
      servers.push(metricsServer);
    }
    if (opts.provisionListen) {
      if (!opts.operatorCa) throw new KeydError('KEYD_CONFIG', '--provision-listen needs --operator-ca');
      if (!opts.startProvisioning) throw new KeydError('KEYD_CONFIG', '--provision-listen: this keyd was started without the provisioning module');
      provisioning = await opts.startProvisioning({
        listen: opts.provisionListen,
        operatorCa: opts.operatorCa,
        config,
        // Relative TLS paths in the config are relative to the config file.
        configDir: typeof opts.config === 'string' ? dirname(resolve(opts.config)) : undefined,
        adminService,
        store,
        logger,
        ...(root.tpm ? { attester: new TpmAttester(root.tpm) } : {}),
      });
    }
  } catch (err) {
    // A half-started keyd must not keep sockets or files open.
    await stopServers();
    await auditLog.close();
    await tokens.close();
    throw err;
  }
  reporter.start();
  ledger.start();
  const expiryTimer = setInterval(checkExpiry, EXPIRY_CHECK_INTERVAL_MS);
  expiryTimer.unref();

  adminService.on('change', ({ names }: ChangeEvent) => {
    for (const conn of connections) if (conn.concerns(names)) conn.pushChanged(names);
    checkExpiry();
  });

  logger.info(
    { store: store.dataDir, keys: keyring.size, refusedRecords: failures.length, socket: socketPath, adminSocket: adminSocketPath, tlsPort, provisioning: provisioning && `${provisioning.host}:${provisioning.port}` },
    `keyd started: store ${store.dataDir}, ${keyring.size} key(s)${failures.length ? `, ${failures.length} record(s) refused` : ''}, signing socket ${socketPath}, admin socket ${adminSocketPath}`,
  );

  const reloadGrants = async (): Promise<{ ok: true } | { ok: false; reason: string }> => {
    let next: KeydConfig;
    let applyOperators: (() => { operators: number; revoked: string[]; changed: string[] }) | undefined;
    try {
      if (opts.config === undefined) throw new KeydError('KEYD_CONFIG', 'keyd was started without --config: there are no grants to read again');
      next = await loadConfig(opts.config);
      // What the next start would refuse is refused now, while the operator is looking: a
      // reload that said "reloaded" over a broken "pkcs11", "rootKey" or "metricsListen" would leave keyd
      // unable to start again after its next restart.
      parseTokenConfigs(next.pkcs11, typeof opts.config === 'string' ? dirname(resolve(opts.config)) : undefined);
      if (next.rootKey !== undefined && typeof next.rootKey !== 'string') throw new KeydError('KEYD_CONFIG', 'config "rootKey" must be a string: a file path or tpm[:OPTIONS]');
      if (next.tpmTcti !== undefined && typeof next.tpmTcti !== 'string') throw new KeydError('KEYD_CONFIG', 'config "tpmTcti" must be a string');
      if (typeof next.rootKey === 'string') parseRootKeySpec(next.rootKey);
      if (opts.metrics === undefined && next.metricsListen) listenAddress(next.metricsListen, 'config "metricsListen"');
      const shape = (c: KeydConfig) => JSON.stringify(c.principals.map((p) => [p.name, p.socket ?? null, p.mode, p.uid ?? null, p.gid ?? null]).sort());
      if (shape(next) !== shape(config)) {
        throw new KeydError('KEYD_CONFIG', 'the principals or their sockets changed: a restart applies that (only the names granted are reloaded)');
      }
      // The provisioning operators and their roles: a revoked operator must not keep its
      // role until the next restart (docs/PROVISIONING.md). Checked here, applied below.
      applyOperators = provisioning?.prepareReload(next);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const reason = `${(err as Error).message}${typeof code === 'string' && /^(KEYD|PROVISION)_/.test(code) ? ` [${code}]` : ''}`;
      logger.error({ reason }, 'keyd reload refused: the running grants are kept');
      return { ok: false, reason };
    }
    config.clients = next.clients;
    // The signing policy too: turning TLS 1.2-only servers off must not wait for a restart.
    config.allowTls12OnlyServers = next.allowTls12OnlyServers;
    deps.signingPolicy = { allowTls12OnlyServers: next.allowTls12OnlyServers };
    for (const principal of config.principals) principal.names = next.principals.find((p) => p.name === principal.name)!.names;
    for (const [peer, listener] of openPeers) {
      if (peer.admin) continue;
      peer.allowed = listener === 'mtls' ? (config.clients[peer.id] ?? []) : (config.principals.find((p) => p.name === peer.id)?.names ?? []);
    }
    const operators = applyOperators?.();
    logger.info(
      {
        clients: Object.keys(config.clients).length,
        principals: config.principals.map((p) => p.name),
        openConnections: openPeers.size,
        allowTls12OnlyServers: config.allowTls12OnlyServers,
        ...(operators ? { operators: operators.operators, operatorsRevoked: operators.revoked.length, operatorsChanged: operators.changed.length } : {}),
      },
      'keyd reloaded its grants',
    );
    return { ok: true };
  };

  checkExpiry(); // after the start line: the warnings read as news about a keyd that runs
  let closing: Promise<void> | undefined;
  return {
    reloadGrants,
    socketPath,
    adminSocketPath,
    ...(tlsPort !== undefined ? { tlsPort } : {}),
    ...(provisioning ? { provisioning } : {}),
    adminService,
    store,
    refusedRecords: failures,
    keyring,
    ledger,
    metrics,
    ...(metricsServer ? { metricsPort: (metricsServer.address() as { port: number }).port } : {}),
    principalSockets: Object.fromEntries(principalServers.map(({ principal }) => [principal.name, principal.socket!])),
    logger,
    close() {
      closing ??= (async () => {
        clearInterval(expiryTimer);
        await provisioning?.close();
        await stopServers();
        await reporter.stop();
        await ledger.stop();
        await auditLog.close();
        await tokens.close();
        logger.info('keyd stopped');
      })();
      return closing;
    },
  };
}

/**
 * Refuses to start over a live keyd (something answers on the socket) or over a path
 * that is not a socket; removes a stale socket left by a crashed keyd.
 */
async function prepareSocketPath(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new KeydError('KEYD_NOT_A_SOCKET', `${path} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((done) => {
    const probe = netConnect({ path });
    probe.once('connect', () => {
      probe.destroy();
      done(true);
    });
    probe.once('error', () => done(false));
  });
  if (live) throw new KeydError('KEYD_ALREADY_RUNNING', `another keyd is already listening on ${path}`);
  await unlink(path);
}

/**
 * Listens on a unix socket created with the guard's mode (umask while binding), then sets
 * owner, group and mode and checks them: keyd does not run with a socket it cannot vouch for.
 */
async function listenUnix(server: Server, path: string, guard: SocketGuard): Promise<void> {
  const previous = process.umask(0o777 & ~guard.mode);
  try {
    await new Promise<void>((done, fail) => {
      server.once('error', fail);
      server.listen(path, () => {
        server.off('error', fail);
        done();
      });
    });
  } finally {
    process.umask(previous);
  }
  await guard.establish();
}

async function listenMutualTls(opts: KeydOptions, config: KeydConfig, track: (s: Socket, p: Peer) => void, logger: Logger, reporter: LimitReporter): Promise<Server> {
  if (!opts.tlsCert || !opts.tlsKey || !opts.clientCa) {
    throw new KeydError('KEYD_CONFIG', '--listen needs --tls-cert, --tls-key and --client-ca');
  }
  const read = (path: string, what: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new KeydError('KEYD_CONFIG', `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const server = createTlsServer(
    {
      cert: read(opts.tlsCert, '--tls-cert'),
      key: read(opts.tlsKey, '--tls-key'),
      ca: read(opts.clientCa, '--client-ca'),
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      // A silent or stalled peer is closed this long after accept, authenticated or not.
      handshakeTimeout: config.limits.tlsHandshakeTimeoutMs,
    },
    (socket: TLSSocket) => {
      const raw = socket.getPeerCertificate().raw;
      const subject = raw ? normaliseSubject(new X509Certificate(raw).subject) : '';
      const allowed = config.clients[subject] ?? [];
      if (allowed.length === 0) logger.warn({ subject }, 'mTLS client has no names in config "clients": every request will be refused');
      track(socket, { id: subject || 'unknown', admin: false, allowed });
    },
  );
  // Unauthenticated peers: counted and audited in aggregate (limit-reporter.ts), never a line each.
  // With a 'tlsClientError' listener node:tls leaves the socket open (a silent peer then
  // outlives the handshake timeout): destroy it here.
  server.on('tlsClientError', (err: Error & { code?: string }, socket: Socket) => {
    socket.destroy();
    if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
      reporter.refused('(unauthenticated)', 'tls-handshake-timeout', `TLS handshake not completed within ${config.limits.tlsHandshakeTimeoutMs} ms`);
    } else {
      logger.debug({ err: err.message }, 'keyd TLS client refused');
    }
  });
  const { host, port } = listenAddress(opts.listen!, '--listen');
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      done();
    });
  });
  return server;
}

/** HOST:PORT of a keyd flag (src/lib/host-port.ts), as a config error. */
function listenAddress(value: string, flag: string): { host: string; port: number } {
  try {
    return parseHostPort(value, flag);
  } catch (err) {
    throw new KeydError('KEYD_CONFIG', (err as Error).message);
  }
}
