import { connect, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { EngineSocket } from './engine.js';
import type { EdgeMetrics } from './metrics.js';
import { encodeProxyV2 } from './proxy-protocol.js';
import { connectForRelay } from '../tls/index.js';
import { DEFAULT_LIMITS } from './config.js';

/**
 * What the handshake did, in words for the upstream (PROXY v2) and the debug log: version,
 * group, whether a HelloRetryRequest was needed, whether a ticket resumed the session, and
 * how it was signed (a resumed handshake has no CertificateVerify, RFC 8446 §2.2; a delegated
 * credential's key signs in the edge, RFC 9345).
 */
export function describeHandshake(tls: EngineSocket): Record<string, string> {
  const info = tls.handshakeInfo;
  const resumed = info?.resumed ?? tls.resumed ?? false;
  const scheme = info?.signatureScheme ?? tls.signatureScheme;
  return {
    version: info?.version ?? 'TLSv1.3',
    group: info?.group ?? tls.group ?? 'unknown',
    hrr: info?.helloRetryRequest ? 'yes' : 'no',
    resumed: resumed ? 'yes' : 'no',
    signature: resumed
      ? 'none (resumed from a session ticket)'
      : !scheme
        ? 'unknown'
        : (info?.delegatedCredential ?? tls.delegatedCredential)
          ? `${scheme} by the edge with a delegated credential (RFC 9345) from keyd`
          : `${scheme} by keyd`,
  };
}
import type { Route } from './routes.js';
import type { ServerCertificateFacts } from './certificate-facts.js';

/**
 * Carries the decrypted bytes of one TLS connection to its route's upstream over plain TCP,
 * optionally behind a PROXY v2 header, with backpressure both ways. Either side ending ends the other (half-close passes
 * through); an upstream that is down, does not complete its connect within
 * `connectTimeoutMs`, or fails closes the TLS connection cleanly with close_notify, never with a reset, so the client sees an orderly end; the TLS connection
 * closing (or failing) closes the upstream connection. Returns the upstream socket, or
 * undefined when the route's PROXY v2 header cannot be made (the client is closed instead).
 */
export function proxyToUpstream(
  tls: EngineSocket,
  route: Route,
  serverName: string | undefined,
  metrics: EdgeMetrics,
  log: Logger,
  serverCertificate?: ServerCertificateFacts,
  connectTimeoutMs: number = DEFAULT_LIMITS.upstreamConnectTimeoutMs,
): Socket | undefined {
  // allowHalfOpen: the upstream's FIN ends only its direction (passed on as close_notify);
  // without it node:net ends our side at once, and what the client still sends (TLS 1.3
  // lets it write after our close_notify, RFC 8446 §6.1) never reaches the upstream.
  const target = { host: route.upstream.host, port: route.upstream.port, noDelay: true, allowHalfOpen: true };
  let header: Buffer | undefined;
  if (route.proxyProtocol) {
    try {
      header = encodeProxyV2({
        sourceAddress: tls.remoteAddress,
        sourcePort: tls.remotePort,
        destinationAddress: tls.localAddress ?? tls.rawSocket?.localAddress,
        destinationPort: tls.localPort ?? tls.rawSocket?.localPort,
        serverName,
        alpnProtocol: tls.alpnProtocol,
        tlsVersion: tls.handshakeInfo?.version ?? 'TLSv1.3',
        cipherSuite: tls.cipherSuite,
        handshakeDetails: describeHandshake(tls),
        serverSignatureAlgorithm: serverCertificate?.signatureAlgorithm,
        serverKeyAlgorithm: serverCertificate?.keyAlgorithm,
        ...(tls.clientCertificate
          ? { clientCertificate: { commonName: tls.clientCertificate.commonName, fromSession: tls.clientCertificateFromSession ?? false } }
          : {}),
      });
    } catch (err) {
      // The header is over 65535 bytes, its length field's limit (HAProxy's proxy-protocol.txt
      // §2.2): a client certificate's CN of nearly 64 KiB, which a route's CA signed. The
      // upstream cannot be told who the client is, so it is not connected; the client gets
      // close_notify. This used to throw out of the 'secure' handler, before the TLS socket
      // had an 'error' listener: the engine's internal_error became an uncaught 'error' event
      // that ended the process (and an upstream connection was left open).
      metrics.upstreamErrors.inc({ reason: 'header' });
      log.warn({ upstream: `${route.upstream.host}:${route.upstream.port}`, serverName, err: (err as Error).message }, 'PROXY v2 header cannot be sent; closing the client connection');
      tls.on('error', (e: Error & { code?: string }) => log.debug({ serverName, err: e.code ?? e.message }, 'client connection error'));
      tls.end();
      return undefined;
    }
  }
  // The engine's relay reads the upstream into one shared buffer (src/tls/relay.ts).
  const upstream = tls.relayTo ? connectForRelay(target) : connect(target);
  let connected = false;
  // An upstream that drops our SYNs (a firewall's DROP, a host gone from the network) never
  // answers with RST, so connect() stays pending until the kernel gives up after
  // tcp_syn_retries retransmissions (about 127 s by default, tcp(7)); the client was held
  // all that time, and the idle timeout then counted it as idle. The connect gets
  // `connectTimeoutMs` (limits.upstreamConnectTimeoutMs): then the upstream socket is
  // destroyed with an error, which ends the client exactly as a refused connect does
  // (the 'error' handler below: close_notify), counted as reason connect_timeout.
  let timedOut = false;
  let connectTimer: NodeJS.Timeout | undefined = setTimeout(() => {
    connectTimer = undefined;
    timedOut = true;
    upstream.destroy(new Error(`connect did not complete within ${connectTimeoutMs} ms`));
  }, connectTimeoutMs);
  // Cleared on connect, on an upstream error or close, and when the client's side closes:
  // no timer outlives the attempt, and none fires for a connection already ended.
  const clearConnectTimer = (): void => {
    if (connectTimer === undefined) return;
    clearTimeout(connectTimer);
    connectTimer = undefined;
  };
  if (header) upstream.write(header);
  upstream.once('connect', () => {
    connected = true;
    clearConnectTimer();
  });
  upstream.on('error', (err: NodeJS.ErrnoException) => {
    clearConnectTimer();
    const reason = connected ? 'reset' : timedOut ? 'connect_timeout' : 'connect';
    metrics.upstreamErrors.inc({ reason });
    log.warn(
      { upstream: `${route.upstream.host}:${route.upstream.port}`, serverName, err: err.code ?? err.message, reason },
      'upstream failed; closing the client connection',
    );
    tls.unpipe(upstream); // (the engine's relay stops writing to a failed upstream by itself)
    if (!tls.destroyed) tls.end(); // close_notify after what was already relayed
  });
  tls.on('error', (err: Error & { code?: string }) => {
    log.debug({ serverName, err: err.code ?? err.message }, 'client connection error');
    upstream.destroy();
  });
  // The TLS side fully closed ('close': both directions done, or destroyed by a reset, a
  // timeout or the connection cap): nothing the upstream sends can reach the client any more,
  // so its connection is closed now rather than kept (paused, never read) until the upstream
  // closes it, which one that never answers never does. Client bytes the upstream had not
  // accepted yet go with it (docs/EDGE.md, "Upstream connections"). The client's close_notify
  // or FIN alone does not get here: that is a half-close, passed on as FIN (relay.ts).
  tls.on('close', () => {
    clearConnectTimer();
    if (!upstream.destroyed) upstream.destroy();
  });
  upstream.on('close', () => {
    clearConnectTimer();
    if (!tls.destroyed && !tls.writableEnded) tls.end();
  });
  // The engine relays without the stream layers (src/tls/relay.ts); a stand-in Duplex is piped.
  if (tls.relayTo) tls.relayTo(upstream);
  else {
    tls.pipe(upstream);
    upstream.pipe(tls);
  }
  return upstream;
}
