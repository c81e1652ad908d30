/**
 * `npm run bench:bulk` — bulk data through the edge and the proxies doing the same work
 * (bench/lib/proxies.ts: nginx stream, haproxy, node:tls pipe), to one upstream in this
 * process, in ONE run, servers interleaved per round; the median round per server is shown:
 *
 *   down N      each connection asks the upstream for N bytes and reads them to the end
 *   up N        each connection sends N bytes; the upstream answers once it has them all
 *   small       one connection per client, 100-byte request → 100-byte response, repeated
 *   idle        RSS growth of the proxy per idle connection: --idle connections open, then
 *               --idle more; the second delta ÷ --idle (handshake + one exchange, then idle)
 *
 * MB/s counts payload bytes over wall time; CPU µs/MB is the proxy's utime+stime per
 * payload MB (the client and upstream run in this process and are not counted). The edge
 * runs with an in-process key (bench/full-stack.ts --local-edge): bulk does not sign.
 *
 * Options: --duration S per measurement (default 4), --rounds N (default 3), --clients N
 * concurrent connections (default 4), --idle N (default 1000), --sizes 16384,1048576,
 * --modes down,up,small,idle, --servers edge,nginx-stream,haproxy,node-pipe, --proxy-protocol,
 * --edge-build NAME=PATH/dist/bench/full-stack.js (repeatable: another build's edge as a row of
 * its own, to compare commits in one run), --no-warmup (skip the unreported first round that
 * runs every test once so that the JIT has settled).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { PROXY_V2_SIGNATURE } from '../src/edge/proxy-protocol.js';
import { makeTestPki, writePkiFiles } from '../test/helpers/pki.js';
import { freePort, waitForPort } from '../test/helpers/ports.js';
import { markdownTable } from './lib/format.js';
import { totalCpuTimeMicros } from './lib/proc-stat.js';
import { startHaproxy, startNginxStream, startNodeTlsPipe, type ProxySpec, type ProxyUnderTest, type Started } from './lib/proxies.js';

const here = dirname(fileURLToPath(import.meta.url));
const FULL_STACK = resolve(here, 'full-stack.js');

// ---------------------------------------------------------------- the upstream

/**
 * Upstream app: strips a PROXY header (v1 or v2), then reads one command line:
 * `D n` sends n bytes and ends; `U n` reads n bytes, answers `ok\n` and ends; `E` echoes.
 */
async function startUpstream(): Promise<{ port: number; close(): void }> {
  const block = Buffer.alloc(65536, 0x61);
  const sockets = new Set<Socket>();
  const server: Server = createNetServer((s) => {
    sockets.add(s);
    s.setNoDelay(true);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let head = Buffer.alloc(0);
    const onHead = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.length >= 16 && head.subarray(0, 12).equals(PROXY_V2_SIGNATURE)) {
        const total = 16 + head.readUInt16BE(14);
        if (head.length < total) return;
        head = head.subarray(total);
      } else if (head.subarray(0, 6).toString('latin1') === 'PROXY ') {
        const eol = head.indexOf('\r\n');
        if (eol < 0) return;
        head = head.subarray(eol + 2);
      }
      const nl = head.indexOf(10);
      if (nl < 0) return;
      s.off('data', onHead);
      const [cmd, arg] = head.subarray(0, nl).toString('latin1').split(' ');
      const rest = head.subarray(nl + 1);
      const n = Number(arg);
      if (cmd === 'D') {
        let left = n;
        const pump = () => {
          while (left > 0) {
            const piece = left >= block.length ? block : block.subarray(0, left);
            left -= piece.length;
            if (!s.write(piece)) return void s.once('drain', pump);
          }
          s.end();
        };
        pump();
      } else if (cmd === 'U') {
        let got = rest.length;
        const check = () => {
          if (got >= n) {
            s.removeAllListeners('data');
            s.end('ok\n');
          }
        };
        s.on('data', (c: Buffer) => {
          got += c.length;
          check();
        });
        check();
      } else {
        if (rest.length) s.write(rest);
        s.on('data', (c: Buffer) => s.write(c));
        s.on('end', () => s.end());
      }
    };
    s.on('data', onHead);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as { port: number }).port,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

// ---------------------------------------------------------------- the edge under test

/** This build's edge: the row the ratios compare with. */
const EDGE_NAME = 'edge (in-process key)';

