/**
 * `npm run bench:keyd` — ECDSA P-256 CertificateVerify signatures: keyd over its unix
 * socket (pipelined, one keyd process) against node:crypto signing in-process, in ONE run.
 * Two more rows sign TLS 1.2 ServerKeyExchange content (signServerKeyExchange) with the
 * same key: what keyd's content checks cost (the sentinel, the group, and for a NIST
 * point its decoding onto the curve; an x25519 point has no curve check to make).
 *
 *   in-process   signWithScheme(key, ecdsa_secp256r1_sha256, certificateVerifyContent(h))
 *                in a loop in this process: the ceiling for one core
 *   keyd         `delegator keyd` as its own process; this process is the edge side
 *                (KeydClient), N connections × W requests in flight each; and one
 *                request every 4 ms (keyd idle in between, as behind an edge that is
 *                not saturated): the cost of waking keyd per signature
 *   keyd, SoftHSM the same keyd, a P-256 key generated inside a SoftHSM2 token (made for
 *                the run in a temporary directory; rows skipped, saying so, when the
 *                Debian package softhsm2 is not installed): keyd hashes, the token
 *                signs (CKM_ECDSA) on libuv's thread pool — keyd's CPU includes SoftHSM's,
 *                since a software token runs inside keyd's process
 *   keyd, tpm2-pkcs11 the same keyd, a P-256 key generated inside a software TPM (swtpm)
 *                through tpm2-pkcs11 (skipped without libtpm2-pkcs11-1 and swtpm): the
 *                TPM (a separate process here) signs; keyd's CPU excludes the TPM's
 *
 * Figures: signatures/s seen by the client (wall clock), p50/p99 latency of one request,
 * and the signer's CPU per signature — this process's for in-process, keyd's (utime+stime
 * from /proc/PID/stat) otherwise — giving "signatures per signer core-second", which is
 * what "≥ 70 % of in-process on one core" compares. On a 2-core machine the client
 * shares the CPU with keyd (and other work), so wall-clock rates understate both.
 *
 * Options: --duration S (3 per row) --json --software-only (no token rows: a quick run)
 * BENCH_PROFILE_DIR=DIR runs keyd under `node --cpu-prof` (profile written into DIR when it
 * stops; summarise with bench/profile-summary.ts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ECDH, createECDH, createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { KeydClient } from '../src/keyd/client.js';
import { LocalAdminTransport } from '../src/keyd/admin-client.js';
import { certificateVerifyContent, SignatureScheme, signWithScheme } from '../src/tls/index.js';
import { certificateVerifyContent as keydCertificateVerifyContent, checkServerKeyExchangeContent } from '../src/keyd/signed-content.js';
import { cpuTimeMicros } from './lib/proc-stat.js';
import { issueFromCsr, makeIdentity } from '../test/keyd/fixtures.js';
import { makeSoftHsmToken, softHsmModule, type SoftHsmToken } from '../test/keyd/pkcs11/softhsm.js';
import { makeTpm2Token, tpm2Missing, type Tpm2Token } from '../test/keyd/pkcs11/tpm2-token.js';
import { spawnSync } from 'node:child_process';

const here = dirname(fileURLToPath(import.meta.url));
const MAIN = resolve(here, '../src/cli/main.js');
const SCHEME = SignatureScheme.ecdsa_secp256r1_sha256;

interface Row {
  mode: string;
  connections: number;
  inFlight: number;
  signatures: number;
  perSecond: number;
  p50us: number;
  p99us: number;
  /** CPU (utime+stime) of the signing process per signature: this process in-process, keyd's otherwise. */
  signerCpuUsPerSig: number;
  perSignerCoreSecond: number;
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

function inProcess(key: import('node:crypto').KeyObject, seconds: number): Row {
  const hashes = Array.from({ length: 64 }, () => randomBytes(32));
  const latencies: number[] = [];
  // Warm-up, then measure.
  for (let i = 0; i < 500; i++) signWithScheme(key, SCHEME, certificateVerifyContent(hashes[i % 64]!));
  const end = performance.now() + seconds * 1000;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  let n = 0;
  while (performance.now() < end) {
    const t = performance.now();
    signWithScheme(key, SCHEME, certificateVerifyContent(hashes[n % 64]!));
    latencies.push(performance.now() - t);
    n++;
  }
  const elapsed = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu0);
  const cpu = used.user + used.system;
  const sorted = Float64Array.from(latencies).sort();
  return {
    mode: 'in-process node:crypto',
    connections: 0,
    inFlight: 1,
    signatures: n,
    perSecond: n / elapsed,
    p50us: percentile(sorted, 0.5) * 1000,
    p99us: percentile(sorted, 0.99) * 1000,
    signerCpuUsPerSig: cpu / n,
    perSignerCoreSecond: n / (cpu / 1e6),
  };
}

