/**
 * `npm run bench:attacks-keyd` — replays denial-of-service attacks against a real keyd
 * (`delegator keyd` as its own process) and prints, for each, keyd's RSS and CPU and
 * whether a fresh legitimate client was served. Markdown tables on stdout.
 *
 *   stalled frames   N connections each send a frame header announcing a 1 MiB sign
 *                    request and as much of the body as keyd takes, then stall
 *   silent mTLS      one TCP connection to the mTLS listener that never sends a byte
 *   fd exhaustion    keyd under `ulimit -n 512`; 600 idle connections to the signing
 *                    socket; then a new edge (its own principal socket where keyd has one)
 *   pipelining       one client keeps 1,000 signatures in flight; another signs one at a
 *                    time: its p50 / max latency, beside the same client alone
 *
 * The bench speaks the frame protocol itself (--protocol 1 for a keyd before sign requests
 * carried the server name), so `--main OTHER/dist/src/cli/main.js --protocol 1` replays
 * the same attacks against an older keyd for a before/after table.
 *
 * Options: --main PATH  --protocol 1|2  --stalled N (300)  --silent-wait S (12)  --duration S (3)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { markdownTable } from './lib/format.js';
import { cpuTimeMicros } from './lib/proc-stat.js';
import { makeIdentity, pem } from '../test/keyd/fixtures.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    main: { type: 'string' },
    protocol: { type: 'string' },
    stalled: { type: 'string' },
    'silent-wait': { type: 'string' },
    duration: { type: 'string' },
    flooder: { type: 'string' },
    'key-ref': { type: 'string' },
  },
});
const MAIN = resolve(values.main ?? resolve(here, '../src/cli/main.js'));
const VERSION = Number(values.protocol ?? 2);
const STALLED = Number(values.stalled ?? 300);
const SILENT_WAIT_S = Number(values['silent-wait'] ?? 12);
const DURATION_S = Number(values.duration ?? 3);
const NAME = 'bench.test';
const HASH = createHash('sha256').update('bench').digest();

// ---- a minimal protocol client (docs/PROTOCOL.md), for either protocol version ------------

function frame(opcode: number, id: number, payload: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + payload.length);
  out[0] = VERSION;
  out[1] = opcode;
  out.writeUInt32BE(id, 4);
  out.writeUInt32BE(payload.length, 8);
  out.set(payload, 12);
  return out;
}

const vec1 = (s: string | Uint8Array) => Buffer.concat([Buffer.of(Buffer.byteLength(s as string)), Buffer.from(s as string)]);

function signPayload(keyRef: string): Buffer {
  const scheme = Buffer.of(0x04, 0x03);
  return Buffer.concat([vec1(keyRef), ...(VERSION >= 2 ? [vec1(NAME)] : []), scheme, Buffer.of(HASH.length), HASH]);
}

/** Pipelined raw client: request() resolves with [opcode, payload]. */
class RawClient {
  private buf = Buffer.alloc(0);
  private next = 1;
  private readonly waiting = new Map<number, (r: [number, Buffer]) => void>();
  closed = false;
  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.values()) w([0xff, Buffer.from('closed')]);
      this.waiting.clear();
    });
  }
  static open(path: string): Promise<RawClient> {
    return new Promise((ok, fail) => {
      const s = netConnect({ path }, () => ok(new RawClient(s)));
      s.once('error', fail);
    });
  }
  request(opcode: number, payload: Uint8Array): Promise<[number, Buffer]> {
    const id = this.next++;
    return new Promise((ok) => {
      this.waiting.set(id, ok);
      this.socket.write(frame(opcode, id, payload));
    });
  }
  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 12) {
      const len = this.buf.readUInt32BE(8);
      if (this.buf.length < 12 + len) break;
      const id = this.buf.readUInt32BE(4);
      const op = this.buf[1]!;
      const payload = this.buf.subarray(12, 12 + len);
      this.buf = this.buf.subarray(12 + len);
      this.waiting.get(id)?.([op, payload]);
      this.waiting.delete(id);
    }
  }
  close(): void {
    this.socket.destroy();
  }
}

