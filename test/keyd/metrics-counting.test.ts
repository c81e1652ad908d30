/**
 * keyd counts signatures per (client, key) in its own table and hands the counts to
 * prom-client when scraped; the exposition must be exactly what one `inc` per signature
 * gives (same series, same order, same values), whatever the interleaving of signatures
 * and scrapes. keyd_backend_up is set only when it changes, and still follows every change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Counter, Registry } from 'prom-client';
import { KeydMetrics } from '../../src/keyd/metrics.js';

function reference(): { registry: Registry; counter: Counter<'client' | 'key'> } {
  const registry = new Registry();
  const counter = new Counter({
    name: 'keyd_signatures_total',
    help: 'CertificateVerify signatures made, by client (principal or mTLS subject) and key reference',
    labelNames: ['client', 'key'],
    registers: [registry],
  });
  return { registry, counter };
}

type Event = { sign: [string, string] } | { scrape: true };

test('keyd_signatures_total: the same text as one inc per signature, for any sequence of signatures and scrapes', async () => {
  const event: fc.Arbitrary<Event> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ sign: fc.tuple(fc.constantFrom('edge-a', 'edge-b', 'CN=edge c'), fc.constantFrom('k1', 'k2', '(none)')) }) },
    { weight: 1, arbitrary: fc.constant({ scrape: true as const }) },
  );
  await fc.assert(
    fc.asyncProperty(fc.array(event, { maxLength: 60 }), async (events) => {
      const metrics = new KeydMetrics();
      const ref = reference();
      const scrapeBoth = async () => {
        assert.equal(await metrics.registry.getSingleMetricAsString('keyd_signatures_total'), await ref.registry.getSingleMetricAsString('keyd_signatures_total'));
      };
      for (const e of events) {
        if ('sign' in e) {
          metrics.countSignature(e.sign[0], e.sign[1]);
          ref.counter.inc({ client: e.sign[0], key: e.sign[1] });
        } else {
          await scrapeBoth();
        }
      }
      await scrapeBoth();
    }),
    { numRuns: 200 },
  );
});

test('a known sequence: counts per series, in first-signed order, across scrapes', async () => {
  const metrics = new KeydMetrics();
  metrics.countSignature('edge-b', 'k2');
  metrics.countSignature('edge-a', 'k1');
  metrics.countSignature('edge-b', 'k2');
  const first = await metrics.registry.getSingleMetricAsString('keyd_signatures_total');
  assert.match(first, /keyd_signatures_total\{client="edge-b",key="k2"\} 2\nkeyd_signatures_total\{client="edge-a",key="k1"\} 1/);
  metrics.countSignature('edge-a', 'k1');
  metrics.countSignature('edge-c', 'k1');
  const second = await metrics.registry.getSingleMetricAsString('keyd_signatures_total');
  assert.match(second, /client="edge-b",key="k2"\} 2\n.*client="edge-a",key="k1"\} 2\n.*client="edge-c",key="k1"\} 1/);
  // A scrape without new signatures changes nothing.
  assert.equal(await metrics.registry.getSingleMetricAsString('keyd_signatures_total'), second);
});

test('keyd_backend_up follows failures and recoveries; repeated signatures keep it at 1', async () => {
  const metrics = new KeydMetrics();
  const up = async () => {
    const text = await metrics.registry.getSingleMetricAsString('keyd_backend_up');
    const line = text.split('\n').find((l) => l.startsWith('keyd_backend_up{backend="pkcs11:token=t"} '));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  };
  assert.equal(await up(), undefined, 'no series before the back-end signed or failed');
  metrics.signedWith('pkcs11:token=t', 0.001);
  assert.equal(await up(), 1);
  metrics.backendFailed('pkcs11:token=t');
  assert.equal(await up(), 0);
  metrics.signedWith('pkcs11:token=t', 0.001);
  metrics.signedWith('pkcs11:token=t', 0.001);
  assert.equal(await up(), 1);
  metrics.backendFailed('pkcs11:token=t');
  metrics.backendFailed('pkcs11:token=t');
  assert.equal(await up(), 0);
  metrics.signedWith('pkcs11:token=t', 0.001);
  assert.equal(await up(), 1);
  const histogram = await metrics.registry.getSingleMetricAsString('keyd_sign_duration_seconds');
  assert.match(histogram, /keyd_sign_duration_seconds_count\{backend="pkcs11:token=t"\} 4/, 'every signature is observed');
});
