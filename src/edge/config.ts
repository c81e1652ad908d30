import { readFileSync } from 'node:fs';
import { isIP, isIPv6 } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { DEFAULT_EXPIRY_WARNING_DAYS } from '../lib/expiry.js';
import { parseHostPort as parseAddress } from '../lib/host-port.js';
import { checkAlpnNames } from '../tls/index.js';
import { EdgeError } from './errors.js';
import type { KeydEndpoint } from './keyd-pool.js';
import { X509Certificate } from 'node:crypto';
import { RouteTable, validateRouteName, normaliseName, type Route, type RouteClientAuth } from './routes.js';

/**
 * The edge's configuration: a JSON file (docs/EDGE.md shows every key) and/or flags.
 * Everything is validated up front with a message that names the offending key, so
 * `--check-config` can be trusted and a running edge never meets a bad value.
 */

export interface ListenAddress {
  host: string;
  port: number;
  /**
   * Set on an IPv6 wildcard listener (`[::]:P`) when an IPv4 address is listened on the same
   * port: bound IPv6-only, since on Linux (net.ipv6.bindv6only = 0) `[::]:P` also takes every
   * IPv4 address of P and the IPv4 bind would fail with EADDRINUSE (ipv6(7), IPV6_V6ONLY).
   */
  ipv6Only?: boolean;
}

export interface EdgeLimits {
  /** Open client connections per worker; more are refused at accept (node:net maxConnections). */
  maxConnections: number;
  /** ClientHello to client Finished. */
  handshakeTimeoutMs: number;
  /** No bytes either way for this long → the connection is closed. */
  idleTimeoutMs: number;
  /** After the handshake: the upstream's TCP connect must complete within this long, else the client is closed. */
  upstreamConnectTimeoutMs: number;
  /** After SIGTERM: how long open connections may finish before they are cut. */
  drainTimeoutMs: number;
  /** After a failed handshake or connection: how long input is read and discarded at most (hard, from the failure). */
  lingerMs: number;
  /** ...ending earlier after this long without input... */
  lingerIdleMs: number;
  /** ...or after this many bytes. */
  lingerMaxBytes: number;
  /** Lingering connections kept per listener (they do not count toward maxConnections); past it the oldest is closed. */
  maxLingering: number;
  /** KeyUpdates accepted from one client per `keyUpdateWindowMs`; one more → unexpected_message. */
  maxKeyUpdates: number;
  keyUpdateWindowMs: number;
  /** Distinct identities (keyd answers) kept in the identity cache. */
  identityCacheSize: number;
  /** Server names remembered by the identity cache (each maps to an identity or to "no key"). */
  identityCacheNames: number;
}

export interface EdgeConfig {
  listen: ListenAddress[];
  keyd: KeydEndpoint[];
  keydRequestTimeoutMs: number;
  routes: Route[];
  /** Server name whose identity answers ClientHellos without SNI; undefined → such handshakes are refused. */
  defaultServerName: string | undefined;
  workers: number;
  limits: EdgeLimits;
  /** Prometheus endpoint (GET /metrics); undefined → none. */
  metrics: ListenAddress | undefined;
  logLevel: string;
  /** NewSessionTickets per handshake (0 disables resumption). */
  tickets: number;
  /** The tickets' lifetime, seconds (the engine's ticketLifetimeSeconds, RFC 8446 §4.6.1); default 7200. */
  ticketLifetimeSeconds: number;
  /** Log a warning this many days before a served certificate's notAfter (default 30). */
  certificateExpiryWarningDays: number;
  /** RFC 9345 delegated credentials (docs/EDGE.md "Delegated credentials"). */
  delegatedCredentials: DelegatedCredentialsConfig;
}

export interface DelegatedCredentialsConfig {
  /** Obtain and serve credentials for identities whose leaf carries DelegationUsage. Default true. */
  enabled: boolean;
  /** Lifetime asked of keyd, seconds (at most keyd's limits.delegatedCredentialMaxSeconds). Default 14400. */
  lifetimeSeconds: number;
  /** A credential is no longer served this long before it expires. Default 60. */
  expiryMarginSeconds: number;
}

