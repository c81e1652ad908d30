/**
 * The identity cache is bounded: names under one wildcard share one cached keyd answer,
 * least-recently-used entries are evicted past the configured sizes, and hits, misses and
 * evictions are counted in the edge's metrics.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { IdentityCache, type IdentitySource } from '../../src/edge/identity-cache.js';
import type { KeydIdentityLike } from '../../src/edge/keyd-pool.js';
import { EdgeMetrics } from '../../src/edge/metrics.js';
import type { Signer } from '../../src/tls/signer.js';

/** keyd answering with one identity per wildcard parent (`*.w1.test`, `*.w2.test`, …), like keyd's own wildcard rule. */
class WildcardKeyd extends EventEmitter implements IdentitySource {
  lookups = 0;
  signersMade = 0;
  /** The server name each signer was bound to (keyd grants signatures per name). */
  readonly signerNames: string[] = [];
  async identity(serverName: string): Promise<KeydIdentityLike | undefined> {
    this.lookups++;
    const parent = serverName.slice(serverName.indexOf('.') + 1);
    if (!parent.startsWith('w')) return undefined;
    // A fresh object (and chain array) per answer, as decoded from the wire.
    return {
      names: [`*.${parent}`],
      keyRef: `key-${parent}`,
      keyType: 'ecdsa-p256',
      schemes: [0x0403],
      certificateChain: [Buffer.from(`cert-${parent}`), Buffer.from('ca')],
      version: 1,
    };
  }
  signer(_identity: KeydIdentityLike, serverName: string): Signer {
    this.signersMade++;
    this.signerNames.push(serverName);
    return { schemes: [0x0403], sign: async () => new Uint8Array(64) };
  }
}

function cacheWith(keyd: WildcardKeyd, metrics: EdgeMetrics, sizes: { maxIdentities?: number; maxNames?: number }) {
  return new IdentityCache(keyd, {
    ...sizes,
    onLookup: (result) => metrics.identityCacheLookups.inc({ result }),
    onEvict: (kind) => metrics.identityCacheEvictions.inc({ kind }),
  });
}

async function counter(metrics: EdgeMetrics, name: string, labels: Record<string, string>): Promise<number> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  const value = metric?.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return value?.value ?? 0;
}

test('many names under one wildcard: one cached identity (one chain), a name-bound signer per name, names bounded', async () => {
  const keyd = new WildcardKeyd();
  const metrics = new EdgeMetrics();
  const cache = cacheWith(keyd, metrics, { maxIdentities: 8, maxNames: 100 });
  const chains = new Set<unknown>();
  for (let i = 0; i < 1000; i++) chains.add((await cache.get(`n${i}.w1.test`))!.certificateChain);
  assert.equal(chains.size, 1, 'every name shares the one cached chain');
  assert.equal(cache.identityCount, 1, 'one keyd answer held once');
  // keyd grants signatures by name: each name's signer says which name it serves.
  assert.equal(keyd.signersMade, 1000);
  assert.deepEqual(keyd.signerNames.slice(0, 2), ['n0.w1.test', 'n1.w1.test']);
  assert.equal(cache.size, 100, 'names are bounded by maxNames');
  assert.equal(await counter(metrics, 'edge_identity_cache_evictions_total', { kind: 'name' }), 900);
  assert.equal(await counter(metrics, 'edge_identity_cache_lookups_total', { result: 'miss' }), 1000);
  // The 100 most recent names are hits, served synchronously.
  const identity = cache.get('n999.w1.test');
  assert.ok(identity && !(identity instanceof Promise));
  assert.equal(await counter(metrics, 'edge_identity_cache_lookups_total', { result: 'hit' }), 1);
  assert.ok(cache.get('n0.w1.test') instanceof Promise, 'the oldest name was evicted');
});

test('identities are evicted least recently used first, and an evicted one is fetched again', async () => {
  const keyd = new WildcardKeyd();
  const metrics = new EdgeMetrics();
  const cache = cacheWith(keyd, metrics, { maxIdentities: 2, maxNames: 100 });
  const a = await cache.get('x.w1.test');
  await cache.get('x.w2.test');
  assert.equal(cache.get('y.w1.test') instanceof Promise, true, 'a new name is a miss even for a cached identity');
  await cache.get('y.w1.test');
  assert.equal(cache.get('x.w1.test'), a, 'w1 used again: most recent');
  await cache.get('x.w3.test'); // third identity: evicts w2, the least recently used
  assert.equal(cache.identityCount, 2);
  assert.equal(await counter(metrics, 'edge_identity_cache_evictions_total', { kind: 'identity' }), 1);
  assert.equal(cache.get('x.w1.test'), a, 'w1 kept');
  const before = keyd.lookups;
  const again = cache.get('x.w2.test');
  assert.ok(again instanceof Promise, 'w2 evicted: asked keyd again');
  assert.equal((await again)?.keyRef, 'key-w2.test');
  assert.equal(keyd.lookups, before + 1);
});

