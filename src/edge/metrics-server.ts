import { createServer, type Server } from 'node:http';
import type { ListenAddress } from './config.js';

/**
 * Connections the endpoint holds at once. A Prometheus server scrapes over one keep-alive
 * connection (two or three with HA replicas); without a cap every connection opened to the
 * port was accepted and held (an fd and its buffers each) for as long as node:http's timeouts
 * allow, in the process that also accepts the TLS clients (the cluster primary, or keyd).
 * More are closed at accept (node:net's `maxConnections`).
 */
export const METRICS_MAX_CONNECTIONS = 32;
/** A scrape request is one line and a few headers: all of it must arrive within this. */
export const METRICS_REQUEST_TIMEOUT_MS = 10_000;

export interface MetricsServerLimits {
  maxConnections?: number;
  requestTimeoutMs?: number;
}

/**
 * `GET /metrics` in the Prometheus text format; anything else 404 and the connection closed
 * (its body, if any, is not read). Bound where the config says.
 */
export async function startMetricsServer(
  address: ListenAddress,
  render: () => Promise<{ contentType: string; body: string }>,
  limits: MetricsServerLimits = {},
): Promise<Server> {
  const requestTimeout = limits.requestTimeoutMs ?? METRICS_REQUEST_TIMEOUT_MS;
  const server = createServer(
    {
      // Headers and the whole request within the timeout (node:http's defaults are 60 s and
      // 300 s), checked a few times per timeout.
      headersTimeout: requestTimeout,
      requestTimeout,
      connectionsCheckingInterval: Math.max(10, Math.floor(requestTimeout / 4)),
    },
    (req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        // Closing rather than keeping the connection alive: node:http would otherwise read
        // and discard whatever body follows (a POST streaming forever) until requestTimeout.
        res.writeHead(404, { 'content-type': 'text/plain', connection: 'close' }).end('not found; metrics are at /metrics\n');
        return;
      }
      render().then(
        ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(body),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${err.message}\n`),
      );
    },
  );
  server.maxConnections = limits.maxConnections ?? METRICS_MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: address.port, host: address.host, ipv6Only: address.ipv6Only === true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