async function startEdge(spec: ProxySpec, fullStack = FULL_STACK, name = EDGE_NAME): Promise<Started> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    // BENCH_EDGE_NODE_FLAGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p": to profile the edge under this load.
    [...(process.env['BENCH_EDGE_NODE_FLAGS']?.split(' ').filter(Boolean) ?? []), fullStack, '--local-edge', JSON.stringify({ port, upstreamPort: spec.upstreamPort, chainFile: spec.chainFile, keyFile: spec.keyFile, workers: 1, proxyProtocol: spec.proxyProtocol })],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await waitForPort(port, 20_000).catch((err: Error) => {
    throw new Error(`edge did not start: ${err.message}\n${log}`);
  });
  return {
    name,
    port,
    pids: () => [child.pid!],
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

// ---------------------------------------------------------------- clients

interface Client {
  caFile: string;
  port: number;
}

function open(c: Client): Promise<TLSSocket> {
  return new Promise((resolvePromise, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: c.port, servername: 'localhost', ca: readFileSync(c.caFile), minVersion: 'TLSv1.3' }, () =>
      resolvePromise(socket),
    );
    socket.setNoDelay(true);
    socket.once('error', reject);
  });
}

/** One connection: download n bytes. Resolves with the payload bytes received. */
async function download(c: Client, n: number): Promise<number> {
  const socket = await open(c);
  let got = 0;
  socket.write(`D ${n}\n`);
  socket.on('data', (d: Buffer) => (got += d.length));
  await new Promise<void>((r, reject) => {
    socket.once('end', () => r());
    socket.once('error', reject);
  });
  socket.end();
  if (got !== n) throw new Error(`download: ${got} of ${n} bytes`);
  return got;
}

const UP_CHUNK = Buffer.alloc(65536, 0x62);

/** One connection: upload n bytes; the upstream's `ok` ends it. */
async function upload(c: Client, n: number): Promise<number> {
  const socket = await open(c);
  const answered = new Promise<void>((r, reject) => {
    let answer = '';
    socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    socket.once('end', () => (answer === 'ok\n' ? r() : reject(new Error(`upload: answer ${JSON.stringify(answer)}`))));
    socket.once('error', reject);
  });
  socket.write(`U ${n}\n`);
  let left = n;
  while (left > 0) {
    const piece = left >= UP_CHUNK.length ? UP_CHUNK : UP_CHUNK.subarray(0, left);
    left -= piece.length;
    if (!socket.write(piece)) await new Promise((r) => socket.once('drain', r));
  }
  await answered;
  socket.end();
  return n;
}

/** One connection, echo mode: 100-byte exchanges until the deadline; resolves with the count. */
async function exchanges(c: Client, deadline: number): Promise<number> {
  const socket = await open(c);
  const message = Buffer.alloc(100, 0x63);
  socket.write('E\n');
  let count = 0;
  let pending = 0;
  await new Promise<void>((r, reject) => {
    socket.once('error', reject);
    socket.on('data', (d: Buffer) => {
      pending -= d.length;
      if (pending > 0) return;
      count++;
      if (Date.now() >= deadline) return r();
      pending = message.length;
      socket.write(message);
    });
    pending = message.length;
    socket.write(message);
  });
  socket.end();
  return count;
}

async function forDuration(clients: number, seconds: number, one: () => Promise<number>): Promise<{ total: number; seconds: number }> {
  const start = Date.now();
  const deadline = start + seconds * 1000;
  let total = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (Date.now() < deadline) {
        // Not `total += await one()`: that reads `total` before the await, so the clients
        // overwrote each other's counts and about one client's bytes were reported.
        const bytes = await one();
        total += bytes;
      }
    }),
  );
  return { total, seconds: (Date.now() - start) / 1000 };
}

function rssKiB(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    const status = readFileSync(`/proc/${pid}/status`, 'latin1');
    sum += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  }
  return sum;
}

/** `count` connections, each after one exchange (so the upstream is connected), opened 50 at a time. */
async function openIdle(c: Client, count: number): Promise<TLSSocket[]> {
  const sockets: TLSSocket[] = [];
  for (let i = 0; i < count; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, count - i) }, async () => {
        const s = await open(c);
        s.write('E\nx');
        await new Promise((r) => s.once('data', r));
        return s;
      }),
    );
    sockets.push(...batch);
  }
  return sockets;
}

