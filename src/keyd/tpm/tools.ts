import { spawn } from 'node:child_process';
import { KeydError } from '../errors.js';

/**
 * Runs Debian's tpm2-tools as child processes. keyd uses them only at start-up, for a
 * committed store change (the rollback counter) and for attestation evidence — never on
 * the signing path.
 *
 * A TPM reached over a socket (swtpm) or /dev/tpm0 has no resource manager: objects and
 * sessions a command leaves loaded stay in the TPM until flushed, and after three of them
 * it answers "out of memory for object contexts" (TPM_RC_OBJECT_MEMORY, 0x902; 0x903 for
 * sessions). So every command that loads something is followed by `tpm2_flushcontext`
 * `-t`, `-l` and `-s`. With the
 * kernel's /dev/tpmrm0 the flush is a harmless no-op.
 */

export interface TpmConnection {
  /** TCTI string (tpm2-tools' TPM2TOOLS_TCTI), e.g. "swtpm:host=127.0.0.1,port=2321" or "device:/dev/tpmrm0". */
  tcti?: string;
  /** How long one command may run before it is stopped (default COMMAND_TIMEOUT_MS, 60 s). */
  commandTimeoutMs?: number;
}

export interface TpmRunOptions {
  /** Bytes written to the command's stdin (then closed). Secrets go this way, never through a file. */
  stdin?: Uint8Array;
  /** True when the command leaves objects or sessions loaded (flush afterwards). */
  flush?: boolean;
}

/**
 * Longest stdout of one command (a TPM answer is a few KiB at most). A command that writes
 * more fails and is stopped: its output is never cut and handed on, since a cut answer
 * would be parsed as a whole one.
 */
export const MAX_OUTPUT = 1 << 20;
/**
 * How much of a command's stderr is kept from its start, and as much from its end: the
 * tools print their own "ERROR: …(0x99D) - tpm:…" lines last, after any TSS log (which
 * TSS2_LOG can make long), and keyd reads the response code from them.
 */
const STDERR_KEEP = 16_384;
/** A TPM command that hangs must not hold keyd's start-up forever. */
const COMMAND_TIMEOUT_MS = 60_000;
/**
 * After SIGTERM at the timeout, how long a command has to exit before SIGKILL. A tool
 * blocked in its TCTI (a TPM or swtpm that stopped answering) may never act on SIGTERM;
 * SIGKILL cannot be caught or ignored (signal(7)).
 */
export const KILL_GRACE_MS = 2_000;

export class TpmCommandError extends Error {
  override readonly name = 'TpmCommandError';
  constructor(
    readonly command: string,
    /** TPM response code when the TPM answered (e.g. 0x99d policy check failed), else undefined. */
    readonly responseCode: number | undefined,
    readonly detail: string,
    /** True when the command did not finish within its timeout and was stopped. */
    readonly timedOut = false,
  ) {
    super(`${command} failed${responseCode !== undefined ? ` (TPM response 0x${responseCode.toString(16)})` : ''}: ${detail}`);
  }
}

/** TPM 2.0 response codes keyd explains (TPM 2.0 Library Part 2, §6.6). */
export const TPM_RC = {
  /** TPM_RC_INTEGRITY for parameter 1 of TPM2_Load: the blob was not made under this parent (another TPM). */
  INTEGRITY_PARAM1: 0x1df,
  /** TPM_RC_POLICY_FAIL in session 1: a PCR (or other) policy does not hold. */
  POLICY_FAIL_SESSION1: 0x99d,
  /** TPM_RC_NV_UNINITIALIZED: an NV counter never incremented. */
  NV_UNINITIALIZED: 0x14a,
  /** TPM_RC_HANDLE for handle 1: e.g. no such NV index. */
  HANDLE1: 0x18b,
  /** TPM_RC_NV_DEFINED: the NV index already exists. */
  NV_DEFINED: 0x14c,
} as const;

function toolsMissing(command: string): KeydError {
  return new KeydError(
    'KEYD_TPM_UNAVAILABLE',
    `${command} is not installed: the TPM root key needs tpm2-tools (Debian package tpm2-tools)`,
  );
}

