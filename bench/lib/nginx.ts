/**
 * nginx as the native reference in the handshake benchmark: 1 worker, TLS 1.3 only,
 * the same certificate and key, `return 200` for any request. Runs from a temp prefix
 * (config, pid, logs, temp paths), so it needs no system configuration.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { childPids } from './proc-stat.js';

export interface NginxInstance {
  port: number;
  /** master + worker: CPU is summed over both (the master does nothing per handshake). */
  pids: number[];
  /** Its error log (nginx writes OpenSSL's errors there). */
  errorLog: string;
  version: string;
  stop(): Promise<void>;
}

export function nginxBinary(): string | undefined {
  for (const candidate of ['/usr/sbin/nginx', '/usr/bin/nginx']) {
    if (spawnSync(candidate, ['-v'], { stdio: 'ignore' }).status === 0) return candidate;
  }
  return undefined;
}

export interface NginxOptions {
  /** ssl_protocols (default TLSv1.3). */
  protocols?: string;
  /** The environment nginx starts with (OPENSSL_CONF for the OpenSSL provider, docs/OPENSSL-PROVIDER.md). */
  env?: NodeJS.ProcessEnv;
}

export async function startNginx(binary: string, dir: string, port: number, chainFile: string, keyFile: string, options: NginxOptions = {}): Promise<NginxInstance> {
  const prefix = join(dir, 'nginx');
  mkdirSync(join(prefix, 'logs'), { recursive: true });
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  // Workers run as nobody when started as root: they only need to traverse the prefix.
  chmodSync(dir, 0o755);
  chmodSync(prefix, 0o755);
  const user = process.getuid?.() === 0 ? 'user nobody nogroup;' : '';
  const config = `
${user}
worker_processes 1;
daemon off;
master_process on;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${chainFile};
    ssl_certificate_key ${keyFile};
    ssl_protocols ${options.protocols ?? 'TLSv1.3'};
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    location / { return 200 "ok\\n"; }
  }
}
`;
  const configFile = join(prefix, 'nginx.conf');
  writeFileSync(configFile, config);
  const version = spawnSync(binary, ['-v'], { encoding: 'utf8' }).stderr.trim().replace(/^nginx version: /, '');
  const child: ChildProcess = spawn(binary, ['-p', prefix, '-c', configFile, '-e', join(prefix, 'logs', 'error.log')], {
    stdio: ['ignore', 'ignore', 'pipe'],
    ...(options.env ? { env: options.env } : {}),
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Wait for the worker to appear.
  const deadline = Date.now() + 10_000;
  let workers: number[] = [];
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
    workers = childPids(child.pid!);
    if (workers.length > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  if (workers.length === 0) {
    child.kill('SIGKILL');
    throw new Error(`nginx worker did not start: ${stderr}`);
  }
  return {
    port,
    pids: [child.pid!, ...workers],
    errorLog: join(prefix, 'logs', 'error.log'),
    version,
    async stop() {
      if (child.exitCode === null) child.kill('SIGQUIT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
