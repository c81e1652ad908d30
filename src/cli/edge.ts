import { parseArgs } from 'node:util';
import { parseRouteFlag, readConfigDocument, validateConfig, type EdgeConfig } from '../edge/config.js';
import cluster from 'node:cluster';
import { runEdge, runEdgeWorker } from '../edge/run.js';

export const summary = 'the TLS edge: terminates TLS by SNI route, signs through keyd, proxies to upstreams';

const HELP = `Usage: delegator edge [--config edge.json] [options]

Terminates TLS 1.3 for the configured names, signs every handshake through keyd (the edge
holds no private key) and relays plaintext to each route's upstream. Flags override the file.

  --config FILE            JSON config (docs/EDGE.md lists every key)
  --listen HOST:PORT       listener (repeatable; default 127.0.0.1:8443)
  --keyd PATH              keyd signing socket (repeatable: the first is preferred, the others failover)
  --route NAMES=HOST:PORT  e.g. 'example.com,*.example.com=127.0.0.1:8080' (repeatable)
  --proxy-protocol         send a PROXY v2 header (client address, server name) on --route upstreams
  --alpn LIST              ALPN protocols for --route routes, e.g. h2,http/1.1
  --default-name NAME      identity for ClientHellos without SNI
  --workers N              worker processes (default: CPU count)
  --max-connections N      per worker (default 10000)
  --handshake-timeout MS   (default 10000)
  --idle-timeout MS        (default 120000)
  --drain-timeout MS       after SIGTERM (default 30000)
  --upstream-connect-timeout MS  upstream TCP connect, after the handshake (default 10000)
  --metrics HOST:PORT      Prometheus endpoint at /metrics
  --tickets N              session tickets per handshake (default 2; 0 = no resumption)
  --log-level LEVEL        fatal|error|warn|info|debug|trace|silent (default info)
  --check-config           validate the configuration, print it, and exit
  -h, --help
`;

export function configFromArgs(argv: string[]): { config: EdgeConfig; checkOnly: boolean } | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      config: { type: 'string' },
      listen: { type: 'string', multiple: true },
      keyd: { type: 'string', multiple: true },
      route: { type: 'string', multiple: true },
      'proxy-protocol': { type: 'boolean' },
      alpn: { type: 'string' },
      'default-name': { type: 'string' },
      workers: { type: 'string' },
      'max-connections': { type: 'string' },
      'handshake-timeout': { type: 'string' },
      'idle-timeout': { type: 'string' },
      'drain-timeout': { type: 'string' },
      'upstream-connect-timeout': { type: 'string' },
      metrics: { type: 'string' },
      tickets: { type: 'string' },
      'log-level': { type: 'string' },
      'check-config': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const { doc, baseDir } = values.config ? readConfigDocument(values.config) : { doc: {}, baseDir: process.cwd() };
  const num = (flag: string, text: string | undefined): number | string | undefined =>
    text === undefined ? undefined : /^\d+$/.test(text) ? Number(text) : `--${flag} ${text}`;
  const alpn = values.alpn ? values.alpn.split(',') : [];
  if (values.listen) doc.listen = values.listen;
  if (values.keyd) doc.keyd = values.keyd;
  if (values.route) doc.routes = values.route.map((r) => parseRouteFlag(r, values['proxy-protocol'] ?? false, alpn));
  if (values['default-name']) doc.defaultServerName = values['default-name'];
  if (values.workers !== undefined) doc.workers = num('workers', values.workers);
  if (values.metrics) doc.metrics = values.metrics;
  if (values.tickets !== undefined) doc.tickets = num('tickets', values.tickets);
  if (values['log-level']) doc.logLevel = values['log-level'];
  const limits: Record<string, unknown> = typeof doc.limits === 'object' && doc.limits ? { ...(doc.limits as object) } : {};
  const limitFlags = [
    ['max-connections', 'maxConnections'],
    ['handshake-timeout', 'handshakeTimeoutMs'],
    ['idle-timeout', 'idleTimeoutMs'],
    ['drain-timeout', 'drainTimeoutMs'],
    ['upstream-connect-timeout', 'upstreamConnectTimeoutMs'],
  ] as const;
  for (const [flag, key] of limitFlags) {
    if (values[flag] !== undefined) limits[key] = num(flag, values[flag]);
  }
  if (Object.keys(limits).length) doc.limits = limits;
  return { config: validateConfig(doc, baseDir), checkOnly: values['check-config'] ?? false };
}

/**
 * What --check-config prints: the effective config with every file's contents (the keyd
 * client key, certificates, CA and CRL PEMs) replaced by its size. JSON.stringify calls a
 * Buffer's toJSON before the replacer sees it, so the replacer looks at the holder's own
 * property: the value it is handed is already { type: 'Buffer', data: [...] }.
 */
export function describeConfig(config: EdgeConfig): string {
  return JSON.stringify(
    config,
    function (this: Record<string, unknown>, key: string, value: unknown) {
      const original = key === '' ? value : this[key];
      return Buffer.isBuffer(original) ? `<${original.length} bytes read>` : value;
    },
    2,
  );
}

export async function main(argv: string[]): Promise<number> {
  // A worker of `--workers N` runs the config its primary sends, not the file as it is now
  // (docs/EDGE.md, Workers).
  if (cluster.isWorker) return runEdgeWorker();
  let parsed: ReturnType<typeof configFromArgs>;
  try {
    parsed = configFromArgs(argv);
  } catch (err) {
    const e = err as Error & { code?: string };
    process.stderr.write(`delegator edge: ${e.message}${e.code === 'EDGE_CONFIG' ? '' : '\n' + HELP}\n`);
    return 2;
  }
  if (parsed === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  if (parsed.checkOnly) {
    process.stdout.write(`configuration OK\n${describeConfig(parsed.config)}\n`);
    return 0;
  }
  // SIGHUP reads the same file and flags again (docs/EDGE.md, "Reload").
  return runEdge(parsed.config, () => {
    const again = configFromArgs(argv);
    if (again === 'help') throw new Error('unreachable: --help at reload');
    return again.config;
  });
}