function runOnce(conn: TpmConnection, command: string, args: string[], stdin?: Uint8Array): Promise<Buffer> {
  const timeoutMs = conn.commandTimeoutMs ?? COMMAND_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    if (conn.tcti !== undefined) env.TPM2TOOLS_TCTI = conn.tcti;
    const child = spawn(command, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    // Not spawn's `timeout` (SIGTERM only, never followed up): SIGTERM, then SIGKILL.
    // The first reason to stop the command (its timeout, or too much output) is the one reported.
    let stopped: 'timeout' | 'output' | undefined;
    let stoppedWith: NodeJS.Signals | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    const stop = (why: 'timeout' | 'output') => {
      if (stopped) return;
      stopped = why;
      clearTimeout(timer);
      stoppedWith = 'SIGTERM';
      child.kill('SIGTERM');
      killTimer = setTimeout(() => {
        stoppedWith = 'SIGKILL';
        child.kill('SIGKILL');
      }, KILL_GRACE_MS);
    };
    const timer = setTimeout(() => stop('timeout'), timeoutMs);
    const settled = () => {
      clearTimeout(timer);
      clearTimeout(killTimer);
    };
    const out: Buffer[] = [];
    let outLength = 0;
    let errHead = Buffer.alloc(0);
    let errTail = Buffer.alloc(0);
    let errLength = 0;
    child.stdout.on('data', (d: Buffer) => {
      if (stopped) return;
      outLength += d.length;
      if (outLength > MAX_OUTPUT) return stop('output');
      out.push(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      errLength += d.length;
      if (errHead.length < STDERR_KEEP) {
        const take = d.subarray(0, STDERR_KEEP - errHead.length);
        errHead = Buffer.concat([errHead, take]);
        d = d.subarray(take.length);
      }
      if (d.length > 0) errTail = Buffer.concat([errTail, d]).subarray(-STDERR_KEEP);
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      settled();
      reject(e.code === 'ENOENT' ? toolsMissing(command) : e);
    });
    child.on('close', (code, signal) => {
      settled();
      const how = stoppedWith === 'SIGKILL' ? `killed (SIGKILL) ${KILL_GRACE_MS} ms after SIGTERM` : 'stopped (SIGTERM)';
      if (stopped === 'timeout') {
        return reject(new TpmCommandError(command, undefined, `no answer within ${timeoutMs} ms: ${how}; the TPM is not answering`, true));
      }
      if (stopped === 'output') {
        return reject(new TpmCommandError(command, undefined, `its output exceeded ${MAX_OUTPUT} bytes (a TPM answer is a few KiB): ${how}, its output discarded`));
      }
      if (code === 0) return resolve(Buffer.concat(out));
      const left = errLength - errHead.length - errTail.length;
      const err = `${errHead.toString('utf8')}${left > 0 ? `\n[${left} bytes of stderr left out]\n` : ''}${errTail.toString('utf8')}`;
      reject(new TpmCommandError(command, parseResponseCode(err), summarise(err) || `exit ${code ?? signal}`));
    });
    child.stdin.on('error', () => {});
    if (stdin) child.stdin.end(Buffer.from(stdin.buffer, stdin.byteOffset, stdin.byteLength));
    else child.stdin.end();
  });
}

/**
 * Runs one tpm2-tools command; returns its stdout. A command that timed out is not
 * followed by the flushes: the TPM is not answering, and each would wait its own timeout
 * (three more minutes); a later command's flushes clear what it may have left loaded.
 */
export async function tpm(conn: TpmConnection, command: string, args: string[], opts: TpmRunOptions = {}): Promise<Buffer> {
  let timedOut = false;
  try {
    return await runOnce(conn, command, args, opts.stdin);
  } catch (err) {
    timedOut = err instanceof TpmCommandError && err.timedOut;
    throw err;
  } finally {
    if (opts.flush && !timedOut) await flush(conn);
  }
}

/** Flushes transient objects and sessions (see the module comment); stops at the first that times out. */
export async function flush(conn: TpmConnection): Promise<void> {
  // -t transient objects, -l loaded sessions (tpm2_unseal -p pcr:… leaves its policy
  // session loaded), -s saved sessions.
  for (const flag of ['-t', '-l', '-s']) {
    try {
      await runOnce(conn, 'tpm2_flushcontext', [flag]);
    } catch (err) {
      if (err instanceof TpmCommandError && err.timedOut) return;
    }
  }
}

/** "Esys_Unseal(0x99D) - tpm:session(1):a policy check failed" → 0x99d. */
function parseResponseCode(stderr: string): number | undefined {
  const m = /ErrorCode \(0x([0-9a-fA-F]+)\)|\((0x[0-9a-fA-F]+)\)\s*-\s*tpm:/.exec(stderr);
  if (!m) return undefined;
  return Number.parseInt(m[1] ?? m[2]!.slice(2), 16);
}

/** The tool's own "ERROR: …" lines, the most specific first, on one line. */
function summarise(stderr: string): string {
  const errors = stderr
    .split('\n')
    .filter((l) => l.startsWith('ERROR: '))
    .map((l) => l.slice(7).trim());
  return (errors.length > 0 ? errors : stderr.split('\n').filter((l) => l.trim() !== '').slice(-2)).join('; ').slice(0, 500);
}

const sequences = new Map<string, Promise<unknown>>();

/**
 * Runs `body` (a sequence of TPM commands) alone on this TPM within this process. Without
 * a resource manager one sequence's flush would unload another's objects or sessions
 * (e.g. two operators attesting at once, or an attestation and a counter increment).
 */
export function exclusive<T>(conn: TpmConnection, body: () => Promise<T>): Promise<T> {
  const key = conn.tcti ?? process.env.TPM2TOOLS_TCTI ?? '(default)';
  const run = (sequences.get(key) ?? Promise.resolve()).then(body, body);
  const tail = run.catch(() => {});
  sequences.set(key, tail);
  void tail.then(() => {
    if (sequences.get(key) === tail) sequences.delete(key);
  });
  return run;
}

/** True when the tpm2-tools binaries are on PATH (tests skip, naming the package, when not). */
export async function tpmToolsInstalled(): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('tpm2_flushcontext', ['--version'], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', () => resolve(true));
  });
}
