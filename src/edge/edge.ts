import { X509Certificate } from 'node:crypto';
import type { Server, Socket } from 'node:net';
import type { Logger } from 'pino';
import {
  alertName,
  DEFAULT_RETAIN_MS,
  DEFAULT_ROTATION_MS,
  loadClientAuth,
  TicketKeyRing,
  type ClientAuthOptions,
  type TlsServerOptions,
} from '../tls/index.js';
import type { EdgeConfig } from './config.js';
import { DelegatedCredentials } from './delegated-credentials.js';
import type { CreateTlsServer, EngineServer, EngineSocket } from './engine.js';
import { IdentityCache, type EdgeIdentity } from './identity-cache.js';
import { KeydPool, describeEndpoint as describe, type ConnectKeyd } from './keyd-pool.js';
import { EdgeMetrics } from './metrics.js';
import { EdgeError } from './errors.js';
import { describeHandshake, proxyToUpstream } from './proxy.js';
import { RouteTable, normaliseName, type Route } from './routes.js';
import { ExpiryWatch } from '../lib/expiry.js';
import { loadCertificateFacts, serverCertificateFacts, type ServerCertificateFacts } from './certificate-facts.js';

/**
 * One edge instance (one process, or one cluster worker): TLS listeners on the engine,
 * identities from keyd (cached), signatures from keyd, plaintext to the routes' upstreams.
 * It never holds a private key: the engine gets a Signer that is a keyd round trip.
 */

export interface EdgeDeps {
  createTlsServer: CreateTlsServer;
  connectKeyd: ConnectKeyd;
  logger: Logger;
  metrics?: EdgeMetrics;
  /**
   * Session-ticket keys; shared by all workers of one edge so any worker resumes any ticket.
   * The edge sets how long they are kept from the config (edgeTicketKeyRetainMs), at start and
   * at each reload. None: the edge makes its own ring, kept across reloads.
   */
  ticketKeys?: TicketKeyRing;
  /** The clock for certificate expiry warnings (tests move it). */
  now?: () => number;
}

/**
 * How long the edge's ticket keys open tickets, for tickets of `ticketLifetimeSeconds`: as the
 * engine's default ring (src/tls/handshake/ticket-keys.ts, ringForTicketLifetime) keeps its
 * keys for a rotation + the lifetime, so a ticket resumes for all of the lifetime its
 * NewSessionTicket advertises (RFC 8446 §4.6.1), but two rotations: a worker seals with a key
 * from the primary for up to two rotations (TicketKeyRing.importKeys). Never under the 8 h
 * default (the default 2 h lifetime keeps it).
 */
export function edgeTicketKeyRetainMs(ticketLifetimeSeconds: number): number {
  return Math.max(DEFAULT_RETAIN_MS, 2 * DEFAULT_ROTATION_MS + ticketLifetimeSeconds * 1000);
}

/** A leaf's notAfter, parsed once per certificate (the identity cache asks at most once per TTL per name). */
const notAfterOf = new WeakMap<Uint8Array, string | null>();
function leafNotAfter(chain: readonly Uint8Array[]): string | null {
  const leaf = chain[0];
  if (!leaf) return null;
  let notAfter = notAfterOf.get(leaf);
  if (notAfter === undefined) {
    try {
      notAfter = new Date(new X509Certificate(leaf).validTo).toISOString();
    } catch {
      notAfter = null; // the engine serves the chain as keyd holds it; a bad one fails elsewhere
    }
    notAfterOf.set(leaf, notAfter);
  }
  return notAfter;
}

