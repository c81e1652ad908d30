import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sign as cryptoSign, createHash, X509Certificate } from 'node:crypto';
import { KeydClient, KeydError } from '../../src/keyd/client.js';
import { Opcode, encodeFrame, encodeSignRequest, FrameDecoder, decodeError } from '../../src/keyd/protocol.js';
import type { RunningKeyd } from '../../src/keyd/daemon.js';
import { SignatureScheme } from '../../src/tls/wire/codepoints.js';
import {
  CLIENT_CONTEXT,
  LOCAL,
  expectedCertificateVerifyContent,
  issueFromCsr,
  makeIdentity,
  scratch,
  startTestKeyd,
  verifyCertificateVerify,
  type TestIdentity,
  type TestKeyType,
} from './fixtures.js';

let s: Awaited<ReturnType<typeof scratch>>;
let keyd: RunningKeyd;
let client: KeydClient;

// Per-test limits: a stalled request fails its own test by name instead of running to
// the mutation runner's 10-minute limit. Measured: each test under 0.4 s except the two
// CPU-bound ones (key generation for six key types, 10 000 signatures), about 2 s; 30 s
// leaves room for a loaded machine.
before(async () => {
  s = await scratch();
  keyd = await startTestKeyd(s.dir, s.machineIdPath);
  client = await KeydClient.connect({ socketPath: keyd.socketPath }, { requestTimeoutMs: 5000 });
}, { timeout: 20_000 });

after(async () => {
  client?.close();
  await keyd?.close();
  await s?.cleanup();
}, { timeout: 20_000 });

const hash32 = createHash('sha256').update('transcript').digest();
const hash48 = createHash('sha384').update('transcript').digest();

const KEY_TYPES: TestKeyType[] = ['ecdsa-p256', 'ecdsa-p384', 'ecdsa-p521', 'rsa2048', 'rsa3072', 'ed25519'];

test('signatures verify against the leaf for every key type and scheme, with both transcript hash lengths', { timeout: 30_000 }, async () => {
  for (const keyType of KEY_TYPES) {
    const name = `${keyType}.sig.test`;
    const id = await makeIdentity(keyType, [name]);
    await keyd.adminService.put(LOCAL, [name], id.privateKey, id.chain);
    const identity = await client.identity(name);
    assert.ok(identity, keyType);
    assert.deepEqual(identity.certificateChain.map((c) => Buffer.from(c)), id.chain.map((c) => Buffer.from(c)));
    assert.ok(identity.schemes.length > 0);
    const signer = client.signer(identity, name);
    for (const scheme of identity.schemes) {
      for (const h of [hash32, hash48]) {
        const sig = await signer.sign({ kind: 'tls13-certificate-verify', scheme, transcriptHash: h });
        assert.ok(verifyCertificateVerify(identity.certificateChain[0]!, scheme, h, sig), `${keyType} 0x${scheme.toString(16)} ${h.length}`);
      }
    }
  }
});

