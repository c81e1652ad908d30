/**
 * What the OpenSSL provider's tests share: building the provider, a keyd child holding one
 * key for a.test with a principal socket the servers' unprivileged user may reach, the
 * reference file `delegator admin export-ref` writes, and an openssl.cnf that loads the
 * provider (docs/OPENSSL-PROVIDER.md).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { main as adminMain } from '../../../src/cli/admin.js';
import { KeydClient } from '../../../src/keyd/client.js';
import { Opcode } from '../../../src/keyd/protocol.js';
import { makeTestPki, type TestKeyType, type TestPki } from '../../helpers/pki.js';
import { freePort } from '../../helpers/ports.js';
import { hasTool, runTool } from '../../helpers/tools.js';
import { KeydProcess } from '../../edge/system.js';

const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
export const PROVIDER_SO = join(REPO, 'dist/plugins/openssl-provider/delegator.so');

/** Servers run as nobody:nogroup when the tests run as root (nginx's workers, haproxy, s_server). */
export const UNPRIVILEGED = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined;

/** Why the provider cannot be built here (a missing Debian package, named), or undefined once it is built. */
export function providerUnbuildable(): string | undefined {
  for (const [tool, pkg] of [['gcc', 'gcc'], ['make', 'make']] as const) {
    if (!hasTool(tool)) return `${tool} not installed (apt-get install ${pkg})`;
  }
  if (!existsSync('/usr/include/openssl/core_dispatch.h')) return 'OpenSSL 3 headers not installed (apt-get install libssl-dev)';
  const make = spawnSync('make', ['-s', '-C', join(REPO, 'plugins/openssl-provider')], { encoding: 'utf8' });
  if (make.status !== 0) throw new Error(`make failed:\n${make.stdout}${make.stderr}`);
  return undefined;
}

/**
 * One of this directory's C test programs (sign-twice.c, sign-fork.c, set-params.c, which
 * share test-program.h; load-pem.c, init-fail.c), compiled into `dir` against the system's
 * libcrypto, with `flags` added (init-fail.c: -rdynamic); its path.
 */
export function compileTestProgram(name: string, dir: string, flags: string[] = []): string {
  const program = join(dir, name);
  const source = fileURLToPath(new URL(`../../../../test/plugins/openssl-provider/${name}.c`, import.meta.url));
  const cc = spawnSync('gcc', [...flags, '-o', program, source, '-lcrypto'], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`gcc ${name}.c failed: ${cc.stderr}`);
  return program;
}

/** Builds the provider (make); false after skipping the test with the missing Debian package named. */
export function buildProvider(t: TestContext): boolean {
  const why = providerUnbuildable();
  if (why) t.skip(why);
  return why === undefined;
}

export interface ProviderSetup {
  dir: string;
  keyd: KeydProcess;
  pki: TestPki;
  keyRef: string;
  /** The DELEGATOR KEY REFERENCE file: the servers' "key file". */
  refFile: string;
  certFile: string;
  caFile: string;
  /** Environment with OPENSSL_CONF loading the provider. */
  env: NodeJS.ProcessEnv;
  /** keyd's durable signing totals for this key: signatures and refusals. */
  counts(): Promise<{ signatures: number; refusals: number }>;
  /** Connections open now on the servers' socket (keyd's /metrics, docs/KEYD.md). */
  serverConnections(): Promise<number>;
}

