import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * A software TPM for tests (Debian swtpm + swtpm-tools): manufactured unattended with
 * an EK certificate from swtpm's local CA (or from a CA of the test's own), served on a
 * free TCP port, killed by `stop`.
 */

/** Why TPM tests cannot run here (the Debian packages to install), or undefined when they can. */
export async function swtpmMissing(): Promise<string | undefined> {
  const missing: string[] = [];
  for (const [bin, pkg] of [
    ['swtpm', 'swtpm'],
    ['swtpm_setup', 'swtpm-tools'],
    ['tpm2_createprimary', 'tpm2-tools'],
  ] as const) {
    try {
      await run('sh', ['-c', `command -v ${bin}`]);
    } catch {
      missing.push(pkg);
    }
  }
  return missing.length > 0 ? `needs the Debian package(s) ${[...new Set(missing)].join(', ')}` : undefined;
}

export interface SoftTpm {
  /** TCTI for tpm2-tools and keyd's "tpmTcti". */
  tcti: string;
  stateDir: string;
  /** Runs a tpm2-tools command against this TPM (flushing afterwards). */
  tool(command: string, args: string[]): Promise<string>;
  stop(): Promise<void>;
  /** Starts the same TPM state again on the same port (a reboot: PCRs reset). */
  restart(): Promise<void>;
}

/** A free port P whose P+1 is free too (the swtpm TCTI reaches the control channel on P+1). */
export async function freePortPair(): Promise<number> {
  const listen = (port: number) =>
    new Promise<import('node:net').Server | undefined>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(undefined));
      srv.listen(port, '127.0.0.1', () => resolve(srv));
    });
  const close = (srv: import('node:net').Server) => new Promise<void>((r) => srv.close(() => r()));
  for (;;) {
    const first = await listen(0);
    if (!first) continue;
    const port = (first.address() as { port: number }).port;
    const second = port < 65535 ? await listen(port + 1) : undefined;
    await close(first);
    if (second) {
      await close(second);
      return port;
    }
  }
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface SoftTpmOptions {
  /** swtpm_setup --config FILE: another local CA (tests of an untrusted EK certificate). */
  setupConfig?: string;
}

/** Manufactures and starts a fresh software TPM in its own temporary directory. */
export async function startSoftTpm(opts: SoftTpmOptions = {}): Promise<SoftTpm> {
  const stateDir = await mkdtemp(join(tmpdir(), 'swtpm-'));
  await run('swtpm_setup', [
    '--tpm2',
    '--tpmstate',
    stateDir,
    '--create-ek-cert',
    '--create-platform-cert',
    '--overwrite',
    ...(opts.setupConfig ? ['--config', opts.setupConfig] : []),
  ]);
  let child: ChildProcess | undefined;
  let tcti = '';
  let fixedPort: number | undefined;
  const start = async () => {
    for (let attempt = 0; ; attempt++) {
      // A restart keeps its ports (keyd's TCTI names them); a first start picks free ones.
      const port = fixedPort ?? (await freePortPair());
      const proc = spawn(
        'swtpm',
        ['socket', '--tpm2', '--tpmstate', `dir=${stateDir}`, '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let exited = false;
      let stderr = '';
      proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      proc.once('exit', () => (exited = true));
      // Wait until it listens (or exits: a port was taken between our probe and its bind).
      while (!exited && !((await portAnswers(port)) && (await portAnswers(port + 1)))) await new Promise((r) => setImmediate(r));
      if (!exited) {
        child = proc;
        fixedPort = port;
        tcti = `swtpm:host=127.0.0.1,port=${port}`;
        return;
      }
      if (attempt >= 5) throw new Error(`swtpm would not start: ${stderr}`);
    }
  };
  await start();
  const stopProcess = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGTERM');
    });
  };
  const tpm: SoftTpm = {
    get tcti() {
      return tcti;
    },
    stateDir,
    async tool(command, args) {
      const env = { ...process.env, TPM2TOOLS_TCTI: tcti };
      const { stdout } = await run(command, args, { env, encoding: 'utf8' });
      await run('tpm2_flushcontext', ['-t'], { env }).catch(() => {});
      return stdout;
    },
    async stop() {
      await stopProcess();
      await rm(stateDir, { recursive: true, force: true });
    },
    async restart() {
      await stopProcess();
      await start();
    },
  };
  return tpm;
}

/**
 * A local CA of the test's own for swtpm_setup (EK certificates the admin must refuse):
 * a swtpm_setup config whose swtpm-localca uses its own state directory.
 */
export async function otherLocalCa(dir: string): Promise<string> {
  const caDir = join(dir, 'other-localca');
  await mkdir(caDir, { recursive: true });
  const caConf = join(dir, 'swtpm-localca.conf');
  await writeFile(caConf, `statedir = ${caDir}\nsigningkey = ${caDir}/signkey.pem\nissuercert = ${caDir}/issuercert.pem\ncertserial = ${caDir}/certserial\n`);
  const optionsFile = join(dir, 'swtpm-localca.options');
  await writeFile(optionsFile, '--platform-manufacturer Test\n--platform-version 2.1\n--platform-model QEMU\n');
  const setupConf = join(dir, 'swtpm_setup.conf');
  await writeFile(
    setupConf,
    `create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = ${caConf}\ncreate_certs_tool_options = ${optionsFile}\n`,
  );
  return setupConf;
}