test('oracle: keyd signs exactly 64 × 0x20 ‖ "TLS 1.3, server CertificateVerify" ‖ 0x00 ‖ hash, not the client context', { timeout: 20_000 }, async () => {
  // The content literal of RFC 8446 §4.4.3, byte for byte (its length is 64 + 33 + 1 + hash).
  const literal = (hash: Buffer) =>
    Buffer.concat([Buffer.from(' '.repeat(64), 'ascii'), Buffer.from('TLS 1.3, server CertificateVerify', 'ascii'), Buffer.of(0), hash]);
  assert.deepEqual(expectedCertificateVerifyContent(hash32), literal(hash32));
  assert.equal(literal(hash32).length, 64 + 33 + 1 + 32);
  for (const keyType of ['ecdsa-p256', 'rsa2048', 'ed25519'] as const) {
    const name = `${keyType}.oracle.test`;
    const id = await makeIdentity(keyType, [name]);
    await keyd.adminService.put(LOCAL, [name], id.privateKey, id.chain);
    const identity = (await client.identity(name))!;
    const leaf = new X509Certificate(Buffer.from(identity.certificateChain[0]!)).publicKey;
    const { verify, constants } = await import('node:crypto');
    const scheme = keyType === 'ecdsa-p256' ? 0x0403 : keyType === 'rsa2048' ? 0x0804 : 0x0807;
    const check = (content: Buffer, sig: Uint8Array) =>
      keyType === 'rsa2048'
        ? verify('sha256', content, { key: leaf, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, sig)
        : verify(keyType === 'ed25519' ? null : 'sha256', content, leaf, sig);
    for (const h of [hash32, hash48]) {
      const sig = await client.sign(identity.keyRef, name, scheme, h);
      assert.equal(check(literal(h), sig), true, `${keyType} ${h.length}-byte hash: signature over the RFC content`);
      const clientContext = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, client CertificateVerify', 'ascii'), Buffer.of(0), h]);
      assert.equal(check(clientContext, sig), false, `${keyType} ${h.length}: must not verify with the client context`);
      assert.equal(verifyCertificateVerify(identity.certificateChain[0]!, scheme, h, sig, CLIENT_CONTEXT), false);
      assert.equal(check(Buffer.concat([Buffer.from('TLS 1.3, server CertificateVerify', 'ascii'), Buffer.of(0), h]), sig), false, 'without the 64 spaces');
    }
  }
});

test('refusals: wrong hash length, unknown key, unsupported scheme, admin op and raw digest on the signing socket', { timeout: 20_000 }, async () => {
  const id = await makeIdentity('ecdsa-p256', ['refuse.test']);
  await keyd.adminService.put(LOCAL, ['refuse.test'], id.privateKey, id.chain);
  const identity = (await client.identity('refuse.test'))!;
  const code = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (err) {
      return (err as KeydError).code;
    }
    return 'resolved';
  };
  for (const len of [0, 20, 31, 33, 64]) {
    assert.equal(await code(client.sign(identity.keyRef, identity.names[0]!, SignatureScheme.ecdsa_secp256r1_sha256, new Uint8Array(len))), 'KEYD_BAD_HASH_LENGTH', `len ${len}`);
  }
  assert.equal(await code(client.sign('knotakey', 'refuse.test', SignatureScheme.ecdsa_secp256r1_sha256, hash32)), 'KEYD_UNKNOWN_KEY');
  assert.equal(await code(client.sign(identity.keyRef, identity.names[0]!, SignatureScheme.rsa_pss_rsae_sha256, hash32)), 'KEYD_SCHEME_UNSUPPORTED');
  assert.equal(await code(client.sign(identity.keyRef, identity.names[0]!, SignatureScheme.ecdsa_secp384r1_sha384, hash32)), 'KEYD_SCHEME_UNSUPPORTED');
  assert.equal(await code(client.admin(Opcode.list, {})), 'KEYD_NOT_AUTHORISED');

  // The non-oracle rule: there is no opcode that signs a caller's digest or message.
  for (const op of [0x07, 0x20, 0x7f]) {
    assert.equal(await code(rawRequest(keyd.socketPath, op, encodeSignRequest(identity.keyRef, identity.names[0]!, 0x0403, hash32))), 'KEYD_UNKNOWN_OPCODE');
  }
  // The two other signing opcodes do not sign this request either (handshake-signing.test.ts has the rest).
  assert.equal(await code(rawRequest(keyd.socketPath, Opcode.signServerKeyExchange, encodeSignRequest(identity.keyRef, identity.names[0]!, 0x0403, hash32))), 'KEYD_BAD_ECDH_PARAMS');
  assert.equal(await code(rawRequest(keyd.socketPath, Opcode.signHandshakeContent, encodeSignRequest(identity.keyRef, identity.names[0]!, 0x0403, hash32))), 'KEYD_BAD_REQUEST');
  // And what is signed is the §4.4.3 content, not the hash handed in: the signature
  // never verifies as a signature over the hash (or the hash as a digest).
  const sig = await client.sign(identity.keyRef, identity.names[0]!, SignatureScheme.ecdsa_secp256r1_sha256, hash32);
  const leaf = new X509Certificate(Buffer.from(identity.certificateChain[0]!));
  const { verify } = await import('node:crypto');
  assert.equal(verify('sha256', hash32, leaf.publicKey, sig), false);
  assert.ok(verifyCertificateVerify(identity.certificateChain[0]!, 0x0403, hash32, sig));
  // A P-256 signature is randomised; make sure the check above is not vacuous.
  assert.ok(verify('sha256', hash32, leaf.publicKey, cryptoSign('sha256', hash32, id.privateKey)));
});

