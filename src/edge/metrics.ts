import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The edge's Prometheus metrics. One registry per edge instance (tests run several in one
 * process); with cluster workers the primary aggregates the workers' registries.
 */
export class EdgeMetrics {
  readonly registry = new Registry();
  readonly handshakes: Counter<'outcome' | 'alert'>;
  readonly handshakeSeconds: Histogram<'outcome'>;
  readonly signSeconds: Histogram<'outcome'>;
  readonly keydConnected: Gauge<'endpoint'>;
  readonly keydReconnects: Counter;
  readonly activeConnections: Gauge;
  readonly upstreamErrors: Counter<'reason'>;
  readonly connectionsRefused: Counter<'reason'>;
  readonly identityCacheLookups: Counter<'result'>;
  readonly identityCacheEvictions: Counter<'kind'>;
  readonly clientAuth: Counter<'result' | 'alert'>;
  readonly handshakesBySigningPath: Counter<'path'>;
  readonly delegatedCredentialExpiry: Gauge<'identity'>;
  readonly delegatedCredentialIssuances: Counter<'outcome'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.handshakes = new Counter({
      name: 'edge_handshakes_total',
      help: 'TLS handshakes by outcome (ok, failed) and the alert sent or received (none when ok)',
      labelNames: ['outcome', 'alert'],
      registers,
    });
    this.handshakeSeconds = new Histogram({
      name: 'edge_handshake_duration_seconds',
      help: 'Time from TCP accept to the end of the TLS handshake',
      labelNames: ['outcome'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers,
    });
    this.signSeconds = new Histogram({
      name: 'edge_keyd_sign_duration_seconds',
      help: 'Round trip of one CertificateVerify signature through keyd',
      labelNames: ['outcome'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1, 2.5],
      registers,
    });
    this.keydConnected = new Gauge({
      name: 'edge_keyd_connected',
      help: '1 while this worker holds a connection to the keyd endpoint, else 0',
      labelNames: ['endpoint'],
      registers,
    });
    this.keydReconnects = new Counter({
      name: 'edge_keyd_connects_total',
      help: 'Connections established to keyd (the first, then every reconnect or failover)',
      registers,
    });
    this.activeConnections = new Gauge({
      name: 'edge_active_connections',
      help: 'Client connections open now (handshaking or proxying)',
      registers,
    });
    this.upstreamErrors = new Counter({
      name: 'edge_upstream_errors_total',
      help: 'Upstream connections that failed (connect refused, reset, timeout)',
      labelNames: ['reason'],
      registers,
    });
    this.connectionsRefused = new Counter({
      name: 'edge_connections_closed_by_limit_total',
      help: 'Connections closed by a limit (idle timeout, drain deadline)',
      labelNames: ['reason'],
      registers,
    });
    this.identityCacheLookups = new Counter({
      name: 'edge_identity_cache_lookups_total',
      help: 'Identity lookups by result: hit (served from the cache) or miss (asked keyd)',
      labelNames: ['result'],
      registers,
    });
    this.identityCacheEvictions = new Counter({
      name: 'edge_identity_cache_evictions_total',
      help: 'Identity cache entries evicted by the size limits: kind identity (a keyd answer) or name',
      labelNames: ['kind'],
      registers,
    });
    this.clientAuth = new Counter({
      name: 'edge_client_auth_total',
      help:
        'Handshakes on routes with client certificates, by result: verified (this handshake), resumed (verified in the ' +
        'resumed session), none (optional mode, no certificate), failed (refused after our CertificateRequest; alert = the alert)',
      labelNames: ['result', 'alert'],
      registers,
    });
    this.handshakesBySigningPath = new Counter({
      name: 'edge_handshakes_by_signing_path_total',
      help:
        'Completed handshakes by how CertificateVerify was signed: credential (a delegated credential, in the edge), ' +
        'keyd (a keyd round trip), in-process (a key in this process: never in the edge), resumed (no signature)',
      labelNames: ['path'],
      registers,
    });
    this.delegatedCredentialExpiry = new Gauge({
      name: 'edge_delegated_credential_expiry_seconds',
      help: 'Expiry (Unix time) of the delegated credential held for each keyd identity (key reference); absent when none',
      labelNames: ['identity'],
      registers,
    });
    this.delegatedCredentialIssuances = new Counter({
      name: 'edge_delegated_credential_issuances_total',
      help: 'Delegated credentials asked of keyd, by outcome (ok, failed)',
      labelNames: ['outcome'],
      registers,
    });
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'edge_' });
  }
}