export interface RunningEdge {
  readonly addresses: { host: string; port: number }[];
  readonly metrics: EdgeMetrics;
  readonly keyd: KeydPool;
  readonly identities: IdentityCache;
  /** RFC 9345 credentials held for identities that allow delegation; undefined when disabled. */
  readonly credentials: DelegatedCredentials | undefined;
  /** Open client connections. */
  readonly connections: number;
  /** Stops accepting, lets open connections finish (up to the drain timeout), then closes keyd. */
  drain(timeoutMs?: number): Promise<void>;
  /** Closes everything now. */
  close(): Promise<void>;
  /**
   * Applies a new config without dropping a connection: routes, limits, keyd endpoints,
   * tickets and their lifetime, expiry warning days. Refused (throws EDGE_RELOAD, nothing changed) when it
   * changes what needs a restart: listen addresses, workers, the metrics address.
   */
  reload(next: EdgeConfig): Promise<{ keyd: 'kept' | 'moved' | 'unreachable' }>;
}

/** What a reload cannot change: these need a restart (new sockets, processes). */
function restartOnlyChanges(current: EdgeConfig, next: EdgeConfig): string[] {
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  const changes: string[] = [];
  if (!same(current.listen, next.listen)) changes.push('listen');
  if (current.workers !== next.workers) changes.push('workers');
  if (!same(current.metrics, next.metrics)) changes.push('metrics');
  if (current.logLevel !== next.logLevel) changes.push('logLevel');
  if (!same(current.delegatedCredentials, next.delegatedCredentials)) changes.push('delegatedCredentials');
  return changes;
}

/** Each route's client-auth policy (CA bundle, CRL) loaded for the engine; fails naming the route. */
async function loadRouteClientAuth(routes: readonly Route[]): Promise<Map<Route, ClientAuthOptions>> {
  const loaded = new Map<Route, ClientAuthOptions>();
  for (const route of routes) {
    const c = route.clientAuth;
    if (!c || !c.caPem) continue;
    // A route with mode off but files named has them checked as if it were on (CRL
    // signature, CA names' size: docs/EDGE.md), and gets no client-auth policy.
    const options = await loadClientAuth({
      mode: c.mode === 'off' ? 'optional' : c.mode,
      caPem: c.caPem,
      ...(c.crlPem ? { crlPem: c.crlPem } : {}),
      advertiseCaNames: c.advertiseCaNames,
    }).catch((err: Error) => {
      throw new EdgeError('EDGE_CONFIG', `route ${route.names.join(',')}: clientAuth: ${err.message}`);
    });
    if (c.mode !== 'off') loaded.set(route, options);
  }
  return loaded;
}

function connectionKey(address: string | undefined, port: number | undefined): string {
  return `${address ?? ''}|${port ?? ''}`;
}

