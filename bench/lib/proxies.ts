/**
 * TLS-terminating proxies compared with the edge, each in its own process(es) so its CPU
 * can be read from /proc, all forwarding the decrypted bytes to the same upstream with the
 * same PROXY-protocol setting:
 *
 *   nginx stream   Debian's nginx + libnginx-mod-stream, 1 worker, `proxy_pass` (nginx
 *                  sends PROXY v1 only: with --proxy-protocol it sends v1, the others v2)
 *   haproxy        Debian's haproxy, `mode tcp`, 1 thread, `ssl crt`, `send-proxy-v2`
 *   node:tls pipe  a node:tls server piping each connection to the upstream (bench/lib/tls-server-process.ts)
 *
 * A starter returns undefined, with the reason, when its tool is not installed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, waitForPort } from '../../test/helpers/ports.js';
import { nginxBinary } from './nginx.js';
import { childPids } from './proc-stat.js';

const here = dirname(fileURLToPath(import.meta.url));

export interface ProxyUnderTest {
  name: string;
  port: number;
  /** Processes whose CPU time counts (read at each call: workers may start late). */
  pids(): number[];
  stop(): Promise<void>;
}

export interface ProxySpec {
  dir: string;
  chainFile: string;
  keyFile: string;
  upstreamPort: number;
  proxyProtocol: boolean;
}

export type Started = ProxyUnderTest | { skipped: string };

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

function spawnQuiet(command: string, args: string[]): { child: ChildProcess; log: () => string } {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  return { child, log: () => log };
}

const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

/** nginx as a TLS-terminating stream proxy (the work the edge does), 1 worker, TLS 1.3 only. */
export async function startNginxStream(spec: ProxySpec): Promise<Started> {
  const binary = nginxBinary();
  if (!binary) return { skipped: 'nginx not installed (apt-get install nginx libnginx-mod-stream)' };
  if (!existsSync(STREAM_MODULE)) return { skipped: `nginx stream module missing (${STREAM_MODULE}; apt-get install libnginx-mod-stream)` };
  const prefix = join(spec.dir, 'nginx-stream');
  mkdirSync(join(prefix, 'logs'), { recursive: true });
  chmodSync(spec.dir, 0o755);
  chmodSync(prefix, 0o755);
  const port = await freePort();
  const user = process.getuid?.() === 0 ? 'user nobody nogroup;' : '';
  const config = `
load_module ${STREAM_MODULE};
${user}
worker_processes 1;
daemon off;
master_process on;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log error;
events { worker_connections 8192; }
stream {
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${spec.chainFile};
    ssl_certificate_key ${spec.keyFile};
    ssl_protocols TLSv1.3;
    proxy_pass 127.0.0.1:${spec.upstreamPort};
    ${spec.proxyProtocol ? 'proxy_protocol on;' : ''}
  }
}
`;
  const configFile = join(prefix, 'nginx.conf');
  writeFileSync(configFile, config);
  const version = spawnSync(binary, ['-v'], { encoding: 'utf8' }).stderr.trim().replace(/^nginx version: /, '');
  const p = spawnQuiet(binary, ['-p', prefix, '-c', configFile, '-e', join(prefix, 'logs', 'error.log')]);
  await waitForPort(port, 10_000).catch((err: Error) => {
    throw new Error(`nginx stream did not start: ${err.message}\n${p.log()}`);
  });
  return {
    name: `nginx ${version} stream proxy, 1 worker`,
    port,
    pids: () => [p.child.pid!, ...childPids(p.child.pid!)],
    stop: () => stopChild(p.child, 'SIGQUIT'),
  };
}

function haproxyBinary(): string | undefined {
  for (const candidate of ['/usr/sbin/haproxy', '/usr/bin/haproxy']) {
    if (spawnSync(candidate, ['-v'], { stdio: 'ignore' }).status === 0) return candidate;
  }
  return undefined;
}

/** haproxy in TCP mode terminating TLS, 1 thread. */
export async function startHaproxy(spec: ProxySpec): Promise<Started> {
  const binary = haproxyBinary();
  if (!binary) return { skipped: 'haproxy not installed (apt-get install haproxy)' };
  const dir = join(spec.dir, 'haproxy');
  mkdirSync(dir, { recursive: true });
  // haproxy wants the chain and its key in one file.
  const pem = join(dir, 'cert.pem');
  writeFileSync(pem, readFileSync(spec.chainFile, 'latin1') + readFileSync(spec.keyFile, 'latin1'), { mode: 0o600 });
  const port = await freePort();
  const config = `
global
  nbthread 1
  maxconn 8000
  tune.ssl.default-dh-param 2048
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend tls
  bind 127.0.0.1:${port} ssl crt ${pem} ssl-min-ver TLSv1.3
  default_backend upstream
backend upstream
  server app 127.0.0.1:${spec.upstreamPort}${spec.proxyProtocol ? ' send-proxy-v2' : ''}
`;
  const configFile = join(dir, 'haproxy.cfg');
  writeFileSync(configFile, config);
  const version = /version (\S+)/.exec(spawnSync(binary, ['-v'], { encoding: 'utf8' }).stdout)?.[1] ?? '?';
  const p = spawnQuiet(binary, ['-db', '-f', configFile]);
  await waitForPort(port, 10_000).catch((err: Error) => {
    throw new Error(`haproxy did not start: ${err.message}\n${p.log()}`);
  });
  return { name: `haproxy ${version} TCP mode, 1 thread`, port, pids: () => [p.child.pid!], stop: () => stopChild(p.child) };
}

/** A node:tls server that pipes each connection to the upstream (what a 20-line Node proxy does). */
/** The port a tls-server-process.js child prints ("listening PORT"); rejects with its log if it exits first. */
export function listeningPort(p: { child: ChildProcess; log: () => string }): Promise<number> {
  return new Promise<number>((res, rej) => {
    const timer = setInterval(() => {
      const m = /listening (\d+)/.exec(p.log());
      if (m) {
        clearInterval(timer);
        res(Number(m[1]));
      } else if (p.child.exitCode !== null) {
        clearInterval(timer);
        rej(new Error(p.log()));
      }
    }, 50);
  });
}

export async function startNodeTlsPipe(spec: ProxySpec): Promise<Started> {
  const script = resolve(here, 'tls-server-process.js');
  const p = spawnQuiet(process.execPath, [
    script, '--impl', 'node', '--cert', spec.chainFile, '--key', spec.keyFile,
    '--upstream', String(spec.upstreamPort), ...(spec.proxyProtocol ? ['--proxy-protocol'] : []),
  ]);
  const port = await listeningPort(p);
  return { name: 'node:tls pipe to the upstream', port, pids: () => [p.child.pid!], stop: () => stopChild(p.child) };
}