test('"no key" answers are remembered as names, within the same bound', async () => {
  const keyd = new WildcardKeyd();
  const metrics = new EdgeMetrics();
  const cache = cacheWith(keyd, metrics, { maxIdentities: 2, maxNames: 10 });
  for (let i = 0; i < 50; i++) assert.equal(await cache.get(`n${i}.other.test`), undefined);
  assert.equal(cache.size, 10);
  assert.equal(cache.identityCount, 0);
  assert.equal(cache.get('n49.other.test'), undefined, 'a remembered refusal is a synchronous hit');
});

test('TTL: a found identity is served from the cache until ttlMs, then keyd is asked again (injected clock)', async () => {
  const keyd = new WildcardKeyd();
  let clock = 1_000_000;
  const cache = new IdentityCache(keyd, { ttlMs: 60_000, negativeTtlMs: 1000, now: () => clock });
  const first = await cache.get('x.w1.test');
  assert.equal(keyd.lookups, 1);
  clock += 59_999;
  assert.equal(cache.get('x.w1.test'), first, 'control: within the TTL, a synchronous hit');
  clock += 1;
  const again = cache.get('x.w1.test');
  assert.ok(again instanceof Promise, 'at the TTL the entry is stale: keyd is asked again');
  await again;
  assert.equal(keyd.lookups, 2);
});

test('negative caching: "keyd has no key" is remembered for negativeTtlMs only, not for the positive TTL', async () => {
  const keyd = new WildcardKeyd();
  let clock = 1_000_000;
  const cache = new IdentityCache(keyd, { ttlMs: 300_000, negativeTtlMs: 1000, now: () => clock });
  assert.equal(await cache.get('x.other.test'), undefined);
  clock += 999;
  assert.equal(cache.get('x.other.test'), undefined, 'control: remembered within negativeTtlMs (a synchronous answer)');
  assert.equal(keyd.lookups, 1);
  clock += 1;
  const again = cache.get('x.other.test');
  assert.ok(again instanceof Promise, 'after negativeTtlMs keyd is asked again (a key added meanwhile is found)');
  assert.equal(await again, undefined);
  assert.equal(keyd.lookups, 2);
});

test('names are evicted least recently used, not first in: a name hit moves it to the recent end', async () => {
  const keyd = new WildcardKeyd();
  const metrics = new EdgeMetrics();
  const cache = cacheWith(keyd, metrics, { maxIdentities: 8, maxNames: 3 });
  const a = await cache.get('a.w1.test');
  await cache.get('b.w1.test');
  await cache.get('c.w1.test');
  assert.equal(cache.get('a.w1.test'), a, 'a used again: most recent');
  await cache.get('d.w1.test'); // a fourth name: evicts b, the least recently used
  assert.equal(cache.size, 3);
  assert.equal(cache.get('a.w1.test'), a, 'a kept');
  assert.ok(cache.get('b.w1.test') instanceof Promise, 'b evicted');
});

test('a keyd lookup that failed is not kept: the next handshake for the name asks keyd again (concurrent ones shared the failure)', async () => {
  const keyd = new WildcardKeyd();
  let failNext = true;
  const answer = keyd.identity.bind(keyd);
  keyd.identity = async (serverName: string) => {
    if (failNext) {
      failNext = false;
      keyd.lookups++;
      throw Object.assign(new Error('keyd request timed out'), { code: 'KEYD_TIMEOUT' });
    }
    return answer(serverName);
  };
  const cache = new IdentityCache(keyd, {});
  const [a, b] = [cache.get('x.w1.test'), cache.get('x.w1.test')];
  await assert.rejects(Promise.resolve(a), { code: 'KEYD_TIMEOUT' });
  await assert.rejects(Promise.resolve(b), { code: 'KEYD_TIMEOUT' });
  assert.equal(keyd.lookups, 1, 'control: concurrent misses share the one request');
  assert.equal((await cache.get('x.w1.test'))?.keyRef, 'key-w1.test', 'asked again, and served');
  assert.equal(keyd.lookups, 2);
});

test('setLimits (a reload) applies to both levels: entries over the new bounds go at the next insertion, oldest first', async () => {
  const keyd = new WildcardKeyd();
  const metrics = new EdgeMetrics();
  const cache = cacheWith(keyd, metrics, { maxIdentities: 8, maxNames: 10 });
  for (let i = 0; i < 10; i++) await cache.get(`n${i}.w${i % 4}.test`);
  assert.equal(cache.size, 10);
  assert.equal(cache.identityCount, 4);
  cache.setLimits(2, 3);
  assert.equal(cache.size, 10, 'nothing is dropped before the next insertion');
  await cache.get('z.w9.test');
  assert.equal(cache.size, 3);
  assert.equal(cache.identityCount, 2);
  assert.ok(cache.get('z.w9.test') && !(cache.get('z.w9.test') instanceof Promise), 'control: the newest name is kept');
  assert.ok(cache.get('n0.w0.test') instanceof Promise, 'the oldest name went');
});
