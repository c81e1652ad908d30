/**
 * The KeyHandle seam: keyd signs through an asynchronous handle, so a signature that waits
 * on its key (a token) occupies one of the connection's maxPending slots until answered;
 * beyond the cap a request is refused at once, and nothing else waits on the slow key.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { test } from 'node:test';
import { KeydClient } from '../../src/keyd/client.js';
import type { KeydError } from '../../src/keyd/errors.js';
import { SoftwareKeyHandle, type KeyHandle } from '../../src/keyd/key-handle.js';
import { parseSubject } from '../../src/keyd/handle-csr.js';
import { SignatureScheme } from '../../src/tls/wire/codepoints.js';
import { LOCAL, makeIdentity, scratch, startTestKeyd, verifyCertificateVerify } from './fixtures.js';

/** A handle that signs with `inner`, but only once released (a token taking its time). */
function gated(inner: KeyHandle): { handle: KeyHandle; waiting(): number; queued(): Promise<void>; releaseAll(): void } {
  const queue: (() => void)[] = [];
  let onQueued: (() => void) | undefined;
  return {
    handle: {
      keyType: inner.keyType,
      publicKey: inner.publicKey,
      location: 'test:gated',
      storedForm: () => inner.storedForm(),
      sign: (scheme, content) =>
        new Promise<void>((resolve) => {
          queue.push(resolve);
          onQueued?.();
        }).then(() => inner.sign(scheme, content)),
    },
    waiting: () => queue.length,
    /** Resolves when the next signature reaches the key. */
    queued: () => new Promise<void>((resolve) => (onQueued = resolve)),
    releaseAll: () => queue.splice(0).forEach((go) => go()),
  };
}

test('a signature waiting on its key holds a pending slot; beyond maxPending signs are refused at once; other keys are not held up', async () => {
  const t = await scratch();
  const k = await startTestKeyd(t.dir, t.machineIdPath, { config: { maxPending: 2 } });
  const slowId = await makeIdentity('ecdsa-p256', ['slow.test']);
  const fastId = await makeIdentity('ecdsa-p256', ['fast.test']);
  await k.adminService.put(LOCAL, ['slow.test'], slowId.privateKey, slowId.chain);
  await k.adminService.put(LOCAL, ['fast.test'], fastId.privateKey, fastId.chain);
  const slow = k.keyring.owner('slow.test')!;
  const gate = gated(slow.key);
  slow.key = gate.handle;
  const c = await KeydClient.connect({ socketPath: k.socketPath });
  const other = await KeydClient.connect({ socketPath: k.socketPath });
  try {
    const scheme = SignatureScheme.ecdsa_secp256r1_sha256;
    const hashes = Array.from({ length: 5 }, () => randomBytes(32));
    const outcomes = hashes.map((h) => c.sign(slow.id, 'slow.test', scheme, h).then((sig) => ({ sig }), (e: KeydError) => ({ code: e.code })));
    // Three of five are refused at once, while two wait on the key.
    const refused = await Promise.all(outcomes.slice(2));
    assert.deepEqual(refused, [{ code: 'KEYD_TOO_MANY_PENDING' }, { code: 'KEYD_TOO_MANY_PENDING' }, { code: 'KEYD_TOO_MANY_PENDING' }]);
    assert.equal(gate.waiting(), 2);
    // Another connection, and another key on the same one, are answered meanwhile.
    const fast = k.keyring.owner('fast.test')!;
    const h = randomBytes(32);
    assert.ok(verifyCertificateVerify(fastId.chain[0]!, scheme, h, await other.sign(fast.id, 'fast.test', scheme, h)));
    await c.ping();
    gate.releaseAll();
    const answered = await Promise.all(outcomes.slice(0, 2));
    answered.forEach((a, i) => assert.ok('sig' in a && verifyCertificateVerify(slowId.chain[0]!, scheme, hashes[i]!, a.sig), `signature ${i} verifies`));
    // The slots are free again.
    const reached = gate.queued();
    const again = c.sign(slow.id, 'slow.test', scheme, hashes[0]!);
    await reached;
    gate.releaseAll();
    assert.ok((await again).length > 0);
  } finally {
    c.close();
    other.close();
    await k.close();
    await t.cleanup();
  }
});

test('a CSR subject must be a distinguished name: an empty one is refused before a token is asked to generate a key', () => {
  for (const subject of ['', '   ']) {
    assert.throws(() => parseSubject(subject), { code: 'KEYD_BAD_REQUEST', message: new RegExp(`^subject ${JSON.stringify(subject)} is not a distinguished name .*\\(empty subject\\)$`) }, JSON.stringify(subject));
  }
  assert.equal(parseSubject('CN=a.test, O=Example').toJSON().length, 2); // positive control
});

test('SoftwareKeyHandle.sign under a scheme it cannot sign returns a rejected promise (never throws synchronously, as the KeyHandle contract says); a supported scheme resolves to a signature that verifies (control)', async () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const handle = new SoftwareKeyHandle(privateKey);
  const content = Buffer.from('content to sign');
  let pending: Promise<Uint8Array> | undefined;
  assert.doesNotThrow(() => {
    pending = handle.sign(0xfefe, content);
  });
  await assert.rejects(pending!, { name: 'RangeError', message: /unsupported signature scheme 0xfefe/ });

  const signature = await handle.sign(SignatureScheme.ecdsa_secp256r1_sha256, content);
  assert.ok(verify('sha256', content, publicKey, signature));
});