async function identityRef(c: RawClient): Promise<string> {
  const [op, p] = await c.request(0x02, vec1(NAME));
  if (op !== 0x82 || p[0] !== 1) throw new Error(`identity failed: op 0x${op.toString(16)} ${p.toString('latin1')}`);
  return p.subarray(2, 2 + p[1]!).toString('latin1');
}

/** One signature; its latency in ms, or undefined when refused / not served within 5 s. */
async function signOnce(c: RawClient, keyRef: string): Promise<number | undefined> {
  const t = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([c.request(0x03, signPayload(keyRef)), new Promise<undefined>((ok) => (timer = setTimeout(() => ok(undefined), 5000)))]);
  clearTimeout(timer);
  return r && r[0] === 0x83 ? performance.now() - t : undefined;
}

/** A fresh legitimate client: connect, identity, one signature. */
async function freshClientServed(path: string): Promise<string> {
  try {
    const c = await Promise.race([RawClient.open(path), new Promise<never>((_, no) => setTimeout(() => no(new Error('connect timeout')), 5000))]);
    try {
      const ref = await Promise.race([identityRef(c), new Promise<never>((_, no) => setTimeout(() => no(new Error('no identity within 5 s')), 5000))]);
      const ms = await signOnce(c, ref);
      return ms === undefined ? 'no (sign refused or timed out)' : `yes (${ms.toFixed(1)} ms)`;
    } finally {
      c.close();
    }
  } catch (err) {
    return `no (${(err as Error).message})`;
  }
}

// ---- keyd process ------------------------------------------------------------------------

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface Keyd {
  child: ChildProcess;
  dir: string;
  socket: string;
  admin: string;
  edgeB: string;
  tlsPort: number;
  clientTls: { cert: string; key: string; ca: string };
  stop(): Promise<void>;
}

