/**
 * `npm run bench:handshake` — server CPU time per full TLS 1.3 and TLS 1.2 handshake,
 * measured in ONE run under the same load generator per version (TLS 1.3:
 * ../shared/tools/hsload; TLS 1.2: bench/lib/tls12-load.ts, node:tls with TLS 1.2 forced):
 *
 *   engine    our TLS engine, in-process key (LocalSigner), own process
 *   node:tls  Node's TLS (OpenSSL), same key and chain, own process
 *   nginx     1 worker, TLS 1.2 + 1.3 with the ECDHE AEAD suites, same key and chain (when installed)
 *
 * Each server gets a warm-up run (15 s by default: V8 keeps compiling the engine's
 * JavaScript for the first ~10–15 s under load, on background threads whose CPU /proc counts;
 * a shorter warm-up charges that one-off compilation to the measured handshakes — see
 * docs/BENCHMARKS.md, "JIT warm-up"), then a measured run; its utime+stime from
 * /proc/PID/stat before and after, divided by the handshakes completed, is the figure
 * that compares servers fairly on a small machine where the client bounds the rate.
 *
 * Options: --duration S (10) --warmup S (15) --concurrency N (8) --key-type T (ecdsa-p256)
 *          --curve x25519|p256 (x25519) --servers engine,node,nginx --request (send a GET
 *          after each handshake) --rounds N (1: alternate the servers N times and sum, which
 *          evens out a machine whose background load changes) --versions 1.3,1.2 (both)
 *          --json (also print JSON)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir, cpus, totalmem } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { makeTestPki, writePkiFiles, TEST_KEY_TYPES, type TestKeyType } from '../test/helpers/pki.js';
import { goDurationAsMs, markdownTable } from './lib/format.js';
import { ensureHsload, runHsload, type HsloadResult } from './lib/hsload.js';
import { runTls12Load } from './lib/tls12-load.js';
import { totalCpuTimeMicros } from './lib/proc-stat.js';
import { nginxBinary, startNginx } from './lib/nginx.js';
import { freePort } from '../test/helpers/ports.js';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/bench → repository root. */
const repoRoot = resolve(here, '../..');

interface RunningServer {
  name: string;
  port: number;
  pids: number[];
  stop(): Promise<void>;
}

interface Row {
  server: string;
  version: '1.3' | '1.2';
  result: HsloadResult;
  cpuMicrosPerHandshake: number;
}

const USAGE = `Usage: npm run bench:handshake -- [options]
  --duration S       measured seconds per server (default 10)
  --warmup S         warm-up seconds per server, not measured (default 15: until V8's JIT settles)
  --concurrency N    hsload workers (default 8)
  --key-type T       ${TEST_KEY_TYPES.join('|')} (default ecdsa-p256)
  --curve C          x25519|p256 key share offered by the client (default x25519)
  --servers LIST     engine,node,nginx (default all; nginx skipped when not installed)
  --request          send 'GET / HTTP/1.0' after each handshake and read the answer
  --rounds N         run the servers in turn N times, --duration each, and sum (default 1)
  --versions LIST    1.3,1.2 (default both): TLS 1.3 rows with hsload, TLS 1.2 rows with node:tls
  --json             also print the rows as JSON
`;

async function startNodeProcess(impl: 'engine' | 'node', chainFile: string, keyFile: string): Promise<RunningServer> {
  const script = join(here, 'lib', 'tls-server-process.js');
  const child: ChildProcess = spawn(process.execPath, [script, '--impl', impl, '--cert', chainFile, '--key', keyFile], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolvePort, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${impl} server did not start`)), 10_000);
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /listening (\d+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolvePort(Number(match[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${impl} server exited with ${code}`));
    });
  });
  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
  return {
    name: impl === 'engine' ? 'engine' : 'node:tls',
    port,
    pids: [child.pid!],
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function describeMachine(): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  let os = 'Linux';
  try {
    os = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? os;
  } catch {
    // not fatal: only for the report
  }
  return `${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${os}, Node ${process.version}, OpenSSL ${process.versions.openssl}`;
}

