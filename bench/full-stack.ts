/**
 * `npm run bench` — the whole system under one external load generator (../shared/tools/hsload),
 * in ONE run, for ECDSA P-256 and RSA-2048 leaves:
 *
 *   (a) edge + keyd        `delegator edge` (N workers) signing through `delegator keyd` (unix socket)
 *   (b) edge, local key    the same edge code with an in-process signer (no keyd round trip)
 *   (c) node:tls           Node's TLS (OpenSSL) with the key in process
 *   (d) nginx              1 worker, TLS 1.3 only (when installed)
 *   (e) nginx + provider + keyd   the same nginx, its key file a DELEGATOR KEY REFERENCE: the
 *                          OpenSSL provider (plugins/openssl-provider) signs through keyd
 *   (f) nginx stream proxy nginx terminating TLS and proxying to the same upstream (libnginx-mod-stream)
 *   (g) haproxy            TCP mode with TLS, to the same upstream
 *   (h) node:tls pipe      a node:tls server piping each connection to the same upstream
 *   (i) edge + keyd, delegated credentials: (a)'s processes, the leaf allowing delegation
 *       (RFC 9345; every leaf of the run carries DelegationUsage, which only (i)'s client
 *       uses), loaded by a client that offers delegated credentials, so the edge signs
 *       CertificateVerify with a credential (ECDSA P-256) that keyd issued once at start.
 *       hsload (Go) offers no delegated credentials, so the load is a pool of NSS
 *       `tstclnt -B` processes (`--concurrency` of them, each reconnecting with -L; the edge
 *       sends no tickets, so every connection is a full handshake). Each sends a small
 *       request that an upstream answering at once ends (a tstclnt that sends nothing waits
 *       for the server to close), so (i)'s edge CPU also holds one request, one answer and
 *       their records, which hsload's handshake-only connections do not. Handshakes are
 *       counted by the edge's own metric, by signing path: only credential-signed ones
 *       count, a keyd-signed one is reported as an error. Compare CPU per handshake, not the
 *       rate: the rate is the tstclnt pool's, a much slower client than hsload.
 *
 * (a), (b), (f), (g), (h) do the same work: terminate, connect to the upstream, forward,
 * with the same PROXY setting (--proxy-protocol: v2; nginx can only send v1). (c), (d), (e)
 * only terminate. With --rounds N every server runs N times, interleaved, and the table
 * shows the median round per server (a shared machine's load moves all of a round).
 *
 * Every server runs in its own process(es); CPU time is utime+stime from /proc/PID/stat
 * before/after the measured run, divided by the handshakes completed — for the edge and
 * for keyd separately. The edges proxy to an upstream (a TCP sink in this process, not
 * counted): each accepted TLS connection costs them one upstream connect, as in production.
 *
 * Targets: (a) rate ≥ 90 % of (b) with one worker; edge CPU per handshake in
 * (a) ≤ 0.5 × node:tls.
 */
import { goDurationAsMs, markdownTable } from './lib/format.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { X509Certificate, createPrivateKey, sign as cryptoSign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { validateConfig } from '../src/edge/config.js';
import { startEdge } from '../src/edge/edge.js';
import { loadEngine } from '../src/edge/engine.js';
import type { KeydConnection, KeydIdentityLike } from '../src/edge/keyd-pool.js';
import { KeydClient } from '../src/keyd/client.js';
import { Opcode } from '../src/keyd/protocol.js';
import { LocalSigner, keyTypeOf } from '../src/tls/index.js';
import { makeTestPki, writePkiFiles, type TestKeyType } from '../test/helpers/pki.js';
import { freePort, waitForPort } from '../test/helpers/ports.js';
import { providerUnbuildable, setUpKeyAndReference } from '../test/plugins/openssl-provider/harness.js';
import { ensureHsload, runHsload, type HsloadResult } from './lib/hsload.js';
import { nginxBinary, startNginx } from './lib/nginx.js';
import { childPids, totalCpuTimeMicros } from './lib/proc-stat.js';
import { listeningPort, startHaproxy, startNginxStream, startNodeTlsPipe, type ProxySpec, type Started } from './lib/proxies.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const MAIN = join(repoRoot, 'dist/src/cli/main.js');
const SELF = fileURLToPath(import.meta.url);

