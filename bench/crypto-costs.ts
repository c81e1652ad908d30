/**
 * `npm run bench:crypto` — what each node:crypto call a TLS 1.3 handshake or record makes
 * costs on this machine, in µs per call: the floor under the engine's figures
 * (docs/BENCHMARKS.md). Each operation runs in rounds of a fixed CPU-time budget; the
 * table shows the median round (CPU time of this process ÷ calls), so background load on
 * a shared machine moves it less than wall time would.
 *
 * Options: --rounds N (default 7), --budget-ms MS per round (default 150), --json.
 */
import {
  createCipheriv,
  createDiffieHellman,
  createECDH,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hash as oneShotHash,
  hkdfSync,
  randomBytes,
  sign,
  type KeyObject,
} from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { FFDHE_PRIMES, groupByName, keyExchange } from '../src/tls/index.js';
import { markdownTable } from './lib/format.js';

interface Operation {
  name: string;
  note?: string;
  run: () => unknown;
}

function x25519Peer(): { publicJwk: { kty: 'OKP'; crv: 'X25519'; x: string }; publicDer: Buffer } {
  // Encoded by the generation job, not exported afterwards (the Node 20 deadlock, docs/BENCHMARKS.md).
  const publicDer = generateKeyPairSync('x25519', { publicKeyEncoding: { type: 'spki', format: 'der' } }).publicKey as unknown as Buffer;
  return { publicJwk: { kty: 'OKP', crv: 'X25519', x: publicDer.subarray(publicDer.length - 32).toString('base64url') }, publicDer };
}

/** A client's share for an RFC 7919 group, left-padded to the prime's length (RFC 8446 §4.2.8.1). */
function ffdhePeerShare(primeHex: string): Buffer {
  const prime = Buffer.from(primeHex, 'hex');
  const y = createDiffieHellman(prime, 2).generateKeys();
  return Buffer.concat([Buffer.alloc(prime.length - y.length), y]);
}

