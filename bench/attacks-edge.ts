/**
 * `npm run bench:attacks-edge` — replays attacks on the edge against the running system
 * (`delegator edge` + `delegator keyd`, child processes) and prints, per attack, a markdown
 * table: the edge's RSS and CPU before the attack and under it, and whether fresh clients
 * (node:tls, one every 250 ms) completed their handshake meanwhile.
 *
 *   slow-loris     --cap connections (= the edge's maxConnections) trickling 1 byte/s each,
 *                  half-open, reopened as soon as the edge closes one
 *   keyupdate      --clients connections that complete a handshake, stop reading and send
 *                  KeyUpdate(update_requested) as fast as TCP takes it; reconnect when cut
 *   hello-1byte    --clients connections each sending a ~125 KB ClientHello in 1-byte records,
 *                  over and over
 *
 * `--build NAME=PATH` (repeatable) names the `dist/src/cli/main.js` of each build to compare
 * (default: this checkout), so one run shows before/after. Results go to docs/BENCHMARKS.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, createServer as createNetServer, type Socket } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { KeydClient } from '../src/keyd/client.js';
import { Opcode } from '../src/keyd/protocol.js';
import { MiniTlsClient } from '../test/helpers/mini-tls-client.js';
import { makeTestPki, writePkiFiles, type TestPki } from '../test/helpers/pki.js';
import { freePort, waitForPort } from '../test/helpers/ports.js';
import { markdownTable } from './lib/format.js';
import { cpuTimeMicros } from './lib/proc-stat.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../..');
const SELF = fileURLToPath(import.meta.url);

const USAGE = `Usage: npm run bench:attacks-edge -- [options]
  --build NAME=PATH      dist/src/cli/main.js of a build (repeatable; default this checkout)
  --attacks LIST         slow-loris,keyupdate,hello-1byte (default all)
  --duration S           seconds under attack (default 15)
  --cap N                edge limits.maxConnections, and slow-loris connections (default 100)
  --clients N            attacking connections for keyupdate and hello-1byte (default 4)
  --handshake-timeout MS edge limits.handshakeTimeoutMs (default 10000, the product default)
`;

interface Running {
  port: number;
  edgePid: number;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function spawnLogged(args: string[]): { child: ChildProcess; log: () => string } {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  return { child, log: () => log };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  await exited;
}

async function startSystem(main: string, dir: string, pki: TestPki, upstreamPort: number, opts: { cap: number; handshakeTimeoutMs: number }): Promise<Running> {
  writeFileSync(join(dir, 'machine-id'), '00112233445566778899aabbccddeeff\n');
  const sock = join(dir, 'k.sock');
  const adminSock = join(dir, 'ka.sock');
  const keyd = spawnLogged([main, 'keyd', '--data', join(dir, 'data'), '--root-key', join(dir, 'root.key'), '--socket', sock, '--admin-socket', adminSock, '--machine-id', join(dir, 'machine-id'), '--log-level', 'warn']);
  let admin: KeydClient | undefined;
  for (let i = 0; i < 100 && !admin; i++) {
    admin = await KeydClient.connect({ socketPath: adminSock }).catch(async () => {
      await sleep(100);
      return undefined;
    });
  }
  if (!admin) throw new Error(`keyd did not start:\n${keyd.log()}`);
  await admin.admin(Opcode.put, { names: ['localhost'] }, [pki.leafKey.export({ format: 'der', type: 'pkcs8' }), ...pki.chainDer]);
  admin.close();
  const port = await freePort();
  const config = {
    listen: [`127.0.0.1:${port}`],
    keyd: [sock],
    routes: [{ names: ['localhost'], upstream: `127.0.0.1:${upstreamPort}` }],
    defaultServerName: 'localhost',
    workers: 1,
    logLevel: 'warn',
    limits: { maxConnections: opts.cap, handshakeTimeoutMs: opts.handshakeTimeoutMs },
  };
  writeFileSync(join(dir, 'edge.json'), JSON.stringify(config));
  const edge = spawnLogged([main, 'edge', '--config', join(dir, 'edge.json')]);
  await waitForPort(port, 20_000);
  return {
    port,
    edgePid: edge.child.pid!,
    async stop() {
      await stopChild(edge.child);
      await stopChild(keyd.child);
    },
  };
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

/** A fresh node:tls client every 250 ms while `running()`: how many completed, and the slowest. */
async function probeFreshClients(port: number, caPem: string, running: () => boolean): Promise<{ tried: number; served: number; maxMs: number }> {
  let tried = 0;
  let served = 0;
  let maxMs = 0;
  while (running()) {
    tried++;
    const start = performance.now();
    const ok = await new Promise<boolean>((resolve) => {
      const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: [caPem], minVersion: 'TLSv1.3' });
      const timer = setTimeout(() => finish(false), 5000);
      const finish = (v: boolean) => {
        clearTimeout(timer);
        s.destroy();
        resolve(v);
      };
      s.once('secureConnect', () => finish(true));
      s.once('error', () => finish(false));
      s.once('close', () => finish(false));
    });
    if (ok) {
      served++;
      maxMs = Math.max(maxMs, performance.now() - start);
    }
    await sleep(250);
  }
  return { tried, served, maxMs };
}

