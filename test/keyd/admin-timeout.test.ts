/**
 * `delegator admin --timeout`: node runs a timer longer than 2^31-1 ms after 1 ms, so a
 * very long timeout would time out at once; it is a usage error instead (docs/KEYD.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { main, type Io } from '../../src/cli/admin.js';
import type { AdminTransport } from '../../src/keyd/admin-client.js';

function capture(): Io & { text: () => string } {
  let text = '';
  return { out: (t) => void (text += t), err: (t) => void (text += t), text: () => text };
}

test('admin --timeout beyond node\'s timer range is a usage error, locally and with --server; a usual one reaches the transport', async () => {
  const connected: number[] = [];
  const stub = async (_socket: string, timeoutMs: number): Promise<AdminTransport> => {
    connected.push(timeoutMs);
    return { list: async () => [], close: () => undefined } as unknown as AdminTransport;
  };
  for (const timeout of ['3000000', 'Infinity', '0', '-1', 'soon']) {
    const io = capture();
    assert.equal(await main(['--socket', '/nonexistent/admin.sock', '--timeout', timeout, 'list'], io, stub), 2, timeout);
    assert.match(io.text(), /^delegator admin: --timeout must be a positive number of seconds, at most 2147483\n/, timeout);
  }
  const remote = capture();
  assert.equal(await main(['--server', '127.0.0.1:1', '--cert', 'op.pem', '--key', 'op.key', '--ca', 'ca.pem', '--timeout', '3000000', 'list'], remote, stub), 2);
  assert.match(remote.text(), /--timeout must be a positive number of seconds, at most 2147483 \[PROVISION_USAGE\]/);
  assert.deepEqual(connected, [], 'nothing connected with a refused timeout');
  // Control: the largest accepted and a usual timeout reach the transport in ms.
  for (const [timeout, ms] of [['5', 5000], ['2147483', 2_147_483_000]] as const) {
    const io = capture();
    assert.equal(await main(['--socket', '/nonexistent/admin.sock', '--timeout', timeout, 'list'], io, stub), 0, io.text());
    assert.equal(connected.at(-1), ms);
  }
});