const USAGE = `Usage: npm run bench -- [options]
  --duration S      measured seconds per server (default 10)
  --warmup S        warm-up seconds per server (default 15: until V8's JIT settles, docs/BENCHMARKS.md)
  --concurrency N   hsload workers (default 8)
  --key-types LIST  ecdsa-p256,rsa2048 (default both)
  --workers LIST    edge worker counts for (a), e.g. 1,2,4,8 (default 1)
  --servers LIST    keyd,local,node,nginx,nginx-keyd,nginx-stream,haproxy,node-pipe,dc (default all;
                    dc = (i), needs tstclnt and certutil: apt-get install libnss3-tools)
  --rounds N        measured runs per server, interleaved; the median is shown (default 1)
  --proxy-protocol  the proxies send a PROXY header to the upstream (v2; nginx v1)
`;

interface Server_ {
  name: string;
  port: number;
  /** Its own load instead of hsload ((i): a tstclnt -B pool); the row counts only what it reports. */
  load?: (durationSeconds: number) => Promise<HsloadResult>;
  /** Process groups whose CPU is reported, e.g. { edge: [...], keyd: [...] }. */
  pids: () => Record<string, number[]>;
  stop(): Promise<void>;
}

interface Row {
  keyType: string;
  server: string;
  result: HsloadResult;
  cpu: Record<string, number>;
}

// ---------------------------------------------------------------- child mode: edge with a local key

/** `full-stack.js --local-edge JSON`: the edge code with an in-process signer instead of keyd. */
async function runLocalEdge(spec: { port: number; upstreamPort: number; chainFile: string; keyFile: string; workers: number; proxyProtocol?: boolean }) {
  const key = createPrivateKey(readFileSync(spec.keyFile));
  const chain = (readFileSync(spec.chainFile, 'latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (pem) => new Uint8Array(new X509Certificate(pem).raw),
  );
  const signer = new LocalSigner(key);
  const identity: KeydIdentityLike = {
    names: ['localhost'],
    keyRef: 'local',
    keyType: keyTypeOf(key)!,
    schemes: [...signer.schemes],
    tls12Schemes: [...signer.tls12Schemes],
    certificateChain: chain,
    version: 1,
  };
  const local = Object.assign(new EventEmitter(), {
    ping: async () => undefined,
    identity: async () => identity,
    sign: (_ref: string, _name: string, scheme: number, hash: Uint8Array) => signer.sign({ kind: 'tls13-certificate-verify', scheme, transcriptHash: hash }),
    signServerKeyExchange: (_ref: string, _name: string, scheme: number, clientRandom: Uint8Array, serverRandom: Uint8Array, serverParams: Uint8Array) =>
      signer.sign({ kind: 'tls12-server-key-exchange', scheme, clientRandom, serverRandom, serverParams }),
    close: () => undefined,
  }) as KeydConnection;
  const config = validateConfig({
    listen: [`127.0.0.1:${spec.port}`],
    keyd: '/in-process',
    routes: [{ names: ['localhost'], upstream: `127.0.0.1:${spec.upstreamPort}`, proxyProtocol: spec.proxyProtocol ?? false }],
    defaultServerName: 'localhost',
    workers: 1,
    logLevel: 'warn',
  });
  await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: async () => local, logger: pino({ level: 'warn' }) });
  process.stdout.write(`listening ${spec.port}\n`);
  process.on('SIGTERM', () => process.exit(0));
}

// ---------------------------------------------------------------- parent mode

