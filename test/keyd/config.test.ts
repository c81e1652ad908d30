import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../src/keyd/config.js';

test('config "allowTls12OnlyServers": off by default, a boolean, anything else refused at start', () => {
  assert.equal(parseConfig({}).allowTls12OnlyServers, false);
  assert.equal(parseConfig({ allowTls12OnlyServers: true }).allowTls12OnlyServers, true);
  assert.equal(parseConfig({ allowTls12OnlyServers: false }).allowTls12OnlyServers, false);
  for (const bad of ['true', 1, null, {}]) {
    assert.throws(() => parseConfig({ allowTls12OnlyServers: bad }), { code: 'KEYD_CONFIG', message: /allowTls12OnlyServers/ }, JSON.stringify(bad));
  }
});
