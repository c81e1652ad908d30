import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { encodeFrame } from '../../src/provision/frames.js';
import { fingerprintOf } from '../../src/provision/fingerprint.js';
import { PROTOCOL_VERSION } from '../../src/provision/protocol.js';
import { RemoteAdminClient } from '../../src/provision/remote-client.js';
import { ProvisionError } from '../../src/provision/errors.js';
import { makePki, SUBJECTS } from './harness.js';

/**
 * A keyd stand-in that greets with protocol version `v` (the real keyd sends
 * PROTOCOL_VERSION): the operator's CLI must not speak version 1 to a keyd that speaks
 * another, since a later version may give the same fields another meaning.
 */
test('the operator CLI refuses a keyd greeting of another protocol version, and accepts its own', async () => {
  const pki = await makePki();
  const raw = generateKeyPairSync('x25519', { publicKeyEncoding: { type: 'spki', format: 'der' }, privateKeyEncoding: { type: 'pkcs8', format: 'der' } }).publicKey.subarray(-32);
  const greet = async (v: unknown) => {
    const server = tls.createServer({ cert: pki.keydServer.certPem, key: pki.keydServer.keyPem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, (socket) => {
      socket.on('error', () => {});
      socket.write(encodeFrame({ type: 'welcome', v, operator: SUBJECTS.alice, role: 'admin', keyd: { publicKey: Buffer.from(raw).toString('base64'), fingerprint: fingerprintOf(raw) } }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const client = await RemoteAdminClient.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, cert: pki.alice.certPem, key: pki.alice.keyPem, ca: pki.keydCa.certPem, timeoutMs: 5000 });
      client.close();
      return 'connected';
    } catch (err) {
      return err as ProvisionError;
    } finally {
      server.close();
    }
  };

  assert.equal(await greet(PROTOCOL_VERSION), 'connected', 'control: this protocol version is accepted');
  for (const v of [PROTOCOL_VERSION + 1, 0, '1', undefined]) {
    const err = await greet(v);
    assert.ok(err instanceof ProvisionError, `version ${String(v)}: refused`);
    assert.equal(err.code, 'PROVISION_BAD_REQUEST');
    assert.match(err.message, /protocol version/);
  }
});
