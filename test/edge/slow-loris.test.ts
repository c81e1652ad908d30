/**
 * Slow-loris at the connection cap: clients that trickle a byte at a time hold every slot,
 * yet the handshake deadline (from accept; input does not extend it) and the bounded
 * linger free the slots, each with user_canceled + close_notify, and a fresh client
 * completes its handshake while the flood goes on.
 */
import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { pino } from 'pino';
import { validateConfig } from '../../src/edge/config.js';
import { startEdge } from '../../src/edge/edge.js';
import { loadEngine } from '../../src/edge/engine.js';
import { makeTestPki } from '../helpers/pki.js';
import { FakeKeydService } from './fake-keyd.js';

const CAP = 20;
/** user_canceled (warning) then close_notify, plaintext: what a stalled ClientHello gets (docs/EDGE.md). */
const CANCEL_RECORDS = Buffer.from([21, 3, 3, 0, 2, 1, 90, 21, 3, 3, 0, 2, 1, 0]);

test('slow-loris at the connection cap: slots are freed with an alert and a fresh client is served during the flood', { timeout: 60_000 }, async (t) => {
  const pki = await makeTestPki({ commonName: 'a.test', extraNames: ['a.test'] });
  const keyd = new FakeKeydService();
  keyd.put(['a.test'], pki.leafKey, pki.chainDer);
  const config = validateConfig({
    listen: ['127.0.0.1:0'],
    keyd: '/fake/keyd.sock',
    routes: [{ names: ['a.test'], upstream: '127.0.0.1:9' }],
    workers: 1,
    limits: { maxConnections: CAP, handshakeTimeoutMs: 300 },
  });
  const edge = await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: keyd.connect, logger: pino({ level: 'silent' }) });
  t.after(() => edge.close());
  const port = edge.addresses[0]!.port;

  // The flood: CAP connections, each sending one byte of a ClientHello record every 20 ms,
  // reopened as soon as the edge closes one (an attacker keeping the edge at its cap).
  // On main at 8bc53bf every byte re-armed a 2 s linger (up to 300 s): no slot came free.
  let flooding = true;
  const received: Buffer[][] = [];
  const open = new Set<Socket>();
  const trickle = (index: number): void => {
    if (!flooding) return;
    // Half-open: the flooder keeps sending after the edge's FIN, as an attacker would.
    const socket = netConnect({ port, host: '127.0.0.1', allowHalfOpen: true });
    open.add(socket);
    const got: Buffer[] = [];
    received.push(got);
    socket.on('data', (d: Buffer) => got.push(d));
    socket.on('error', () => undefined);
    const timer = setInterval(() => socket.writable && socket.write(Buffer.of(0x16)), 20);
    socket.on('close', () => {
      clearInterval(timer);
      open.delete(socket);
      trickle(index);
    });
  };
  for (let i = 0; i < CAP; i++) trickle(i);
  t.after(() => {
    flooding = false;
    for (const s of open) s.destroy();
  });
  // Wait until the flood holds every slot.
  while (edge.connections < CAP) await new Promise((resolve) => setTimeout(resolve, 5));

  // A fresh client: retries while it is refused at the cap, until its handshake completes.
  let attempts = 0;
  for (;;) {
    attempts++;
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'a.test', ca: [pki.caCertPem], minVersion: 'TLSv1.3' });
    const outcome = await new Promise<'secure' | 'refused'>((resolve) => {
      socket.once('secureConnect', () => resolve('secure'));
      socket.once('error', () => resolve('refused'));
      socket.once('close', () => resolve('refused'));
    });
    socket.destroy();
    if (outcome === 'secure') break;
  }
  assert.ok(flooding && open.size > 0, 'the flood was still running');
  // Slots were freed by the deadline, and each flooder was told why before the close.
  const closedWithAlert = received.filter((got) => Buffer.concat(got).equals(CANCEL_RECORDS));
  assert.ok(closedWithAlert.length > 0, `no flood connection got user_canceled + close_notify (${attempts} fresh attempts)`);
});
