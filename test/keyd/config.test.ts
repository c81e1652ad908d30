import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KeydClient } from '../../src/keyd/client.js';
import { loadConfig, parseConfig } from '../../src/keyd/config.js';
import { LOCAL, makeIdentity, scratch, startTestKeyd } from './fixtures.js';

test('config "allowTls12OnlyServers": off by default, a boolean, anything else refused at start', () => {
  assert.equal(parseConfig({}).allowTls12OnlyServers, false);
  assert.equal(parseConfig({ allowTls12OnlyServers: true }).allowTls12OnlyServers, true);
  assert.equal(parseConfig({ allowTls12OnlyServers: false }).allowTls12OnlyServers, false);
  for (const bad of ['true', 1, null, {}]) {
    assert.throws(() => parseConfig({ allowTls12OnlyServers: bad }), { code: 'KEYD_CONFIG', message: /allowTls12OnlyServers/ }, JSON.stringify(bad));
  }
});

test('config "principals": a relative "socket" is from the config file\'s directory, not keyd\'s working directory; reload resolves it the same way', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const etc = join(s.dir, 'etc');
  await mkdir(etc);
  const configPath = join(etc, 'keyd.json');
  const absolute = join(s.dir, 'edge-b.sock');
  const writeConfig = (names: string[]) =>
    writeFile(configPath, JSON.stringify({ principals: { 'edge-a': { socket: 'edge-a.sock', mode: '0600', names }, 'edge-b': { socket: absolute, mode: '0600', names: ['*'] } } }));
  await writeConfig(['a.test']);
  // keyd's working directory is elsewhere (under systemd it is "/"): the socket must not follow it.
  const cwd = process.cwd();
  process.chdir(s.dir);
  try {
    const parsed = await loadConfig(configPath);
    assert.equal(parsed.principals.find((p) => p.name === 'edge-a')!.socket, join(etc, 'edge-a.sock'));
    // Control: an absolute path is kept as written.
    assert.equal(parsed.principals.find((p) => p.name === 'edge-b')!.socket, absolute);
    const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: configPath });
    try {
      assert.equal(keyd.principalSockets['edge-a'], join(etc, 'edge-a.sock'));
      const id = await makeIdentity('ecdsa-p256', ['a.test']);
      await keyd.adminService.put(LOCAL, ['a.test'], id.privateKey, id.chain);
      const edge = await KeydClient.connect({ socketPath: join(etc, 'edge-a.sock') });
      assert.ok(await edge.identity('a.test'));
      // Reload reads the same file: the socket is where it was, so the new names apply.
      await writeConfig(['b.test']);
      assert.deepEqual(await keyd.reloadGrants(), { ok: true });
      await assert.rejects(edge.identity('a.test'), { code: 'KEYD_NOT_AUTHORISED' });
      edge.close();
    } finally {
      await keyd.close();
    }
  } finally {
    process.chdir(cwd);
    await s.cleanup();
  }
});
