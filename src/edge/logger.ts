import { pino, type Logger } from 'pino';

/**
 * Structured logs (JSON lines on stderr). Nothing the edge logs is secret: it never holds
 * a private key, and we log names, addresses, codes — never certificates or payloads.
 */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, component: 'edge', ...bindings } }, pino.destination({ fd: 2, sync: true }));
}
