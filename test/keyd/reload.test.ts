/**
 * keyd's grants reload (SIGHUP → reloadGrants): new names apply to connections already
 * open (a revoked name is refused from the next request), a config that does not parse or
 * that moves a principal's socket is refused with its reason and the old grants kept; and
 * `delegator keyd` wires SIGHUP to it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { KeydClient } from '../../src/keyd/client.js';
import { startTool } from '../helpers/tools.js';
import { MAIN } from '../edge/system.js';
import { LOCAL, makeIdentity, scratch, startTestKeyd } from './fixtures.js';
import { serverRandom, x25519Point } from './handshake-content-fixtures.js';

const hash32 = createHash('sha256').update('transcript').digest();

test('reloadGrants: names granted change for open connections; a bad config is refused and the old grants kept', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const configPath = join(s.dir, 'keyd.json');
  const edgeSocket = join(s.dir, 'edge-a.sock');
  const writeConfig = (names: string[], socket = edgeSocket) => writeFile(configPath, JSON.stringify({ principals: { 'edge-a': { socket, mode: '0600', names } } }));
  await writeConfig(['a.test']);
  const lines: { level: number; msg: string; reason?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: configPath, logger });
  try {
    for (const name of ['a.test', 'b.test']) {
      const id = await makeIdentity('ecdsa-p256', [name]);
      await keyd.adminService.put(LOCAL, [name], id.privateKey, id.chain);
    }
    const edge = await KeydClient.connect({ socketPath: edgeSocket });
    const refA = (await edge.identity('a.test'))!.keyRef;
    await edge.sign(refA, 'a.test', 0x0403, hash32);
    await assert.rejects(edge.identity('b.test'), { code: 'KEYD_NOT_AUTHORISED' }, 'b.test is not granted yet');

    await writeConfig(['b.test']);
    assert.deepEqual(await keyd.reloadGrants(), { ok: true });
    // The same, open connection: a.test revoked, b.test granted.
    await assert.rejects(edge.sign(refA, 'a.test', 0x0403, hash32), { code: 'KEYD_NOT_AUTHORISED' });
    const refB = (await edge.identity('b.test'))!.keyRef;
    await edge.sign(refB, 'b.test', 0x0403, hash32);

    // Not JSON: refused, logged, grants unchanged.
    await writeFile(configPath, '{ "principals": ');
    const bad = await keyd.reloadGrants();
    assert.equal(bad.ok, false);
    assert.match((bad as { reason: string }).reason, /not valid JSON/);
    assert.ok(lines.some((l) => l.level === 50 && l.msg === 'keyd reload refused: the running grants are kept' && /not valid JSON/.test(l.reason ?? '')));
    await edge.sign(refB, 'b.test', 0x0403, hash32);
    // A principal's socket moved: a restart's job; refused.
    await writeConfig(['a.test'], join(s.dir, 'elsewhere.sock'));
    const moved = await keyd.reloadGrants();
    assert.match((moved as { reason: string }).reason, /principals or their sockets changed/);
    await edge.sign(refB, 'b.test', 0x0403, hash32);
    await assert.rejects(edge.sign(refA, 'a.test', 0x0403, hash32), { code: 'KEYD_NOT_AUTHORISED' });
    edge.close();
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('reloadGrants applies allowTls12OnlyServers to open connections: a TLS 1.2 content without the downgrade sentinel is signed, then refused', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const configPath = join(s.dir, 'keyd.json');
  await writeFile(configPath, JSON.stringify({ allowTls12OnlyServers: true }));
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: configPath });
  try {
    const id = await makeIdentity('ecdsa-p256', ['tls12.test']);
    await keyd.adminService.put(LOCAL, ['tls12.test'], id.privateKey, id.chain);
    const edge = await KeydClient.connect({ socketPath: keyd.socketPath });
    const ref = (await edge.identity('tls12.test'))!.keyRef;
    const point = x25519Point();
    const params = Buffer.concat([Buffer.of(3, 0x00, 0x1d, point.length), point]);
    const sign = () => edge.signServerKeyExchange(ref, 'tls12.test', 0x0403, randomBytes(32), serverRandom(false), params);
    await sign();
    await writeFile(configPath, JSON.stringify({ allowTls12OnlyServers: false }));
    assert.deepEqual(await keyd.reloadGrants(), { ok: true });
    await assert.rejects(sign(), { code: 'KEYD_NO_DOWNGRADE_SENTINEL' });
    // The sentinel still signs (control).
    await edge.signServerKeyExchange(ref, 'tls12.test', 0x0403, randomBytes(32), serverRandom(true), params);
    edge.close();
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('delegator keyd: SIGHUP reloads the grants; the process keeps running', { timeout: 60_000 }, async (t) => {
  const s = await scratch();
  t.after(() => s.cleanup());
  const configPath = join(s.dir, 'keyd.json');
  await writeFile(configPath, JSON.stringify({ clients: { 'CN=edge-1': ['a.test'] } }));
  const keyd = startTool(t, process.execPath, [
    MAIN, 'keyd', '--data', join(s.dir, 'data'), '--root-key', join(s.dir, 'root.key'), '--socket', join(s.dir, 'k.sock'),
    '--admin-socket', join(s.dir, 'a.sock'), '--config', configPath, '--machine-id', s.machineIdPath,
  ], { timeoutMs: 50_000 });
  await keyd.waitFor('keyd started', 30_000);
  await writeFile(configPath, JSON.stringify({ clients: { 'CN=edge-1': ['a.test', 'b.test'], 'CN=edge-2': ['c.test'] } }));
  keyd.child.kill('SIGHUP');
  await keyd.waitFor('keyd reloaded its grants', 20_000);
  assert.match(keyd.stderr, /"clients":2/);
  await writeFile(configPath, 'nonsense');
  keyd.child.kill('SIGHUP');
  await keyd.waitFor('keyd reload refused', 20_000);
  assert.equal(keyd.child.exitCode, null, 'still running');
  keyd.child.kill('SIGTERM');
  const [code] = await once(keyd.child, 'exit');
  assert.equal(code, 0);
});

test('reloadGrants refuses a config the next start would refuse (a bad "pkcs11", "rootKey" or "metricsListen"), keeping the running grants', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const configPath = join(s.dir, 'keyd.json');
  const edgeSocket = join(s.dir, 'edge-a.sock');
  const principals = (names: string[]) => ({ 'edge-a': { socket: edgeSocket, mode: '0600', names } });
  await writeFile(configPath, JSON.stringify({ principals: principals(['a.test']) }));
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: configPath });
  try {
    const id = await makeIdentity('ecdsa-p256', ['a.test', 'b.test']);
    await keyd.adminService.put(LOCAL, ['a.test', 'b.test'], id.privateKey, id.chain);
    const edge = await KeydClient.connect({ socketPath: edgeSocket });
    assert.ok(await edge.identity('a.test'));
    for (const [broken, reason] of [
      [{ pkcs11: { tokens: [{ token: 'k', module: 'relative.so', pinEnv: 'P' }] } }, /config "pkcs11": tokens\[0\]\.module must be the absolute path/],
      [{ rootKey: 'tpm:bogus=1' }, /unknown --root-key tpm option "bogus"/],
      [{ rootKey: 7 }, /config "rootKey" must be a string/],
      [{ metricsListen: '127.0.0.1:99999' }, /config "metricsListen": port 99999 is out of range/],
    ] as const) {
      // The grants in the same file change too: none of it may apply.
      await writeFile(configPath, JSON.stringify({ principals: principals(['b.test']), ...broken }));
      const refused = await keyd.reloadGrants();
      assert.equal(refused.ok, false, JSON.stringify(broken));
      assert.match((refused as { reason: string }).reason, reason);
      assert.ok(await edge.identity('a.test'), 'the running grants are kept');
      await assert.rejects(edge.identity('b.test'), { code: 'KEYD_NOT_AUTHORISED' });
    }
    // Control: the same grants with valid sections reload.
    await writeFile(configPath, JSON.stringify({ principals: principals(['b.test']), rootKey: 'tpm:counter=none', metricsListen: '127.0.0.1:9464', pkcs11: { tokens: [{ token: 'k', module: '/usr/lib/x.so', pinEnv: 'P' }] } }));
    assert.deepEqual(await keyd.reloadGrants(), { ok: true });
    assert.ok(await edge.identity('b.test'));
    edge.close();
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});
