/**
 * `delegator admin --server … gen`: without --timeout, the generation's request waits
 * GENERATE_REQUEST_TIMEOUT_MS (longer than keyd's longest wait for a key generation) while the
 * connection and the other requests keep the remote default of 30 s; with --timeout, that
 * (docs/KEYD.md, "The admin CLI"; docs/PROVISIONING.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GENERATE_REQUEST_TIMEOUT_MS } from '../../src/keyd/admin-client.js';
import { connectRemoteAdmin, remoteOptions, RemoteAdminTransport } from '../../src/provision/remote-admin.js';
import { makePki, startKeydForTest } from './harness.js';

test('remote gen: its request waits the generation default unless --timeout says otherwise, and the wait is the one applied', { timeout: 120_000 }, async () => {
  const pki = await makePki();
  const keyd = await startKeydForTest(pki);
  try {
    const cert = join(keyd.dir, 'alice.pem');
    const key = join(keyd.dir, 'alice.key');
    const ca = join(keyd.dir, 'keyd-ca.pem');
    await writeFile(cert, pki.alice.certPem);
    await writeFile(key, pki.alice.keyPem, { mode: 0o600 });
    await writeFile(ca, pki.keydCa.certPem);
    const connection: Array<[string, string]> = [
      ['--server', `127.0.0.1:${keyd.listener.port}`], ['--cert', cert], ['--key', key], ['--ca', ca],
      ['--keyd-fingerprint', keyd.listener.fingerprint], ['--known-keyd', join(keyd.dir, 'known_keyd')],
    ];
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