export async function startEdge(initialConfig: EdgeConfig, deps: EdgeDeps): Promise<RunningEdge> {
  /** The config in force: replaced as a whole by a reload. */
  let config = initialConfig;
  const log = deps.logger;
  const metrics = deps.metrics ?? new EdgeMetrics();
  let routes = new RouteTable(config.routes);
  const pool = new KeydPool(config.keyd, deps.connectKeyd, { requestTimeoutMs: config.keydRequestTimeoutMs });
  const signSeconds = metrics.signSeconds;
  let expiry = new ExpiryWatch(log, config.certificateExpiryWarningDays, deps.now ?? Date.now);
  const identities = new IdentityCache(pool, {
    // Named by keyd's names for the key (its patterns), not the client's server name: the
    // warning is once per certificate a day, however many names clients send under a wildcard.
    onFetched: (serverName, identity) =>
      expiry.check([
        { names: identity.names?.length ? identity.names : [serverName], keyRef: identity.keyRef, notAfter: leafNotAfter(identity.certificateChain) },
      ]),
    observeSign: (seconds, ok) => signSeconds.observe({ outcome: ok ? 'ok' : 'failed' }, seconds),
    maxIdentities: config.limits.identityCacheSize,
    maxNames: config.limits.identityCacheNames,
    onLookup: (result) => metrics.identityCacheLookups.inc({ result }),
    onEvict: (kind) => metrics.identityCacheEvictions.inc({ kind }),
  });

  const credentials = config.delegatedCredentials.enabled
    ? new DelegatedCredentials(pool, {
        lifetimeSeconds: config.delegatedCredentials.lifetimeSeconds,
        expiryMarginSeconds: config.delegatedCredentials.expiryMarginSeconds,
        onCredential: (keyRef, notAfter) => {
          if (notAfter === undefined) metrics.delegatedCredentialExpiry.remove({ identity: keyRef });
          else metrics.delegatedCredentialExpiry.set({ identity: keyRef }, Math.floor(notAfter / 1000));
        },
        onIssue: (outcome, keyRef, err) => {
          metrics.delegatedCredentialIssuances.inc({ outcome });
          if (outcome === 'ok') log.info({ identity: keyRef }, 'delegated credential obtained from keyd');
          else log.warn({ identity: keyRef, err: err?.message }, 'keyd did not issue a delegated credential; handshakes sign through keyd');
        },
      })
    : undefined;

  pool.on('state', (state: string, endpoint: string | undefined) => {
    if (state === 'down') log.warn({ keyd: endpoint }, 'keyd connection lost; handshakes fail until it is back');
  });
  // edge_keyd_connected: one series per configured endpoint, 1 for the one in use. A reload
  // can replace the list: the series of an endpoint no longer listed is removed once it is
  // not in use (a reload whose new endpoints do not answer keeps the old connection, and its
  // 1, until it drops), so it neither stays at 1 nor lingers.
  const keydSeries = new Set<string>();
  const showKeydConnection = (inUse: string | undefined): void => {
    for (const e of pool.endpoints) keydSeries.add(describe(e));
    if (inUse !== undefined) keydSeries.add(inUse);
    for (const endpoint of keydSeries) {
      if (endpoint === inUse) metrics.keydConnected.set({ endpoint }, 1);
      else if (pool.endpoints.some((e) => describe(e) === endpoint)) metrics.keydConnected.set({ endpoint }, 0);
      else {
        metrics.keydConnected.remove({ endpoint });
        keydSeries.delete(endpoint);
      }
    }
  };
  pool.on('connected', (endpoint: string) => {
    showKeydConnection(endpoint);
    metrics.keydReconnects.inc();
    log.info({ keyd: endpoint }, 'connected to keyd');
  });
  pool.on('state', (state: string) => {
    if (state !== 'connected') showKeydConnection(undefined);
  });
  pool.on('change', (change: { names?: string[] }) => log.info({ names: change.names }, 'keyd reports changed keys; identity cache cleared'));
  showKeydConnection(undefined);
  // Credentials for the routes' concrete names are obtained at start and after each reconnect,
  // so the first client that offers delegated credentials already gets one.
  const warmCredentials = (): void => {
    if (!credentials) return;
    const names = new Set([...config.routes.flatMap((r) => r.names), ...(config.defaultServerName ? [config.defaultServerName] : [])]);
    for (const name of names) {
      if (name.startsWith('*')) continue;
      Promise.resolve(identities.get(name)).then(
        (identity) => identity && credentials.offerFor(name, identity),
        () => undefined,
      );
    }
  };
  pool.on('connected', warmCredentials);
  await pool.start();
  if (pool.state !== 'connected') log.warn('keyd is not reachable yet; starting anyway and retrying in the background');

  // Per-route client certificates: each route's CA bundle (and CRL) becomes the engine's
  // verifier for the identities of its names (docs/EDGE.md, client certificates). Rebuilt
  // with the routes on a reload, before anything changes.
  let routeClientAuth = await loadRouteClientAuth(config.routes).catch((err: unknown) => {
    pool.close();
    throw err;
  });
  // PP2_SUBTYPE_SSL_SIG_ALG needs the certificate parser, loaded only when a route sends PROXY headers.
  if (config.routes.some((r) => r.proxyProtocol)) await loadCertificateFacts();

  // Per-route ALPN (RFC 7301): each identity carries its route's list, which the engine
  // negotiates from (no overlap → no_application_protocol); routes without a list get the union.
  const alpnUnionOf = (c: EdgeConfig) => [...new Set(c.routes.flatMap((r) => r.alpn))];

  const resolveIdentity = (serverName: string | undefined): Promise<EdgeIdentity | undefined> | EdgeIdentity | undefined => {
    const name = serverName === undefined ? config.defaultServerName : normaliseName(serverName);
    const route = name === undefined ? undefined : routes.lookup(name);
    if (name === undefined || !route) return undefined; // → unrecognized_name (RFC 6066 §3)
    const clientAuth = routeClientAuth.get(route);
    // Per route: its ALPN list, its client certificate policy, TLS 1.3 only when the route turns
    // TLS 1.2 off; and the identity's delegated credential (RFC 9345) when one is held.
    const perRoute = (identity: EdgeIdentity, credential: EdgeIdentity['delegatedCredential']): EdgeIdentity =>
      route.alpn.length || clientAuth || route.tls12 === false || credential
        ? {
            ...identity,
            ...(credential ? { delegatedCredential: credential } : {}),
            ...(route.alpn.length ? { alpnProtocols: route.alpn } : {}),
            ...(clientAuth ? { clientAuth } : {}),
            ...(route.tls12 === false ? { tls12: false } : {}),
          }
        : identity;
    const forRoute = (identity: EdgeIdentity | undefined): EdgeIdentity | undefined =>
      identity && perRoute(identity, credentials?.offerFor(name, identity));
    // keyd unreachable: a still-valid delegated credential keeps serving clients that offer them.
    const fallback = (err: unknown): EdgeIdentity => {
      const held = credentials?.fallback(name);
      if (!held) throw err;
      return perRoute(held, held.delegatedCredential);
    };
    let identity: ReturnType<typeof identities.get>;
    try {
      identity = identities.get(name);
    } catch (err) {
      return fallback(err);
    }
    return identity instanceof Promise ? identity.then(forRoute, fallback) : forRoute(identity);
  };

  // One ring for the edge's life: the engine would make a new one at each reload (its default
  // ring belongs to one set of options), and tickets issued before a reload would not resume.
  const ticketKeys = deps.ticketKeys ?? new TicketKeyRing();
  ticketKeys.setRetainMs(edgeTicketKeyRetainMs(config.ticketLifetimeSeconds));
  const tlsOptionsOf = (c: EdgeConfig): TlsServerOptions => {
    const alpnUnion = alpnUnionOf(c);
    return {
      resolveIdentity,
      handshakeTimeoutMs: c.limits.handshakeTimeoutMs,
      lingerMs: c.limits.lingerMs,
      lingerIdleMs: c.limits.lingerIdleMs,
      lingerMaxBytes: c.limits.lingerMaxBytes,
      maxLingering: c.limits.maxLingering,
      // The engine's cap leaves lingering (failed) connections out of the count.
      maxConnections: c.limits.maxConnections,
      maxKeyUpdates: c.limits.maxKeyUpdates,
      keyUpdateWindowMs: c.limits.keyUpdateWindowMs,
      ticketCount: c.tickets,
      ticketLifetimeSeconds: c.ticketLifetimeSeconds,
      // The client may close its side (close_notify) before the upstream has answered;
      // the proxy ends our side when the upstream is done (RFC 8446 §6.1).
      allowHalfOpen: true,
      ticketKeys,
      ...(alpnUnion.length ? { alpnProtocols: alpnUnion } : {}),
    };
  };
  const tlsOptions = tlsOptionsOf(config);

  const rawSockets = new Set<Socket>();
  const acceptedAt = new Map<string, bigint>();
  const servers: EngineServer[] = [];
  const idleWaiters: (() => void)[] = [];
  // A server's 'close' comes a tick before its last socket's 'close'; drain waits for both.
  const noSockets = () => new Promise<void>((resolve) => (rawSockets.size === 0 ? resolve() : idleWaiters.push(resolve)));

  const onSecure = (tls: EngineSocket): void => {
    const key = connectionKey(tls.remoteAddress, tls.remotePort);
    const start = acceptedAt.get(key);
    acceptedAt.delete(key);
    metrics.handshakes.inc({ outcome: 'ok', alert: 'none' });
    metrics.handshakesBySigningPath.inc({ path: tls.resumed ? 'resumed' : tls.delegatedCredential ? 'credential' : 'keyd' });
    if (start !== undefined) metrics.handshakeSeconds.observe({ outcome: 'ok' }, Number(process.hrtime.bigint() - start) / 1e9);
    const serverName = tls.serverName === undefined ? undefined : normaliseName(tls.serverName);
    const route = routes.lookup(serverName ?? config.defaultServerName ?? '');
    if (!route) {
      // A reload removed the route (or the default name) while this handshake waited for keyd:
      // resolveIdentity found it, the table in force now does not. Close cleanly rather than
      // guess. The socket still needs an 'error' listener: a client reset after our
      // close_notify fails it, and an unheard 'error' event would end the process.
      log.warn({ serverName }, 'no route after handshake (removed by a reload); closing the client connection');
      tls.on('error', (e: Error & { code?: string }) => log.debug({ serverName, err: e.code ?? e.message }, 'client connection error'));
      tls.end();
      return;
    }
    const client = tls.clientCertificate;
    if (routeClientAuth.has(route)) {
      metrics.clientAuth.inc({ result: client ? (tls.clientCertificateFromSession ? 'resumed' : 'verified') : 'none', alert: 'none' });
    }
    if (log.isLevelEnabled('debug')) {
      log.debug(
        { serverName, alpn: tls.alpnProtocol, suite: tls.cipherSuite, ...describeHandshake(tls), client: client?.subject },
        'handshake done',
      );
    }
    // PP2_SUBTYPE_SSL_SIG_ALG / _KEY_ALG describe the certificate we served under this name.
    const chain = tls.serverCertificateChain;
    const facts: ServerCertificateFacts | undefined = chain ? serverCertificateFacts(chain) : undefined;
    proxyToUpstream(tls, route, serverName, metrics, log, facts, config.limits.upstreamConnectTimeoutMs);
  };

  const onConnection = (socket: Socket): void => {
    if (socket.destroyed) return; // refused at the cap
    rawSockets.add(socket);
    metrics.activeConnections.inc();
    const key = connectionKey(socket.remoteAddress, socket.remotePort);
    acceptedAt.set(key, process.hrtime.bigint());
    // Idle timeout on the TCP socket: records in either direction count as activity.
    socket.setTimeout(config.limits.idleTimeoutMs, () => {
      metrics.connectionsRefused.inc({ reason: 'idle' });
      socket.destroy();
    });
    socket.once('close', () => {
      rawSockets.delete(socket);
      acceptedAt.delete(key);
      metrics.activeConnections.dec();
      if (rawSockets.size === 0) for (const wake of idleWaiters.splice(0)) wake();
    });
  };

  const onClientError = (err: Error & { code?: string; alert?: number }, socket?: { remoteAddress?: string; remotePort?: number }): void => {
    const alert = err.alert === undefined ? 'none' : alertName(err.alert);
    metrics.handshakes.inc({ outcome: 'failed', alert });
    // Failed after our CertificateRequest went out: the client's certificate or signature
    // was refused (or the client gave up on our flight).
    if ((socket as EngineSocket | undefined)?.clientCertificateRequested) metrics.clientAuth.inc({ result: 'failed', alert });
    const key = connectionKey(socket?.remoteAddress, socket?.remotePort);
    const start = acceptedAt.get(key);
    if (start !== undefined) {
      acceptedAt.delete(key);
      metrics.handshakeSeconds.observe({ outcome: 'failed' }, Number(process.hrtime.bigint() - start) / 1e9);
    }
    log.debug({ code: err.code, alert, remote: socket?.remoteAddress }, 'handshake failed');
  };

  try {
    for (const address of config.listen) {
      const server = deps.createTlsServer(tlsOptions, onSecure);
      // Refused at the cap by the engine (tlsOptions.maxConnections), which does not count
      // failed connections that are still lingering: they hold no slot.
      server.on('connectionRefused', () => metrics.connectionsRefused.inc({ reason: 'cap' }));
      server.on('connection', onConnection);
      server.on('tlsClientError', onClientError);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ port: address.port, host: address.host, ipv6Only: address.ipv6Only === true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      server.on('error', (err) => log.error({ err: err.message }, 'listener error'));
      servers.push(server);
    }
  } catch (err) {
    for (const s of servers) s.close();
    credentials?.close();
    pool.close();
    throw err;
  }

  const addresses = servers.map((s) => {
    const a = s.address();
    return typeof a === 'object' && a ? { host: a.address, port: a.port } : { host: String(a), port: 0 };
  });
  log.info({ listen: addresses, routes: config.routes.length, keyd: pool.endpoint ?? 'down' }, 'edge listening');

  let closing: Promise<void> | undefined;
  const drain = (timeoutMs = config.limits.drainTimeoutMs): Promise<void> => {
    closing ??= (async () => {
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(noSockets);
      log.info({ open: rawSockets.size, timeoutMs }, 'draining: no new connections, waiting for open ones');
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      });
      await Promise.race([closed, deadline]);
      clearTimeout(timer);
      if (rawSockets.size) {
        log.warn({ open: rawSockets.size }, 'drain deadline reached; closing the remaining connections');
        metrics.connectionsRefused.inc({ reason: 'drain' }, rawSockets.size);
        for (const s of rawSockets) s.destroy();
        await closed;
      }
      credentials?.close();
      pool.close();
    })();
    return closing;
  };

  const applyReload = async (next: EdgeConfig): Promise<{ keyd: 'kept' | 'moved' | 'unreachable' }> => {
    const restartOnly = restartOnlyChanges(config, next);
    if (restartOnly.length) {
      throw new EdgeError('EDGE_RELOAD', `${restartOnly.join(', ')} changed: a restart applies that (nothing was reloaded)`);
    }
    // Everything that can fail is checked before anything changes.
    const nextRoutes = new RouteTable(next.routes);
    const nextClientAuth = await loadRouteClientAuth(next.routes);
    if (next.routes.some((r) => r.proxyProtocol)) await loadCertificateFacts();
    const nextTlsOptions = tlsOptionsOf(next);
    for (const server of servers) server.setTlsOptions?.(nextTlsOptions);
    ticketKeys.setRetainMs(edgeTicketKeyRetainMs(next.ticketLifetimeSeconds));
    routes = nextRoutes;
    routeClientAuth = nextClientAuth;
    config = next;
    expiry = expiry.withWarnDays(next.certificateExpiryWarningDays);
    identities.setLimits(next.limits.identityCacheSize, next.limits.identityCacheNames);
    const keyd = await pool.setEndpoints(next.keyd, next.keydRequestTimeoutMs);
    showKeydConnection(pool.state === 'connected' ? pool.endpoint : undefined);
    log.info({ routes: next.routes.length, keyd: next.keyd.map(describe), keydConnection: keyd }, 'reloaded: new connections use the new config; open ones keep theirs');
    return { keyd };
  };
  // One reload at a time, in the order asked: two SIGHUPs close together (each reads the file
  // then) must end with the later config in force. Run side by side, the first one's keyd
  // connect (or CA load) finishing last applied its older config over the newer one, and the
  // connection the newer one had moved to was never closed.
  let reloading: Promise<unknown> = Promise.resolve();
  const reload = (next: EdgeConfig): Promise<{ keyd: 'kept' | 'moved' | 'unreachable' }> => {
    const run = reloading.then(() => applyReload(next));
    reloading = run.catch(() => undefined);
    return run;
  };

  return {
    addresses,
    metrics,
    keyd: pool,
    identities,
    reload,
    credentials,
    get connections() {
      return rawSockets.size;
    },
    drain,
    close: () => drain(0),
  };
}
