import { Counter, Gauge, Registry } from 'prom-client';

/**
 * keyd's Prometheus metrics (served at /metrics when config "metricsListen" is set).
 * Label values are bounded: clients are configured principals or mTLS subjects from the
 * config ("(unlisted)" for any other certificate), keys are key references that exist.
 */
export class KeydMetrics {
  readonly registry = new Registry();
  readonly signatures: Counter<'client' | 'key'>;
  readonly signRefusals: Counter<'client' | 'code'>;
  readonly limitRefusals: Counter<'client' | 'limit'>;
  readonly connections: Gauge<'listener'>;

  constructor() {
    const registers = [this.registry];
    this.signatures = new Counter({
      name: 'keyd_signatures_total',
      help: 'CertificateVerify signatures made, by client (principal or mTLS subject) and key reference',
      labelNames: ['client', 'key'],
      registers,
    });
    this.signRefusals = new Counter({
      name: 'keyd_sign_refusals_total',
      help: 'Signing requests refused, by client and error code',
      labelNames: ['client', 'code'],
      registers,
    });
    this.limitRefusals = new Counter({
      name: 'keyd_limit_refusals_total',
      help: 'Requests or connections refused or throttled by a limit (docs/KEYD.md "Limits"), by client and limit',
      labelNames: ['client', 'limit'],
      registers,
    });
    this.connections = new Gauge({
      name: 'keyd_connections',
      help: 'Connections open now, by listener',
      labelNames: ['listener'],
      registers,
    });
  }
}