/** Sends one raw frame on a fresh connection; resolves with the reply payload or rejects with the error frame. */
function rawRequest(path: string, opcode: number, payload: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const sock = connect({ path }, () => sock.write(encodeFrame(opcode, 77, payload)));
    const dec = new FrameDecoder();
    sock.on('data', (c) => {
      for (const f of dec.push(c)) {
        sock.destroy();
        if (f.opcode === Opcode.error) reject(decodeError(f.payload));
        else resolve(f.payload);
      }
    });
    sock.on('error', reject);
  });
}

test('identity: exact name, then a one-label wildcard; nothing else', { timeout: 20_000 }, async () => {
  const wild = await makeIdentity('ecdsa-p256', ['*.wild.test']);
  const exact = await makeIdentity('ecdsa-p256', ['a.wild.test']);
  await keyd.adminService.put(LOCAL, ['*.wild.test'], wild.privateKey, wild.chain);
  await keyd.adminService.put(LOCAL, ['a.wild.test'], exact.privateKey, exact.chain);
  const a = await client.identity('a.wild.test');
  const b = await client.identity('B.Wild.Test');
  assert.deepEqual(a?.names, ['a.wild.test']);
  assert.deepEqual(b?.names, ['*.wild.test']);
  assert.equal(await client.identity('x.b.wild.test'), undefined);
  assert.equal(await client.identity('wild.test'), undefined);
  assert.equal(await client.identity('nothing.test'), undefined);
});

test('sockets: signing 0660, admin 0600; a second keyd and a non-socket path are refused', { timeout: 20_000 }, async () => {
  assert.equal((await stat(keyd.socketPath)).mode & 0o777, 0o660);
  assert.equal((await stat(keyd.adminSocketPath)).mode & 0o777, 0o600);
  await assert.rejects(startTestKeyd(s.dir, s.machineIdPath, { data: join(s.dir, 'data2') }), { code: 'KEYD_ALREADY_RUNNING' });
  const file = join(s.dir, 'not-a-socket');
  await writeFile(file, 'x');
  await assert.rejects(startTestKeyd(s.dir, s.machineIdPath, { data: join(s.dir, 'data3'), socket: file, adminSocket: join(s.dir, 'a3.sock') }), {
    code: 'KEYD_NOT_A_SOCKET',
  });
});

