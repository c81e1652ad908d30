/**
 * LocalAdminTransport (src/keyd/admin-client.ts), the admin CLI's side of keyd's admin socket,
 * against a recording KeydClient: the request timeout it was given reaches the client; `put`
 * zeroes the PKCS#8 copy of the private key once it is sent, whether keyd took it or refused
 * it; `--token` is sent as the request's "token" field, and no field is sent without it.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { afterEach, test } from 'node:test';
import { DEFAULT_ADMIN_TIMEOUT_MS, LocalAdminTransport } from '../../src/keyd/admin-client.js';
import { KeydClient } from '../../src/keyd/client.js';
import { KeydError } from '../../src/keyd/errors.js';
import { Opcode } from '../../src/keyd/protocol.js';

interface Sent {
  opcode: number;
  json: Record<string, unknown>;
  attachments: readonly Uint8Array[];
  /** A copy of the first attachment as it was when sent. */
  firstAtSend?: Buffer;
}

const realConnect = KeydClient.connect;
afterEach(() => {
  KeydClient.connect = realConnect;
});

/** Replaces KeydClient.connect with one that records its options and the admin requests. */
function recordingKeyd(answer: (sent: Sent) => Promise<object>): { options: unknown[]; sent: Sent[] } {
  const options: unknown[] = [];
  const sent: Sent[] = [];
  KeydClient.connect = (async (_endpoint: unknown, opts: unknown) => {
    options.push(opts);
    return {
      admin: async (opcode: number, json: Record<string, unknown>, attachments: readonly Uint8Array[] = []) => {
        const s: Sent = { opcode, json, attachments, ...(attachments[0] ? { firstAtSend: Buffer.from(attachments[0]) } : {}) };
        sent.push(s);
        return { json: await answer(s), attachments: [] };
      },
      close: () => undefined,
    } as unknown as KeydClient;
  }) as typeof KeydClient.connect;
  return { options, sent };
}

test('connect hands the request timeout to the client; the default is DEFAULT_ADMIN_TIMEOUT_MS (control)', async () => {
  const keyd = recordingKeyd(async () => ({}));
  (await LocalAdminTransport.connect('/run/keyd/admin.sock', 1234)).close();
  (await LocalAdminTransport.connect('/run/keyd/admin.sock')).close();
  assert.deepEqual(keyd.options, [{ requestTimeoutMs: 1234 }, { requestTimeoutMs: DEFAULT_ADMIN_TIMEOUT_MS }]);
});

test('put zeroes the PKCS#8 bytes it sent, when keyd takes the key and when it refuses it', async () => {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  let refuse = false;
  const keyd = recordingKeyd(async () => {
    if (refuse) throw new KeydError('KEYD_KEY_MISMATCH', 'the key does not match the leaf certificate');
    return { names: ['a.test'] };
  });
  const transport = await LocalAdminTransport.connect('/run/keyd/admin.sock');
  const chain = [new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])];
  assert.deepEqual(await transport.put(['a.test'], privateKey, chain), { names: ['a.test'] });
  refuse = true;
  await assert.rejects(transport.put(['a.test'], privateKey, chain), { code: 'KEYD_KEY_MISMATCH' });
  assert.equal(keyd.sent.length, 2);
  for (const s of keyd.sent) {
    assert.equal(s.opcode, Opcode.put);
    assert.deepEqual(s.firstAtSend, pkcs8, 'the key went out as PKCS#8 DER (control)');
    assert.ok(s.attachments[0]!.every((b) => b === 0), 'the PKCS#8 copy is zeroed afterwards');
    assert.deepEqual(s.attachments[1], chain[0], 'the chain is not touched');
  }
});

test('put and generate send --token as "token"; without it no token field is sent (control)', async () => {
  const keyd = recordingKeyd(async () => ({}));
  const transport = await LocalAdminTransport.connect('/run/keyd/admin.sock');
  const { privateKey } = generateKeyPairSync('ed25519');
  await transport.put(['a.test'], privateKey, [], { token: 'pkcs11:token=hsm' });
  await transport.put(['b.test'], privateKey, []);
  await transport.generate('c.test', 'ecdsa-p256', 'CN=c.test', { token: 'hsm' });
  await transport.generate('d.test', 'ecdsa-p256', 'CN=d.test');
  assert.deepEqual(
    keyd.sent.map((s) => s.json),
    [
      { names: ['a.test'], token: 'pkcs11:token=hsm' },
      { names: ['b.test'] },
      { name: 'c.test', keyType: 'ecdsa-p256', subject: 'CN=c.test', token: 'hsm' },
      { name: 'd.test', keyType: 'ecdsa-p256', subject: 'CN=d.test' },
    ],
  );
});
