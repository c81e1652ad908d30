import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Keyring } from './keyring.js';

interface UnpublishedCount {
  labels: { client: string; key: string };
  count: number;
}

/**
 * keyd's Prometheus metrics (served at /metrics with `--metrics HOST:PORT` or config
 * "metricsListen"; docs/KEYD.md "Metrics"). Label values are bounded: clients are configured
 * principals or mTLS subjects from the config ("(unlisted)" for any other certificate), keys
 * are key references that exist ("(none)" for a refusal before a key was found), back-ends are
 * "software" or a configured token, and refusal codes are keyd's own error codes.
 */
export class KeydMetrics {
  readonly registry = new Registry();
  readonly signatures: Counter<'client' | 'key'>;
  readonly signRefusals: Counter<'client' | 'key' | 'code'>;
  readonly signSeconds: Histogram<'backend'>;
  readonly limitRefusals: Counter<'client' | 'limit'>;
  /** Signing-ledger windows whose audit entries or totals file could not be written. */
  readonly ledgerFailures: Counter;
  readonly connections: Gauge<'listener'>;
  /** 1 while a back-end's last signature succeeded, 0 after it failed (a token away). */
  readonly backendUp: Gauge<'backend'>;
  /**
   * Signatures not yet added to `signatures`, per (client, key) in the order each pair was
   * first counted: the counter takes them when scraped (its collect), in that order, so the
   * exposition is what one inc per signature gives, without prom-client hashing the labels
   * on every signature. As bounded as the counter's own series (clients and key references).
   */
  private readonly unpublished = new Map<string, Map<string, UnpublishedCount>>();
  private readonly unpublishedInOrder: UnpublishedCount[] = [];
  /** The value last set on backendUp per back-end: a signature sets it only when it changes. */
  private readonly backendState = new Map<string, number>();

  constructor() {
    const registers = [this.registry];
    const unpublished = this.unpublishedInOrder;
    this.signatures = new Counter({
      name: 'keyd_signatures_total',
      help: 'CertificateVerify signatures made, by client (principal or mTLS subject) and key reference',
      labelNames: ['client', 'key'],
      registers,
      collect() {
        for (const pending of unpublished) {
          if (pending.count === 0) continue;
          this.inc(pending.labels, pending.count);
          pending.count = 0;
        }
      },
    });
    this.signRefusals = new Counter({
      name: 'keyd_sign_refusals_total',
      help: 'Signing requests refused, by client, key reference ("(none)" before a key was found) and error code',
      labelNames: ['client', 'key', 'code'],
      registers,
    });
    this.signSeconds = new Histogram({
      name: 'keyd_sign_duration_seconds',
      help: 'Time to sign one request once it was accepted (content built, key used), by back-end',
      labelNames: ['backend'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers,
    });
    this.limitRefusals = new Counter({
      name: 'keyd_limit_refusals_total',
      help: 'Requests or connections refused or throttled by a limit (docs/KEYD.md "Limits"), by client and limit',
      labelNames: ['client', 'limit'],
      registers,
    });
    this.ledgerFailures = new Counter({
      name: 'keyd_signing_ledger_failures_total',
      help: 'Signing-ledger windows whose audit entries or signing-totals.json could not be written (the counts are kept and written with the next window)',
      registers,
    });
    this.connections = new Gauge({
      name: 'keyd_connections',
      help: 'Connections open now, by listener',
      labelNames: ['listener'],
      registers,
    });
    this.backendUp = new Gauge({
      name: 'keyd_backend_up',
      help: 'Key back-end state: 1 = its last signature succeeded (software keys: always), 0 = it failed',
      labelNames: ['backend'],
      registers,
    });
  }

  /** One signature made for `client` with the key `key` (keyd_signatures_total). */
  countSignature(client: string, key: string): void {
    let keys = this.unpublished.get(client);
    if (!keys) this.unpublished.set(client, (keys = new Map()));
    let pending = keys.get(key);
    if (!pending) {
      keys.set(key, (pending = { labels: { client, key }, count: 0 }));
      this.unpublishedInOrder.push(pending);
    }
    pending.count++;
  }

  /** One signature made by a key in `backend`, `seconds` after it was accepted. */
  signedWith(backend: string, seconds: number): void {
    this.signSeconds.observe({ backend }, seconds);
    if (this.backendState.get(backend) !== 1) this.setBackendUp(backend, 1);
  }

  /** A back-end failed to sign (e.g. a token that went away). */
  backendFailed(backend: string): void {
    this.setBackendUp(backend, 0);
  }

  private setBackendUp(backend: string, value: 0 | 1): void {
    this.backendState.set(backend, value);
    this.backendUp.set({ backend }, value);
  }

  /**
   * Gauges read from the keyring when scraped: how many keys the store holds, each
   * certificate's notAfter, and the root key's kind. Called once, at start.
   */
  watchKeyring(keyring: Keyring, rootKind: string): void {
    const registers = [this.registry];
    new Gauge({
      name: 'keyd_store_keys',
      help: 'Keys in the sealed store (loaded in the keyring), by back-end',
      labelNames: ['backend'],
      registers,
      collect() {
        this.reset();
        for (const entry of keyring.entries()) this.inc({ backend: entry.key.location });
      },
    });
    new Gauge({
      name: 'keyd_certificate_not_after_seconds',
      help: 'notAfter of the leaf certificate of each key (Unix time, seconds), by key reference and first name',
      labelNames: ['key', 'name'],
      registers,
      collect() {
        this.reset();
        for (const entry of keyring.entries()) {
          if (entry.notAfter) this.set({ key: entry.id, name: entry.names[0] ?? '' }, Math.floor(Date.parse(entry.notAfter) / 1000));
        }
      },
    });
    const root = new Gauge({ name: 'keyd_root_key_info', help: 'The root key the store is sealed under: 1, labelled by kind (file, tpm)', labelNames: ['kind'], registers });
    root.set({ kind: rootKind }, 1);
    // Software keys are in keyd's memory: that back-end is up whenever keyd is.
    this.setBackendUp('software', 1);
  }
}