test('admin over the admin socket: put refuses a key/leaf mismatch and stores nothing', { timeout: 20_000 }, async () => {
  const admin = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
  try {
    const a = await makeIdentity('ecdsa-p256', ['mismatch.test']);
    const b = await makeIdentity('ecdsa-p256', ['mismatch.test']);
    const pkcs8 = a.privateKey.export({ format: 'der', type: 'pkcs8' });
    await assert.rejects(admin.admin(Opcode.put, { names: ['mismatch.test'] }, [pkcs8, ...b.chain]), { code: 'KEYD_KEY_MISMATCH' });
    await assert.rejects(admin.admin(Opcode.show, { name: 'mismatch.test' }), { code: 'KEYD_UNKNOWN_NAME' });
    await assert.rejects(admin.admin(Opcode.put, { names: ['bad name!'] }, [pkcs8, ...a.chain]), { code: 'KEYD_BAD_NAME' });
    await assert.rejects(admin.admin(Opcode.put, { names: ['x.test'] }, [Buffer.from('junk'), ...a.chain]), { code: 'KEYD_BAD_KEY' });
    await assert.rejects(admin.admin(Opcode.put, { names: ['x.test'] }, [pkcs8, Buffer.from('junk')]), { code: 'KEYD_BAD_CHAIN' });
    await assert.rejects(admin.admin(Opcode.put, { names: ['x.test'] }, [pkcs8]), { code: 'KEYD_BAD_CHAIN' });
    const ok = await admin.admin(Opcode.put, { names: ['mismatch.test', 'alias.test'] }, [pkcs8, ...a.chain]);
    assert.deepEqual(ok.json.names, ['mismatch.test', 'alias.test']);
    assert.equal(ok.json.hasChain, true);
    assert.match(String(ok.json.ski), /^[0-9a-f]{40}$/);
    const listed = (await admin.admin(Opcode.list, {})).json.keys as Array<{ names: string[] }>;
    assert.ok(listed.some((k) => k.names.includes('alias.test')));
  } finally {
    admin.close();
  }
});

test('generate keeps the key inside keyd, returns a CSR; setChain makes it servable; delete stops it', { timeout: 20_000 }, async () => {
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=Test CA' });
  for (const keyType of ['ecdsa-p256', 'rsa2048', 'ed25519'] as const) {
    const name = `gen-${keyType}.test`;
    const { info, csrPem } = await keyd.adminService.generate(LOCAL, name, keyType, `CN=${name}, O=Test`);
    assert.equal(info.hasChain, false);
    assert.match(csrPem, /BEGIN CERTIFICATE REQUEST/);
    assert.equal(await client.identity(name), undefined, 'no chain yet: not served');
    const chain = await issueFromCsr(csrPem, ca);
    const wrong = await makeIdentity('ecdsa-p256', [name]);
    await assert.rejects(keyd.adminService.setChain(LOCAL, name, wrong.chain), { code: 'KEYD_KEY_MISMATCH' });
    const updated = await keyd.adminService.setChain(LOCAL, name, chain);
    assert.equal(updated.hasChain, true);
    assert.equal(updated.keyRef, info.keyRef);
    const identity = (await client.identity(name))!;
    const scheme = identity.schemes[0]!;
    assert.ok(verifyCertificateVerify(identity.certificateChain[0]!, scheme, hash32, await client.sign(identity.keyRef, identity.names[0]!, scheme, hash32)));
    await keyd.adminService.delete(LOCAL, name);
    assert.equal(await client.identity(name), undefined);
    await assert.rejects(client.sign(identity.keyRef, identity.names[0]!, scheme, hash32), { code: 'KEYD_UNKNOWN_KEY' });
  }
  await assert.rejects(keyd.adminService.generate(LOCAL, 'g.test', 'dsa' as never, 'CN=g'), { code: 'KEYD_BAD_REQUEST' });
  await assert.rejects(keyd.adminService.generate(LOCAL, 'g.test', 'ecdsa-p256', 'not a dn'), { code: 'KEYD_BAD_REQUEST' });
});

test('edges are told of changes and see the new key within a second', { timeout: 20_000 }, async () => {
  const first = await makeIdentity('ecdsa-p256', ['rotate.test']);
  await keyd.adminService.put(LOCAL, ['rotate.test'], first.privateKey, first.chain);
  const before = (await client.identity('rotate.test'))!;
  const changed = new Promise<{ names: string[] }>((resolve) => client.once('change', resolve));
  const second = await makeIdentity('ed25519', ['rotate.test']);
  const t0 = Date.now();
  await keyd.adminService.put(LOCAL, ['rotate.test'], second.privateKey, second.chain);
  const event = await changed;
  assert.ok(Date.now() - t0 < 1000);
  assert.deepEqual(event.names, ['rotate.test']);
  const after = (await client.identity('rotate.test'))!;
  assert.notEqual(after.keyRef, before.keyRef);
  assert.equal(after.keyType, 'ed25519');
  // The replaced key is gone: no signing with a stale reference.
  await assert.rejects(client.sign(before.keyRef, before.names[0]!, 0x0403, hash32), { code: 'KEYD_UNKNOWN_KEY' });
});

