/**
 * `delegator admin --server … gen`: without --timeout, the generation's request waits
 * GENERATE_REQUEST_TIMEOUT_MS (longer than keyd's longest wait for a key generation) while the
 * connection and the other requests keep the remote default of 30 s; with --timeout, that
 * (docs/KEYD.md, "The admin CLI"; docs/PROVISIONING.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GENERATE_REQUEST_TIMEOUT_MS } from '../../src/keyd/admin-client.js';
import { connectRemoteAdmin, remoteOptions, RemoteAdminTransport } from '../../src/provision/remote-admin.js';
import { makePki, operatorFlags, startKeydForTest } from './harness.js';

test('remote gen: its request waits the generation default unless --timeout says otherwise, and the wait is the one applied', { timeout: 120_000 }, async () => {
  const pki = await makePki();
  const keyd = await startKeydForTest(pki);
  try {
    // The CLI's connection options as flag → value pairs.
    const flags = await operatorFlags(keyd, pki, 'alice', ['--keyd-fingerprint', keyd.listener.fingerprint]);
    const connection = Array.from({ length: flags.length / 2 }, (_, i): [string, string] => [flags[2 * i]!, flags[2 * i + 1]!]);
    const io = { out: () => undefined };
    const byDefault = await connectRemoteAdmin(remoteOptions(new Map(connection)), 'gen', io);
    try {
      assert.equal(byDefault.generateTimeoutMs, GENERATE_REQUEST_TIMEOUT_MS);
      // The wait given is the one applied to generate: 1 ms is too short for an RSA 4096 key …
      const hurried = new RemoteAdminTransport(byDefault.client, { generateTimeoutMs: 1 });
      await assert.rejects(hurried.generate('slow.example', 'rsa4096', 'CN=slow.example'), { code: 'PROVISION_TIMEOUT', message: 'keyd did not answer generate within 1 ms' });
      // … and control: the default one lets it finish, on the same connection.
      const { info } = await byDefault.generate('a.example', 'ecdsa-p256', 'CN=a.example');
      assert.deepEqual(info.names, ['a.example']);
    } finally {
      byDefault.close();
    }
    // --timeout overrides it.
    const given = await connectRemoteAdmin(remoteOptions(new Map([...connection, ['--timeout', '5']])), 'gen', io);
    try {
      assert.equal(given.generateTimeoutMs, 5_000);
    } finally {
      given.close();
    }
  } finally {
    await keyd.close();
  }
});
