/**
 * keyd's Prometheus metrics, scraped over HTTP (`--metrics HOST:PORT`) after known traffic:
 * names and values of signatures and refusals by key, principal and reason, the signing
 * latency histogram, store size, back-end state and each certificate's notAfter; and the
 * certificate expiry warning, with keyd's clock injected.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { join } from 'node:path';
import { pino } from 'pino';
import { KeydClient } from '../../src/keyd/client.js';
import { LOCAL, makeIdentity, scratch, startTestKeyd } from './fixtures.js';

const hash32 = createHash('sha256').update('transcript').digest();
const DAY_MS = 86_400_000;

function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The value of one sample line `name{labels} value`, or undefined. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

test('--metrics: signatures, refusals, latency, store size, back-end state and notAfter after known traffic', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, {
    metrics: '127.0.0.1:0',
    config: { principals: { 'edge-a': { socket: join(s.dir, 'edge-a.sock'), mode: '0600', names: ['*.a.test'] } } },
  });
  try {
    assert.ok(keyd.metricsPort, 'the metrics server listens');
    const id = await makeIdentity('ecdsa-p256', ['www.a.test']);
    await keyd.adminService.put(LOCAL, ['www.a.test'], id.privateKey, id.chain);
    const edge = await KeydClient.connect({ socketPath: keyd.principalSockets['edge-a']! });
    const keyRef = (await edge.identity('www.a.test'))!.keyRef;
    for (let i = 0; i < 7; i++) await edge.sign(keyRef, 'www.a.test', 0x0403, hash32);
    await assert.rejects(edge.sign(keyRef, 'www.a.test', 0x0403, new Uint8Array(20)), { code: 'KEYD_BAD_HASH_LENGTH' });
    await assert.rejects(edge.sign(keyRef, 'www.a.test', 0x0804, hash32), { code: 'KEYD_SCHEME_UNSUPPORTED' });
    await assert.rejects(edge.sign(keyRef, 'www.b.test', 0x0403, hash32), { code: 'KEYD_NOT_AUTHORISED' });
    edge.close();

    const text = await scrape(keyd.metricsPort);
    assert.equal(sample(text, 'keyd_signatures_total', `client="edge-a",key="${keyRef}"`), 7);
    assert.equal(sample(text, 'keyd_sign_refusals_total', `client="edge-a",key="${keyRef}",code="KEYD_BAD_HASH_LENGTH"`), 1);
    assert.equal(sample(text, 'keyd_sign_refusals_total', `client="edge-a",key="${keyRef}",code="KEYD_SCHEME_UNSUPPORTED"`), 1);
    // Refused before a key was chosen: counted under "(none)", never under the caller's string.
    assert.equal(sample(text, 'keyd_sign_refusals_total', `client="edge-a",key="(none)",code="KEYD_NOT_AUTHORISED"`), 1);
    assert.equal(sample(text, 'keyd_sign_duration_seconds_count', 'backend="software"'), 7);
    assert.equal(sample(text, 'keyd_sign_duration_seconds_bucket', 'le="+Inf",backend="software"'), 7);
    assert.ok(sample(text, 'keyd_sign_duration_seconds_sum', 'backend="software"')! > 0);
    assert.equal(sample(text, 'keyd_store_keys', 'backend="software"'), 1);
    assert.equal(sample(text, 'keyd_backend_up', 'backend="software"'), 1);
    assert.equal(sample(text, 'keyd_root_key_info', 'kind="file"'), 1);
    assert.equal(sample(text, 'keyd_certificate_not_after_seconds', `key="${keyRef}",name="www.a.test"`), Math.floor(id.cert.notAfter.getTime() / 1000));
    assert.equal(sample(text, 'keyd_connections', 'listener="edge-a"') ?? 0, 0);

    // A second key, then a delete: the store size follows.
    const other = await makeIdentity('ed25519', ['x.a.test']);
    await keyd.adminService.put(LOCAL, ['x.a.test'], other.privateKey, other.chain);
    assert.equal(sample(await scrape(keyd.metricsPort), 'keyd_store_keys', 'backend="software"'), 2);
    await keyd.adminService.delete(LOCAL, 'x.a.test');
    const after = await scrape(keyd.metricsPort);
    assert.equal(sample(after, 'keyd_store_keys', 'backend="software"'), 1);
    assert.equal(after.includes('name="x.a.test"'), false, 'a deleted key leaves no notAfter series');
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('expiry warning: keyd warns 30 days (configurable) before notAfter, by its injected clock', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const lines: { level: number; msg: string; names?: string[]; daysLeft?: number }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const id = await makeIdentity('ecdsa-p256', ['soon.test']); // notAfter: one day after now
  const notAfter = id.cert.notAfter.getTime();
  let clock = notAfter - 40 * DAY_MS;
  const warnings = () => lines.filter((l) => l.level === 40 && /expires in/.test(l.msg));
  let keyd = await startTestKeyd(s.dir, s.machineIdPath, { logger, now: () => clock });
  try {
    await keyd.adminService.put(LOCAL, ['soon.test'], id.privateKey, id.chain);
    assert.equal(warnings().length, 0, '40 days before notAfter: no warning');
    clock = notAfter - 29 * DAY_MS - 60_000;
    const other = await makeIdentity('ecdsa-p256', ['other.test']);
    await keyd.adminService.put(LOCAL, ['other.test'], other.privateKey, other.chain); // any change re-checks
    const due = warnings().filter((w) => w.names?.includes('soon.test'));
    assert.equal(due.length, 1, JSON.stringify(lines));
    assert.equal(due[0]!.daysLeft, 29);
  } finally {
    await keyd.close();
  }
  // Configurable: with "expiryWarningDays": 10, 29 days left is not yet due; at start keyd checks.
  lines.length = 0;
  keyd = await startTestKeyd(s.dir, s.machineIdPath, { logger, now: () => clock, config: { expiryWarningDays: 10 } });
  try {
    assert.equal(warnings().length, 0);
  } finally {
    await keyd.close();
  }
  clock = notAfter + DAY_MS; // expired: an error
  keyd = await startTestKeyd(s.dir, s.machineIdPath, { logger, now: () => clock, config: { expiryWarningDays: 10 } });
  try {
    assert.ok(lines.some((l) => l.level === 50 && /certificate for soon\.test expired/.test(l.msg)), JSON.stringify(lines));
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('config "expiryWarningDays" is checked', async () => {
  const { parseConfig } = await import('../../src/keyd/config.js');
  assert.equal(parseConfig({}).expiryWarningDays, 30);
  assert.equal(parseConfig({ expiryWarningDays: 7 }).expiryWarningDays, 7);
  assert.throws(() => parseConfig({ expiryWarningDays: -1 }), /expiryWarningDays" must be an integer number of days/);
  assert.throws(() => parseConfig({ expiryWarningDays: '30' }), /expiryWarningDays/);
});