/** One signing request to time: a CertificateVerify (0x03) by default. */
type SignOnce = (client: KeydClient, keyRef: string, serverName: string) => Promise<Uint8Array>;

const benchHash = createHash('sha256').update('bench').digest();
const signCertificateVerify: SignOnce = (c, keyRef, serverName) => c.sign(keyRef, serverName, SCHEME, benchHash);

/**
 * A fresh X25519 public key, raw (the SPKI's last 32 bytes). It leaves generateKeyPairSync
 * already encoded: a JWK export of a generated key can deadlock Node 20 (docs/BENCHMARKS.md,
 * "A Node 20 deadlock, found under load").
 */
function x25519PublicRaw(): Buffer {
  const spki = generateKeyPairSync('x25519', { publicKeyEncoding: { type: 'spki', format: 'der' } }).publicKey as unknown as Buffer;
  return Buffer.from(spki.subarray(spki.length - 32));
}

/** A TLS 1.2 ServerKeyExchange (0x04) with a fixed point of `group`; server_random carries the downgrade sentinel. */
function signServerKeyExchange(group: 'x25519' | 'secp256r1'): SignOnce {
  const clientRandom = randomBytes(32);
  const serverRandom = Buffer.concat([randomBytes(24), Buffer.from('DOWNGRD\x01', 'latin1')]);
  const point =
    group === 'x25519'
      ? x25519PublicRaw()
      : (() => {
          const ecdh = createECDH('prime256v1');
          ecdh.generateKeys();
          return ecdh.getPublicKey();
        })();
  const namedCurve = group === 'x25519' ? 0x001d : 0x0017;
  const params = Buffer.concat([Buffer.of(3, namedCurve >> 8, namedCurve & 0xff, point.length), point]);
  return (c, keyRef, serverName) => c.signServerKeyExchange(keyRef, serverName, SCHEME, clientRandom, serverRandom, params);
}

async function overKeyd(
  mode: string,
  socketPath: string,
  keydPid: number,
  keyRef: string,
  serverName: string,
  connections: number,
  inFlight: number,
  seconds: number,
  signOnce: SignOnce = signCertificateVerify,
  paceMs = 0,
): Promise<Row> {
  const clients = await Promise.all(Array.from({ length: connections }, () => KeydClient.connect({ socketPath }, { requestTimeoutMs: 30_000 })));
  const latencies: number[] = [];
  let stop = false;
  let n = 0;
  const loop = async (c: KeydClient) => {
    while (!stop) {
      if (paceMs > 0) await new Promise((r) => setTimeout(r, paceMs));
      const t = performance.now();
      await signOnce(c, keyRef, serverName);
      latencies.push(performance.now() - t);
      n++;
    }
  };
  // Warm-up.
  await Promise.all(clients.map((c) => Promise.all(Array.from({ length: 200 }, () => signOnce(c, keyRef, serverName)))));
  const cpu0 = cpuTimeMicros(keydPid);
  const start = performance.now();
  const workers = clients.flatMap((c) => Array.from({ length: inFlight }, () => loop(c)));
  await new Promise((r) => setTimeout(r, seconds * 1000));
  stop = true;
  await Promise.all(workers);
  const elapsed = (performance.now() - start) / 1000;
  const cpu = cpuTimeMicros(keydPid) - cpu0;
  for (const c of clients) c.close();
  const sorted = Float64Array.from(latencies).sort();
  return {
    mode,
    connections,
    inFlight,
    signatures: n,
    perSecond: n / elapsed,
    p50us: percentile(sorted, 0.5) * 1000,
    p99us: percentile(sorted, 0.99) * 1000,
    signerCpuUsPerSig: cpu / n,
    perSignerCoreSecond: n / (cpu / 1e6),
  };
}

/**
 * What keyd's content checks cost per request, in this process (no socket, no keyd):
 * µs per call of building or checking each content, beside one signature over it.
 */
