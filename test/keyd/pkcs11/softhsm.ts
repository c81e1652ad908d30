/**
 * SoftHSM2 tokens for tests: each made at test time in its own temporary directory
 * (SOFTHSM2_CONF names a config whose directories.tokendir is inside it), with a PIN
 * file. Tests skip, naming the Debian package, when SoftHSM2 is not installed.
 */
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';

const MODULE_PATHS = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so'];
const INSPECT_CHILD = fileURLToPath(new URL('./inspect-child.js', import.meta.url));

export function softHsmModule(): string | undefined {
  return MODULE_PATHS.find((p) => existsSync(p));
}

/** Skips the test when SoftHSM2 is missing; true when present. */
export function requireSoftHsm(t: TestContext): boolean {
  const tool = spawnSync('sh', ['-c', 'command -v softhsm2-util'], { stdio: 'ignore' }).status === 0;
  if (tool && softHsmModule()) return true;
  t.skip('SoftHSM2 not installed (apt-get install softhsm2)');
  return false;
}

export interface SoftHsmToken {
  dir: string;
  label: string;
  pin: string;
  pinFile: string;
  module: string;
  /** Environment for a process that loads the module (SOFTHSM2_CONF). */
  env: NodeJS.ProcessEnv;
  /** keyd's config section for this token. */
  config: { pkcs11: { tokens: object[] } };
  uri: string;
  /** Takes the token away (as if unplugged) and puts it back. */
  remove(): void;
  restore(): void;
  cleanup(): void;
}

export function makeSoftHsmToken(label = 'keyd-test'): SoftHsmToken {
  const dir = mkdtempSync(join(tmpdir(), 'softhsm-'));
  const tokenDir = join(dir, 'tokens');
  const awayDir = join(dir, 'away');
  execFileSync('mkdir', ['-p', tokenDir, awayDir]);
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  const pin = `pin-${Math.random().toString(36).slice(2, 10)}`;
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', `so-${pin}`], { env, stdio: 'ignore' });
  const pinFile = join(dir, 'token.pin');
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  const module = softHsmModule()!;
  let moved: string | undefined;
  return {
    dir,
    label,
    pin,
    pinFile,
    module,
    env,
    config: { pkcs11: { tokens: [{ token: `pkcs11:token=${label}`, module, pinFile, sessions: 2 }] } },
    uri: `pkcs11:token=${label}`,
    remove() {
      const [uuid] = readdirSync(tokenDir);
      renameSync(join(tokenDir, uuid!), join(awayDir, uuid!));
      moved = uuid;
    },
    restore() {
      renameSync(join(awayDir, moved!), join(tokenDir, moved!));
      moved = undefined;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface PrivateKeyInspection {
  sensitive: boolean;
  extractable: boolean;
  private: boolean;
  alwaysSensitive: boolean;
  neverExtractable: boolean;
  /** What reading CKA_VALUE (EC/Ed25519) or CKA_PRIVATE_EXPONENT (RSA) gave: "CKR_…" or "read N bytes". */
  secretRead: string;
  mechanisms: number[];
}

/**
 * Reads a private key object's attributes through the PKCS#11 API in a separate process
 * (its own C_Initialize, independent of keyd). `idHex` undefined: only the mechanisms.
 * `control`: makes a throw-away extractable, non-sensitive session key and reads its value.
 */
export function inspectToken(token: SoftHsmToken, idHex: string | undefined, control = false): PrivateKeyInspection {
  const out = execFileSync(process.execPath, [INSPECT_CHILD, JSON.stringify({ module: token.module, label: token.label, pin: token.pin, id: idHex ?? null, control })], {
    env: token.env,
    encoding: 'utf8',
  });
  return JSON.parse(out) as PrivateKeyInspection;
}
