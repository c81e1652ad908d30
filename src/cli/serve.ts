/**
 * `delegator serve` — the TLS engine alone, with the leaf key IN THIS PROCESS.
 *
 * Not the product path (there the key lives only in keyd: see `delegator demo`). This
 * exists for conformance runs (tlsfuzzer), interop checks and the handshake benchmark,
 * where the signer must not be the variable being measured.
 */
import { readFileSync } from 'node:fs';
import { isIP, type Server } from 'node:net';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import {
  alertName,
  checkAlpnNames,
  createServer,
  DEFAULT_GROUPS,
  groupByName,
  groupName,
  loadClientAuth,
  LocalSigner,
  SUPPORTED_GROUPS,
  type ClientAuthOptions,
  type Identity,
  type TlsServerOptions,
  type TlsSocket,
} from '../tls/index.js';
import { attachHttpResponder } from '../demo/http-responder.js';
import { DEFAULT_LEAF_NAMES, ED25519_WARNING, isLeafKeyType, LEAF_KEY_TYPES, type LeafKeyType } from '../demo/pki.js';
import { demoPkiPaths, loadOrCreateCa, loadOrCreateLeaf } from '../demo/pki-files.js';

export const summary = 'TLS engine alone with an in-process key (conformance, benchmarks; not the keyd path)';

const USAGE = `Usage: delegator serve [options]

Serves HTTPS on the TLS 1.3 + 1.2 engine with a demo CA and a localhost certificate whose
private key is held IN THIS PROCESS. For conformance tests and benchmarks; the product
path, with keys only in keyd, is \`delegator demo\` / \`delegator edge\`.

Options:
  --host ADDR          listen address (default 127.0.0.1)
  --port N             TCP port, 0 = any free port (default 8443)
  --key-type TYPE      ${LEAF_KEY_TYPES.join('|')} (default ecdsa-p256)
  --groups LIST        key exchange groups in preference order
                       (default ${DEFAULT_GROUPS.map(groupName).join(',')}; supported: ${SUPPORTED_GROUPS.map(groupName).join(',')})
  --tickets N          NewSessionTickets per connection, 0 disables resumption (default 2)
  --hrr-cookie         accepted for tlsfuzzer scripts; the engine always sends a stateless
                       cookie in HelloRetryRequest
  --no-tls12           speak TLS 1.3 only (a TLS 1.2 ClientHello gets protocol_version)
  --tls12-only         speak TLS 1.2 only (no downgrade sentinel in ServerHello.random)
  --require-ems        refuse TLS 1.2 handshakes without extended_master_secret (RFC 7627)
  --alpn LIST          ALPN protocols offered, in preference order (default http/1.1; the page
                       speaks HTTP/1.x only); each 1 to 255 UTF-8 bytes, listed once;
                       --alpn '' turns ALPN off
  --names LIST         extra certificate names besides localhost,127.0.0.1
  --client-ca FILE     ask clients for a certificate (TLS 1.3 CertificateRequest) and verify
                       it against the CAs in this PEM file (docs/EDGE.md, client certificates)
  --client-auth MODE   optional|required (default required with --client-ca): optional
                       accepts a client that sends no certificate
  --client-crl FILE    PEM CRL(s) signed by a CA of --client-ca; revoked certificates are refused
  --dir DIR            where the demo CA, certificate and key are kept, created on first start
                       (default $DELEGATOR_HOME/serve, else ./.delegator/serve)
  --log-level LEVEL    pino level: fatal|error|warn|info|debug|trace (default info;
                       debug logs every handshake failure with its alert)
  -h, --help           this text
`;

export interface ServeConfig {
  readonly host: string;
  readonly port: number;
  readonly keyType: LeafKeyType;
  readonly groups: readonly number[];
  readonly tickets: number;
  readonly alpn: readonly string[];
  readonly names: readonly string[];
  readonly dir: string;
  readonly logLevel: string;
  /** Client certificates: undefined = not asked for. */
  readonly clientAuth?: { readonly mode: 'optional' | 'required'; readonly caFile: string; readonly crlFile?: string };
  /** Speak TLS 1.2 (docs/TLS12.md) besides TLS 1.3. */
  readonly tls12: boolean;
  readonly tls13: boolean;
  /** TLS 1.2 handshakes without the extended master secret (RFC 7627) are refused. */
  readonly requireEms: boolean;
}

