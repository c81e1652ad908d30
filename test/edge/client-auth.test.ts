/**
 * Route client-auth across a reload (SIGHUP path, `RunningEdge.reload`): the policy follows
 * the new route objects, so a required route stays required after a reload, a change of mode
 * applies to new connections, and a reload whose CRL is not signed by the route's CA is refused
 * with the old policy kept. node:tls is the client; the edge runs in-process on the engine.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { pino } from 'pino';
import { validateConfig } from '../../src/edge/config.js';
import { startEdge } from '../../src/edge/edge.js';
import { loadEngine } from '../../src/edge/engine.js';
import { issue, makeClientCa, makeCrl, writeFiles, type Issued } from '../helpers/client-pki.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { FakeKeydService } from './fake-keyd.js';

function attempt(port: number, pki: TestPki, cert?: Issued): Promise<{ ok: boolean; code?: string }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      servername: 'm.test',
      ca: pki.caCertPem,
      minVersion: 'TLSv1.3',
      ...(cert ? { cert: cert.pem, key: cert.keyPem } : {}),
    });
    let data = '';
    socket.setEncoding('utf8');
    socket.on('secureConnect', () => socket.write('x'));
    socket.on('data', (d: string) => {
      data += d;
      socket.end();
    });
    socket.on('error', (e: Error & { code?: string }) => resolve({ ok: false, code: e.code }));
    socket.on('close', () => resolve({ ok: data.length > 0 }));
  });
}

test('a reload keeps, changes or refuses the route client-auth policy', async (t) => {
  const pki = await makeTestPki({ extraNames: ['m.test'] });
  const ca = await makeClientCa();
  const otherCa = await makeClientCa({ commonName: 'other' });
  const alice = await issue(ca, { commonName: 'alice' });
  const mallory = await issue(otherCa, { commonName: 'mallory' });
  const files = writeFiles({ 'ca.pem': ca.pem, 'foreign.crl': await makeCrl(otherCa, []), 'own.crl': await makeCrl(ca, []) });
  t.after(() => files.remove());
  const upstream = createServer((s) => {
    s.on('error', () => undefined);
    s.on('data', () => s.end('ok'));
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  t.after(() => upstream.close());
  const keyd = new FakeKeydService();
  keyd.put(['m.test'], pki.leafKey, pki.chainDer);
  const configWith = (clientAuth: object) =>
    validateConfig(
      {
        listen: ['127.0.0.1:0'],
        keyd: '/fake/keyd.sock',
        routes: [{ names: ['m.test'], upstream: `127.0.0.1:${(upstream.address() as { port: number }).port}`, clientAuth }],
        workers: 1,
      },
      files.dir,
    );
  const edge = await startEdge(configWith({ mode: 'required', ca: 'ca.pem' }), {
    createTlsServer: await loadEngine(),
    connectKeyd: keyd.connect,
    logger: pino({ level: 'silent' }),
  });
  t.after(() => edge.close());
  const port = edge.addresses[0]!.port;

  assert.deepEqual(await attempt(port, pki), { ok: false, code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' });
  assert.equal((await attempt(port, pki, alice)).ok, true, 'positive control: with a certificate');

  await edge.reload(configWith({ mode: 'required', ca: 'ca.pem' })); // same settings, new route objects
  assert.deepEqual(await attempt(port, pki), { ok: false, code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' }, 'still required after a reload');

  await edge.reload(configWith({ mode: 'optional', ca: 'ca.pem' }));
  assert.equal((await attempt(port, pki)).ok, true, 'optional after the reload');

  await assert.rejects(edge.reload(configWith({ mode: 'required', ca: 'ca.pem', crl: 'foreign.crl' })), /clientAuth: .*not signed by a CA/);
  assert.equal((await attempt(port, pki)).ok, true, 'the refused reload left the optional policy in force');

  // Mode off with files named: checked as if on (docs/EDGE.md), so a CRL the CA did not sign
  // is refused now rather than when the route is switched back on...
  await assert.rejects(edge.reload(configWith({ mode: 'off', ca: 'ca.pem', crl: 'foreign.crl' })), /route m\.test: clientAuth: .*not signed by a CA/);
  assert.equal((await attempt(port, pki, mallory)).ok, false, 'the refused reload left the optional policy in force (a foreign CA\'s certificate refused)');
  // ...and valid files with mode off: no client auth (no CertificateRequest, so a certificate
  // from a CA the route does not trust is never sent nor refused).
  await edge.reload(configWith({ mode: 'off', ca: 'ca.pem', crl: 'own.crl' }));
  assert.equal((await attempt(port, pki, mallory)).ok, true, 'mode off: no certificate asked for');
});

test('PROXY v2: a verified client certificate whose CN does not fit the header closes that client cleanly, not the process; a usual CN reaches the upstream', async (t) => {
  // The header's length field is 16 bits (HAProxy's proxy-protocol.txt §2.2); PP2_SUBTYPE_SSL_CN
  // carries the CN as it is. A CA that signs a CN of nearly 64 KiB makes it not fit. Without
  // tickets (with them the engine refuses such a subject earlier) the handshake completes,
  // and the header used to throw out of the 'secure' handler: an uncaught 'error' event.
  const pki = await makeTestPki({ extraNames: ['m.test'] });
  const ca = await makeClientCa();
  const alice = await issue(ca, { commonName: 'alice' });
  const huge = await issue(ca, { commonName: 'a'.repeat(65_400) });
  const files = writeFiles({ 'ca.pem': ca.pem });
  t.after(() => files.remove());
  const received: Buffer[] = [];
  let upstreamConnections = 0;
  const upstream = createServer((s) => {
    upstreamConnections++;
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      received.push(d);
      s.end('ok');
    });
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  t.after(() => upstream.close());
  const keyd = new FakeKeydService();
  keyd.put(['m.test'], pki.leafKey, pki.chainDer);
  const config = validateConfig(
    {
      listen: ['127.0.0.1:0'],
      keyd: '/fake/keyd.sock',
      routes: [{ names: ['m.test'], upstream: `127.0.0.1:${(upstream.address() as { port: number }).port}`, proxyProtocol: true, clientAuth: { mode: 'required', ca: 'ca.pem' } }],
      tickets: 0,
      workers: 1,
    },
    files.dir,
  );
  const edge = await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: keyd.connect, logger: pino({ level: 'silent' }) });
  t.after(() => edge.close());
  const port = edge.addresses[0]!.port;

  assert.deepEqual(await attempt(port, pki, huge), { ok: false }, 'closed (close_notify) without an answer');
  assert.equal(upstreamConnections, 0, 'no upstream connection for a client the header cannot describe');
  assert.match(await edge.metrics.registry.metrics(), /edge_upstream_errors_total\{reason="header"\} 1/);

  // Control: the same route with a usual CN, the edge still serving.
  assert.equal((await attempt(port, pki, alice)).ok, true);
  assert.equal(upstreamConnections, 1);
  assert.ok(Buffer.concat(received).includes(Buffer.from('alice')), 'the CN went to the upstream in the PROXY header');
});