function operations(): Operation[] {
  const peer = x25519Peer();
  const ecdsa = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const rsaPss = createPrivateKey(rsa.export({ format: 'pem', type: 'pkcs8' }));
  const p256Peer = createECDH('prime256v1');
  p256Peer.generateKeys();
  const p256PeerPublic = p256Peer.getPublicKey();
  const transcriptHash = randomBytes(32);
  const key32 = randomBytes(32);
  const info = randomBytes(50);
  const aesKey = randomBytes(16);
  const iv = randomBytes(12);
  const kb1 = randomBytes(1024);
  const kb16 = randomBytes(16384);
  const running = createHash('sha256').update(randomBytes(2000));
  const empty = Buffer.alloc(0);
  // GCM's counter would wrap after 64 GB through one object; a round is far below that.
  let openCipher: ReturnType<typeof createCipheriv> | undefined;
  const sealRecord = (content: Buffer) => {
    const cipher = createCipheriv('aes-128-gcm', aesKey, iv, { authTagLength: 16 });
    cipher.setAAD(Buffer.from([23, 3, 3, 0, 0]));
    cipher.update(content);
    cipher.final();
    return cipher.getAuthTag();
  };
  let x25519Private: KeyObject | undefined;
  const peerRaw = Buffer.from(peer.publicJwk.x, 'base64url');
  const x25519Group = groupByName('x25519')!;
  return [
    { name: "generateKeyPairSync('x25519')", run: () => generateKeyPairSync('x25519') },
    { name: 'createPublicKey X25519 from SPKI DER', note: 'slow path (OpenSSL 3 decoder)', run: () => createPublicKey({ key: peer.publicDer, format: 'der', type: 'spki' }) },
    { name: 'createPublicKey X25519 from JWK', note: 'what the engine does', run: () => createPublicKey({ key: peer.publicJwk, format: 'jwk' }) },
    {
      name: 'diffieHellman X25519',
      run: () => {
        x25519Private ??= generateKeyPairSync('x25519').privateKey;
        return diffieHellman({ privateKey: x25519Private, publicKey: createPublicKey({ key: peer.publicJwk, format: 'jwk' }) });
      },
      note: 'includes one JWK import',
    },
    {
      name: 'X25519 gen (SPKI out) + JWK import + derive',
      note: 'one key exchange, the engine until 2026-12-01',
      run: () => {
        // Not gen + publicKey.export('jwk'): that can deadlock Node 20 (docs/BENCHMARKS.md).
        const generated = generateKeyPairSync('x25519', { publicKeyEncoding: { type: 'spki', format: 'der' } });
        const privateKey = generated.privateKey;
        const publicKey = generated.publicKey as unknown as Buffer;
        const shared = diffieHellman({ privateKey, publicKey: createPublicKey({ key: peer.publicJwk, format: 'jwk' }) });
        return [shared, publicKey.subarray(publicKey.length - 32)];
      },
    },
    {
      name: 'keyExchange(x25519): import random d + export x + JWK import + derive',
      note: 'one key exchange, as the engine does it now (src/tls/crypto/key-exchange.ts)',
      run: () => keyExchange(x25519Group, peerRaw),
    },
    // A client picks the group by offering only it: each row is what it can make one handshake's key exchange cost.
    ...(Object.keys(FFDHE_PRIMES) as (keyof typeof FFDHE_PRIMES)[]).map((name) => {
      const group = groupByName(name)!;
      const peerShare = ffdhePeerShare(FFDHE_PRIMES[name]);
      return { name: `keyExchange(${name})`, note: 'RFC 7919 group: generate + derive', run: () => keyExchange(group, peerShare) };
    }),
    {
      name: "createECDH('prime256v1') gen + computeSecret",
      note: 'P-256 key exchange',
      run: () => {
        const ecdh = createECDH('prime256v1');
        ecdh.generateKeys();
        return ecdh.computeSecret(p256PeerPublic);
      },
    },
    { name: 'ECDSA P-256 sign (SHA-256)', run: () => sign('sha256', transcriptHash, ecdsa) },
    { name: 'RSA-PSS 2048 sign (SHA-256)', run: () => sign('sha256', transcriptHash, { key: rsaPss, padding: 6, saltLength: 32 }) },
    { name: 'HMAC-SHA256, new object per call', note: 'one HKDF-Expand-Label step', run: () => createHmac('sha256', key32).update(info).digest() },
    { name: "hkdfSync('sha256', …, 32)", run: () => hkdfSync('sha256', key32, Buffer.alloc(0), info, 32) },
    { name: 'AES-128-GCM seal, 1 KB record', note: 'new cipher object', run: () => sealRecord(kb1) },
    { name: 'AES-128-GCM seal, 16 KB record', note: 'new cipher object', run: () => sealRecord(kb16) },
    { name: 'AES-128-GCM record, no content', note: "a record's fixed cost: cipher object, AAD, final, tag", run: () => sealRecord(empty) },
    {
      name: 'AES-128-GCM update of 16 KB, open cipher object',
      note: "a record's content through node:crypto (new output buffer)",
      run: () => {
        openCipher ??= createCipheriv('aes-128-gcm', aesKey, iv, { authTagLength: 16 });
        return openCipher.update(kb16);
      },
    },
    { name: "crypto.hash('sha256', 1 KB) one-shot", run: () => oneShotHash('sha256', kb1) },
    { name: "createHash('sha256') + digest, 1 KB", run: () => createHash('sha256').update(kb1).digest() },
    { name: 'transcript hash copy + digest', note: 'Transcript-Hash at one point', run: () => running.copy().digest() },
  ];
}

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** µs of CPU per call over one round of about `budgetMs` of CPU time. */
function round(op: Operation, budgetMs: number): number {
  let calls = 0;
  let batch = 1;
  const start = cpuMicros();
  for (;;) {
    for (let i = 0; i < batch; i++) op.run();
    calls += batch;
    const spent = cpuMicros() - start;
    if (spent >= budgetMs * 1000) return spent / calls;
    batch = Math.min(batch * 2, 1024);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * µs per 16 KB AES-128-GCM encryption in C, from OpenSSL's own speed test (one context
 * reused for every block, as TLS stacks written in C keep one per direction), or undefined
 * without the `openssl` command.
 */
function opensslSealMicros(): number | undefined {
  const run = spawnSync('openssl', ['speed', '-evp', 'aes-128-gcm', '-bytes', '16384', '-seconds', '1'], { encoding: 'utf8' });
  if (run.error || run.status !== 0) return undefined;
  // The last line: "AES-128-GCM   2772434.94k" (1000s of bytes per second).
  const kbPerSecond = Number(/([0-9.]+)k\s*$/.exec(run.stdout.trim())?.[1]);
  if (!Number.isFinite(kbPerSecond) || kbPerSecond <= 0) return undefined;
  return (16384 / (kbPerSecond * 1000)) * 1e6;
}

function main(): void {
  const { values } = parseArgs({
    options: { rounds: { type: 'string', default: '7' }, 'budget-ms': { type: 'string', default: '150' }, json: { type: 'boolean' } },
  });
  const rounds = Number(values.rounds);
  const budgetMs = Number(values['budget-ms']);
  const ops = operations();
  for (const op of ops) round(op, 20); // warm-up: JIT, OpenSSL's algorithm fetches
  const results = ops.map((op) => {
    const perRound: number[] = [];
    // Rounds of different operations interleave less than this would suggest on a quiet
    // machine; on a loaded one the median of rounds is what holds.
    for (let r = 0; r < rounds; r++) perRound.push(round(op, budgetMs));
    return { name: op.name, note: op.note ?? '', median: median(perRound), min: Math.min(...perRound), max: Math.max(...perRound) };
  });
  const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  process.stdout.write(
    markdownTable(
      ['operation', 'note', 'µs per call (median)', 'min', 'max'],
      results.map((r) => [r.name, r.note, fmt(r.median), fmt(r.min), fmt(r.max)]),
      2,
    ) + '\n',
  );
  process.stdout.write(`(${rounds} rounds of ~${budgetMs} ms CPU each; Node ${process.version}, OpenSSL ${process.versions.openssl})\n`);
  const inC = opensslSealMicros();
  if (inC !== undefined) {
    const sealed = results.find((r) => r.name === 'AES-128-GCM seal, 16 KB record')!.median;
    process.stdout.write(
      `\nThe same 16 KB AES-128-GCM record in C (\`openssl speed -evp aes-128-gcm -bytes 16384\`, one reused context, what\n` +
        `node:tls and nginx do per record): ${fmt(inC)} µs. node:crypto's record above: ${fmt(sealed)} µs = ${(sealed / inC).toFixed(1)}×; per MB (64 records)\n` +
        `${fmt(64 * sealed)} µs against ${fmt(64 * inC)} µs.\n`,
    );
  } else process.stdout.write('\n(openssl not found: no C row for the 16 KB record; Debian package openssl)\n');
  if (values.json) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
}

main();