async function startKeyd(): Promise<Keyd> {
  const dir = mkdtempSync(join(tmpdir(), 'keyd-attacks-'));
  writeFileSync(join(dir, 'machine-id'), 'bench0000000000000000000000000000\n');
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=bench CA' });
  const server = await makeIdentity('ecdsa-p256', ['localhost', '127.0.0.1'], ca, { subject: 'CN=keyd' });
  const edge = await makeIdentity('ecdsa-p256', [], ca, { subject: 'CN=edge-remote' });
  writeFileSync(join(dir, 'tls.crt'), pem(server.chain[0]!));
  writeFileSync(join(dir, 'tls.key'), server.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
  writeFileSync(join(dir, 'ca.crt'), pem(ca.chain[0]!));
  const edgeB = join(dir, 'edge-b.sock');
  // Both versions read this config; an older keyd ignores the sections it does not know.
  writeFileSync(
    join(dir, 'keyd.json'),
    JSON.stringify({ clients: { 'CN=edge-remote': ['*'] }, principals: { 'edge-b': { socket: edgeB, mode: '0600', names: ['*'] } }, limits: { maxConnectionsPerListener: 256 } }),
  );
  const socket = join(dir, 'sign.sock');
  const admin = join(dir, 'admin.sock');
  const args = [MAIN, 'keyd', '--data', join(dir, 'data'), '--root-key', join(dir, 'root.key'), '--socket', socket, '--admin-socket', admin, '--machine-id', join(dir, 'machine-id'), '--config', join(dir, 'keyd.json'), '--listen', '127.0.0.1:0', '--tls-cert', join(dir, 'tls.crt'), '--tls-key', join(dir, 'tls.key'), '--client-ca', join(dir, 'ca.crt'), '--log-level', 'info'];
  // A modest fd limit, as a service manager would set, so that fd exhaustion is reachable.
  const child = spawn('sh', ['-c', 'ulimit -n 512 && exec "$0" "$@"', process.execPath, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const tlsPort = await new Promise<number>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`keyd did not start: ${log}`)), 30_000);
    child.stderr!.on('data', (d: Buffer) => {
      log += d.toString();
      const m = /"tlsPort":(\d+)/.exec(log);
      if (log.includes('keyd started') && m) {
        clearTimeout(timer);
        ok(Number(m[1]));
      }
    });
    child.once('exit', (code) => fail(new Error(`keyd exited ${code}: ${log}`)));
  });
  child.stderr!.resume();
  // Install the key over the admin socket (same frames in both versions but for the version byte).
  const id = await makeIdentity('ecdsa-p256', [NAME]);
  const json = Buffer.from(JSON.stringify({ names: [NAME] }));
  const vec3 = (b: Uint8Array) => Buffer.concat([Buffer.of(b.length >> 16, (b.length >> 8) & 0xff, b.length & 0xff), Buffer.from(b)]);
  const putPayload = Buffer.concat([vec3(json), vec3(id.privateKey.export({ format: 'der', type: 'pkcs8' })), ...id.chain.map(vec3)]);
  const a = await RawClient.open(admin);
  const [op, p] = await a.request(0x10, putPayload);
  a.close();
  if (op !== 0x90) throw new Error(`put failed: ${p.toString('latin1')}`);
  return {
    child,
    dir,
    socket,
    admin,
    edgeB,
    tlsPort,
    clientTls: { cert: pem(edge.chain[0]!), key: edge.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, ca: pem(ca.chain[0]!) },
    stop: async () => {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rows: string[][] = [];
const row = (attack: string, rssBefore: number, rssUnder: number, cpuMs: number, outcome: string, fresh: string) =>
  rows.push([attack, rssBefore.toFixed(0), rssUnder.toFixed(0), cpuMs.toFixed(0), outcome, fresh]);

async function stalledFrames(k: Keyd): Promise<void> {
  const pid = k.child.pid!;
  const before = rssMiB(pid);
  const cpu0 = cpuTimeMicros(pid);
  const body = Buffer.alloc((1 << 20) - 1, 0x41);
  const sockets: Socket[] = [];
  for (let i = 0; i < STALLED; i++) {
    const s = netConnect({ path: k.socket });
    s.on('error', () => undefined);
    s.resume(); // so that keyd's close is seen
    const header = frame(0x03, i + 1, Buffer.alloc(0));
    header.writeUInt32BE(1 << 20, 8);
    s.write(header);
    s.write(body); // all but the last byte: the frame never completes
    sockets.push(s);
    if (i % 20 === 19) await sleep(10);
  }
  await sleep(2000);
  const under = rssMiB(pid);
  const open = sockets.filter((s) => !s.destroyed && !s.readableEnded).length;
  const fresh = await freshClientServed(k.edgeB);
  const freshShared = await freshClientServed(k.socket);
  row(`${STALLED} × stalled 1 MiB sign frame`, before, under, (cpuTimeMicros(pid) - cpu0) / 1000, `${open} of ${STALLED} still open after 2 s`, `own socket: ${fresh}; shared socket: ${freshShared}`);
  for (const s of sockets) s.destroy();
  await sleep(500);
}

async function silentTls(k: Keyd): Promise<void> {
  const pid = k.child.pid!;
  const before = rssMiB(pid);
  const cpu0 = cpuTimeMicros(pid);
  const t0 = performance.now();
  const s = netConnect({ host: '127.0.0.1', port: k.tlsPort });
  s.on('error', () => undefined);
  s.resume();
  const closedAfter = await Promise.race([new Promise<number>((ok) => s.once('close', () => ok((performance.now() - t0) / 1000))), sleep(SILENT_WAIT_S * 1000).then(() => undefined)]);
  s.destroy();
  row('silent TCP to the mTLS listener', before, rssMiB(pid), (cpuTimeMicros(pid) - cpu0) / 1000, closedAfter === undefined ? `still open after ${SILENT_WAIT_S} s` : `closed by keyd after ${closedAfter.toFixed(1)} s`, await freshClientServed(k.socket));
}

async function fdExhaustion(k: Keyd): Promise<void> {
  const pid = k.child.pid!;
  const before = rssMiB(pid);
  const cpu0 = cpuTimeMicros(pid);
  const sockets: Socket[] = [];
  let refused = 0;
  for (let i = 0; i < 600; i++) {
    const s = netConnect({ path: k.socket });
    s.on('error', () => refused++);
    s.resume();
    sockets.push(s);
    if (i % 50 === 49) await sleep(20);
  }
  await sleep(1500);
  const open = sockets.filter((s) => !s.destroyed && !s.readableEnded).length;
  const fresh = await freshClientServed(k.edgeB);
  const freshShared = await freshClientServed(k.socket);
  row('600 idle connections, keyd `ulimit -n 512`', before, rssMiB(pid), (cpuTimeMicros(pid) - cpu0) / 1000, `${open} held open`, `own socket: ${fresh}; shared socket: ${freshShared}`);
  for (const s of sockets) s.destroy();
  await sleep(500);
}

async function pipelining(k: Keyd): Promise<string[][]> {
  const normal = await RawClient.open(k.edgeB).catch(() => RawClient.open(k.socket));
  const ref = await identityRef(normal);
  const measure = async (): Promise<{ p50: number; max: number; n: number }> => {
    const lat: number[] = [];
    const end = performance.now() + DURATION_S * 1000;
    while (performance.now() < end) {
      const ms = await signOnce(normal, ref);
      if (ms !== undefined) lat.push(ms);
    }
    lat.sort((a, b) => a - b);
    return { p50: lat[Math.floor(lat.length / 2)] ?? NaN, max: lat.at(-1) ?? NaN, n: lat.length };
  };
  const pid = k.child.pid!;
  const alone = await measure();
  // The pipeliner runs in its own process, so that its replies do not load this one's event loop.
  const flooder = spawn(process.execPath, [fileURLToPath(import.meta.url), '--flooder', k.socket, '--key-ref', ref, '--protocol', String(VERSION)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let floodSigs = 0;
  flooder.stdout!.on('data', (d: Buffer) => {
    const last = d.toString().trim().split('\n').at(-1);
    if (last) floodSigs = Number(last);
  });
  const cpu0 = cpuTimeMicros(pid);
  await sleep(1000);
  const f0 = floodSigs;
  const t0 = performance.now();
  const beside = await measure();
  const floodRate = (floodSigs - f0) / ((performance.now() - t0) / 1000);
  const cpuMs = (cpuTimeMicros(pid) - cpu0) / 1000;
  flooder.kill('SIGKILL');
  await new Promise((r) => flooder.once('exit', r));
  normal.close();
  return [
    ['normal client alone', alone.p50.toFixed(2), alone.max.toFixed(1), String(alone.n), '—', '—'],
    ['normal client beside a 1,000-in-flight pipeliner', beside.p50.toFixed(2), beside.max.toFixed(1), String(beside.n), floodRate.toFixed(0), cpuMs.toFixed(0)],
  ];
}

/** --flooder SOCKET: keeps 1,000 signatures in flight on one connection; prints its count every 100 ms. */
async function flood(path: string, keyRef: string): Promise<void> {
  const c = await RawClient.open(path);
  const payload = signPayload(keyRef);
  let n = 0;
  setInterval(() => process.stdout.write(`${n}\n`), 100);
  const pump = async () => {
    while (!c.closed) if ((await c.request(0x03, payload))[0] === 0x83) n++;
  };
  await Promise.all(Array.from({ length: 1000 }, pump));
}

async function main(): Promise<void> {
  if (values.flooder) return flood(values.flooder, values['key-ref']!);
  const k = await startKeyd();
  try {
    const pipe = await pipelining(k);
    await stalledFrames(k);
    await silentTls(k);
    await fdExhaustion(k);
    process.stdout.write(`keyd attack bench — ${MAIN} (protocol ${VERSION}), Node ${process.version}\n\n`);
    process.stdout.write(markdownTable(['attack', 'keyd RSS before (MiB)', 'keyd RSS under (MiB)', 'keyd CPU (ms)', 'what keyd did', 'fresh legitimate client served?'], rows, 1) + '\n\n');
    process.stdout.write(markdownTable(['signing latency (ms)', 'p50', 'max', 'signatures', 'pipeliner sig/s', 'keyd CPU (ms)'], pipe, 1) + '\n');
  } finally {
    await k.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:attacks-keyd: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
