/**
 * `delegator status` — how a running system is doing, in one screen: keyd's health (its
 * admin socket answers), the edge's health (its /metrics answers and it is connected to
 * keyd), and for every name keyd serves: key type, back-end, certificate expiry and signing
 * counts. Reads only; changes nothing.
 */
import { request } from 'node:http';
import { parseArgs } from 'node:util';
import { LocalAdminTransport, type AdminTransport } from '../keyd/admin-client.js';
import type { KeyInfo } from '../keyd/keyring.js';
import { parseHostPort } from '../edge/config.js';
import { DEFAULT_EXPIRY_WARNING_DAYS, expiryNotice } from '../lib/expiry.js';
import { MAX_TIMER_MS } from '../keyd/limits.js';
import { DEFAULT_ADMIN_SOCKET } from './keyd.js';

export const summary = 'health of keyd and the edge, and each name: key type, back-end, expiry, signatures';

const USAGE = `Usage: delegator status [--socket PATH] [--edge-metrics HOST:PORT] [--json]

Asks keyd (admin socket) for its keys and signing counts and the edge (its Prometheus
endpoint, the edge config's "metrics") for its health, and prints:

  keyd   up or down; keys held
  edge   up or down; connected to keyd or not; handshakes ok/failed; open connections
  one row per key: names, key type, back-end, certificate notAfter and days left (flagged
  within --warn-days), signatures and refusals (totals kept across restarts)

Options:
  --socket PATH            keyd's admin socket (default $KEYD_ADMIN_SOCKET or ${DEFAULT_ADMIN_SOCKET})
  --edge-metrics HOST:PORT the edge's metrics address; repeat for several edges
  --warn-days N            flag certificates expiring within N days (default ${DEFAULT_EXPIRY_WARNING_DAYS})
  --timeout SEC            per request (default 5, at most 2147483)
  --json                   the same as JSON
  -h, --help               this text

Exit codes: 0 everything up (and every edge connected to keyd), 1 something is down, 2 usage.
`;

export interface KeyStatus {
  names: string[];
  keyRef: string;
  keyType: string;
  backend: string;
  notAfter: string | null;
  daysLeft: number | null;
  expiringSoon: boolean;
  signatures: number;
  refusals: number;
}

export interface EdgeStatus {
  address: string;
  up: boolean;
  error?: string;
  keydConnected?: boolean;
  handshakesOk?: number;
  handshakesFailed?: number;
  openConnections?: number;
}

export interface SystemStatus {
  keyd: { socket: string; up: boolean; error?: string; keys?: number };
  edges: EdgeStatus[];
  keys: KeyStatus[];
}

/** Prometheus text → samples (name, labels, value); comments and malformed lines are skipped. */
export function parsePrometheusText(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m || Number.isNaN(Number(m[3]))) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function fetchText(address: string, timeoutMs: number): Promise<string> {
  const { host, port } = parseHostPort(address, '--edge-metrics');
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: '/metrics', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.length > 16 * 1024 * 1024) req.destroy(new Error('metrics answer over 16 MiB'));
      });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

async function edgeStatus(address: string, timeoutMs: number): Promise<EdgeStatus> {
  let text: string;
  try {
    text = await fetchText(address, timeoutMs);
  } catch (err) {
    return { address, up: false, error: (err as NodeJS.ErrnoException).code ?? (err as Error).message };
  }
  const samples = parsePrometheusText(text);
  const sum = (name: string, where: (labels: Record<string, string>) => boolean = () => true) =>
    samples.filter((s) => s.name === name && where(s.labels)).reduce((a, s) => a + s.value, 0);
  return {
    address,
    up: true,
    keydConnected: sum('edge_keyd_connected') > 0,
    handshakesOk: sum('edge_handshakes_total', (l) => l.outcome === 'ok'),
    handshakesFailed: sum('edge_handshakes_total', (l) => l.outcome === 'failed'),
    openConnections: sum('edge_active_connections'),
  };
}

