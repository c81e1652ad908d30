/**
 * `delegator demo` (= `npm start`): the whole system on one machine, nothing to configure.
 *
 *   keyd (child process)  ← holds the localhost key, generated inside keyd, sealed on disk
 *   edge (child process)  ← TLS 1.3 on https://localhost:8443, no private key
 *   upstream (here)       ← a small HTTP app on a random loopback port
 *
 * State lives in ./.delegator/ (or $DELEGATOR_HOME): keyd's sealed store and root key, the
 * demo CA, the edge config, logs. A second start reuses all of it. Ctrl-C stops everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createHash } from 'node:crypto';
import { parseHostPort } from '../edge/config.js';
import { startDemoUpstream } from '../edge/demo-upstream.js';
import { KeydClient, KeydError } from '../keyd/client.js';
import { Opcode } from '../keyd/protocol.js';
import { ED25519_WARNING, hasDelegationUsage, issueFromCsr, isLeafKeyType, LEAF_KEY_TYPES, type LeafKeyType } from '../demo/pki.js';
import { demoPkiPaths, loadOrCreateCa } from '../demo/pki-files.js';

export const summary = 'the whole system: keyd + edge + a demo upstream on https://localhost:8443 (npm start)';

const HELP = `Usage: delegator demo [options]      (npm start -- [options])

Starts the whole system with nothing to configure: keyd (which generates the localhost
key itself and never writes it in plaintext), a demo CA that certifies it, a small
upstream web app, and the edge serving https://localhost:PORT. State is kept in
$DELEGATOR_HOME or ./.delegator/ and reused on the next start. Ctrl-C stops everything.

  --port N            edge port (default 8443)
  --host ADDR         edge listen address (default: 127.0.0.1 and ::1, as \`localhost\`
                      resolves to either; ::1 is left out where IPv6 is off)
  --key-type TYPE     ${LEAF_KEY_TYPES.join('|')} (default ecdsa-p256; a change generates a new key;
                      no browser offers ed25519 for TLS: such a site works with curl/openssl only)
  --metrics HOST:PORT also serve the edge's Prometheus metrics there
  --client-ca FILE    the route asks clients for a certificate from the CAs in this PEM
                      file (route clientAuth, docs/EDGE.md); the upstream page shows the CN
  --client-auth MODE  optional|required (default required with --client-ca)
  --home DIR          state directory (default $DELEGATOR_HOME, else ./.delegator)
  -h, --help
`;

const NAME = 'localhost';
const CERT_NAMES = ['localhost', '127.0.0.1'];
const RENEW_BEFORE_MS = 7 * 24 * 3600 * 1000;

interface DemoOptions {
  port: number;
  /** Undefined: both loopback addresses. */
  host?: string;
  keyType: LeafKeyType;
  metrics?: string;
  home: string;
  clientAuth?: { mode: 'optional' | 'required'; ca: string };
}

function parse(argv: string[]): DemoOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      port: { type: 'string', default: '8443' },
      host: { type: 'string' },
      'key-type': { type: 'string', default: 'ecdsa-p256' },
      metrics: { type: 'string' },
      home: { type: 'string' },
      'client-ca': { type: 'string' },
      'client-auth': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  if (!/^\d{1,5}$/.test(values.port!) || Number(values.port) > 65535) throw new Error(`--port must be 0..65535, got '${values.port}'`);
  if (!isLeafKeyType(values['key-type']!)) throw new Error(`--key-type must be one of ${LEAF_KEY_TYPES.join(', ')}`);
  if (values.metrics) parseHostPort(values.metrics, '--metrics');
  const mode = values['client-auth'] ?? 'required';
  if (values['client-auth'] !== undefined && values['client-ca'] === undefined) throw new Error('--client-auth needs --client-ca FILE');
  if (mode !== 'optional' && mode !== 'required') throw new Error(`--client-auth must be optional or required, got '${mode}'`);
  return {
    ...(values['client-ca'] !== undefined ? { clientAuth: { mode, ca: resolve(values['client-ca']) } } : {}),
    port: Number(values.port),
    host: values.host,
    keyType: values['key-type'],
    metrics: values.metrics,
    home: resolve(values.home ?? process.env.DELEGATOR_HOME ?? '.delegator'),
  };
}

/**
 * `localhost` resolves to ::1 first on many systems (RFC 6761 §6.3 allows both), so the
 * demo listens on both loopback addresses; ::1 only where the kernel has IPv6.
 */
async function loopbackHosts(): Promise<string[]> {
  const probe = createServer();
  const ipv6 = await new Promise<boolean>((resolve) => {
    probe.once('error', () => resolve(false));
    probe.listen(0, '::1', () => probe.close(() => resolve(true)));
  });
  return ipv6 ? ['127.0.0.1', '::1'] : ['127.0.0.1'];
}

/** keyd's KeyInfo.keyType for a demo key type. */
function keydKeyType(keyType: LeafKeyType): string {
  return keyType === 'rsa2048' ? 'rsa' : keyType;
}

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