export const DEFAULT_DELEGATED_CREDENTIALS: DelegatedCredentialsConfig = { enabled: true, lifetimeSeconds: 4 * 3600, expiryMarginSeconds: 60 };

function delegatedCredentials(value: unknown): DelegatedCredentialsConfig {
  if (value === undefined) return { ...DEFAULT_DELEGATED_CREDENTIALS };
  if (typeof value === 'boolean') return { ...DEFAULT_DELEGATED_CREDENTIALS, enabled: value };
  if (!isObject(value)) fail('delegatedCredentials must be true, false or { "enabled", "lifetimeSeconds", "expiryMarginSeconds" }');
  onlyKeys(value, 'delegatedCredentials', ['enabled', 'lifetimeSeconds', 'expiryMarginSeconds']);
  const d = DEFAULT_DELEGATED_CREDENTIALS;
  const lifetimeSeconds = value.lifetimeSeconds === undefined ? d.lifetimeSeconds : int(value.lifetimeSeconds, 'delegatedCredentials.lifetimeSeconds', 120, 604_800);
  const expiryMarginSeconds =
    value.expiryMarginSeconds === undefined ? d.expiryMarginSeconds : int(value.expiryMarginSeconds, 'delegatedCredentials.expiryMarginSeconds', 0, 86_400);
  if (expiryMarginSeconds * 2 >= lifetimeSeconds) fail('delegatedCredentials.expiryMarginSeconds must be less than half of lifetimeSeconds');
  return {
    enabled: value.enabled === undefined ? true : bool(value.enabled, 'delegatedCredentials.enabled'),
    lifetimeSeconds,
    expiryMarginSeconds,
  };
}

export const DEFAULT_LIMITS: EdgeLimits = {
  maxConnections: 10_000,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 120_000,
  upstreamConnectTimeoutMs: 10_000,
  drainTimeoutMs: 30_000,
  lingerMs: 120_000,
  lingerIdleMs: 2000,
  lingerMaxBytes: 2 ** 24 + 2 ** 20,
  maxLingering: 1024,
  maxKeyUpdates: 64,
  keyUpdateWindowMs: 60_000,
  identityCacheSize: 1024,
  identityCacheNames: 16_384,
};

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function fail(message: string): never {
  throw new EdgeError('EDGE_CONFIG', message);
}

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function onlyKeys(obj: Json, where: string, allowed: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) fail(`${where}: unknown key '${key}' (allowed: ${allowed.join(', ')})`);
  }
}

function str(value: unknown, where: string): string {
  if (typeof value !== 'string' || value.length === 0) fail(`${where} must be a non-empty string`);
  return value;
}

function int(value: unknown, where: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`${where} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function bool(value: unknown, where: string): boolean {
  if (typeof value !== 'boolean') fail(`${where} must be true or false`);
  return value;
}

/** `HOST:PORT`, `[v6]:PORT` or `PORT` (host 127.0.0.1), by the project's one parser (src/lib/host-port.ts). */
export function parseHostPort(text: string, where: string, defaultHost = '127.0.0.1'): ListenAddress {
  try {
    return parseAddress(text, where, defaultHost);
  } catch (err) {
    fail((err as Error).message);
  }
}

function address(value: unknown, where: string): ListenAddress {
  if (typeof value === 'string') return parseHostPort(value, where);
  if (!isObject(value)) fail(`${where} must be "HOST:PORT" or { "host", "port" }`);
  onlyKeys(value, where, ['host', 'port']);
  return { host: value.host === undefined ? '127.0.0.1' : str(value.host, `${where}.host`), port: int(value.port, `${where}.port`, 0, 65535) };
}

/**
 * A route's upstream: an address whose port is 1..65535. Port 0 means "any port" only to
 * listen on; connected to, it is refused for every client after its handshake, and
 * `--check-config` must not pass what can never work.
 */
/**
 * The socket a listening address binds, for spotting the same one configured twice: IPv6
 * literals in their canonical text (RFC 5952, `[0:0::1]` is `[::1]`), names in lower case.
 * Port 0 is never the same socket twice (each bind gets its own ephemeral port).
 */
function bindKey(a: ListenAddress): string | undefined {
  if (a.port === 0) return undefined;
  let host = a.host.toLowerCase().replace(/\.$/, '');
  if (isIPv6(host)) {
    try {
      host = new URL(`http://[${host}]/`).hostname; // WHATWG URL serialises IPv6 per RFC 5952
    } catch {
      // a zone id (fe80::1%eth0): compared as written
    }
  }
  return `${host}|${a.port}`;
}