test('audit: every admin call is logged with caller and outcome, never key material; signing counters per client', { timeout: 20_000 }, async () => {
  const id = await makeIdentity('ecdsa-p256', ['audit.test']);
  await keyd.adminService.put({ kind: 'operator', id: 'CN=alice' }, ['audit.test'], id.privateKey, id.chain);
  await assert.rejects(keyd.adminService.delete({ kind: 'operator', id: 'CN=mallory' }, 'absent.test'), { code: 'KEYD_UNKNOWN_NAME' });
  const entries = await keyd.adminService.audit(LOCAL, { limit: 1000 });
  const put = entries.find((e) => e.op === 'put' && e.caller.id === 'CN=alice');
  assert.ok(put?.ok);
  assert.deepEqual(put.names, ['audit.test']);
  const refused = entries.find((e) => e.op === 'delete' && e.caller.id === 'CN=mallory');
  assert.equal(refused?.ok, false);
  assert.equal(refused?.code, 'KEYD_UNKNOWN_NAME');
  const log = await readFile(join(keyd.store.dataDir, 'audit.log'));
  const pkcs8 = id.privateKey.export({ format: 'der', type: 'pkcs8' });
  assert.equal(log.indexOf(pkcs8.subarray(-32)), -1);
  assert.equal(log.indexOf(pkcs8.subarray(-32).toString('base64')), -1);
  assert.equal(log.indexOf('PRIVATE KEY'), -1);
  const stats = await keyd.adminService.stats(LOCAL);
  assert.ok(stats.local!.signatures > 0);
  assert.ok(stats.local!.refusals > 0);
});

test('garbage on a connection: an error frame and a close for that connection only; keyd keeps serving', { timeout: 20_000 }, async () => {
  const reply = await new Promise<Buffer>((resolve) => {
    const sock = connect({ path: keyd.socketPath }, () => sock.write(Buffer.from('GET / HTTP/1.1\r\n\r\n')));
    const chunks: Buffer[] = [];
    sock.on('data', (c) => chunks.push(c));
    sock.on('close', () => resolve(Buffer.concat(chunks)));
  });
  const [frame] = new FrameDecoder().push(reply);
  assert.equal(frame?.opcode, Opcode.error);
  assert.equal(decodeError(frame!.payload).code, 'KEYD_BAD_FRAME');
  await client.ping();
});

test('10 000 pipelined sign requests over 50 connections are all answered correctly', { timeout: 30_000 }, async () => {
  const ids: TestIdentity[] = [];
  for (const keyType of ['ecdsa-p256', 'ed25519'] as const) {
    const id = await makeIdentity(keyType, [`load-${keyType}.test`]);
    await keyd.adminService.put(LOCAL, [`load-${keyType}.test`], id.privateKey, id.chain);
    ids.push(id);
  }
  const identities = [(await client.identity('load-ecdsa-p256.test'))!, (await client.identity('load-ed25519.test'))!];
  const clients = await Promise.all(Array.from({ length: 50 }, () => KeydClient.connect({ socketPath: keyd.socketPath }, { requestTimeoutMs: 30_000 })));
  try {
    const jobs: Array<Promise<boolean>> = [];
    for (let i = 0; i < 10_000; i++) {
      const c = clients[i % 50]!;
      const identity = identities[i % 2]!;
      const h = createHash(i % 3 === 0 ? 'sha384' : 'sha256').update(`transcript ${i}`).digest();
      const scheme = identity.schemes[0]!;
      jobs.push(c.sign(identity.keyRef, identity.names[0]!, scheme, h).then((sig) => verifyCertificateVerify(identity.certificateChain[0]!, scheme, h, sig)));
    }
    const results = await Promise.all(jobs);
    assert.equal(results.length, 10_000);
    assert.equal(results.filter((ok) => ok).length, 10_000);
  } finally {
    for (const c of clients) c.close();
  }
});