export class UsageError extends Error {
  readonly code = 'SERVE_USAGE';
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Parses `serve` arguments; `'help'` when help was asked for. Throws UsageError with a one-line message. */
export function parseServeArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ServeConfig | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'string', default: '8443' },
        'key-type': { type: 'string', default: 'ecdsa-p256' },
        groups: { type: 'string' },
        tickets: { type: 'string', default: '2' },
        'hrr-cookie': { type: 'boolean', default: false },
        'no-tls12': { type: 'boolean', default: false },
        'tls12-only': { type: 'boolean', default: false },
        'require-ems': { type: 'boolean', default: false },
        alpn: { type: 'string', default: 'http/1.1' },
        names: { type: 'string', default: '' },
        dir: { type: 'string' },
        'log-level': { type: 'string', default: 'info' },
        'client-ca': { type: 'string' },
        'client-auth': { type: 'string' },
        'client-crl': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return 'help';

  const port = parseInteger(values.port!, '--port', 0, 65535);
  const tickets = parseInteger(values.tickets!, '--tickets', 0, 16);
  const keyType = values['key-type']!;
  if (!isLeafKeyType(keyType)) throw new UsageError(`--key-type must be one of ${LEAF_KEY_TYPES.join(', ')}, got '${keyType}'`);
  const groups = values.groups === undefined ? DEFAULT_GROUPS : parseGroups(values.groups);
  const alpn = parseAlpn(values.alpn!);
  const logLevel = values['log-level']!;
  if (!LOG_LEVELS.includes(logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);
  const names = [...DEFAULT_LEAF_NAMES];
  for (const name of splitList(values.names!)) if (!names.includes(name.toLowerCase())) names.push(name.toLowerCase());
  const dir = resolve(values.dir ?? (env.DELEGATOR_HOME ? resolve(env.DELEGATOR_HOME, 'serve') : '.delegator/serve'));
  const clientAuth = parseClientAuth(values['client-ca'], values['client-auth'], values['client-crl']);
  if (values['no-tls12'] && values['tls12-only']) throw new UsageError('--no-tls12 and --tls12-only exclude each other');
  const tls12 = !values['no-tls12'];
  const tls13 = !values['tls12-only'];
  return { host: values.host!, port, keyType, groups, tickets, alpn, names, dir, logLevel, tls12, tls13, requireEms: values['require-ems']!, ...(clientAuth ? { clientAuth } : {}) };
}

function parseClientAuth(caFile: string | undefined, mode: string | undefined, crlFile: string | undefined): ServeConfig['clientAuth'] {
  if (caFile === undefined) {
    if (mode !== undefined || crlFile !== undefined) throw new UsageError('--client-auth and --client-crl need --client-ca FILE');
    return undefined;
  }
  const chosen = mode ?? 'required';
  if (chosen !== 'optional' && chosen !== 'required') throw new UsageError(`--client-auth must be optional or required, got '${chosen}'`);
  return { mode: chosen, caFile: resolve(caFile), ...(crlFile !== undefined ? { crlFile: resolve(crlFile) } : {}) };
}

