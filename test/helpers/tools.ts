/**
 * External tools in tests: presence checks that skip with the Debian package name,
 * and child processes that are always killed (timeout, or when the test ends).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';

const presence = new Map<string, boolean>();

/** True when `name` is an executable on PATH (cached). */
export function hasTool(name: string): boolean {
  let found = presence.get(name);
  if (found === undefined) {
    found = spawnSync('sh', ['-c', `command -v "${name}"`], { stdio: 'ignore' }).status === 0;
    presence.set(name, found);
  }
  return found;
}

/**
 * Skips the test when `tool` is missing, naming the Debian package that provides it.
 * Returns true when the tool is present (so `if (!requireTool(...)) return;`).
 */
export function requireTool(t: TestContext, tool: string, debianPackage: string): boolean {
  if (hasTool(tool)) return true;
  t.skip(`${tool} not installed (apt-get install ${debianPackage})`);
  return false;
}

export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the process was killed by our timeout. */
  timedOut: boolean;
}

export interface ToolOptions {
  /** Kill the process (SIGKILL) after this many ms. Default 15 000. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/**
 * A running external tool whose output is collected as it arrives, so a test can
 * wait for a line, answer on stdin, and so on (openssl s_client is driven this way).
 */
export class ToolProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly done: Promise<ToolResult>;
  private timedOut = false;
  private readonly waiters = new Set<() => void>();

  constructor(command: string, args: readonly string[], options: ToolOptions = {}) {
    this.child = spawn(command, args, {
      env: options.env ?? process.env,
      cwd: options.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => {
      this.timedOut = true;
      this.child.kill('SIGKILL');
    }, options.timeoutMs ?? 15_000);
    this.child.stdout!.setEncoding('latin1').on('data', (chunk: string) => {
      this.stdout += chunk;
      this.notify();
    });
    this.child.stderr!.setEncoding('latin1').on('data', (chunk: string) => {
      this.stderr += chunk;
      this.notify();
    });
    // A tool that exits early makes further stdin writes fail with EPIPE; that is its exit status's story.
    this.child.stdin!.on('error', () => {});
    this.done = new Promise<ToolResult>((resolve, reject) => {
      this.child.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      this.child.on('close', (code, signal) => {
        clearTimeout(timer);
        this.notify();
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr, timedOut: this.timedOut });
      });
    });
  }

  get exited(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  write(data: string | Uint8Array): void {
    this.child.stdin!.write(data);
  }

  closeStdin(): void {
    this.child.stdin!.end();
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
  }

  /**
   * Resolves once stdout+stderr match `pattern`; rejects after `timeoutMs` or when the
   * tool exits without producing it (the message then includes the tool's output).
   */
  async waitFor(pattern: RegExp | string, timeoutMs = 10_000): Promise<void> {
    const shown = String(pattern).length > 120 ? `${String(pattern).slice(0, 117)}...` : String(pattern);
    const matches = (): boolean => {
      const all = this.stdout + this.stderr;
      return typeof pattern === 'string' ? all.includes(pattern) : pattern.test(all);
    };
    if (matches()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => finish(new Error(`timed out waiting for ${shown}`)), timeoutMs);
      const check = (): void => {
        if (matches()) finish();
        else if (this.exited) finish(new Error(`tool exited before printing ${shown}`));
      };
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(new Error(`${err.message}\n--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`));
        else resolve();
      };
      this.waiters.add(check);
    });
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}

/** Starts a tool and registers a kill for when the test ends, whatever happens. */
export function startTool(
  t: TestContext,
  command: string,
  args: readonly string[],
  options: ToolOptions = {},
): ToolProcess {
  const tool = new ToolProcess(command, args, options);
  t.after(() => tool.kill());
  return tool;
}

/** Runs a tool to completion with `input` on stdin (then EOF). */
export async function runTool(
  command: string,
  args: readonly string[],
  input: string | Uint8Array = '',
  options: ToolOptions = {},
): Promise<ToolResult> {
  const tool = new ToolProcess(command, args, options);
  tool.write(input);
  tool.closeStdin();
  return tool.done;
}

/** Formats a tool result for an assertion message. */
export function describeResult(result: ToolResult): string {
  return (
    `exit ${result.code ?? result.signal}${result.timedOut ? ' (killed by timeout)' : ''}\n` +
    `--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`
  );
}