/** keyd in `dir` with one key for a.test (or `pki`'s first name), its reference file, certificate and openssl.cnf. */
export async function setUpKeyAndReference(dir: string, keyType: TestKeyType, given?: TestPki, extraConfig: object = {}): Promise<ProviderSetup> {
  const pki = given ?? (await makeTestPki({ keyType, commonName: 'a.test', extraNames: ['a.test'] }));
  const name = given ? given.dnsNames[0]! : 'a.test';
  chmodSync(dir, 0o755); // the servers' user traverses it to its socket and files
  const serversSocket = join(dir, 'servers.sock');
  const keyd = new KeydProcess(dir);
  const metricsPort = await freePort();
  await keyd.start({
    config: {
      ...extraConfig,
      metricsListen: `127.0.0.1:${metricsPort}`,
      principals: {
        local: { mode: '0660', names: ['*'] },
        // docs/OPENSSL-PROVIDER.md: the servers' own socket, group-accessible to their user.
        servers: { socket: serversSocket, mode: '0660', ...(UNPRIVILEGED ? { gid: UNPRIVILEGED.gid } : {}), names: [name] },
      },
    },
  });
  // The key goes to keyd from this process's memory; no key file is ever written.
  await keyd.put([name], pki.leafKey, pki.chainDer);

  const refFile = join(dir, `${name}.ref`);
  let out = '';
  const io = { out: (s: string) => void (out += s), err: (s: string) => void (out += s) };
  const code = await adminMain(['--socket', keyd.adminSocket, 'export-ref', name, '--out', refFile, '--keyd-socket', serversSocket], io);
  if (code !== 0) throw new Error(`export-ref failed: ${out}`);
  const keyRef = /key (\S+),/.exec(out)![1]!;
  if (UNPRIVILEGED) chownSync(refFile, 0, UNPRIVILEGED.gid); // 0640: readable by the servers' group

  const certFile = join(dir, `${name}.crt`);
  const caFile = join(dir, 'ca.crt');
  writeFileSync(certFile, pki.leafCertPem, { mode: 0o644 });
  writeFileSync(caFile, pki.caCertPem, { mode: 0o644 });
  const conf = join(dir, 'openssl.cnf');
  writeFileSync(conf, opensslConf(PROVIDER_SO), { mode: 0o644 });
  const env = { ...process.env, OPENSSL_CONF: conf };

  return {
    dir, keyd, pki, keyRef, refFile, certFile, caFile, env,
    async serverConnections() {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const m = /^keyd_connections\{listener="servers"\} (\d+)$/m.exec(text);
      return m ? Number(m[1]) : 0;
    },
    async counts() {
      const admin = await KeydClient.connect({ socketPath: keyd.adminSocket });
      try {
        const clients = (await admin.admin(Opcode.stats, {})).json.clients as Record<string, { keys?: Record<string, { signatures: number; refusals: number }> }>;
        let signatures = 0;
        let refusals = 0;
        for (const c of Object.values(clients)) {
          signatures += c.keys?.[keyRef]?.signatures ?? 0;
          refusals += c.keys?.[keyRef]?.refusals ?? 0;
        }
        return { signatures, refusals };
      } finally {
        admin.close();
      }
    },
  };
}

/** The openssl.cnf of docs/OPENSSL-PROVIDER.md. */
export function opensslConf(modulePath: string): string {
  return `openssl_conf = openssl_init

[openssl_init]
providers = provider_sect
alg_section = algorithm_sect

[provider_sect]
default = default_sect
delegator = delegator_sect

[default_sect]
activate = 1

[delegator_sect]
module = ${modulePath}
timeout_ms = 5000
activate = 1

[algorithm_sect]
default_properties = ?provider=default
`;
}

/** One curl request over TLS `version` (1.2 | 1.3) that verifies a.test against the test CA. */
export async function curlOnce(port: number, version: '1.2' | '1.3', caFile: string): Promise<{ ok: boolean; output: string }> {
  const r = await runTool('curl', ['-sS', `--tlsv${version}`, '--tls-max', version, '--cacert', caFile, '--resolve', `a.test:${port}:127.0.0.1`,
    '-o', '/dev/null', '-w', '%{http_code} %{ssl_verify_result}', `https://a.test:${port}/`], '', { env: { ...process.env, OPENSSL_CONF: '/dev/null' } });
  const output = r.stdout + r.stderr;
  return { ok: r.code === 0 && output.startsWith('200 0'), output };
}

/** Every regular file under `dir` (sockets and the like skipped). */
export function filesUnder(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isDirectory()) found.push(...filesUnder(path));
    else if (st.isFile()) found.push(path);
  }
  return found;
}

/** Files under `dir` that hold a PEM private key or the key's PKCS#8 DER bytes. */
export function privateKeyFiles(dir: string, pkcs8: Buffer): string[] {
  return filesUnder(dir).filter((f) => {
    const data = readFileSync(f);
    return data.includes('PRIVATE KEY-----') || data.includes(pkcs8);
  });
}