function startChild(name: string, args: string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a', 0o600);
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', fd, fd], detached: false });
  closeSync(fd);
  child.on('error', (err) => process.stderr.write(`demo: cannot start ${name}: ${err.message}\n`));
  return child;
}

function logSize(logFile: string): number {
  try {
    return statSync(logFile).size;
  } catch {
    return 0;
  }
}

/** What was appended to a log since it was `offset` bytes long (the logs are kept across starts). */
function logSince(logFile: string, offset: number): string {
  try {
    return readFileSync(logFile).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

function logTail(logFile: string, lines = 15): string {
  try {
    return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** A child that ended while the demo waited for it: a failure, never a mere "not ready yet". */
class ChildExited extends Error {}

async function until<T>(what: string, child: ChildProcess, logFile: string, attempt: () => Promise<T>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new ChildExited(`${what} exited (${child.exitCode ?? child.signalCode}); its log ${logFile} ends with:\n${logTail(logFile)}`);
    }
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms (${(err as Error).message}); log: ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function portOpen(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(port, host === '0.0.0.0' ? '127.0.0.1' : host);
    s.once('connect', () => {
      s.destroy();
      resolve();
    });
    s.once('error', reject);
  });
}

async function stopChild(child: ChildProcess | undefined, timeoutMs = 10_000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  await exited;
  clearTimeout(timer);
}

/** Unix socket paths are limited to ~107 bytes; a deep checkout gets them under /tmp instead. */
function socketDir(home: string): string {
  const preferred = join(home, 'run');
  if (Buffer.byteLength(join(preferred, 'keyd-admin.sock')) < 100) return preferred;
  return join(tmpdir(), `delegator-${createHash('sha256').update(home).digest('hex').slice(0, 12)}`);
}

/**
 * Makes sure keyd serves `localhost` with a key of `keyType` certified by the demo CA:
 * reuses what is there, else has keyd generate a key and certifies its CSR.
 */
async function ensureIdentity(
  admin: KeydClient,
  signing: KeydClient,
  caDir: string,
  keyType: LeafKeyType,
): Promise<'reused' | 'generated'> {
  const { ca } = await loadOrCreateCa(caDir);
  const caCert = new X509Certificate(readFileSync(demoPkiPaths(caDir).caCertificate));
  let reusable = false;
  try {
    const info = (await admin.admin(Opcode.show, { name: NAME })).json as { keyType?: string; hasChain?: boolean; notAfter?: string | null };
    const identity = await signing.identity(NAME);
    const leaf = identity?.certificateChain[0];
    reusable =
      info.keyType === keydKeyType(keyType) &&
      info.hasChain === true &&
      !!info.notAfter &&
      Date.parse(info.notAfter) - Date.now() > RENEW_BEFORE_MS &&
      !!leaf &&
      new X509Certificate(leaf).verify(caCert.publicKey) &&
      // Leaves from before delegated credentials lack DelegationUsage: re-issue them.
      hasDelegationUsage(leaf);
  } catch (err) {
    if (!(err instanceof KeydError) || err.code !== 'KEYD_UNKNOWN_NAME') throw err;
  }
  if (reusable) return 'reused';
  const generated = (await admin.admin(Opcode.generate, { name: NAME, keyType, subject: `CN=${NAME}` })).json as { csrPem: string };
  const leaf = await issueFromCsr(ca, generated.csrPem, CERT_NAMES);
  await admin.admin(Opcode.setChain, { name: NAME }, [leaf.der]);
  return 'generated';
}

export async function main(argv: string[]): Promise<number> {
  let opts: DemoOptions | 'help';
  try {
    opts = parse(argv);
  } catch (err) {
    process.stderr.write(`delegator demo: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  const { home } = opts;
  const run = socketDir(home);
  const logs = join(home, 'logs');
  const caDir = join(home, 'demo-ca');
  for (const dir of [home, run, logs]) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keydSocket = join(run, 'keyd.sock');
  const adminSocket = join(run, 'keyd-admin.sock');
  const keydLog = join(logs, 'keyd.log');
  const edgeLog = join(logs, 'edge.log');

  let keyd: ChildProcess | undefined;
  let edge: ChildProcess | undefined;
  let upstream: Awaited<ReturnType<typeof startDemoUpstream>> | undefined;
  let stopping = false;
  let resolveStopped: (code: number) => void = () => undefined;
  const stopped = new Promise<number>((r) => (resolveStopped = r));
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await stopChild(edge); // drains first: open connections still need keyd and the upstream
    await upstream?.close();
    await stopChild(keyd);
    resolveStopped(code);
  };
  const onSignal = () => {
    process.stdout.write('\nstopping edge, upstream and keyd…\n');
    void stopAll(0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    process.stdout.write(`delegator demo: state in ${home}\n`);
    process.stdout.write(
      `delegator demo: keyd's root key is the file ${join(home, 'keyd-root.key')}, not a TPM: the store is bound to that file ` +
        `(and /etc/machine-id), so a copy of it and ${join(home, 'keyd-data')} opens every key; ` +
        `in production use \`delegator keyd --root-key tpm\` (docs/KEYD.md)\n`,
    );
    keyd = startChild(
      'keyd',
      ['keyd', '--data', join(home, 'keyd-data'), '--root-key', join(home, 'keyd-root.key'), '--socket', keydSocket, '--admin-socket', adminSocket],
      keydLog,
    );
    const admin = await until('keyd', keyd, keydLog, () => KeydClient.connect({ socketPath: adminSocket }, { requestTimeoutMs: 30_000 }));
    const signing = await KeydClient.connect({ socketPath: keydSocket });
    const outcome = await ensureIdentity(admin, signing, caDir, opts.keyType);
    admin.close();
    signing.close();
    process.stdout.write(
      outcome === 'generated'
        ? `keyd generated a new ${opts.keyType} key for ${NAME} (sealed in its store; never written in plaintext) and the demo CA certified it\n`
        : `keyd already holds the ${opts.keyType} key for ${NAME}; reusing it\n`,
    );

    if (opts.keyType === 'ed25519') process.stderr.write(ED25519_WARNING);
    upstream = await startDemoUpstream();
    const hosts = opts.host === undefined ? await loopbackHosts() : [opts.host];
    const edgeConfig = {
      listen: hosts.map((host) => `${host.includes(':') ? `[${host}]` : host}:${opts.port}`),
      keyd: [keydSocket],
      routes: [
        {
          names: [NAME],
          upstream: `127.0.0.1:${upstream.port}`,
          proxyProtocol: true,
          alpn: ['http/1.1'],
          ...(opts.clientAuth ? { clientAuth: opts.clientAuth } : {}),
        },
      ],
      defaultServerName: NAME,
      workers: 1,
      limits: { drainTimeoutMs: 5000 },
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
    };
    const configFile = join(home, 'edge.json');
    writeFileSync(configFile, JSON.stringify(edgeConfig, null, 2) + '\n');
    const edgeLogStart = logSize(edgeLog);
    edge = startChild('edge', ['edge', '--config', configFile], edgeLog);
    await until('edge', edge, edgeLog, () => Promise.all(hosts.map((host) => portOpen(host, opts.port))));
    // The edge asks keyd for a delegated credential as it connects; wait for it, so the first
    // client that offers delegated credentials already gets one.
    const credentialReady = await until('edge', edge, edgeLog, async () => {
      if (!logSince(edgeLog, edgeLogStart).includes('delegated credential obtained from keyd')) throw new Error('no delegated credential yet');
      return true;
    }).catch((err: unknown) => {
      // Only "no credential yet" is tolerated. The port check above is passed by whatever
      // listens there, so an edge that could not listen (the port taken) dies during this wait.
      if (err instanceof ChildExited) throw err;
      return false;
    });

    const caFile = demoPkiPaths(caDir).caCertificate;
    const url = `https://localhost:${opts.port}/`;
    process.stdout.write(
      [
        '',
        `edge:      ${url}  on ${hosts.join(' and ')} (TLS 1.3 and 1.2; handshakes signed by keyd, pid ${keyd.pid}; edge pid ${edge.pid})`,
        ...(credentialReady
          ? [
              `           delegated credentials (RFC 9345) served: the certificate carries DelegationUsage, keyd certified a`,
              `           short-lived key the edge holds (4 h, renewed), and clients that offer them (Firefox, tstclnt -B)`,
              `           are signed in the edge with it, without a keyd round trip; others through keyd`,
            ]
          : [`           delegated credentials: keyd has not issued one yet (see ${edgeLog}); every handshake signs through keyd`]),
        `upstream:  http://127.0.0.1:${upstream.port}/ (receives PROXY v2: client address + server name)`,
        `demo CA:   ${caFile}`,
        `logs:      ${logs}/`,
        ...(opts.metrics ? [`metrics:   http://${opts.metrics}/metrics`] : []),
        '',
        'Try:',
        `  curl --cacert ${caFile} ${url}`,
        '',
        'Ctrl-C stops everything.',
        '',
      ].join('\n'),
    );
    for (const [name, child, log] of [
      ['keyd', keyd, keydLog],
      ['edge', edge, edgeLog],
    ] as const) {
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
        if (stopping) return;
        process.stderr.write(`demo: ${name} exited unexpectedly (${code ?? signal}); ${log} ends with:\n${logTail(log)}\n`);
        void stopAll(1);
      };
      // A child that ended before this line emitted 'exit' already: a listener added now would never run.
      if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
      else child.once('exit', onExit);
    }
  } catch (err) {
    process.stderr.write(`delegator demo: ${(err as Error).message}\n`);
    await stopAll(1);
  }
  const code = await stopped;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}