type Attack = (port: number, running: () => boolean, opts: { cap: number; clients: number }) => { stop(): void; sentBytes: () => number };

const slowLoris: Attack = (port, running, { cap }) => {
  const open = new Set<Socket>();
  let sent = 0;
  const start = (): void => {
    if (!running()) return;
    const s = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true });
    open.add(s);
    s.on('error', () => undefined);
    s.resume();
    const timer = setInterval(() => {
      if (s.writable) {
        s.write(Buffer.of(0x16));
        sent++;
      }
    }, 1000);
    s.on('close', () => {
      clearInterval(timer);
      open.delete(s);
      setTimeout(start, 10);
    });
  };
  for (let i = 0; i < cap; i++) start();
  return { stop: () => open.forEach((s) => s.destroy()), sentBytes: () => sent };
};

/** Completes a handshake with the mini client, then hands the socket to `then`. */
function handshake(port: number, then: (s: Socket, c: MiniTlsClient) => void, onFail: () => void): Socket {
  const client = new MiniTlsClient('localhost');
  const s = netConnect(port, '127.0.0.1');
  s.on('error', () => undefined);
  s.once('close', onFail);
  s.write(client.clientHello());
  const onData = (d: Buffer) => {
    try {
      const answer = client.receive(d);
      if (answer.length) s.write(answer);
    } catch {
      s.destroy();
      return;
    }
    if (client.handshakeComplete) {
      s.off('data', onData);
      then(s, client);
    }
  };
  s.on('data', onData);
  return s;
}

const keyUpdateFlood: Attack = (port, running, { clients }) => {
  const open = new Set<Socket>();
  let sent = 0;
  const start = (): void => {
    if (!running()) return;
    const s = handshake(
      port,
      (sock, client) => {
        sock.pause(); // never read again
        const pump = () => {
          while (running() && !sock.destroyed) {
            const batch: Buffer[] = [];
            for (let i = 0; i < 64; i++) batch.push(client.keyUpdate(true));
            const bytes = Buffer.concat(batch);
            sent += bytes.length;
            if (!sock.write(bytes)) return void sock.once('drain', pump);
          }
        };
        pump();
      },
      () => {
        open.delete(s);
        setTimeout(start, 10);
      },
    );
    open.add(s);
  };
  for (let i = 0; i < clients; i++) start();
  return { stop: () => open.forEach((s) => s.destroy()), sentBytes: () => sent };
};

const helloOneByte: Attack = (port, running, { clients }) => {
  const open = new Set<Socket>();
  let sent = 0;
  const records = new MiniTlsClient('localhost').clientHello({ fragment: 1, padTo: 125_000 });
  const start = (): void => {
    if (!running()) return;
    const s = netConnect(port, '127.0.0.1');
    open.add(s);
    s.on('error', () => undefined);
    s.resume();
    s.on('close', () => {
      open.delete(s);
      setTimeout(start, 10);
    });
    s.write(records, () => (sent += records.length));
  };
  for (let i = 0; i < clients; i++) start();
  return { stop: () => open.forEach((s) => s.destroy()), sentBytes: () => sent };
};

const ATTACKS: Record<string, { title: string; run: Attack }> = {
  'slow-loris': { title: 'Slow-loris at the connection cap (1 byte/s per connection, half-open, reopened when closed)', run: slowLoris },
  keyupdate: { title: 'KeyUpdate(update_requested) flood from clients that never read (reconnecting when cut)', run: keyUpdateFlood },
  'hello-1byte': { title: '~125 KB ClientHello in 1-byte records, repeated', run: helloOneByte },
};

interface Row {
  build: string;
  rssBefore: number;
  rssPeak: number;
  cpuBefore: number;
  cpuUnder: number;
  sentBytes: number;
  fresh: { tried: number; served: number; maxMs: number };
}