/**
 * Each listening socket once: the second bind of the same address would fail (EADDRINUSE)
 * only after the config was accepted, so it is refused here naming both keys.
 */
function distinctListeners(entries: readonly (readonly [string, ListenAddress])[]): void {
  const seen = new Map<string, string>();
  for (const [where, a] of entries) {
    const key = bindKey(a);
    if (key === undefined) continue;
    const first = seen.get(key);
    if (first !== undefined) fail(`${where}: ${shown(a)} is the same address as ${first}; each address is listened on once`);
    seen.set(key, where);
  }
  // A wildcard takes every address of its family on its port, so a specific address of that
  // family on the same port cannot be bound beside it (EADDRINUSE, whichever comes first).
  for (const [where, a] of entries) {
    const family = wildcardFamily(a);
    if (family === undefined) continue;
    for (const [otherWhere, other] of entries) {
      if (other === a || other.port !== a.port || ipFamily(other.host) !== family) continue;
      fail(`${otherWhere}: ${shown(other)} is already listened on by ${where} (${shown(a)} takes every IPv${family} address of port ${a.port}); list one or the other`);
    }
  }
  // `[::]:P` beside an IPv4 address on P: bound IPv6-only (ListenAddress.ipv6Only).
  for (const [, a] of entries) {
    if (wildcardFamily(a) === 6 && entries.some(([, other]) => other.port === a.port && ipFamily(other.host) === 4)) a.ipv6Only = true;
  }
}

