/**
 * The whole system for end-to-end tests, every part a real process: keyd (child, on a
 * temporary store), the edge (`delegator edge` child), and HTTP upstreams in this process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type { KeyObject } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { KeydClient } from '../../src/keyd/client.js';
import { Opcode } from '../../src/keyd/protocol.js';
import { freePort, waitForPort } from '../helpers/ports.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import type { TestContext } from 'node:test';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const KEYD_CHILD = fileURLToPath(new URL('./keyd-child.js', import.meta.url));

export interface HttpUpstream {
  port: number;
  server: Server;
  close(): Promise<void>;
}

/** An upstream answering every request with `upstream <tag>` (Connection: close). */
export async function startHttpUpstream(tag: string): Promise<HttpUpstream> {
  const server = createServer((req, res) => {
    const body = `upstream ${tag}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, connection: 'close' });
    res.end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export class KeydProcess {
  child: ChildProcess | undefined;
  readonly socket: string;
  readonly adminSocket: string;

  constructor(readonly dir: string) {
    this.socket = join(dir, 'keyd.sock');
    this.adminSocket = join(dir, 'keyd-admin.sock');
    writeFileSync(join(dir, 'machine-id'), '0123456789abcdef0123456789abcdef\n');
  }

  /** `extra`: keyd's config object, environment and node flags (e.g. a PKCS#11 token, a heap-snapshot signal). */
  async start(extra: { config?: object; env?: NodeJS.ProcessEnv; execArgv?: string[]; cwd?: string } = {}): Promise<void> {
    const opts = {
      data: join(this.dir, 'data'),
      rootKey: join(this.dir, 'root.key'),
      socket: this.socket,
      adminSocket: this.adminSocket,
      machineIdPath: join(this.dir, 'machine-id'),
      ...(extra.config ? { config: extra.config } : {}),
    };
    const child = spawn(process.execPath, [...(extra.execArgv ?? []), KEYD_CHILD, JSON.stringify(opts)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(extra.env ? { env: extra.env } : {}),
      ...(extra.cwd ? { cwd: extra.cwd } : {}),
    });
    this.child = child;
    let out = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stdout!.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`keyd did not start:\n${out}`)), 15_000);
      child.stdout!.on('data', (d: string) => {
        if (d.includes('keyd ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`keyd exited ${code}:\n${out}`));
      });
    });
  }

  /** kill -9: no goodbye to the edge. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }

  /** Installs a key + chain through keyd's admin socket (what `delegator admin put` sends). */
  async put(names: string[], key: KeyObject, chainDer: Uint8Array[]): Promise<void> {
    const admin = await KeydClient.connect({ socketPath: this.adminSocket });
    try {
      await admin.admin(Opcode.put, { names }, [key.export({ format: 'der', type: 'pkcs8' }), ...chainDer]);
    } finally {
      admin.close();
    }
  }
}

export interface EdgeProcess {
  child: ChildProcess;
  port: number;
  log(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** `delegator edge …` as a child; resolves once it accepts connections. */
export async function startEdgeProcess(
  args: string[],
  /** `detached`: the edge leads a process group of its own (its workers in it), for signals sent to the group. */
  opts: { execArgv?: string[]; cwd?: string; readyLog?: RegExp; detached?: boolean; env?: NodeJS.ProcessEnv } = {},
): Promise<EdgeProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, [...(opts.execArgv ?? []), MAIN, 'edge', '--listen', `127.0.0.1:${port}`, '--workers', '1', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: opts.cwd,
    ...(opts.env ? { env: opts.env } : {}),
    detached: opts.detached ?? false,
  });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (log += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
  const exited = once(child, 'exit');
  // The port accepts as soon as one worker listens; `readyLog` waits for a later line too
  // (e.g. the primary's "edge workers ready", once every worker serves).
  const logged = (re: RegExp) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (!re.test(log)) return;
        child.stdout!.off('data', check);
        child.stderr!.off('data', check);
        resolve();
      };
      child.stdout!.on('data', check);
      child.stderr!.on('data', check);
      check();
    });
  await Promise.race([
    Promise.all([waitForPort(port, 15_000), opts.readyLog ? logged(opts.readyLog) : undefined]),
    exited.then(() => {
      throw new Error(`edge exited:\n${log}`);
    }),
  ]);
  return {
    child,
    port,
    log: () => log,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const [code] = (await exited) as [number | null];
      return code;
    },
  };
}

export function scratchDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A scratch directory and a running keyd in it holding one key, for a.test; both removed when
 * the test ends. What the process-level edge tests with one name start from.
 */
export async function keydServingATest(t: TestContext, prefix: string): Promise<{ scratch: { dir: string }; pki: TestPki; keyd: KeydProcess }> {
  const scratch = scratchDir(prefix);
  t.after(() => scratch.remove());
  const pki = await makeTestPki({ commonName: 'a.test', extraNames: ['a.test'] });
  const keyd = new KeydProcess(scratch.dir);
  await keyd.start();
  t.after(() => keyd.kill());
  await keyd.put(['a.test'], pki.leafKey, pki.chainDer);
  return { scratch, pki, keyd };
}

/** How many times the edge's log (all of it, from the start) matches `re`. */
export function logCount(edge: EdgeProcess, re: RegExp): number {
  return edge.log().match(new RegExp(re.source, 'g'))?.length ?? 0;
}

/** Resolves with the first of `patterns` (name → [regexp, times]) the edge's log reaches. */
export function firstLogged(edge: EdgeProcess, patterns: Record<string, [RegExp, number]>): Promise<string> {
  return new Promise((resolve) => {
    const check = () => {
      for (const [name, [re, times]] of Object.entries(patterns)) {
        if (logCount(edge, re) >= times) {
          edge.child.stdout!.off('data', check);
          edge.child.stderr!.off('data', check);
          return resolve(name);
        }
      }
    };
    edge.child.stdout!.on('data', check);
    edge.child.stderr!.on('data', check);
    check();
  });
}

/** Resolves when the edge's log (all of it, from the start) matches `re` `times` times. */
export async function logged(edge: EdgeProcess, re: RegExp, times = 1): Promise<void> {
  await firstLogged(edge, { match: [re, times] });
}

/** One HTTP/1.0 GET over TLS under `servername`: the upstream's answer, or the error's message. */
export function requestOverTls(port: number, servername: string, ca: string[]): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername, ca });
    let data = '';
    s.once('secureConnect', () => s.write('GET / HTTP/1.0\r\n\r\n'));
    s.setEncoding('utf8').on('data', (d: string) => (data += d));
    s.once('end', () => s.end());
    s.once('close', () => resolve(data));
    s.once('error', (err) => resolve(err.message));
  });
}

/** The pid of one worker, from its log lines. */