/**
 * Memory per idle connection: `count` connections are opened (each after one exchange) and
 * RSS read, then `count` more and RSS read again; the figure is the second delta ÷ count.
 * The first batch absorbs one-off growth (V8's young generation grows to its working size
 * under load, malloc arenas and server pools fill), which a single delta from an idle
 * process counted as per-connection memory; the second is what one more connection costs.
 */
async function idleMemory(c: Client, proxy: ProxyUnderTest, count: number): Promise<number> {
  let sockets: TLSSocket[] = [];
  try {
    sockets = await openIdle(c, count);
    await new Promise((r) => setTimeout(r, 500));
    const before = rssKiB(proxy.pids());
    sockets.push(...(await openIdle(c, count)));
    await new Promise((r) => setTimeout(r, 500));
    return ((rssKiB(proxy.pids()) - before) * 1024) / count;
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((r) => setTimeout(r, 300));
  }
}

// ---------------------------------------------------------------- main

interface Measurement {
  server: string;
  test: string;
  value: number;
  unit: string;
  cpuPerMB?: number;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[(s.length - 1) >> 1]!;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '4' },
      rounds: { type: 'string', default: '3' },
      clients: { type: 'string', default: '4' },
      idle: { type: 'string', default: '1000' },
      sizes: { type: 'string', default: '16384,1048576' },
      modes: { type: 'string', default: 'down,up,small,idle' },
      servers: { type: 'string', default: 'edge,nginx-stream,haproxy,node-pipe' },
      'proxy-protocol': { type: 'boolean', default: false },
      'edge-build': { type: 'string', multiple: true, default: [] },
      'no-warmup': { type: 'boolean', default: false },
    },
  });
  const duration = Number(values.duration);
  const rounds = Number(values.rounds);
  const clients = Number(values.clients);
  const sizes = values.sizes!.split(',').map(Number);
  const modes = values.modes!.split(',');
  const wanted = values.servers!.split(',');
  const log = (line: string) => void process.stderr.write(`${line}\n`);
  const pki = await makeTestPki({ keyType: 'ecdsa-p256' });
  const files = writePkiFiles(pki);
  const dir = mkdtempSync(join(tmpdir(), 'bench-bulk-'));
  const upstream = await startUpstream();
  const spec = (name: string): ProxySpec => ({
    dir: mkdtempSync(join(dir, `${name}-`)),
    chainFile: files.chainFile,
    keyFile: files.keyFile,
    upstreamPort: upstream.port,
    proxyProtocol: values['proxy-protocol']!,
  });
  const starters: [string, (s: ProxySpec) => Promise<Started>][] = [
    ['edge', (s) => startEdge(s)],
    ...values['edge-build']!.map((build): [string, (s: ProxySpec) => Promise<Started>] => {
      const [name, path] = build.split('=') as [string, string];
      return ['edge', (s) => startEdge(s, resolve(path), `edge ${name}`)];
    }),
    ['nginx-stream', startNginxStream],
    ['haproxy', startHaproxy],
    ['node-pipe', startNodeTlsPipe],
  ];
  const proxies: ProxyUnderTest[] = [];
  const measured: Measurement[][] = [];
  try {
    for (const [name, start] of starters) {
      if (!wanted.includes(name)) continue;
      const started = await start(spec(name));
      if ('skipped' in started) log(`${name}: skipped: ${started.skipped}`);
      else proxies.push(started);
    }
    const tests: { test: string; run: (c: Client, p: ProxyUnderTest) => Promise<Omit<Measurement, 'server' | 'test'>> }[] = [];
    const throughput = (one: (c: Client) => Promise<number>) => async (c: Client, p: ProxyUnderTest) => {
      const cpuBefore = totalCpuTimeMicros(p.pids());
      const { total, seconds } = await forDuration(clients, duration, () => one(c));
      const cpu = totalCpuTimeMicros(p.pids()) - cpuBefore;
      return { value: total / 1e6 / seconds, unit: 'MB/s', cpuPerMB: cpu / (total / 1e6) };
    };
    for (const size of sizes) {
      const label = size >= 1 << 20 ? `${size >> 20} MB` : `${size >> 10} KB`;
      if (modes.includes('down')) tests.push({ test: `down, ${label} per connection`, run: throughput((c) => download(c, size)) });
      if (modes.includes('up')) tests.push({ test: `up, ${label} per connection`, run: throughput((c) => upload(c, size)) });
    }
    if (modes.includes('small')) {
      tests.push({
        test: '100-byte exchanges on open connections',
        run: async (c, p) => {
          const cpuBefore = totalCpuTimeMicros(p.pids());
          const start = Date.now();
          const counts = await Promise.all(Array.from({ length: clients }, () => exchanges(c, start + duration * 1000)));
          const total = counts.reduce((a, b) => a + b, 0);
          const cpu = totalCpuTimeMicros(p.pids()) - cpuBefore;
          return { value: total / ((Date.now() - start) / 1000), unit: 'exchanges/s', cpuPerMB: cpu / total };
        },
      });
    }
    // Round 0 is a warm-up, not reported: every proxy runs every test once first, so the
    // edge's JavaScript is compiled before it is measured (V8 takes 10-15 s of load to
    // settle; docs/BENCHMARKS.md, "JIT warm-up"), as a long-running proxy would be.
    for (let round = values['no-warmup'] ? 1 : 0; round <= rounds; round++) {
      const results: Measurement[] = [];
      for (const t of tests) {
        for (const p of proxies) {
          const r = await t.run({ caFile: files.caFile, port: p.port }, p);
          results.push({ server: p.name, test: t.test, ...r });
          log(`${round === 0 ? 'warm-up' : `round ${round}`} ${t.test} ${p.name}: ${r.value.toFixed(1)} ${r.unit}${r.cpuPerMB === undefined ? '' : `, CPU ${r.cpuPerMB.toFixed(0)} µs per ${r.unit === 'MB/s' ? 'MB' : 'exchange'}`}`);
        }
      }
      if (round > 0) measured.push(results);
    }
    if (modes.includes('idle')) {
      const idle: Measurement[] = [];
      for (const p of proxies) {
        const perConnection = await idleMemory({ caFile: files.caFile, port: p.port }, p, Number(values.idle));
        idle.push({ server: p.name, test: `memory per idle connection (${values.idle})`, value: perConnection / 1024, unit: 'KiB' });
        log(`idle ${p.name}: ${(perConnection / 1024).toFixed(1)} KiB per connection`);
      }
      measured.push(idle);
    }
  } finally {
    for (const p of proxies) await p.stop();
    upstream.close();
    files.remove();
    rmSync(dir, { recursive: true, force: true });
  }
  // Median over rounds per (test, server); ratios to the edge's row in the same test.
  const keys = [...new Set(measured.flat().map((m) => `${m.test}\u0000${m.server}`))];
  const rows: string[][] = [];
  for (const key of keys) {
    const [test, server] = key.split('\u0000') as [string, string];
    const all = measured.flat().filter((m) => m.test === test && m.server === server);
    const value = median(all.map((m) => m.value));
    const cpu = all[0]!.cpuPerMB === undefined ? undefined : median(all.map((m) => m.cpuPerMB!));
    // This build's edge only: with --edge-build, the other builds are rows compared with it.
    const edge = measured.flat().filter((m) => m.test === test && m.server === EDGE_NAME);
    const edgeValue = edge.length ? median(edge.map((m) => m.value)) : Number.NaN;
    const edgeCpu = edge.length && edge[0]!.cpuPerMB !== undefined ? median(edge.map((m) => m.cpuPerMB!)) : Number.NaN;
    const unit = all[0]!.unit;
    // For memory less is better: the ratio is edge / peer; for rates edge / peer too (≥ 1 is the edge ahead);
    // for CPU per MB or per exchange edge / peer (≤ 1 is the edge ahead).
    const ratio = server === EDGE_NAME ? '—' : `${(edgeValue / value).toFixed(2)}`;
    const cpuRatio = server === EDGE_NAME || cpu === undefined ? '—' : `${(edgeCpu / cpu).toFixed(2)}`;
    rows.push([test, server, `${value.toFixed(unit === 'KiB' ? 1 : 0)} ${unit}`, cpu === undefined ? '—' : cpu.toFixed(0), ratio, cpuRatio]);
  }
  process.stdout.write(
    `bench:bulk: ${clients} clients, ${duration}s per measurement, ${rounds} rounds (median), PROXY ${values['proxy-protocol'] ? 'on' : 'off'}\n\n` +
      markdownTable(['test', 'server', 'median', 'proxy CPU µs per MB (or per exchange)', 'edge ÷ this', 'edge ÷ this, CPU'], rows, 2) +
      '\n',
  );
  return 0;
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    process.stderr.write(`bench:bulk: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