/**
 * BENCH_PROFILE_DIR=DIR: every server process this bench spawns runs under `node --cpu-prof`
 * and writes its profile into DIR when it stops (summarise with bench/profile-summary.ts).
 */
const profileArgs = process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [];

function spawnLogged(args: string[], name: string): { child: ChildProcess; log: () => string } {
  const child = spawn(process.execPath, [...profileArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal !== 'SIGTERM' && signal !== 'SIGKILL' && code !== null) process.stderr.write(`${name} exited ${code}:\n${log}\n`);
  });
  return { child, log: () => log };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** A local upstream for the edges: `serve` runs on each accepted socket (whose errors are ignored); close() ends them all. */
async function startUpstreamServer(serve: (s: Socket) => void): Promise<{ port: number; close(): void }> {
  const sockets = new Set<Socket>();
  const server: Server = createNetServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.resume();
    serve(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** A TCP sink standing in for the upstream app: reads and discards, closes when the edge closes. */
const startSink = () => startUpstreamServer((s) => s.on('end', () => s.end()));

/** For (i): an upstream that answers at once and closes, so each tstclnt connection ends (and -L reconnects). */
const startAnsweringUpstream = () => startUpstreamServer((s) => s.end('HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok'));

async function startKeydAndEdge(
  dir: string,
  pki: Awaited<ReturnType<typeof makeTestPki>>,
  upstreamPort: number,
  workers: number,
  proxyProtocol: boolean,
  edgeArgs: string[] = [],
): Promise<Server_> {
  writeFileSync(join(dir, 'machine-id'), '00112233445566778899aabbccddeeff\n');
  const sock = join(dir, 'k.sock');
  const adminSock = join(dir, 'ka.sock');
  const keyd = spawnLogged(
    [MAIN, 'keyd', '--data', join(dir, 'data'), '--root-key', join(dir, 'root.key'), '--socket', sock, '--admin-socket', adminSock, '--machine-id', join(dir, 'machine-id'), '--log-level', 'warn'],
    'keyd',
  );
  let admin: KeydClient | undefined;
  for (let i = 0; i < 100 && !admin; i++) {
    admin = await KeydClient.connect({ socketPath: adminSock }).catch(async () => {
      await new Promise((r) => setTimeout(r, 100));
      return undefined;
    });
  }
  if (!admin) throw new Error(`keyd did not start:\n${keyd.log()}`);
  await admin.admin(Opcode.put, { names: ['localhost'] }, [pki.leafKey.export({ format: 'der', type: 'pkcs8' }), ...pki.chainDer]);
  admin.close();
  const port = await freePort();
  const edge = spawnLogged(
    [MAIN, 'edge', '--listen', `127.0.0.1:${port}`, '--keyd', sock, '--route', `localhost=127.0.0.1:${upstreamPort}`, '--default-name', 'localhost', '--workers', String(workers), '--log-level', 'warn', ...(proxyProtocol ? ['--proxy-protocol'] : []), ...edgeArgs],
    'edge',
  );
  await waitForPort(port, 20_000);
  return {
    name: `(a) edge + keyd, ${workers} worker${workers > 1 ? 's' : ''}`,
    port,
    pids: () => ({ edge: [edge.child.pid!, ...childPids(edge.child.pid!)], keyd: [keyd.child.pid!] }),
    async stop() {
      await stopChild(edge.child);
      await stopChild(keyd.child);
    },
  };
}

export async function startLocalEdge(files: { chainFile: string; keyFile: string }, upstreamPort: number, proxyProtocol = false): Promise<Server_> {
  const port = await freePort();
  const p = spawnLogged([SELF, '--local-edge', JSON.stringify({ port, upstreamPort, chainFile: files.chainFile, keyFile: files.keyFile, workers: 1, proxyProtocol })], 'local edge');
  await waitForPort(port, 20_000);
  return { name: '(b) edge, in-process key', port, pids: () => ({ edge: [p.child.pid!] }), stop: () => stopChild(p.child) };
}

/** The edge's Prometheus counters that (i) reads: handshakes by signing path, failed handshakes, credentials issued. */
async function edgeCounters(metricsPort: number): Promise<{ credential: number; keyd: number; failed: number; issued: number; issueFailed: number }> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const sum = (re: RegExp) => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  return {
    credential: sum(/^edge_handshakes_by_signing_path_total\{path="credential"\} (\d+)/gm),
    keyd: sum(/^edge_handshakes_by_signing_path_total\{path="keyd"\} (\d+)/gm),
    failed: sum(/^edge_handshakes_total\{[^}]*outcome="failed"[^}]*\} (\d+)/gm),
    issued: sum(/^edge_delegated_credential_issuances_total\{outcome="ok"\} (\d+)/gm),
    issueFailed: sum(/^edge_delegated_credential_issuances_total\{outcome="failed"\} (\d+)/gm),
  };
}

