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
import { makePki, SUBJECTS, type Pki } from './harness.js';

/**
 * A keyd stand-in that greets with protocol version `v` (the real keyd sends
 * PROTOCOL_VERSION): the operator's CLI must not speak version 1 to a keyd that speaks
 * another, since a later version may give the same fields another meaning.
 */
const x25519PublicKey = (): Uint8Array => generateKeyPairSync('x25519', { publicKeyEncoding: { type: 'spki', format: 'der' }, privateKeyEncoding: { type: 'pkcs8', format: 'der' } }).publicKey.subarray(-32);

/** Greets one operator connection with `welcome` (keyd's certificate, so TLS verifies); the CLI's verdict. */
async function greetWith(pki: Pki, welcome: Record<string, unknown>): Promise<RemoteAdminClient | ProvisionError> {
  const server = tls.createServer({ cert: pki.keydServer.certPem, key: pki.keydServer.keyPem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, (socket) => {
    socket.on('error', () => {});
    socket.write(encodeFrame({ type: 'welcome', v: PROTOCOL_VERSION, operator: SUBJECTS.alice, role: 'admin', ...welcome }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    return await RemoteAdminClient.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, cert: pki.alice.certPem, key: pki.alice.keyPem, ca: pki.keydCa.certPem, timeoutMs: 5000 });
  } catch (err) {
    return err as ProvisionError;
  } finally {
    server.close();
  }
}

test('the operator CLI refuses a keyd greeting of another protocol version, and accepts its own', async () => {
  const pki = await makePki();
  const raw = x25519PublicKey();
  const greet = async (v: unknown) => {
    const result = await greetWith(pki, { v, keyd: { publicKey: Buffer.from(raw).toString('base64'), fingerprint: fingerprintOf(raw) } });
    if (result instanceof ProvisionError) return result;
    result.close();
    return 'connected';
  };

  assert.equal(await greet(PROTOCOL_VERSION), 'connected', 'control: this protocol version is accepted');
  for (const v of [PROTOCOL_VERSION + 1, 0, '1', undefined]) {
    const err = await greet(v);
    assert.ok(err instanceof ProvisionError, `version ${String(v)}: refused`);
    assert.equal(err.code, 'PROVISION_BAD_REQUEST');
    assert.match(err.message, /protocol version/);
  }
});

/**
 * The fingerprint the CLI checks against its pin and the public key it seals to both come in
 * the greeting: a keyd stand-in announcing the pinned keyd's fingerprint with its own public
 * key would pass the pin check and get the private key sealed to itself, unless the CLI
 * checks that the key has that fingerprint.
 */
test('the operator CLI refuses a greeting whose provisioning key does not have the announced fingerprint', async () => {
  const pki = await makePki();
  const pinned = x25519PublicKey();
  const impostor = x25519PublicKey();
  const control = await greetWith(pki, { keyd: { publicKey: Buffer.from(pinned).toString('base64'), fingerprint: fingerprintOf(pinned) } });
  assert.ok(!(control instanceof ProvisionError), `control: a matching key and fingerprint are accepted (${String(control)})`);
  control.close();
  assert.ok(Buffer.from(control.keydPublicKey).equals(pinned), 'control: the key to seal to is the announced one');
  const cases: Array<[string, Uint8Array]> = [
    ['another key with the pinned fingerprint', impostor],
    ['a 31-byte key', pinned.subarray(1)],
  ];
  for (const [what, publicKey] of cases) {
    const err = await greetWith(pki, { keyd: { publicKey: Buffer.from(publicKey).toString('base64'), fingerprint: fingerprintOf(pinned) } });
    if (!(err instanceof ProvisionError)) err.close();
    assert.ok(err instanceof ProvisionError, `${what}: refused`);
    assert.equal(err.code, 'PROVISION_BAD_REQUEST', what);
    assert.match(err.message, /keyd greeting: provisioning key and fingerprint do not match/, what);
  }
});