test('client: keyd going away fails pending and new requests at once with KEYD_UNAVAILABLE', { timeout: 20_000 }, async () => {
  const t = await scratch();
  const k = await startTestKeyd(t.dir, t.machineIdPath);
  const id = await makeIdentity('ecdsa-p256', ['down.test']);
  await k.adminService.put(LOCAL, ['down.test'], id.privateKey, id.chain);
  const c = await KeydClient.connect({ socketPath: k.socketPath }, { requestTimeoutMs: 60_000 });
  const identity = (await c.identity('down.test'))!;
  const closed = new Promise((resolve) => c.once('close', resolve));
  const inflight = Array.from({ length: 100 }, () => c.sign(identity.keyRef, identity.names[0]!, 0x0403, hash32).then(() => 'ok', (e: KeydError) => e.code));
  const t0 = Date.now();
  await k.close();
  const outcomes = await Promise.all(inflight);
  await closed;
  // Some may have been answered before the close; none hangs, the rest are KEYD_UNAVAILABLE.
  assert.ok(outcomes.every((o) => o === 'ok' || o === 'KEYD_UNAVAILABLE'), outcomes.join());
  await assert.rejects(c.sign(identity.keyRef, identity.names[0]!, 0x0403, hash32), { code: 'KEYD_UNAVAILABLE' });
  await assert.rejects(c.ping(), { code: 'KEYD_UNAVAILABLE' });
  assert.ok(Date.now() - t0 < 2000);
  await assert.rejects(KeydClient.connect({ socketPath: k.socketPath }), (err: KeydError) => err.code === 'KEYD_UNAVAILABLE' && /is keyd running/.test(err.message));
  await t.cleanup();
});

test('client: a request keyd never answers fails with KEYD_TIMEOUT', { timeout: 20_000 }, async () => {
  const t = await scratch();
  const { createServer } = await import('node:net');
  const path = join(t.dir, 'silent.sock');
  const held: import('node:net').Socket[] = [];
  const silent = createServer((sock) => held.push(sock)); // accepts, reads nothing, answers nothing
  await new Promise<void>((r) => silent.listen(path, r));
  const c = await KeydClient.connect({ socketPath: path }, { requestTimeoutMs: 200 });
  const t0 = Date.now();
  await assert.rejects(c.ping(), { code: 'KEYD_TIMEOUT' });
  assert.ok(Date.now() - t0 < 1500);
  c.close();
  for (const sock of held) sock.destroy();
  await new Promise((r) => silent.close(r));
  await t.cleanup();
});

test('per-connection cap on pending requests: beyond maxPending a request is refused at once', { timeout: 20_000 }, async () => {
  const t = await scratch();
  const k = await startTestKeyd(t.dir, t.machineIdPath, { config: { maxPending: 2 } });
  const c = await KeydClient.connect({ socketPath: k.adminSocketPath });
  try {
    // Sent in one write, so keyd sees all ten in one read while the first two are still pending.
    const outcomes = await Promise.all(Array.from({ length: 10 }, () => c.admin(Opcode.list, {}).then(() => 'ok', (e: KeydError) => e.code)));
    assert.equal(outcomes.filter((o) => o === 'ok').length, 2, outcomes.join());
    assert.equal(outcomes.filter((o) => o === 'KEYD_TOO_MANY_PENDING').length, 8, outcomes.join());
    // Once answered, the slots are free again.
    assert.ok(Array.isArray((await c.admin(Opcode.list, {})).json.keys));
  } finally {
    c.close();
    await k.close();
    await t.cleanup();
  }
});