/**
 * (i): (a)'s processes, the edge without tickets (every connection a full handshake) and with
 * its metrics on; once the edge holds the credential it obtained from keyd at start, a pool
 * of `tstclnt -B` processes loads it.
 */
async function startDelegatedEdge(
  dir: string,
  pki: Awaited<ReturnType<typeof makeTestPki>>,
  caFile: string,
  upstreamPort: number,
  pool: number,
  log: (line: string) => void,
): Promise<Server_ | undefined> {
  const metricsPort = await freePort();
  const base = await startKeydAndEdge(dir, pki, upstreamPort, 1, false, ['--tickets', '0', '--metrics', `127.0.0.1:${metricsPort}`]);
  try {
    // The edge asks keyd for the credential when it connects (docs/EDGE.md); before it holds
    // one, tstclnt's handshakes would be signed by keyd.
    for (let i = 0; ; i++) {
      const counters = await edgeCounters(metricsPort).catch(() => undefined);
      if (counters && counters.issued > 0) break;
      if (counters && counters.issueFailed > 0) throw new Error('keyd refused the edge a delegated credential (see the edge log)');
      if (i > 300) throw new Error('the edge obtained no delegated credential from keyd within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await base.stop();
    throw err;
  }
  const db = mkdtempSync(join(dir, 'nss-'));
  for (const args of [
    ['-N', '-d', `sql:${db}`, '--empty-password'],
    ['-A', '-d', `sql:${db}`, '-n', 'bench-ca', '-t', 'C,,', '-i', caFile],
  ]) {
    const r = spawnSync('certutil', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`certutil ${args.join(' ')}: ${r.stderr}`);
  }
  const request = join(db, 'request.txt');
  writeFileSync(request, 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n');
  const tstclnt = (extra: string[]) => ['-h', '127.0.0.1', '-p', String(base.port), '-a', 'localhost', '-d', `sql:${db}`, '-V', 'tls1.3:tls1.3', '-B', '-A', request, ...extra];
  // One handshake first: NSS accepts no credential that an rsaEncryption certificate signed
  // (its delegated_credential list leaves out rsa_pss_rsae_*, and it checks the credential's
  // algorithm against that list), so for an RSA leaf the edge sends tstclnt no credential and
  // keyd signs (docs/EDGE.md); the row is skipped, saying so, rather than measured as
  // failures. Asynchronously: the answering upstream runs in this process.
  const probeBefore = await edgeCounters(metricsPort);
  const probe = await new Promise<{ status: number | null; stderr: string }>((done) => {
    const child = spawn('tstclnt', tstclnt([]), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.once('exit', (status) => {
      clearTimeout(timer);
      done({ status, stderr });
    });
  });
  if (probe.status !== 0) {
    const said = probe.stderr.trim().split('\n').pop() || `no exit within 20 s`;
    log(`(i) edge + keyd, delegated credentials, ${pki.keyType}: skipped: a single tstclnt -B handshake failed: ${said}`);
    await base.stop();
    return undefined;
  }
  const probeAfter = await edgeCounters(metricsPort);
  if (probeAfter.credential === probeBefore.credential) {
    log(`(i) edge + keyd, delegated credentials, ${pki.keyType}: skipped: tstclnt -B was not served a credential (keyd signed: ${probeAfter.keyd - probeBefore.keyd}); NSS accepts credentials under ECDSA certificates only`);
    await base.stop();
    return undefined;
  }
  const load = async (durationSeconds: number): Promise<HsloadResult> => {
    const before = await edgeCounters(metricsPort);
    const started = performance.now();
    const clients = Array.from({ length: pool }, () =>
      spawn('tstclnt', tstclnt(['-L', '1000000']), { stdio: 'ignore' }),
    );
    await new Promise((r) => setTimeout(r, durationSeconds * 1000));
    await Promise.all(
      clients.map((c) => {
        if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
        const exited = new Promise<void>((r) => c.once('exit', () => r()));
        c.kill('SIGKILL');
        return exited;
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const after = await edgeCounters(metricsPort);
    const credential = after.credential - before.credential;
    const keydSigned = after.keyd - before.keyd;
    return {
      handshakes: credential,
      failed: after.failed - before.failed,
      rate: credential / seconds,
      p50: '—',
      p99: '—',
      ...(keydSigned > 0 ? { firstError: `${keydSigned} handshakes were signed by keyd, not with the credential (not counted)` } : {}),
    };
  };
  return { ...base, name: '(i) edge + keyd, delegated credentials', load };
}

async function startNodeTls(files: { chainFile: string; keyFile: string }): Promise<Server_> {
  const script = join(here, 'lib', 'tls-server-process.js');
  const p = spawnLogged([script, '--impl', 'node', '--cert', files.chainFile, '--key', files.keyFile], 'node:tls');
  const port = await listeningPort(p);
  return { name: '(c) node:tls', port, pids: () => ({ server: [p.child.pid!] }), stop: () => stopChild(p.child) };
}

/** (e): nginx whose ssl_certificate_key is a reference file; the provider signs through keyd. */
async function startNginxWithProvider(binary: string, dir: string, pki: Awaited<ReturnType<typeof makeTestPki>>, files: { chainFile: string }): Promise<Server_> {
  const setup = await setUpKeyAndReference(dir, pki.keyType, pki);
  try {
    const n = await startNginx(binary, dir, await freePort(), files.chainFile, setup.refFile, { env: setup.env });
    return {
      name: `(e) nginx + provider + keyd, 1 worker`,
      port: n.port,
      pids: () => ({ server: n.pids, keyd: [setup.keyd.child!.pid!] }),
      stop: async () => {
        await n.stop();
        await setup.keyd.kill();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await setup.keyd.kill();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function machine(): string {
  let os = 'Linux';
  try {
    os = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? os;
  } catch {
    // only for the report
  }
  return `${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${os}, Node ${process.version}, OpenSSL ${process.versions.openssl}`;
}

function table(rows: Row[]): string {
  const header = ['key', 'server', 'handshakes/s', 'failed', 'p50', 'p99', 'edge/server CPU µs/hs', 'keyd CPU µs/hs', 'total CPU µs/hs'];
  const lines = rows.map((r) => {
    const main = r.cpu.edge ?? r.cpu.server ?? Number.NaN;
    const keyd = r.cpu.keyd;
    return [
      r.keyType,
      r.server,
      r.result.rate.toFixed(0),
      String(r.result.failed),
      goDurationAsMs(r.result.p50),
      goDurationAsMs(r.result.p99),
      main.toFixed(0),
      keyd === undefined ? '—' : keyd.toFixed(0),
      (main + (keyd ?? 0)).toFixed(0),
    ];
  });
  return markdownTable(header, lines, 2);
}

/** CPU µs of one bare node:crypto signature per key type, measured in this process (the keyd target's yardstick). */
const signMicros: Partial<Record<string, number>> = {};

function measureBareSign(keyType: string, key: ReturnType<typeof createPrivateKey>): void {
  const hash = Buffer.alloc(32, 1);
  const rsa = key.asymmetricKeyType === 'rsa';
  const once = () => (rsa ? cryptoSign('sha256', hash, { key, padding: 6, saltLength: 32 }) : cryptoSign('sha256', hash, key));
  for (let i = 0; i < 20; i++) once();
  const samples: number[] = [];
  for (let round = 0; round < 5; round++) {
    const start = process.cpuUsage();
    let calls = 0;
    for (; calls < (rsa ? 50 : 400); calls++) once();
    const used = process.cpuUsage(start);
    samples.push((used.user + used.system) / calls);
  }
  signMicros[keyType] = samples.sort((x, y) => x - y)[2];
}

function targets(rows: Row[]): string[] {
  const out: string[] = [];
  for (const keyType of [...new Set(rows.map((r) => r.keyType))]) {
    const of = (prefix: string) => rows.find((r) => r.keyType === keyType && r.server.startsWith(prefix));
    const a = rows.find((r) => r.keyType === keyType && r.server === '(a) edge + keyd, 1 worker');
    const b = of('(b)');
    const c = of('(c)');
    const dc = of('(i)');
    if (dc && a) {
      out.push(
        `${keyType}: (i) keyd CPU per handshake ${dc.cpu.keyd!.toFixed(0)} µs vs (a) ${a.cpu.keyd!.toFixed(0)} µs; ` +
          `(i) edge+keyd ${(dc.cpu.edge! + dc.cpu.keyd!).toFixed(0)} µs vs (a) ${(a.cpu.edge! + a.cpu.keyd!).toFixed(0)} µs` +
          (b ? ` and (b) ${b.cpu.edge!.toFixed(0)} µs` : ''),
      );
    }
    if (a && b) {
      const ratio = a.result.rate / b.result.rate;
      out.push(`${keyType}: (a) rate / (b) rate = ${(ratio * 100).toFixed(0)} % (target ≥ 90 %) ${ratio >= 0.9 ? 'MET' : 'NOT MET'}`);
    }
    if (a && c) {
      const ratio = a.cpu.edge! / c.cpu.server!;
      out.push(`${keyType}: (a) edge CPU / (c) node:tls CPU (terminating only) = ${ratio.toFixed(2)}`);
    }
    if (a && b) {
      const ratio = a.cpu.edge! / b.cpu.edge!;
      out.push(`${keyType}: (a) edge CPU / (b) in-process edge CPU = ${ratio.toFixed(2)} (target ≤ 1.1) ${ratio <= 1.1 ? 'MET' : 'NOT MET'}`);
    }
    if (a && a.cpu.keyd !== undefined && signMicros[keyType] !== undefined) {
      const ratio = a.cpu.keyd / signMicros[keyType]!;
      out.push(`${keyType}: keyd CPU per signature ${a.cpu.keyd.toFixed(0)} µs / bare node:crypto sign ${signMicros[keyType]!.toFixed(0)} µs = ${ratio.toFixed(2)}${keyType === 'ecdsa-p256' ? ` (target ≤ 1.5) ${ratio <= 1.5 ? 'MET' : 'NOT MET'}` : ''}`);
    }
    const edge = b ?? a;
    for (const [prefix, what] of [['(f)', 'nginx stream proxy'], ['(g)', 'haproxy'], ['(h)', 'node:tls pipe']] as const) {
      const peer = of(prefix);
      if (edge && peer) {
        const ratio = edge.cpu.edge! / peer.cpu.server!;
        const target = prefix === '(h)' ? '' : ` (target ≤ 1.0) ${ratio <= 1.0 ? 'MET' : 'NOT MET'}`;
        out.push(`${keyType}: ${edge === b ? '(b)' : '(a)'} edge CPU / ${prefix} ${what} CPU = ${ratio.toFixed(2)}${target}`);
      }
    }
  }
  return out;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '15' },
      concurrency: { type: 'string', default: '8' },
      'key-types': { type: 'string', default: 'ecdsa-p256,rsa2048' },
      workers: { type: 'string', default: '1' },
      servers: { type: 'string', default: 'keyd,local,node,nginx,nginx-keyd,nginx-stream,haproxy,node-pipe,dc' },
      rounds: { type: 'string', default: '1' },
      'proxy-protocol': { type: 'boolean', default: false },
      'local-edge': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values['local-edge']) {
    await runLocalEdge(JSON.parse(values['local-edge']));
    return -1; // keep running
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const duration = Number(values.duration);
  const warmup = Number(values.warmup);
  const concurrency = Number(values.concurrency);
  const keyTypes = values['key-types']!.split(',') as TestKeyType[];
  const workerCounts = values.workers!.split(',').map(Number);
  const wanted = values.servers!.split(',');
  const rounds = Number(values.rounds);
  const proxyProtocol = values['proxy-protocol']!;
  const log = (line: string) => void process.stderr.write(`${line}\n`);
  const hsload = ensureHsload(repoRoot, log);
  const sink = await startSink();
  const answering = await startAnsweringUpstream();
  const rows: Row[] = [];
  log(`machine: ${machine()}`);
  log(`hsload: ${concurrency} workers, ${duration}s measured (+${warmup}s warm-up) per server, X25519, handshake only`);
  try {
    for (const keyType of keyTypes) {
      // DelegationUsage on every leaf: only (i)'s client offers delegated credentials.
      const pki = await makeTestPki({ keyType, delegationUsage: 'non-critical' });
      const files = writePkiFiles(pki);
      const dir = mkdtempSync(join(tmpdir(), 'bench-full-'));
      measureBareSign(keyType, pki.leafKey);
      try {
        const starters: (() => Promise<Server_ | undefined>)[] = [];
        if (wanted.includes('keyd')) for (const w of workerCounts) starters.push(() => startKeydAndEdge(mkdtempSync(join(dir, 'k-')), pki, sink.port, w, proxyProtocol));
        if (wanted.includes('local')) starters.push(() => startLocalEdge(files, sink.port, proxyProtocol));
        if (wanted.includes('node')) starters.push(() => startNodeTls(files));
        if (wanted.includes('nginx')) {
          const binary = nginxBinary();
          if (!binary) log('nginx not installed (apt-get install nginx-light): skipped');
          else
            starters.push(async () => {
              const n = await startNginx(binary, mkdtempSync(join(dir, 'nginx-')), await freePort(), files.chainFile, files.keyFile);
              return { name: `(d) nginx ${n.version}, 1 worker`, port: n.port, pids: () => ({ server: n.pids }), stop: () => n.stop() };
            });
        }
        if (wanted.includes('nginx-keyd')) {
          const binary = nginxBinary();
          const unbuildable = binary ? providerUnbuildable() : 'nginx not installed (apt-get install nginx)';
          if (unbuildable) log(`(e) nginx + provider + keyd: ${unbuildable}: skipped`);
          // Its own directory under the system tmpdir: nginx's workers (nobody) must traverse it to keyd's socket.
          else starters.push(() => startNginxWithProvider(binary!, mkdtempSync(join(tmpdir(), 'bench-nginx-keyd-')), pki, files));
        }
        const proxySpec = (name: string): ProxySpec => ({
          dir: mkdtempSync(join(dir, `${name}-`)),
          chainFile: files.chainFile,
          keyFile: files.keyFile,
          upstreamPort: sink.port,
          proxyProtocol,
        });
        const proxyRow = (label: string, start: (spec: ProxySpec) => Promise<Started>, name: string) =>
          starters.push(async () => {
            const started = await start(proxySpec(name));
            if ('skipped' in started) {
              log(`${label}: skipped: ${started.skipped}`);
              return undefined;
            }
            return { name: `${label} ${started.name}`, port: started.port, pids: () => ({ server: started.pids() }), stop: () => started.stop() };
          });
        if (wanted.includes('nginx-stream')) proxyRow('(f)', startNginxStream, 'nginx-stream');
        if (wanted.includes('haproxy')) proxyRow('(g)', startHaproxy, 'haproxy');
        if (wanted.includes('node-pipe')) proxyRow('(h)', startNodeTlsPipe, 'node-pipe');
        if (wanted.includes('dc')) {
          if (spawnSync('tstclnt', ['-h'], { stdio: 'ignore' }).error || spawnSync('certutil', ['-h'], { stdio: 'ignore' }).error) {
            log('(i) edge + keyd, delegated credentials: tstclnt/certutil not installed (apt-get install libnss3-tools): skipped');
          } else {
            starters.push(() => startDelegatedEdge(mkdtempSync(join(dir, 'i-')), pki, files.caFile, answering.port, concurrency, log));
          }
        }
        const servers: Server_[] = [];
        const perRound = new Map<Server_, { result: HsloadResult; cpu: Record<string, number> }[]>();
        try {
          for (const start of starters) {
            const server = await start();
            if (server) servers.push(server);
          }
          for (let round = 1; round <= rounds; round++) {
            for (const server of servers) {
              const run = { address: `127.0.0.1:${server.port}`, sni: 'localhost', caFile: files.caFile, concurrency, curve: 'x25519' as const };
              const measure = (seconds: number) => (server.load ? server.load(seconds) : runHsload(hsload, { ...run, durationSeconds: seconds }));
              if (warmup > 0 && round === 1) await measure(warmup);
              const groups = server.pids();
              const before = Object.fromEntries(Object.entries(groups).map(([k, pids]) => [k, totalCpuTimeMicros(pids)]));
              const result = await measure(duration);
              const cpu = Object.fromEntries(
                Object.entries(groups).map(([k, pids]) => [k, result.handshakes ? (totalCpuTimeMicros(pids) - before[k]!) / result.handshakes : Number.NaN]),
              );
              perRound.set(server, [...(perRound.get(server) ?? []), { result, cpu }]);
              log(`${rounds > 1 ? `round ${round} ` : ''}${keyType} ${server.name}: ${result.rate.toFixed(0)}/s, ${result.failed} failed, CPU µs/hs ${JSON.stringify(Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, Math.round(v)])))}${result.firstError ? ` first error: ${result.firstError}` : ''}`);
            }
          }
        } finally {
          for (const server of servers) await server.stop();
        }
        for (const server of servers) {
          const runs = perRound.get(server) ?? [];
          // The median round by the server's own CPU (edge CPU for the edge rows).
          const key = (r: (typeof runs)[number]) => r.cpu.edge ?? r.cpu.server ?? 0;
          const sorted = [...runs].sort((x, y) => key(x) - key(y));
          const median = sorted[(sorted.length - 1) >> 1];
          if (median) rows.push({ keyType, server: server.name, result: median.result, cpu: median.cpu });
        }
      } finally {
        files.remove();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    sink.close();
    answering.close();
  }
  process.stdout.write(`machine: ${machine()}\nhsload: ${concurrency} workers, ${duration}s per server, X25519, full handshakes only (no resumption)\n`);
  if (rows.some((r) => r.server.startsWith('(i)'))) {
    process.stdout.write(
      `(i): ${concurrency} NSS tstclnt -B processes (delegated credentials offered), reconnecting with -L, the edge sending no tickets; ` +
        `handshakes counted by the edge's signing-path metric (credential only); the rate is the tstclnt pool's\n`,
    );
  }
  process.stdout.write('\n');
  process.stdout.write(table(rows) + '\n\n' + targets(rows).join('\n') + '\n');
  return rows.some((r) => r.result.handshakes === 0) ? 1 : 0;
}

main().then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