function shown(a: ListenAddress): string {
  return isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** 4 or 6 for an IP literal; undefined for a host name (its addresses are known only when it is resolved at bind). */
function ipFamily(host: string): 4 | 6 | undefined {
  const family = isIP(host);
  return family === 4 || family === 6 ? family : undefined;
}

/** The family whose every address `a` listens on (0.0.0.0, ::), or undefined. Port 0 binds a fresh port each time. */
function wildcardFamily(a: ListenAddress): 4 | 6 | undefined {
  if (a.port === 0) return undefined;
  if (ipFamily(a.host) === 4) return a.host.split('.').every((b) => Number(b) === 0) ? 4 : undefined;
  if (ipFamily(a.host) === 6) return /^[0:]+$/.test(a.host) ? 6 : undefined; // ::, 0::0, 0:0:0:0:0:0:0:0
  return undefined;
}

function upstreamAddress(value: unknown, where: string): ListenAddress {
  const upstream = address(value, where);
  if (upstream.port === 0) fail(`${where}: port 0 cannot be connected to; an upstream's port is 1 to 65535`);
  return upstream;
}

function readPem(path: string, where: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    fail(`${where}: cannot read '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function keydEndpoint(value: unknown, where: string, baseDir: string): KeydEndpoint {
  // str(): an empty path would resolve to the config directory itself, taken as the socket.
  if (typeof value === 'string') return { socketPath: resolve(baseDir, str(value, where)) };
  if (!isObject(value)) fail(`${where} must be a socket path or { "socket" } or { "host", "port", "cert", "key", "ca" }`);
  if ('socket' in value) {
    onlyKeys(value, where, ['socket']);
    return { socketPath: resolve(baseDir, str(value.socket, `${where}.socket`)) };
  }
  onlyKeys(value, where, ['host', 'port', 'cert', 'key', 'ca', 'servername']);
  const file = (key: 'cert' | 'key' | 'ca') => readPem(resolve(baseDir, str(value[key], `${where}.${key}`)), `${where}.${key}`);
  return {
    host: str(value.host, `${where}.host`),
    port: int(value.port, `${where}.port`, 1, 65535),
    tls: {
      cert: file('cert'),
      key: file('key'),
      ca: file('ca'),
      ...(value.servername !== undefined ? { servername: str(value.servername, `${where}.servername`) } : {}),
    },
  };
}

/**
 * RFC 7301 §3.1, by the check the engine's alpnProtocols option uses too (src/tls/alpn-names.ts).
 * An empty list is refused: a route without the key negotiates from the union of all routes'
 * lists (edge.ts), and `[]` reads as "no ALPN", which a route cannot ask for; the ambiguity is
 * the user's to resolve, not ours to guess.
 */
function alpnList(value: unknown, where: string): string[] {
  if (Array.isArray(value) && value.length === 0) {
    fail(`${where} is an empty list: omit the key to negotiate from the union of all routes' lists (a route cannot turn ALPN off, RFC 7301 §3.1)`);
  }
  try {
    return checkAlpnNames(value, where, (i) => `${where}[${i}]`);
  } catch (err) {
    fail((err as Error).message);
  }
}

/** PEM blocks of `label` in a file's text; at least one, or the key is named in the error. */
function pemCount(pem: Buffer, label: string): number {
  return (pem.toString('latin1').match(new RegExp(`-----BEGIN ${label}-----`, 'g')) ?? []).length;
}

/**
 * `clientAuth: { mode, ca, crl?, advertiseCaNames? }`. The CA file must hold CA
 * certificates (checked here); the CRL's signature is checked when the edge starts.
 * With mode off the files named are checked all the same (docs/EDGE.md: unreadable files
 * are refused): a route switched off keeps its settings, and switching it back on must
 * not be the first time they are read. Such a route carries them with mode 'off'.
 */
function clientAuth(value: unknown, where: string, baseDir: string): RouteClientAuth | undefined {
  if (!isObject(value)) fail(`${where} must be an object { "mode", "ca", "crl"?, "advertiseCaNames"? }`);
  onlyKeys(value, where, ['mode', 'ca', 'crl', 'advertiseCaNames']);
  const mode = str(value.mode, `${where}.mode`);
  if (mode !== 'off' && mode !== 'optional' && mode !== 'required') fail(`${where}.mode must be off, optional or required, got '${mode}'`);
  if (mode === 'off' && value.ca === undefined) {
    if (value.crl !== undefined) fail(`${where}.crl: a CRL is checked against the CAs of ${where}.ca, which is not set`);
    if (value.advertiseCaNames !== undefined) bool(value.advertiseCaNames, `${where}.advertiseCaNames`);
    return undefined;
  }
  if (value.ca === undefined) fail(`${where}.ca (a PEM file of client CAs) is required when mode is ${mode}`);
  const caPath = resolve(baseDir, str(value.ca, `${where}.ca`));
  const caPem = readPem(caPath, `${where}.ca`);
  if (pemCount(caPem, 'CERTIFICATE') === 0) fail(`${where}.ca: '${caPath}' holds no PEM certificate`);
  try {
    for (const block of caPem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []) {
      if (!new X509Certificate(block).ca) fail(`${where}.ca: '${caPath}' holds a certificate that is not a CA (basicConstraints cA)`);
    }
  } catch (err) {
    if (err instanceof EdgeError) throw err;
    fail(`${where}.ca: '${caPath}' holds a certificate that does not parse (${(err as Error).message})`);
  }
  let crlPem: Buffer | undefined;
  if (value.crl !== undefined) {
    const crlPath = resolve(baseDir, str(value.crl, `${where}.crl`));
    crlPem = readPem(crlPath, `${where}.crl`);
    if (pemCount(crlPem, '(?:X509 )?CRL') === 0) fail(`${where}.crl: '${crlPath}' holds no PEM "X509 CRL" block`);
  }
  return {
    mode,
    caPem,
    ...(crlPem ? { crlPem } : {}),
    advertiseCaNames: value.advertiseCaNames === undefined ? true : bool(value.advertiseCaNames, `${where}.advertiseCaNames`),
  };
}

function route(value: unknown, where: string, baseDir: string): Route {
  if (!isObject(value)) fail(`${where} must be an object`);
  onlyKeys(value, where, ['names', 'upstream', 'proxyProtocol', 'alpn', 'clientAuth', 'tls12']);
  const names = typeof value.names === 'string' ? [value.names] : value.names;
  if (!Array.isArray(names) || names.length === 0) fail(`${where}.names must be a non-empty list`);
  const checked = names.map((n, i) => {
    try {
      return validateRouteName(str(n, `${where}.names[${i}]`));
    } catch (err) {
      fail(`${where}.names[${i}]: ${(err as Error).message}`);
    }
  });
  const auth = value.clientAuth === undefined ? undefined : clientAuth(value.clientAuth, `${where}.clientAuth`, baseDir);
  return {
    names: checked,
    upstream: upstreamAddress(value.upstream, `${where}.upstream`),
    proxyProtocol: value.proxyProtocol === undefined ? false : bool(value.proxyProtocol, `${where}.proxyProtocol`),
    alpn: value.alpn === undefined ? [] : alpnList(value.alpn, `${where}.alpn`),
    ...(auth ? { clientAuth: auth } : {}),
    ...(value.tls12 === undefined ? {} : { tls12: bool(value.tls12, `${where}.tls12`) }),
  };
}

const TOP_KEYS = [
  'listen',
  'keyd',
  'keydRequestTimeoutMs',
  'routes',
  'defaultServerName',
  'workers',
  'limits',
  'metrics',
  'logLevel',
  'tickets',
  'ticketLifetimeSeconds',
  'certificateExpiryWarningDays',
  'delegatedCredentials',
] as const;

/** Validates a parsed config document; relative paths are taken from `baseDir`. */
export function validateConfig(doc: unknown, baseDir = process.cwd()): EdgeConfig {
  if (!isObject(doc)) fail('the config must be a JSON object');
  onlyKeys(doc, 'config', TOP_KEYS);
  const listenRaw = doc.listen === undefined ? ['127.0.0.1:8443'] : Array.isArray(doc.listen) ? doc.listen : [doc.listen];
  if (listenRaw.length === 0) fail('listen must name at least one address');
  const keydRaw = doc.keyd === undefined ? [] : Array.isArray(doc.keyd) ? doc.keyd : [doc.keyd];
  if (keydRaw.length === 0) fail('keyd must name at least one endpoint (a unix socket path, or host/port with TLS files)');
  if (!Array.isArray(doc.routes) || doc.routes.length === 0) fail('routes must be a non-empty list');
  const listen = listenRaw.map((a, i) => address(a, `listen[${i}]`));
  const metrics = doc.metrics === undefined ? undefined : address(doc.metrics, 'metrics');
  distinctListeners([...listen.map((a, i) => [`listen[${i}]`, a] as const), ...(metrics ? [['metrics', metrics] as const] : [])]);
  const routes = doc.routes.map((r, i) => route(r, `routes[${i}]`, baseDir));
  // docs/EDGE.md: a name may appear once (names are normalised: case, trailing dot); both keys named.
  const nameAt = new Map<string, string>();
  routes.forEach((r, i) =>
    r.names.forEach((name, j) => {
      const first = nameAt.get(name);
      if (first !== undefined) fail(`routes[${i}].names[${j}]: '${name}' is already ${first}; a name may appear once`);
      nameAt.set(name, `routes[${i}].names[${j}]`);
    }),
  );
  try {
    new RouteTable(routes); // the table's own checks, kept as the last word
  } catch (err) {
    fail((err as Error).message);
  }
  let defaultServerName: string | undefined;
  if (doc.defaultServerName !== undefined) {
    defaultServerName = normaliseName(str(doc.defaultServerName, 'defaultServerName'));
    if (defaultServerName.startsWith('*')) fail('defaultServerName must be a concrete name, not a wildcard');
    if (!new RouteTable(routes).lookup(defaultServerName)) {
      fail(`defaultServerName '${defaultServerName}' is not covered by any route`);
    }
  }
  const limitsRaw = doc.limits === undefined ? {} : doc.limits;
  if (!isObject(limitsRaw)) fail('limits must be an object');
  onlyKeys(limitsRaw, 'limits', Object.keys(DEFAULT_LIMITS));
  const limit = (key: keyof EdgeLimits, min: number, max: number) =>
    limitsRaw[key] === undefined ? DEFAULT_LIMITS[key] : int(limitsRaw[key], `limits.${key}`, min, max);
  const logLevel = doc.logLevel === undefined ? 'info' : str(doc.logLevel, 'logLevel');
  if (!LOG_LEVELS.includes(logLevel)) fail(`logLevel must be one of ${LOG_LEVELS.join(', ')}`);
  return {
    listen,
    keyd: keydRaw.map((e, i) => keydEndpoint(e, `keyd[${i}]`, baseDir)),
    keydRequestTimeoutMs:
      doc.keydRequestTimeoutMs === undefined ? 2000 : int(doc.keydRequestTimeoutMs, 'keydRequestTimeoutMs', 10, 60_000),
    routes,
    defaultServerName,
    workers: doc.workers === undefined ? availableParallelism() : int(doc.workers, 'workers', 1, 1024),
    limits: {
      maxConnections: limit('maxConnections', 1, 10_000_000),
      handshakeTimeoutMs: limit('handshakeTimeoutMs', 100, 600_000),
      idleTimeoutMs: limit('idleTimeoutMs', 100, 86_400_000),
      upstreamConnectTimeoutMs: limit('upstreamConnectTimeoutMs', 100, 600_000),
      drainTimeoutMs: limit('drainTimeoutMs', 0, 3_600_000),
      lingerMs: limit('lingerMs', 1, 600_000),
      lingerIdleMs: limit('lingerIdleMs', 1, 600_000),
      lingerMaxBytes: limit('lingerMaxBytes', 1, 2 ** 30),
      maxLingering: limit('maxLingering', 1, 10_000_000),
      maxKeyUpdates: limit('maxKeyUpdates', 1, 1_000_000),
      keyUpdateWindowMs: limit('keyUpdateWindowMs', 1, 86_400_000),
      identityCacheSize: limit('identityCacheSize', 1, 10_000_000),
      identityCacheNames: limit('identityCacheNames', 1, 100_000_000),
    },
    metrics,
    logLevel,
    tickets: doc.tickets === undefined ? 2 : int(doc.tickets, 'tickets', 0, 16),
    // RFC 8446 §4.6.1: ticket_lifetime is at most 604800 s (7 days); the engine's own bounds.
    ticketLifetimeSeconds:
      doc.ticketLifetimeSeconds === undefined ? 7200 : int(doc.ticketLifetimeSeconds, 'ticketLifetimeSeconds', 1, 604_800),
    certificateExpiryWarningDays:
      doc.certificateExpiryWarningDays === undefined
        ? DEFAULT_EXPIRY_WARNING_DAYS
        : int(doc.certificateExpiryWarningDays, 'certificateExpiryWarningDays', 0, 3650),
    delegatedCredentials: delegatedCredentials(doc.delegatedCredentials),
  };
}

/** Reads a JSON config file without validating it (flags may still be merged in). */
export function readConfigDocument(path: string): { doc: Json; baseDir: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    fail(`cannot read config '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    fail(`config '${path}' is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) fail(`config '${path}' must hold a JSON object`);
  return { doc, baseDir: dirname(resolve(path)) };
}

/** Reads and validates a JSON config file. */
export function loadConfigFile(path: string): EdgeConfig {
  const { doc, baseDir } = readConfigDocument(path);
  return validateConfig(doc, baseDir);
}

/**
 * `NAME[,NAME…]=HOST:PORT` → a route document (flags for the common case).
 */
export function parseRouteFlag(text: string, proxyProtocol: boolean, alpn: string[]): Json {
  const eq = text.lastIndexOf('=');
  if (eq <= 0) fail(`--route '${text}' must be NAME[,NAME…]=HOST:PORT`);
  return {
    names: text.slice(0, eq).split(','),
    upstream: text.slice(eq + 1),
    proxyProtocol,
    ...(alpn.length ? { alpn } : {}),
  };
}
