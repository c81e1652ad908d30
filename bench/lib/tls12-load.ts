/**
 * A TLS 1.2 full-handshake load generator on node:tls, for the TLS 1.2 rows of
 * bench:handshake: hsload (Go) speaks TLS 1.3 only. `concurrency` workers connect in a
 * loop with TLS 1.2 forced, no session reuse, one ECDHE AEAD suite, and close after the
 * handshake (or after one request). Only server CPU is compared (from /proc), so the
 * client being Node rather than Go changes the rate, not the figure.
 */
import { connect } from 'node:tls';
import { readFileSync } from 'node:fs';
import type { HsloadResult } from './hsload.js';

export interface Tls12LoadRun {
  host: string;
  port: number;
  sni: string;
  caFile: string;
  concurrency: number;
  durationSeconds: number;
  curve: 'x25519' | 'p256';
  /** ECDHE-ECDSA-… or ECDHE-RSA-…, matching the server key. */
  cipher: string;
  request?: string;
}

function oneHandshake(run: Tls12LoadRun, ca: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: run.host,
      port: run.port,
      servername: run.sni,
      ca,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      ciphers: run.cipher,
      // P-256 is always offered too: an ECDSA P-256 certificate needs its curve in supported_groups (RFC 8422 §5.3).
      ecdhCurve: run.curve === 'x25519' ? 'X25519:P-256' : 'P-256',
    });
    socket.once('error', reject);
    socket.once('secureConnect', () => {
      if (!run.request) {
        socket.destroy();
        resolve();
        return;
      }
      socket.once('data', () => {
        socket.destroy();
        resolve();
      });
      socket.write(run.request);
    });
  });
}

function percentile(sorted: number[], p: number): string {
  if (sorted.length === 0) return '0s';
  const value = sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
  return `${value.toFixed(3)}ms`;
}

export async function runTls12Load(run: Tls12LoadRun): Promise<HsloadResult> {
  const ca = readFileSync(run.caFile);
  const deadline = Date.now() + run.durationSeconds * 1000;
  const latencies: number[] = [];
  let failed = 0;
  let firstError: string | undefined;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const start = performance.now();
      try {
        await oneHandshake(run, ca);
        latencies.push(performance.now() - start);
      } catch (err) {
        failed++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: run.concurrency }, () => worker()));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    handshakes: latencies.length,
    failed,
    rate: latencies.length / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    ...(firstError ? { firstError } : {}),
  };
}