function parseInteger(text: string, option: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${option} must be an integer, got '${text}'`);
  const value = Number(text);
  if (value < min || value > max) throw new UsageError(`${option} must be between ${min} and ${max}, got ${value}`);
  return value;
}

function parseGroups(text: string): number[] {
  const groups: number[] = [];
  for (const name of splitList(text)) {
    const group = groupByName(name);
    if (group === undefined) {
      throw new UsageError(`unknown group '${name}' in --groups (supported: ${SUPPORTED_GROUPS.map(groupName).join(', ')})`);
    }
    if (!groups.includes(group)) groups.push(group);
  }
  if (groups.length === 0) throw new UsageError('--groups needs at least one group');
  return groups;
}

/**
 * `--alpn`: comma-separated names, spaces around each trimmed, checked as the engine and the
 * edge's config check them (RFC 7301 §3.1; src/tls/alpn-names.ts). An empty value turns ALPN
 * off; an empty entry in a list ("h2,,http/1.1") is refused, not dropped.
 */
function parseAlpn(text: string): string[] {
  if (text.trim() === '') return [];
  try {
    return checkAlpnNames(
      text.split(',').map((item) => item.trim()),
      '--alpn',
      (i) => `--alpn entry ${i + 1}`,
    );
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

type HandshakeError = Error & { code?: string; alert?: number };

export interface RunningServe {
  readonly server: Server;
  readonly port: number;
  readonly url: string;
  readonly curlCommand: string;
  readonly caPath: string;
  /** Stops accepting, ends open connections (close_notify), destroys stragglers after `graceMs`. */
  close(graceMs?: number): Promise<void>;
}

/** Starts the server; resolves once it is listening. */
export async function startServe(config: ServeConfig, log: Logger): Promise<RunningServe> {
  const { ca, created: caCreated } = await loadOrCreateCa(config.dir);
  const leaf = await loadOrCreateLeaf(config.dir, ca, config.keyType, config.names);
  const caPath = demoPkiPaths(config.dir).caCertificate;
  log.info(
    { dir: config.dir, caCreated, leafCreated: leaf.created, keyType: config.keyType, notAfter: leaf.notAfter.toISOString() },
    caCreated ? 'created demo CA and certificate' : leaf.created ? 'issued new certificate from the existing demo CA' : 'reusing demo CA and certificate',
  );

  const identity: Identity = { certificateChain: leaf.certificateChain, signer: new LocalSigner(leaf.privateKey) };
  const clientAuth = config.clientAuth ? await loadServeClientAuth(config.clientAuth) : undefined;
  const options: TlsServerOptions = {
    ...(clientAuth ? { clientAuth } : {}),
    // One identity for every name, like `openssl s_server`: conformance suites send all sorts of SNI.
    resolveIdentity: () => identity,
    groups: config.groups,
    ticketCount: config.tickets,
    tls12: config.tls12,
    tls13: config.tls13,
    requireExtendedMasterSecret: config.requireEms,
    ...(config.alpn.length > 0 ? { alpnProtocols: config.alpn } : {}),
  };

  const open = new Set<TlsSocket>();
  const server = createServer(options, (socket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
    log.debug(
      {
        remote: `${socket.remoteAddress}:${socket.remotePort}`,
        serverName: socket.serverName,
        alpn: socket.alpnProtocol,
        cipherSuite: socket.cipherSuite,
        group: socket.group,
        signatureScheme: socket.signatureScheme,
        resumed: socket.resumed,
      },
      'handshake complete',
    );
    attachHttpResponder(
      socket,
      () => ({
        'TLS version': socket.handshakeInfo.version === 'TLSv1.2' ? 'TLS 1.2' : 'TLS 1.3',
        'cipher suite': socket.cipherSuite,
        'key exchange group': socket.group ?? 'none (psk_ke)',
        'signature scheme': socket.signatureScheme ?? 'none (resumed)',
        'resumed': socket.resumed ? 'yes' : 'no',
        'server name (SNI)': socket.serverName ?? 'none',
        'ALPN protocol': socket.alpnProtocol ?? 'none',
        'client certificate': socket.clientCertificate
          ? `${socket.clientCertificate.subject}${socket.clientCertificateFromSession ? ' (verified in the resumed session)' : ''}`
          : config.clientAuth ? 'none' : 'not asked for',
        'client': `${socket.remoteAddress}:${socket.remotePort}`,
        'private key': `${config.keyType}, in this process (delegator serve; the product keeps keys in keyd)`,
      }),
      {
        // Conformance suites pad requests up to full 2^14-byte records; answer those with the page.
        maxHeadBytes: 64 * 1024,
        onResponse: (status, head, reason) => log.debug({ status, method: head?.method, target: head?.target, reason }, 'http response'),
        onError: (err) => log.debug({ code: (err as HandshakeError).code, err: err.message }, 'connection error'),
      },
    );
  });
  server.on('tlsClientError', (err: HandshakeError, socket?: { remoteAddress?: string; remotePort?: number }) => {
    log.debug(
      {
        code: err.code,
        alert: err.alert === undefined ? undefined : alertName(err.alert),
        remote: socket ? `${socket.remoteAddress}:${socket.remotePort}` : undefined,
        err: err.message,
      },
      'handshake failed',
    );
  });

  await new Promise<void>((resolveListen, rejectListen) => {
    server.once('error', rejectListen);
    server.listen(config.port, config.host, () => {
      server.off('error', rejectListen);
      resolveListen();
    });
  });
  server.on('error', (err) => log.error({ err: err.message }, 'server error'));

  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const { url, curlCommand } = howToReach(config.host, port, caPath);

  const close = async (graceMs = 2000): Promise<void> => {
    const closed = new Promise<void>((resolveClose) => server.close(() => resolveClose()));
    for (const socket of open) socket.end(); // close_notify
    const timer = setTimeout(() => {
      for (const socket of open) socket.destroy();
    }, graceMs);
    await closed;
    clearTimeout(timer);
  };
  return { server, port, url, curlCommand, caPath, close };
}

/** Reads the --client-ca / --client-crl files into the engine's client-auth options. */
async function loadServeClientAuth(c: NonNullable<ServeConfig['clientAuth']>): Promise<ClientAuthOptions> {
  const read = (file: string, option: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`${option} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  return loadClientAuth({
    mode: c.mode,
    caPem: read(c.caFile, '--client-ca'),
    ...(c.crlFile ? { crlPem: read(c.crlFile, '--client-crl') } : {}),
  });
}

