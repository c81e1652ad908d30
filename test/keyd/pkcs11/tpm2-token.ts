/**
 * A tpm2-pkcs11 token on a software TPM, for tests and the benchmark: swtpm (state in a
 * temporary directory, TCP on free loopback ports), tpm2-pkcs11's store in the same
 * directory, and the token initialised through the PKCS#11 API itself (C_InitToken,
 * C_InitPIN) by a child process — no tpm2_ptool needed. Keys made in it are TPM-resident:
 * the store holds only blobs wrapped by that TPM.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import type { TestContext } from 'node:test';
import { freePort, waitForPort } from '../../helpers/ports.js';
import type { SoftHsmToken } from './softhsm.js';

const MODULE_PATHS = ['/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so', '/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so'];
const INIT_CHILD = fileURLToPath(new URL('./tpm2-init-child.js', import.meta.url));

export function tpm2Module(): string | undefined {
  return MODULE_PATHS.find((p) => existsSync(p));
}

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** Whether a tpm2-pkcs11 token on swtpm can be made here; else the reason, naming the packages. */
export function tpm2Missing(): string | undefined {
  if (!tpm2Module()) return 'tpm2-pkcs11 not installed (apt-get install libtpm2-pkcs11-1)';
  if (!hasCommand('swtpm') || !hasCommand('swtpm_setup')) return 'swtpm not installed (apt-get install swtpm swtpm-tools)';
  return undefined;
}

export function requireTpm2(t: TestContext): boolean {
  const missing = tpm2Missing();
  if (missing) t.skip(missing);
  return missing === undefined;
}

/** Same shape as a SoftHSM token (label, PIN file, module, env, keyd config), plus the TPM process. */
export interface Tpm2Token extends SoftHsmToken {
  swtpm: ChildProcess;
}

/** A free port whose successor was free too, a moment ago. */
async function freeAdjacentPorts(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    if (port < 65535 && (await isFree(port + 1))) return port;
  }
  throw new Error('no two adjacent free ports for swtpm');
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export async function makeTpm2Token(label = 'keyd-tpm'): Promise<Tpm2Token> {
  const dir = mkdtempSync(join(tmpdir(), 'tpm2-pkcs11-'));
  const state = join(dir, 'state');
  const store = join(dir, 'store');
  mkdirSync(state);
  mkdirSync(store);
  execFileSync('swtpm_setup', ['--tpm2', '--tpmstate', state, '--createek'], { stdio: 'ignore' });
  // The swtpm TCTI finds the control channel at the server port + 1.
  const port = await freeAdjacentPorts();
  const ctrl = port + 1;
  const swtpm = spawn('swtpm', ['socket', '--tpm2', '--tpmstate', `dir=${state}`, '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${ctrl},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'], { stdio: 'ignore' });
  swtpm.unref();
  const module = tpm2Module()!;
  const env = { ...process.env, TPM2_PKCS11_TCTI: `swtpm:host=127.0.0.1,port=${port}`, TPM2_PKCS11_STORE: store, TPM2_PKCS11_LOG_LEVEL: '0' };
  const pin = `pin-${Math.random().toString(36).slice(2, 10)}`;
  try {
    await waitForPort(port, 10_000);
    await waitForPort(ctrl, 10_000);
    execFileSync(process.execPath, [INIT_CHILD, JSON.stringify({ module, label, pin, soPin: `so-${pin}` })], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (err) {
    swtpm.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const pinFile = join(dir, 'token.pin');
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  return {
    dir,
    label,
    pin,
    pinFile,
    module,
    env,
    config: { pkcs11: { tokens: [{ token: `pkcs11:token=${label}`, module, pinFile, sessions: 1 }] } },
    uri: `pkcs11:token=${label}`,
    swtpm,
    remove() {
      throw new Error('a TPM cannot be unplugged in this test');
    },
    restore() {},
    cleanup() {
      swtpm.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
