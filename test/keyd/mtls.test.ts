import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { KeydClient, type KeydError } from '../../src/keyd/client.js';
import { LOCAL, makeIdentity, pem, scratch, startTestKeyd, verifyCertificateVerify, type TestIdentity } from './fixtures.js';

function tlsFiles(id: TestIdentity) {
  return { cert: pem(id.chain[0]!), key: id.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

test('remote edges over mutual TLS: each client certificate may use only the names the config gives it', async () => {
  const s = await scratch();
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=keyd test CA' });
  const otherCa = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=rogue CA' });
  const server = await makeIdentity('ecdsa-p256', ['localhost', '127.0.0.1'], ca, { subject: 'CN=keyd' });
  const edge1 = await makeIdentity('ecdsa-p256', [], ca, { subject: 'CN=edge-1, O=Example' });
  const edge2 = await makeIdentity('ecdsa-p256', [], ca, { subject: 'CN=edge-2' });
  const rogue = await makeIdentity('ecdsa-p256', [], otherCa, { subject: 'CN=edge-1, O=Example' });
  await writeFile(join(s.dir, 'tls.crt'), pem(server.chain[0]!));
  await writeFile(join(s.dir, 'tls.key'), tlsFiles(server).key);
  await writeFile(join(s.dir, 'ca.crt'), pem(ca.chain[0]!));
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, {
    listen: '127.0.0.1:0',
    tlsCert: join(s.dir, 'tls.crt'),
    tlsKey: join(s.dir, 'tls.key'),
    clientCa: join(s.dir, 'ca.crt'),
    // Subjects are compared as RDN sets: order and spacing do not matter.
    config: { clients: { 'O=Example,CN=edge-1': ['*.a.test'] } },
  });
  const clients: KeydClient[] = [];
  try {
    const inA = await makeIdentity('ecdsa-p256', ['www.a.test']);
    const inB = await makeIdentity('ecdsa-p256', ['www.b.test']);
    await keyd.adminService.put(LOCAL, ['www.a.test'], inA.privateKey, inA.chain);
    await keyd.adminService.put(LOCAL, ['www.b.test'], inB.privateKey, inB.chain);
    const local = await KeydClient.connect({ socketPath: keyd.socketPath });
    clients.push(local);
    const idB = (await local.identity('www.b.test'))!;

    const endpoint = (id: TestIdentity) => ({ host: '127.0.0.1', port: keyd.tlsPort!, tls: { ...tlsFiles(id), ca: pem(ca.chain[0]!), servername: 'localhost' } });
    const c1 = await KeydClient.connect(endpoint(edge1));
    clients.push(c1);
    const h = createHash('sha256').update('t').digest();
    const idA = (await c1.identity('www.a.test'))!;
    assert.ok(verifyCertificateVerify(idA.certificateChain[0]!, 0x0403, h, await c1.sign(idA.keyRef, idA.names[0]!, 0x0403, h)));
    await assert.rejects(c1.identity('www.b.test'), { code: 'KEYD_NOT_AUTHORISED' });
    await assert.rejects(c1.sign(idB.keyRef, idB.names[0]!, 0x0403, h), { code: 'KEYD_NOT_AUTHORISED' });

    // A valid certificate that the config does not name may use nothing.
    const c2 = await KeydClient.connect(endpoint(edge2));
    clients.push(c2);
    await c2.ping();
    await assert.rejects(c2.identity('www.a.test'), { code: 'KEYD_NOT_AUTHORISED' });
    await assert.rejects(c2.sign(idA.keyRef, idA.names[0]!, 0x0403, h), { code: 'KEYD_NOT_AUTHORISED' });

    // Same subject, other CA: the TLS handshake itself fails.
    const refused = await KeydClient.connect(endpoint(rogue)).then(
      async (c) => {
        clients.push(c);
        return c.ping().then(() => 'answered', (e: KeydError) => e.code);
      },
      (e: KeydError) => e.code,
    );
    assert.equal(refused, 'KEYD_UNAVAILABLE');

    // Change pushes reach a TLS client only for names it may use.
    const seen: string[][] = [];
    c1.on('change', (e: { names: string[] }) => seen.push(e.names));
    const rotated = await makeIdentity('ecdsa-p256', ['www.b.test']);
    await keyd.adminService.put(LOCAL, ['www.b.test'], rotated.privateKey, rotated.chain);
    const rotatedA = await makeIdentity('ecdsa-p256', ['www.a.test']);
    await keyd.adminService.put(LOCAL, ['www.a.test'], rotatedA.privateKey, rotatedA.chain);
    await c1.ping();
    assert.deepEqual(seen, [['www.a.test']]);

    const stats = await keyd.adminService.stats(LOCAL);
    assert.equal(stats['CN=edge-1, O=Example']?.signatures, 1);
    assert.equal(stats['CN=edge-1, O=Example']?.refusals, 1);
    assert.equal(stats['CN=edge-2']?.refusals, 1);
  } finally {
    for (const c of clients) c.close();
    await keyd.close();
    await s.cleanup();
  }
});

test('reloadGrants over mutual TLS: an open connection gets the new "clients" names at once, and none when its subject is removed', async () => {
  const s = await scratch();
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=keyd test CA' });
  const server = await makeIdentity('ecdsa-p256', ['localhost', '127.0.0.1'], ca, { subject: 'CN=keyd' });
  const edge1 = await makeIdentity('ecdsa-p256', [], ca, { subject: 'CN=edge-1, O=Example' });
  await writeFile(join(s.dir, 'tls.crt'), pem(server.chain[0]!));
  await writeFile(join(s.dir, 'tls.key'), tlsFiles(server).key);
  await writeFile(join(s.dir, 'ca.crt'), pem(ca.chain[0]!));
  const configPath = join(s.dir, 'keyd.json');
  const writeClients = (clients: Record<string, string[]>) => writeFile(configPath, JSON.stringify({ clients }));
  await writeClients({ 'CN=edge-1, O=Example': ['www.a.test'] });
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { listen: '127.0.0.1:0', tlsCert: join(s.dir, 'tls.crt'), tlsKey: join(s.dir, 'tls.key'), clientCa: join(s.dir, 'ca.crt'), config: configPath });
  let c1: KeydClient | undefined;
  try {
    for (const name of ['www.a.test', 'www.b.test']) {
      const id = await makeIdentity('ecdsa-p256', [name]);
      await keyd.adminService.put(LOCAL, [name], id.privateKey, id.chain);
    }
    c1 = await KeydClient.connect({ host: '127.0.0.1', port: keyd.tlsPort!, tls: { ...tlsFiles(edge1), ca: pem(ca.chain[0]!), servername: 'localhost' } });
    const h = createHash('sha256').update('t').digest();
    const idA = (await c1.identity('www.a.test'))!;
    await c1.sign(idA.keyRef, 'www.a.test', 0x0403, h); // positive control: granted at start
    await assert.rejects(c1.identity('www.b.test'), { code: 'KEYD_NOT_AUTHORISED' });

    await writeClients({ 'CN=edge-1, O=Example': ['www.b.test'] });
    assert.deepEqual(await keyd.reloadGrants(), { ok: true });
    // The same, open connection: www.a.test revoked, www.b.test granted.
    await assert.rejects(c1.sign(idA.keyRef, 'www.a.test', 0x0403, h), { code: 'KEYD_NOT_AUTHORISED' });
    const idB = (await c1.identity('www.b.test'))!;
    await c1.sign(idB.keyRef, 'www.b.test', 0x0403, h);

    await writeClients({});
    assert.deepEqual(await keyd.reloadGrants(), { ok: true });
    await assert.rejects(c1.sign(idB.keyRef, 'www.b.test', 0x0403, h), { code: 'KEYD_NOT_AUTHORISED' }, 'a subject no longer listed may use nothing');
  } finally {
    c1?.close();
    await keyd.close();
    await s.cleanup();
  }
});