export async function collectStatus(opts: {
  socket: string;
  edges: readonly string[];
  warnDays: number;
  timeoutMs: number;
  now?: number;
  connect?: (socket: string, timeoutMs: number) => Promise<AdminTransport>;
}): Promise<SystemStatus> {
  const now = opts.now ?? Date.now();
  const status: SystemStatus = { keyd: { socket: opts.socket, up: false }, edges: [], keys: [] };
  const edges = Promise.all(opts.edges.map((e) => edgeStatus(e, opts.timeoutMs)));
  let transport: AdminTransport | undefined;
  try {
    transport = await (opts.connect ?? LocalAdminTransport.connect)(opts.socket, opts.timeoutMs);
    const [keys, stats] = await Promise.all([transport.list(), transport.stats()]);
    status.keyd = { socket: opts.socket, up: true, keys: keys.length };
    status.keys = keys.map((k: KeyInfo) => {
      let signatures = 0;
      let refusals = 0;
      for (const client of Object.values(stats)) {
        const counts = client.keys?.[k.keyRef];
        signatures += counts?.signatures ?? 0;
        refusals += counts?.refusals ?? 0;
      }
      const notice = expiryNotice({ names: k.names, notAfter: k.notAfter }, now, opts.warnDays);
      const daysLeft = k.notAfter ? Math.floor((Date.parse(k.notAfter) - now) / 86_400_000) : null;
      return { names: k.names, keyRef: k.keyRef, keyType: k.keyType, backend: k.location ?? 'software', notAfter: k.notAfter, daysLeft, expiringSoon: notice !== undefined, signatures, refusals };
    });
  } catch (err) {
    const code = (err as { code?: string }).code;
    status.keyd = { socket: opts.socket, up: false, error: `${(err as Error).message}${code ? ` [${code}]` : ''}` };
  } finally {
    transport?.close();
  }
  status.edges = await edges;
  return status;
}

export function formatStatus(status: SystemStatus): string {
  const lines: string[] = [];
  const k = status.keyd;
  lines.push(k.up ? `keyd   up    ${k.socket}: ${k.keys} key(s)` : `keyd   DOWN  ${k.socket}: ${k.error}`);
  if (status.edges.length === 0) lines.push('edge   (not checked: give --edge-metrics HOST:PORT, the edge config\'s "metrics")');
  for (const e of status.edges) {
    lines.push(
      !e.up
        ? `edge   DOWN  ${e.address}: ${e.error}`
        : `edge   up    ${e.address}: ${e.keydConnected ? 'connected to keyd' : 'NOT connected to keyd'}; handshakes ${e.handshakesOk} ok, ${e.handshakesFailed} failed; ${e.openConnections} open connection(s)`,
    );
  }
  if (k.up) {
    lines.push('');
    const header = ['NAMES', 'KEY TYPE', 'BACK-END', 'NOT AFTER', 'DAYS LEFT', 'SIGNATURES', 'REFUSALS'];
    const rows = status.keys.map((key) => [
      key.names.join(','),
      key.keyType,
      key.backend,
      key.notAfter ?? '(no chain)',
      key.daysLeft === null ? '-' : `${key.daysLeft}${key.expiringSoon ? (key.daysLeft < 0 ? ' EXPIRED' : ' RENEW') : ''}`,
      String(key.signatures),
      String(key.refusals),
    ]);
    if (rows.length === 0) lines.push('(keyd holds no keys)');
    else {
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
      for (const r of [header, ...rows]) lines.push(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
    }
  }
  return lines.join('\n') + '\n';
}

export function healthy(status: SystemStatus): boolean {
  return status.keyd.up && status.edges.every((e) => e.up && e.keydConnected);
}

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        socket: { type: 'string' },
        'edge-metrics': { type: 'string', multiple: true },
        'warn-days': { type: 'string' },
        timeout: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
    if (values.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    for (const e of values['edge-metrics'] ?? []) parseHostPort(e, '--edge-metrics');
    if (values['warn-days'] !== undefined && !/^\d{1,4}$/.test(values['warn-days'])) throw new Error('--warn-days must be a number of days');
    // Node runs a timer longer than MAX_TIMER_MS after 1 ms: "--timeout 3000000" (or Infinity)
    // would give keyd and every edge 1 ms and report them down.
    if (values.timeout !== undefined && !(Number(values.timeout) > 0 && Number(values.timeout) * 1000 <= MAX_TIMER_MS)) {
      throw new Error(`--timeout must be a positive number of seconds, at most ${Math.floor(MAX_TIMER_MS / 1000)}`);
    }
  } catch (err) {
    process.stderr.write(`delegator status: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const status = await collectStatus({
    socket: values.socket ?? (process.env.KEYD_ADMIN_SOCKET || DEFAULT_ADMIN_SOCKET),
    edges: values['edge-metrics'] ?? [],
    warnDays: values['warn-days'] === undefined ? DEFAULT_EXPIRY_WARNING_DAYS : Number(values['warn-days']),
    timeoutMs: values.timeout === undefined ? 5000 : Number(values.timeout) * 1000,
  });
  process.stdout.write(values.json ? JSON.stringify(status, null, 2) + '\n' : formatStatus(status));
  return healthy(status) ? 0 : 1;
}
