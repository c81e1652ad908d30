import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, lstat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { startKeyd } from '../../src/keyd/daemon.js';
import { KeydClient, type KeydError } from '../../src/keyd/client.js';
import { AuditLog, type AuditEntry } from '../../src/keyd/audit.js';
import { Opcode } from '../../src/keyd/protocol.js';
import { LOCAL, makeIdentity, scratch, startTestKeyd, verifyCertificateVerify } from './fixtures.js';
import { pino } from 'pino';

const hash32 = createHash('sha256').update('transcript').digest();

async function readAudit(dataDir: string): Promise<AuditEntry[]> {
  const log = await AuditLog.open(join(dataDir, 'audit.log'));
  try {
    return await log.read({ limit: 10_000 });
  } finally {
    await log.close();
  }
}

test('grants by name: a key reference is not a capability', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, {
    config: { principals: { 'edge-a': { socket: join(s.dir, 'edge-a.sock'), mode: '0600', names: ['a.example.com'] } } },
  });
  try {
    // The *.example.com key, and a key whose certificate covers a.example.com and secret.other.org.
    const wildcard = await makeIdentity('ecdsa-p256', ['*.example.com']);
    const shared = await makeIdentity('ecdsa-p256', ['a.example.com', 'secret.other.org']);
    await keyd.adminService.put(LOCAL, ['*.example.com'], wildcard.privateKey, wildcard.chain);
    await keyd.adminService.put(LOCAL, ['a.example.com', 'secret.other.org'], shared.privateKey, shared.chain);
    const local = await KeydClient.connect({ socketPath: keyd.socketPath });
    const wildRef = (await local.identity('b.example.com'))!.keyRef;
    local.close();

    const edgeA = await KeydClient.connect({ socketPath: keyd.principalSockets['edge-a']! });
    const mine = (await edgeA.identity('a.example.com'))!;
    assert.equal(mine.keyRef === wildRef, false, 'a.example.com is served by its own key');
    // Positive control: edge-a signs for a.example.com with the key identity() gave it.
    const sig = await edgeA.sign(mine.keyRef, 'a.example.com', 0x0403, hash32);
    assert.ok(verifyCertificateVerify(mine.certificateChain[0]!, 0x0403, hash32, sig));

    // The attacks of a compromised edge-a:
    const refusal = (p: Promise<unknown>) => p.then(() => 'signed', (e: KeydError) => `${e.code}: ${e.message}`);
    // the wildcard key, for a name edge-a is not granted …
    assert.match(await refusal(edgeA.sign(wildRef, 'b.example.com', 0x0403, hash32)), /^KEYD_NOT_AUTHORISED: client edge-a may not use b\.example\.com/);
    // … or claiming a granted name that the wildcard key does not serve;
    assert.match(await refusal(edgeA.sign(wildRef, 'a.example.com', 0x0403, hash32)), /^KEYD_NOT_AUTHORISED: key .* does not serve a\.example\.com/);
    // the shared key, for its other name.
    assert.match(await refusal(edgeA.sign(mine.keyRef, 'secret.other.org', 0x0403, hash32)), /^KEYD_NOT_AUTHORISED: client edge-a may not use secret\.other\.org/);
    await assert.rejects(edgeA.identity('secret.other.org'), { code: 'KEYD_NOT_AUTHORISED' });
    edgeA.close();

    // Counted per principal and key: 1 signature, 3 refusals. A refusal for a name the client
    // may not use is decided before any key is looked up, so it is filed under "(none)".
    const stats = await keyd.adminService.stats(LOCAL);
    assert.equal(stats['edge-a']!.signatures, 1);
    assert.equal(stats['edge-a']!.refusals, 3);
    assert.equal(stats['edge-a']!.keys[mine.keyRef]!.signatures, 1);
    assert.equal(stats['edge-a']!.keys[wildRef]!.refusals, 1);
    assert.equal(stats['edge-a']!.keys['(none)']!.refusals, 2);
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('principals named __proto__ and constructor (valid names) sign for their names; admin stats and signing-totals.json count them, across a restart, and no object in keyd is changed', { timeout: 60_000 }, async () => {
  const s = await scratch();
  const before = Object.getOwnPropertyNames(Object.prototype).sort();
  // As keyd reads its config file: JSON.parse makes "__proto__" an own key.
  const config = JSON.parse(JSON.stringify({ principals: { '@proto': { socket: join(s.dir, 'p.sock'), names: ['a.example.com'] }, constructor: { socket: join(s.dir, 'c.sock'), names: ['a.example.com'] }, 'edge-a': { socket: join(s.dir, 'e.sock'), names: ['a.example.com'] } } }).replace('"@proto"', '"__proto__"')) as object;
  const names = ['__proto__', 'constructor', 'edge-a'];
  let keyd = await startTestKeyd(s.dir, s.machineIdPath, { config });
  try {
    const id = await makeIdentity('ecdsa-p256', ['a.example.com']);
    await keyd.adminService.put(LOCAL, ['a.example.com'], id.privateKey, id.chain);
    let keyRef = '';
    for (const [i, name] of names.entries()) {
      const socketPath = Object.getOwnPropertyDescriptor(keyd.principalSockets, name)?.value as string;
      assert.equal(socketPath, join(s.dir, ['p.sock', 'c.sock', 'e.sock'][i]!), `${name} has its own socket`);
      const client = await KeydClient.connect({ socketPath });
      const identity = (await client.identity('a.example.com'))!;
      keyRef = identity.keyRef;
      for (let n = 0; n <= i; n++) assert.ok(verifyCertificateVerify(identity.certificateChain[0]!, 0x0403, hash32, await client.sign(keyRef, 'a.example.com', 0x0403, hash32)));
      await assert.rejects(client.sign(keyRef, 'b.example.com', 0x0403, hash32), { code: 'KEYD_NOT_AUTHORISED' }, `${name}: only its granted names`);
      client.close();
    }
    const shown = (clients: Record<string, { signatures: number; refusals: number; keys: Record<string, { signatures: number; refusals: number }> }>) =>
      Object.entries(clients).filter(([c]) => names.includes(c)).map(([c, row]) => [c, row.signatures, row.refusals, row.keys[keyRef]?.signatures]);
    const expected = [['__proto__', 1, 1, 1], ['constructor', 2, 1, 2], ['edge-a', 3, 1, 3]];
    assert.deepEqual(shown(await keyd.adminService.stats(LOCAL)), expected, 'admin stats');
    await keyd.close(); // flushes the window
    const onDisk = JSON.parse(await readFile(join(s.dir, 'data', 'signing-totals.json'), 'utf8')) as { clients: object };
    assert.deepEqual(names.map((c) => (Object.getOwnPropertyDescriptor(onDisk.clients, c)?.value as Record<string, { signatures: number }> | undefined)?.[keyRef]?.signatures), [1, 2, 3], 'signing-totals.json');
    assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), before, 'Object.prototype unchanged');
    assert.equal(({} as Record<string, unknown>)[keyRef], undefined);
    keyd = await startTestKeyd(s.dir, s.machineIdPath, { config });
    assert.deepEqual(shown(await keyd.adminService.stats(LOCAL)), expected, 'admin stats after a restart');
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('local principals: a world-accessible socket in the config is refused at start', async () => {
  const s = await scratch();
  await assert.rejects(
    startTestKeyd(s.dir, s.machineIdPath, { config: { principals: { 'edge-a': { socket: join(s.dir, 'a.sock'), mode: '0666', names: ['*'] } } } }),
    { code: 'KEYD_CONFIG', message: /world-accessible/ },
  );
  await s.cleanup();
});

test('local principals: an admin socket made world-accessible refuses callers, is repaired, and the audit names the principal', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const keyd = await startKeyd({
    data: join(s.dir, 'data'),
    rootKey: join(s.dir, 'root.key'),
    socket: join(s.dir, 'sign.sock'),
    adminSocket: join(s.dir, 'admin.sock'),
    machineIdPath: s.machineIdPath,
    logger: pino({ level: 'silent' }),
  });
  try {
    assert.equal((await lstat(keyd.adminSocketPath)).mode & 0o777, 0o600);
    // Positive control, and the caller of an admin operation is the admin principal.
    const ok = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
    await ok.admin(Opcode.list, {});
    ok.close();

    // The attack: someone makes the admin socket 0666 so that any local user can connect.
    await chmod(keyd.adminSocketPath, 0o666);
    const intruder = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
    await assert.rejects(intruder.admin(Opcode.delete, { name: 'anything.test' }), (err: KeydError) => err.code === 'KEYD_SOCKET_EXPOSED' || err.code === 'KEYD_UNAVAILABLE');
    intruder.close();
    assert.equal((await lstat(keyd.adminSocketPath)).mode & 0o777, 0o600, 'keyd put the mode back');
    // Once repaired, the socket serves its principal again.
    const again = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
    await again.admin(Opcode.list, {});
    again.close();
  } finally {
    await keyd.close();
  }
  const entries = await readAudit(join(s.dir, 'data'));
  const list = entries.filter((e) => e.op === 'list');
  assert.equal(list.length, 2);
  for (const e of list) assert.match(e.caller.id, /^admin via socket .*admin\.sock \(owner uid \d+, mode 0600\)/);
  assert.ok(!entries.some((e) => e.op === 'delete'), 'the intruder reached no operation');
  const exposed = entries.filter((e) => e.code === 'KEYD_LIMIT_SOCKET_EXPOSED');
  assert.equal(exposed.length, 1);
  assert.equal(exposed[0]!.caller.id, 'admin');
  assert.match(exposed[0]!.message!, /mode 0666: every local user can connect/);
  await s.cleanup();
});

test('signing is audited durably: per principal and key, one entry per window, totals survive a restart, metrics', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const config = { principals: { 'edge-a': { socket: join(s.dir, 'edge-a.sock'), mode: '0600', names: ['*.a.test'] } } };
  let keyd = await startTestKeyd(s.dir, s.machineIdPath, { config });
  let keyRef: string;
  try {
    const id = await makeIdentity('ecdsa-p256', ['www.a.test']);
    await keyd.adminService.put(LOCAL, ['www.a.test'], id.privateKey, id.chain);
    const edgeA = await KeydClient.connect({ socketPath: keyd.principalSockets['edge-a']! });
    const identity = (await edgeA.identity('www.a.test'))!;
    keyRef = identity.keyRef;
    for (let i = 0; i < 5; i++) await edgeA.sign(keyRef, 'www.a.test', 0x0403, hash32);
    await assert.rejects(edgeA.sign(keyRef, 'www.a.test', 0x0403, new Uint8Array(20)), { code: 'KEYD_BAD_HASH_LENGTH' });
    edgeA.close();
    const metrics = await keyd.metrics.registry.metrics();
    assert.match(metrics, new RegExp(`keyd_signatures_total\\{client="edge-a",key="${keyRef}"\\} 5`));
    assert.match(metrics, new RegExp(`keyd_sign_refusals_total\\{client="edge-a",key="${keyRef}",code="KEYD_BAD_HASH_LENGTH"\\} 1`));
  } finally {
    await keyd.close();
  }
  const entries = (await readAudit(join(s.dir, 'data'))).filter((e) => e.op === 'sign');
  assert.equal(entries.length, 1, 'one aggregated line, not one per signature');
  assert.deepEqual({ caller: entries[0]!.caller, keyRef: entries[0]!.keyRef, count: entries[0]!.count, refusals: entries[0]!.refusals }, {
    caller: { kind: 'client', id: 'edge-a' },
    keyRef: keyRef!,
    count: 5,
    refusals: 1,
  });
  // After a restart, `admin stats` still has them.
  keyd = await startTestKeyd(s.dir, s.machineIdPath, { config });
  try {
    const admin = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
    const { json } = await admin.admin(Opcode.stats, {});
    admin.close();
    const clients = json.clients as Record<string, { signatures: number; refusals: number; keys: Record<string, { signatures: number }> }>;
    assert.equal(clients['edge-a']!.signatures, 5);
    assert.equal(clients['edge-a']!.refusals, 1);
    assert.equal(clients['edge-a']!.keys[keyRef!]!.signatures, 5);
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});