function contentCheckRows(key: import('node:crypto').KeyObject): string[] {
  const policy = { allowTls12OnlyServers: false };
  const clientRandom = randomBytes(32);
  const serverRandom = Buffer.concat([randomBytes(24), Buffer.from('DOWNGRD\x01', 'latin1')]);
  const nist = (curve: string) => {
    const ecdh = createECDH(curve);
    ecdh.generateKeys();
    return ecdh.getPublicKey();
  };
  const x25519 = x25519PublicRaw();
  const content = (group: number, point: Buffer) => Buffer.concat([clientRandom, serverRandom, Buffer.of(3, group >> 8, group & 0xff, point.length), point]);
  const hash = randomBytes(32);
  const cases: Array<[string, () => unknown]> = [
    ['TLS 1.3 CertificateVerify content (built from a 32-byte hash)', () => keydCertificateVerifyContent(hash)],
    ['TLS 1.2 ServerKeyExchange content, x25519 point', ((c) => () => checkServerKeyExchangeContent(c, policy))(content(0x001d, x25519))],
    ['TLS 1.2 ServerKeyExchange content, secp256r1 point (on-curve check)', ((c) => () => checkServerKeyExchangeContent(c, policy))(content(0x0017, nist('prime256v1')))],
    ['TLS 1.2 ServerKeyExchange content, secp384r1 point (on-curve check)', ((c) => () => checkServerKeyExchangeContent(c, policy))(content(0x0018, nist('secp384r1')))],
    ['for comparison: a secp256r1 point decoded by ECDH.convertKey (builds the curve per call)', ((point) => () => ECDH.convertKey(point, 'prime256v1'))(nist('prime256v1'))],
    ['for scale: one ECDSA P-256 signature (signWithScheme)', () => signWithScheme(key, SCHEME, content(0x001d, x25519))],
  ];
  const rows = cases.map(([what, run]) => {
    for (let i = 0; i < 500; i++) run();
    const n = 5000;
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < n; i++) run();
    const used = process.cpuUsage(cpu0);
    return `| ${what} | ${((used.user + used.system) / n).toFixed(1)} |`;
  });
  return ['', 'Content checks in keyd (src/keyd/signed-content.ts), in this process:', '', '| content | CPU µs per request |', '|---|---|', ...rows];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { duration: { type: 'string' }, json: { type: 'boolean' }, 'software-only': { type: 'boolean' } } });
  const softwareOnly = values['software-only'] === true;
  const seconds = Number(values.duration ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'keyd-bench-'));
  const machineId = join(dir, 'machine-id');
  writeFileSync(machineId, 'bench0000000000000000000000000000\n');
  const socket = join(dir, 'sign.sock');
  const adminSocket = join(dir, 'admin.sock');
  const hasSoftHsm = !softwareOnly && softHsmModule() !== undefined && spawnSync('sh', ['-c', 'command -v softhsm2-util'], { stdio: 'ignore' }).status === 0;
  const token: SoftHsmToken | undefined = hasSoftHsm ? makeSoftHsmToken('keyd-bench') : undefined;
  const tpmMissing = softwareOnly ? '--software-only' : tpm2Missing();
  const tpm: Tpm2Token | undefined = tpmMissing ? undefined : await makeTpm2Token('keyd-bench-tpm');
  const configArgs: string[] = [];
  const tokenConfigs = [...(token ? [{ ...(token.config.pkcs11.tokens[0] as object), sessions: 4 }] : []), ...(tpm ? tpm.config.pkcs11.tokens : [])];
  if (tokenConfigs.length > 0) {
    writeFileSync(join(dir, 'keyd.json'), JSON.stringify({ pkcs11: { tokens: tokenConfigs } }));
    configArgs.push('--config', join(dir, 'keyd.json'));
  }
  const profileArgs = process.env.BENCH_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE_DIR}`] : [];
  const keyd = spawn(process.execPath, [...profileArgs, MAIN, 'keyd', '--data', join(dir, 'data'), '--root-key', join(dir, 'root.key'), '--socket', socket, '--admin-socket', adminSocket, '--machine-id', machineId, '--log-level', 'warn', ...configArgs], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, ...(token?.env ?? {}), ...(tpm?.env ?? {}) },
  });
  try {
    await waitForSocket(adminSocket);
    const id = await makeIdentity('ecdsa-p256', ['bench.test']);
    const admin = await LocalAdminTransport.connect(adminSocket);
    await admin.put(['bench.test'], id.privateKey, id.chain);
    if (token) {
      const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true });
      const { csrPem } = await admin.generate('token.bench.test', 'ecdsa-p256', 'CN=token.bench.test', { token: token.uri });
      await admin.setChain('token.bench.test', await issueFromCsr(csrPem, ca));
    }
    if (tpm) {
      const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true });
      const { csrPem } = await admin.generate('tpm.bench.test', 'ecdsa-p256', 'CN=tpm.bench.test', { token: tpm.uri });
      await admin.setChain('tpm.bench.test', await issueFromCsr(csrPem, ca));
    }
    admin.close();
    const probe = await KeydClient.connect({ socketPath: socket });
    const identity = (await probe.identity('bench.test'))!;
    const tokenIdentity = token ? (await probe.identity('token.bench.test'))! : undefined;
    const tpmIdentity = tpm ? (await probe.identity('tpm.bench.test'))! : undefined;
    probe.close();

    const rows: Row[] = [inProcess(id.privateKey, seconds)];
    for (const [connections, inFlight] of [
      [1, 1],
      [1, 64],
      [8, 32],
    ] as const) {
      rows.push(await overKeyd('keyd, software store', socket, keyd.pid!, identity.keyRef, 'bench.test', connections, inFlight, seconds));
    }
    // One request every 4 ms, as an edge at a few hundred handshakes/s sends them: keyd
    // sleeps between requests, so each costs a wake-up from idle (cold caches), which the
    // back-to-back 1 × 1 row does not show.
    rows.push(await overKeyd('keyd, software store, paced (1 request / 4 ms)', socket, keyd.pid!, identity.keyRef, 'bench.test', 1, 1, seconds, signCertificateVerify, 4));
    for (const group of ['x25519', 'secp256r1'] as const) {
      rows.push(await overKeyd(`keyd, software store, TLS 1.2 ServerKeyExchange (${group} point)`, socket, keyd.pid!, identity.keyRef, 'bench.test', 1, 64, seconds, signServerKeyExchange(group)));
    }
    if (tokenIdentity) {
      for (const [connections, inFlight] of [
        [1, 1],
        [1, 64],
        [8, 32],
      ] as const) {
        rows.push(await overKeyd('keyd, SoftHSM2 token', socket, keyd.pid!, tokenIdentity.keyRef, 'token.bench.test', connections, inFlight, seconds));
      }
    }
    if (tpmIdentity) {
      for (const [connections, inFlight] of [
        [1, 1],
        [1, 16],
      ] as const) {
        rows.push(await overKeyd('keyd, tpm2-pkcs11 (swtpm)', socket, keyd.pid!, tpmIdentity.keyRef, 'tpm.bench.test', connections, inFlight, seconds));
      }
    }
    const base = rows[0]!.perSignerCoreSecond;
    const lines = [
      `keyd benchmark — ECDSA P-256 (ecdsa_secp256r1_sha256) CertificateVerify (TLS 1.2 rows: ServerKeyExchange), ${seconds} s per row, Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model.trim()}`,
      '',
      '| mode | connections × in flight | signatures/s (wall) | p50 µs | p99 µs | signer CPU µs/sig | signatures per signer core-second | % of in-process (per core) |',
      '|---|---|---|---|---|---|---|---|',
      ...rows.map((r) =>
        [
          r.mode,
          r.connections ? `${r.connections} × ${r.inFlight}` : '—',
          r.perSecond.toFixed(0),
          r.p50us.toFixed(0),
          r.p99us.toFixed(0),
          r.signerCpuUsPerSig.toFixed(1),
          r.perSignerCoreSecond.toFixed(0),
          `${((100 * r.perSignerCoreSecond) / base).toFixed(0)} %`,
        ].join(' | ').replace(/^/, '| ').replace(/$/, ' |'),
      ),
    ];
    lines.push(...contentCheckRows(id.privateKey));
    if (!token) lines.push('', softwareOnly ? 'SoftHSM2 rows skipped: --software-only.' : 'SoftHSM2 rows skipped: softhsm2 is not installed (apt-get install softhsm2).');
    if (tpmMissing) lines.push('', `tpm2-pkcs11 rows skipped: ${tpmMissing}.`);
    process.stdout.write(lines.join('\n') + '\n');
    if (values.json) process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
  } finally {
    keyd.kill('SIGTERM');
    await new Promise((r) => keyd.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
    token?.cleanup();
    tpm?.cleanup();
  }
}

async function waitForSocket(path: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const c = await KeydClient.connect({ socketPath: path }, { requestTimeoutMs: 1000 });
      c.close();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:keyd: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