/**
 * The URL to print and the exact curl command. The certificate names localhost and
 * 127.0.0.1; for any other listen address curl is told to reach "localhost" there.
 */
export function howToReach(host: string, port: number, caPath: string): { url: string; curlCommand: string } {
  const url = `https://localhost:${port}/`;
  const loopbackOrAny = ['127.0.0.1', '::1', 'localhost', '0.0.0.0', '::', ''].includes(host);
  const quotedCa = shellQuote(caPath);
  if (loopbackOrAny) return { url, curlCommand: `curl --cacert ${quotedCa} ${url}` };
  const target = isIP(host) === 6 ? `[${host}]` : host;
  return { url, curlCommand: `curl --cacert ${quotedCa} --connect-to localhost:${port}:${target}:${port} ${url}` };
}

function shellQuote(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

export async function main(argv: string[]): Promise<number> {
  let config: ServeConfig | 'help';
  try {
    config = parseServeArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`delegator serve: ${err.message} (see delegator serve --help)\n`);
    return 2;
  }
  if (config === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }

  const log = pino({ name: 'serve', level: config.logLevel }, pino.destination(2));
  let running: RunningServe;
  try {
    running = await startServe(config, log);
  } catch (err) {
    const error = err as NodeJS.ErrnoException;
    if (error.code === 'EADDRINUSE') {
      process.stderr.write(`delegator serve: ${config.host}:${config.port} is already in use (try --port)\n`);
    } else {
      process.stderr.write(`delegator serve: ${error.message}\n`);
    }
    return 1;
  }

  // Signal handlers go in before the ready lines: whoever reads them may signal at once.
  const exited = new Promise<number>((resolveExit) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(130);
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      void running.close().then(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        log.info('stopped');
        resolveExit(0);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });

  if (config.keyType === 'ed25519') process.stderr.write(ED25519_WARNING);
  log.info({ host: config.host, port: running.port, groups: config.groups.map(groupName), tickets: config.tickets, alpn: config.alpn }, 'listening');
  process.stdout.write(
    `Serving ${running.url} on ${config.host}:${running.port} (${config.tls13 && config.tls12 ? 'TLS 1.3 + 1.2' : config.tls13 ? 'TLS 1.3' : 'TLS 1.2'}, ${config.keyType} key in this process)\n` +
      `CA certificate: ${running.caPath}\n` +
      (config.clientAuth ? `Client certificates: ${config.clientAuth.mode}, CAs from ${config.clientAuth.caFile}\n` : '') +
      `Try: ${running.curlCommand}\n`,
  );
  return exited;
}
