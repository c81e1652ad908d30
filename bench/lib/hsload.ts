/**
 * The external load generator ../shared/tools/hsload (Go, standard library only):
 * locating or building it, running it, parsing its one-line result.
 */
import { existsSync } from 'node:fs';
import { execFileSync, execFile } from 'node:child_process';
import { resolve } from 'node:path';

export interface HsloadResult {
  handshakes: number;
  failed: number;
  rate: number;
  p50: string;
  p99: string;
  firstError?: string;
}

export interface HsloadRun {
  address: string;
  sni: string;
  caFile?: string;
  concurrency: number;
  durationSeconds: number;
  curve: 'x25519' | 'p256';
  /** Request sent after each handshake; empty: handshake only. */
  request?: string;
}

const DEFAULT_BINARY = '/tmp/bin/hsload';

/** Where the hsload sources are: ../shared/tools/hsload beside the repository, or $HSLOAD_DIR. */
export function hsloadSourceDir(repoRoot: string): string | undefined {
  const candidates = [process.env['HSLOAD_DIR'], resolve(repoRoot, '../shared/tools/hsload'), '/work/shared/tools/hsload'];
  return candidates.find((dir) => dir && existsSync(resolve(dir, 'main.go')));
}

/**
 * Path of a built hsload: $HSLOAD, else /tmp/bin/hsload, else built there with the
 * tool's own build.sh (which installs Debian's golang-go when Go is missing).
 */
export function ensureHsload(repoRoot: string, log: (line: string) => void): string {
  const explicit = process.env['HSLOAD'];
  if (explicit) {
    if (!existsSync(explicit)) throw new Error(`HSLOAD=${explicit} does not exist`);
    return explicit;
  }
  if (existsSync(DEFAULT_BINARY)) return DEFAULT_BINARY;
  const dir = hsloadSourceDir(repoRoot);
  if (!dir) throw new Error('hsload not found: put ../shared/tools/hsload beside the repository or set HSLOAD=/path/to/hsload');
  log(`building hsload from ${dir} (${DEFAULT_BINARY})`);
  execFileSync('bash', [resolve(dir, 'build.sh'), DEFAULT_BINARY], { stdio: 'inherit' });
  return DEFAULT_BINARY;
}

/** `handshakes=N failed=F rate=R/s p50=… p99=…` (+ `first error: …`). */
export function parseHsloadOutput(output: string): HsloadResult {
  const match = /handshakes=(\d+) failed=(\d+) rate=([\d.]+)\/s p50=(\S+) p99=(\S+)/.exec(output);
  if (!match) throw new Error(`unexpected hsload output: ${output.trim()}`);
  const firstError = /first error: (.*)/.exec(output)?.[1];
  return {
    handshakes: Number(match[1]),
    failed: Number(match[2]),
    rate: Number(match[3]),
    p50: match[4]!,
    p99: match[5]!,
    ...(firstError ? { firstError } : {}),
  };
}

export async function runHsload(binary: string, run: HsloadRun): Promise<HsloadResult> {
  const args = [
    '-addr', run.address,
    '-sni', run.sni,
    '-c', String(run.concurrency),
    '-d', `${run.durationSeconds}s`,
    '-curve', run.curve,
  ];
  if (run.caFile) args.push('-ca', run.caFile);
  if (run.request) args.push('-req', run.request);
  const output = await new Promise<string>((resolvePromise, reject) => {
    execFile(binary, args, { timeout: (run.durationSeconds + 30) * 1000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`hsload failed: ${err.message}\n${stderr}`));
      else resolvePromise(stdout + stderr);
    });
  });
  return parseHsloadOutput(output);
}