function formatTable(rows: Row[]): string {
  const header = ['server', 'TLS', 'handshakes', 'failed', 'rate/s', 'p50', 'p99', 'CPU µs/handshake', 'vs node:tls'];
  const lines = rows.map((row) => {
    const reference = rows.find((r) => r.server === 'node:tls' && r.version === row.version);
    return [
    row.server,
    row.version,
    String(row.result.handshakes),
    String(row.result.failed),
    row.result.rate.toFixed(0),
    goDurationAsMs(row.result.p50),
    goDurationAsMs(row.result.p99),
    row.cpuMicrosPerHandshake.toFixed(0),
    reference ? `${(row.cpuMicrosPerHandshake / reference.cpuMicrosPerHandshake).toFixed(2)}×` : '—',
    ];
  });
  return markdownTable(header, lines, 2);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '15' },
      concurrency: { type: 'string', default: '8' },
      'key-type': { type: 'string', default: 'ecdsa-p256' },
      curve: { type: 'string', default: 'x25519' },
      servers: { type: 'string', default: 'engine,node,nginx' },
      versions: { type: 'string', default: '1.3,1.2' },
      request: { type: 'boolean', default: false },
      rounds: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const duration = Number(values.duration);
  const warmup = Number(values.warmup);
  const concurrency = Number(values.concurrency);
  const rounds = Number(values.rounds);
  const keyType = values['key-type'] as TestKeyType;
  const curve = values.curve;
  const wanted = values.servers.split(',').map((s) => s.trim());
  const versions = values.versions.split(',').map((s) => s.trim());
  if (versions.length === 0 || versions.some((v) => v !== '1.3' && v !== '1.2')) {
    process.stderr.write(USAGE);
    return 2;
  }
  if (!(duration > 0) || !(warmup >= 0) || !(concurrency > 0) || !(Number.isInteger(rounds) && rounds > 0) || !TEST_KEY_TYPES.includes(keyType) || (curve !== 'x25519' && curve !== 'p256')) {
    process.stderr.write(USAGE);
    return 2;
  }
  const log = (line: string): void => void process.stderr.write(`${line}\n`);

  const hsload = ensureHsload(repoRoot, log);
  const pki = await makeTestPki({ keyType });
  const files = writePkiFiles(pki);
  const workDir = mkdtempSync(join(tmpdir(), 'bench-handshake-'));
  const servers: RunningServer[] = [];
  try {
    if (wanted.includes('engine')) servers.push(await startNodeProcess('engine', files.chainFile, files.keyFile));
    if (wanted.includes('node')) servers.push(await startNodeProcess('node', files.chainFile, files.keyFile));
    if (wanted.includes('nginx')) {
      const binary = nginxBinary();
      if (!binary) log('nginx not installed (apt-get install nginx-light): skipped');
      else {
        const nginx = await startNginx(binary, workDir, await freePort(), files.chainFile, files.keyFile, { protocols: 'TLSv1.2 TLSv1.3' });
        servers.push({ name: `nginx ${nginx.version}`, port: nginx.port, pids: nginx.pids, stop: () => nginx.stop() });
      }
    }

    log(`machine: ${describeMachine()}`);
    log(`hsload: ${concurrency} workers, ${duration}s measured (+${warmup}s warm-up) per server, key ${keyType}, client key share ${curve}${values.request ? ', GET after each handshake' : ', handshake only'}`);
    const totals = new Map<string, { server: RunningServer; version: '1.3' | '1.2'; result: HsloadResult; cpuMicros: number; rates: number[] }>();
    const auth = keyType.startsWith('rsa') ? 'RSA' : 'ECDSA';
    for (let round = 1; round <= rounds; round++) {
      for (const version of versions as ('1.3' | '1.2')[])
      for (const server of servers) {
        const run = {
          address: `127.0.0.1:${server.port}`,
          sni: 'localhost',
          caFile: files.caFile,
          concurrency,
          curve: curve as 'x25519' | 'p256',
          ...(values.request ? { request: 'GET / HTTP/1.0\r\n\r\n' } : {}),
        };
        const load = (durationSeconds: number): Promise<HsloadResult> =>
          version === '1.3'
            ? runHsload(hsload, { ...run, durationSeconds })
            : runTls12Load({ host: '127.0.0.1', port: server.port, sni: 'localhost', caFile: files.caFile, concurrency, durationSeconds, curve: run.curve, cipher: `ECDHE-${auth}-AES128-GCM-SHA256`, ...(run.request ? { request: run.request } : {}) });
        if (warmup > 0 && round === 1) await load(warmup);
        const before = totalCpuTimeMicros(server.pids);
        const result = await load(duration);
        const cpuMicros = totalCpuTimeMicros(server.pids) - before;
        log(`${rounds > 1 ? `round ${round} ` : ''}${server.name} TLS ${version}: ${result.handshakes} handshakes, ${result.failed} failed, ${(cpuMicros / result.handshakes).toFixed(0)} µs CPU each${result.firstError ? ` (first error: ${result.firstError})` : ''}`);
        const key = `${server.name} ${version}`;
        const total = totals.get(key);
        if (!total) totals.set(key, { server, version, result, cpuMicros, rates: [result.rate] });
        else {
          // Latency percentiles of the last round are shown; counts and CPU are summed.
          total.result = { ...result, handshakes: total.result.handshakes + result.handshakes, failed: total.result.failed + result.failed };
          total.cpuMicros += cpuMicros;
          total.rates.push(result.rate);
        }
      }
    }
    const rows: Row[] = [...totals.values()].map((total) => {
      const rate = total.rates.reduce((a, b) => a + b, 0) / total.rates.length;
      return {
        server: total.server.name,
        version: total.version,
        result: { ...total.result, rate },
        cpuMicrosPerHandshake: total.result.handshakes > 0 ? total.cpuMicros / total.result.handshakes : Number.NaN,
      };
    });
    process.stdout.write(formatTable(rows) + '\n');
    if (values.json) process.stdout.write(JSON.stringify({ machine: describeMachine(), keyType, curve, concurrency, duration, rounds, rows }, null, 2) + '\n');
    return rows.some((r) => r.result.failed > 0 || r.result.handshakes === 0) ? 1 : 0;
  } finally {
    for (const server of servers) await server.stop();
    files.remove();
    rmSync(workDir, { recursive: true, force: true });
  }
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    process.stderr.write(`bench:handshake: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