async function measure(main: string, attackName: string, pki: TestPki, sinkPort: number, opts: { cap: number; clients: number; durationS: number; handshakeTimeoutMs: number }): Promise<Omit<Row, 'build'>> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-attacks-'));
  const system = await startSystem(main, dir, pki, sinkPort, opts);
  try {
    // Warm up with a few handshakes, then a quiet second for the "before" figures.
    await probeFreshClients(system.port, pki.caCertPem, (() => {
      let n = 0;
      return () => n++ < 4;
    })());
    const cpu0 = cpuTimeMicros(system.edgePid);
    await sleep(1000);
    const cpuBefore = (cpuTimeMicros(system.edgePid) - cpu0) / 1e4; // % of one core over 1 s
    const rssBefore = rssMiB(system.edgePid);
    let active = true;
    const running = () => active;
    // The attacker runs in its own process, so its CPU does not delay the fresh-client probes here.
    const attacker = spawnLogged([SELF, '--attacker', attackName, '--port', String(system.port), '--cap', String(opts.cap), '--clients', String(opts.clients)]);
    const cpuStart = cpuTimeMicros(system.edgePid);
    const wallStart = performance.now();
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssMiB(system.edgePid))), 200);
    await sleep(1000); // let the attack ramp up before probing
    const fresh = probeFreshClients(system.port, pki.caCertPem, running);
    await sleep(opts.durationS * 1000 - 1000);
    active = false;
    const cpuUnder = ((cpuTimeMicros(system.edgePid) - cpuStart) / 1e3 / (performance.now() - wallStart)) * 100;
    clearInterval(sampler);
    rssPeak = Math.max(rssPeak, rssMiB(system.edgePid));
    const exited = new Promise<void>((r) => attacker.child.once('exit', () => r()));
    attacker.child.kill('SIGTERM');
    await exited;
    const sent = Number(/sent (\d+)/.exec(attacker.log())?.[1] ?? Number.NaN);
    return { rssBefore, rssPeak, cpuBefore, cpuUnder, sentBytes: sent, fresh: await fresh };
  } finally {
    await system.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function table(rows: Row[]): string {
  const header = ['build', 'edge RSS before', 'edge RSS peak under attack', 'edge CPU before', 'edge CPU under attack', 'attack bytes sent', 'fresh clients served', 'slowest fresh handshake'];
  return markdownTable(
    header,
    rows.map((r) => [
      r.build,
      `${r.rssBefore.toFixed(0)} MiB`,
      `${r.rssPeak.toFixed(0)} MiB`,
      `${r.cpuBefore.toFixed(0)} %`,
      `${r.cpuUnder.toFixed(0)} %`,
      r.sentBytes >= 2 ** 20 ? `${(r.sentBytes / 2 ** 20).toFixed(1)} MiB` : `${(r.sentBytes / 1024).toFixed(1)} KiB`,
      `${r.fresh.served}/${r.fresh.tried}${r.fresh.served === 0 ? ' (none)' : ''}`,
      r.fresh.served ? `${r.fresh.maxMs.toFixed(0)} ms` : '—',
    ]),
    1,
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      build: { type: 'string', multiple: true },
      attacks: { type: 'string', default: 'slow-loris,keyupdate,hello-1byte' },
      duration: { type: 'string', default: '15' },
      cap: { type: 'string', default: '100' },
      clients: { type: 'string', default: '4' },
      'handshake-timeout': { type: 'string', default: '10000' },
      attacker: { type: 'string' },
      port: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return void process.stdout.write(USAGE);
  if (values.attacker) {
    // Child mode: run one attack until SIGTERM, then report the bytes sent.
    const handle = ATTACKS[values.attacker]!.run(Number(values.port), () => true, { cap: Number(values.cap), clients: Number(values.clients) });
    process.on('SIGTERM', () => {
      process.stdout.write(`sent ${handle.sentBytes()}\n`, () => process.exit(0));
    });
    return;
  }
  const builds = (values.build ?? [`this=${join(repoRoot, 'dist/src/cli/main.js')}`]).map((b) => {
    const eq = b.indexOf('=');
    return { name: b.slice(0, eq), main: resolve(b.slice(eq + 1)) };
  });
  const opts = { cap: Number(values.cap), clients: Number(values.clients), durationS: Number(values.duration), handshakeTimeoutMs: Number(values['handshake-timeout']) };
  const pki = await makeTestPki({ keyType: 'ecdsa-p256', commonName: 'localhost', extraNames: ['localhost'] });
  const files = writePkiFiles(pki);
  const sockets = new Set<Socket>();
  const sink = createNetServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.resume();
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
  const sinkPort = (sink.address() as { port: number }).port;
  const out: string[] = [
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`,
    `edge: 1 worker, limits.maxConnections ${opts.cap}, limits.handshakeTimeoutMs ${opts.handshakeTimeoutMs}, other limits at their defaults; ${opts.durationS} s under attack; CPU in % of one core`,
  ];
  try {
    for (const name of values.attacks!.split(',')) {
      const attack = ATTACKS[name];
      if (!attack) throw new Error(`unknown attack '${name}'`);
      const rows: Row[] = [];
      for (const build of builds) {
        process.stderr.write(`${name} on ${build.name}…\n`);
        rows.push({ build: build.name, ...(await measure(build.main, name, pki, sinkPort, opts)) });
      }
      out.push('', `### ${attack.title}`, '', table(rows));
    }
  } finally {
    for (const s of sockets) s.destroy();
    sink.close();
    files.remove();
  }
  process.stdout.write(out.join('\n') + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
