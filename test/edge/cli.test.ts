import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { configFromArgs } from '../../src/cli/edge.js';
import { MAIN } from './system.js';

test('flags build the same config a file would', () => {
  const parsed = configFromArgs([
    '--keyd', '/run/k.sock', '--keyd', '/run/k2.sock',
    '--route', 'a.example,*.a.example=127.0.0.1:8080', '--proxy-protocol', '--alpn', 'h2,http/1.1',
    '--default-name', 'a.example', '--workers', '3', '--idle-timeout', '5000', '--metrics', '127.0.0.1:9464',
  ]);
  assert.notEqual(parsed, 'help');
  if (parsed === 'help') return;
  const { config } = parsed;
  assert.deepEqual(config.keyd, [{ socketPath: '/run/k.sock' }, { socketPath: '/run/k2.sock' }]);
  assert.deepEqual(config.routes, [
    { names: ['a.example', '*.a.example'], upstream: { host: '127.0.0.1', port: 8080 }, proxyProtocol: true, alpn: ['h2', 'http/1.1'] },
  ]);
  assert.equal(config.workers, 3);
  assert.equal(config.limits.idleTimeoutMs, 5000);
  assert.deepEqual(config.metrics, { host: '127.0.0.1', port: 9464 });
  assert.equal(parsed.checkOnly, false);
});

test('--upstream-connect-timeout sets limits.upstreamConnectTimeoutMs over the file\'s value; a value out of bounds or not a number is refused naming the flag', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-cli-upstream-'));
  try {
    const file = join(dir, 'edge.json');
    writeFileSync(file, JSON.stringify({ keyd: '/run/k.sock', routes: [{ names: ['a.example'], upstream: '127.0.0.1:1' }], limits: { upstreamConnectTimeoutMs: 3000 } }));
    const limitOf = (args: string[]) => {
      const parsed = configFromArgs(['--config', file, ...args]);
      assert.notEqual(parsed, 'help');
      return (parsed as { config: { limits: { upstreamConnectTimeoutMs: number } } }).config.limits.upstreamConnectTimeoutMs;
    };
    assert.equal(limitOf([]), 3000, 'control: the file\'s value without the flag');
    assert.equal(limitOf(['--upstream-connect-timeout', '4500']), 4500);
    assert.equal(limitOf(['--upstream-connect-timeout', '100']), 100);
    for (const [text, got] of [['99', '99'], ['600001', '600001'], ['5s', '"--upstream-connect-timeout 5s"']]) {
      assert.throws(() => configFromArgs(['--config', file, '--upstream-connect-timeout', text]), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'EDGE_CONFIG');
        assert.equal(err.message, `limits.upstreamConnectTimeoutMs must be an integer from 100 to 600000, got ${got}`);
        return true;
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('delegator edge --check-config: OK with exit 0; a bad value names itself with exit 2', () => {
  const ok = spawnSync(process.execPath, [MAIN, 'edge', '--keyd', '/run/k.sock', '--route', 'a.example=127.0.0.1:1', '--check-config'], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /^configuration OK/);
  const bad = spawnSync(process.execPath, [MAIN, 'edge', '--keyd', '/run/k.sock', '--route', '*.com=127.0.0.1:1', '--check-config'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /routes\[0\]\.names\[0\]: wildcard route '\*\.com' must cover at least two labels/);
  const workers = spawnSync(process.execPath, [MAIN, 'edge', '--keyd', 'k', '--route', 'a.b=1.2.3.4:5', '--workers', 'many'], { encoding: 'utf8' });
  assert.equal(workers.status, 2);
  assert.match(workers.stderr, /workers must be an integer from 1 to 1024, got "--workers many"/);
});

test('delegator edge --check-config prints no file contents: the keyd client key, certificates and CAs are shown by size only', () => {
  // The key is made here, at test time; a search for its base64 body and for byte arrays
  // ("data": [...], what Buffer.toJSON prints) covers both ways it could leak.
  const dir = mkdtempSync(join(tmpdir(), 'edge-check-config-'));
  try {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    writeFileSync(join(dir, 'client.key'), keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'client.crt'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    writeFileSync(join(dir, 'keyd-ca.crt'), '-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n');
    writeFileSync(
      join(dir, 'edge.json'),
      JSON.stringify({
        keyd: { host: '127.0.0.1', port: 7443, cert: 'client.crt', key: 'client.key', ca: 'keyd-ca.crt' },
        routes: [{ names: ['a.example'], upstream: '127.0.0.1:8080' }],
      }),
    );
    const run = spawnSync(process.execPath, [MAIN, 'edge', '--config', join(dir, 'edge.json'), '--check-config'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const body = keyPem.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
    for (const chunk of [body.slice(0, 24), body.slice(-24)]) assert.ok(!run.stdout.includes(chunk), 'the key\'s base64 is not printed');
    assert.doesNotMatch(run.stdout, /"data"\s*:\s*\[/, 'no byte array is printed');
    // Positive control: the fields are there, each named by the size read.
    const printed = JSON.parse(run.stdout.replace(/^configuration OK\n/, '')) as { keyd: { tls: Record<string, string> }[] };
    assert.equal(printed.keyd[0]!.tls.key, `<${Buffer.byteLength(keyPem)} bytes read>`);
    assert.match(printed.keyd[0]!.tls.cert!, /^<\d+ bytes read>$/);
    assert.match(printed.keyd[0]!.tls.ca!, /^<\d+ bytes read>$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
