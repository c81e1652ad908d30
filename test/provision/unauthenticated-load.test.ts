import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { describe, it } from 'node:test';
import { makePki, startKeydForTest } from './harness.js';
import { issue } from './pki.js';

/**
 * The provisioning listener under unauthenticated load: refusals cost a bounded number
 * of audit bytes, one address cannot hold every connection, a silent peer is closed at
 * the handshake timeout. Each test waits for the event (close, refusal), never a clock.
 */

function untilClosed(socket: Socket): Promise<void> {
  socket.on('error', () => undefined);
  socket.resume();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

describe('provisioning listener under unauthenticated load', { timeout: 60_000 }, () => {
  it('a refusal flood with huge subjects: truncated, budgeted, summarised; the operator CA is not named', async () => {
    const pki = await makePki();
    // A foreign certificate whose subject is ~6 KB (attacker-chosen text).
    const huge = await issue(pki.foreignCa, `CN=${'x'.repeat(60)}, ${Array.from({ length: 100 }, (_, i) => `OU=${String(i).padStart(2, '0')}${'y'.repeat(58)}`).join(', ')}`, { usage: 'client' });
    const keyd = await startKeydForTest(pki, { limits: { refusalBytesPerMinute: 4096 } });
    const attempts = 25;
    try {
      for (let i = 0; i < attempts; i++) {
        await assert.rejects(keyd.connect(huge), (err: Error & { code?: string }) => {
          assert.equal(err.code, 'PROVISION_UNTRUSTED_CLIENT_CERT');
          assert.ok(!err.message.includes('Example Operator CA'), err.message);
          assert.ok(err.message.length < 1000, `message of ${err.message.length} characters`);
          return true;
        });
      }
    } finally {
      await keyd.running.close(); // ends the window: the summary is written
    }
    const { AuditLog } = await import('../../src/keyd/audit.js');
    const log = await AuditLog.open(`${keyd.dir}/data/audit.log`);
    const entries = await log.read({ limit: 1000 });
    await log.close();
    const single = entries.filter((e) => e.code === 'PROVISION_UNTRUSTED_CLIENT_CERT');
    const summary = entries.filter((e) => e.code === 'PROVISION_REFUSALS_SUMMARISED');
    assert.ok(single.length > 0 && single.length < attempts, `${single.length} individual entries`);
    const bytes = single.reduce((n, e) => n + JSON.stringify(e).length, 0);
    assert.ok(bytes <= 4096 + 1024, `${bytes} bytes of individual refusals`);
    for (const e of single) assert.ok(e.caller.id.length < 400 && !e.message!.includes('Example Operator CA'));
    assert.equal(summary.length, 1);
    assert.equal(single.length + summary[0]!.count!, attempts);
    await keyd.close();
  });

  it('a refused peer that never closes frees its connection at the handshake timeout, not the idle timeout; an operator\'s connection stays', async () => {
    const pki = await makePki();
    const keyd = await startKeydForTest(pki, { limits: { handshakeTimeoutMs: 300, idleTimeoutMs: 3_600_000, maxConnectionsPerAddress: 2 } });
    try {
      const alice = await keyd.connect(pki.alice);
      // carol: a valid certificate, no role. Half-open: it reads its refusal and keyd's close, and never closes itself.
      const refused = tlsConnect({ host: '127.0.0.1', port: keyd.listener.port, ca: pki.keydCa.certPem, cert: pki.carol.certPem, key: pki.carol.keyPem, servername: 'localhost', allowHalfOpen: true } as import('node:tls').ConnectionOptions);
      refused.on('error', () => undefined);
      let received = '';
      refused.on('data', (chunk: Buffer) => void (received += chunk.toString('utf8')));
      await new Promise<void>((resolve) => refused.once('end', () => resolve()));
      assert.match(received, /PROVISION_UNKNOWN_OPERATOR/);
      // The address's two slots: alice and the refused peer. Once keyd lets the refused one go,
      // a second operator connection from the address is accepted (before: not for the idle timeout).
      let second;
      for (let attempt = 0; attempt < 100 && !second; attempt++) {
        second = await keyd.connect(pki.alice).catch(async () => void (await new Promise((r) => setTimeout(r, 100))));
      }
      assert.ok(second, 'the refused peer still holds its connection');
      second.close();
      // Control: the operator connected before it, idle meanwhile for longer than that timeout, is served.
      assert.ok(Array.isArray(await alice.list()));
      alice.close();
      refused.destroy();
    } finally {
      await keyd.close();
    }
  });

  it('per-address connection cap and handshake timeout: silent peers are dropped, another address still gets a handshake', async () => {
    const pki = await makePki();
    const keyd = await startKeydForTest(pki, { limits: { maxConnectionsPerAddress: 3, handshakeTimeoutMs: 400 } });
    try {
      const port = keyd.listener.port;
      const open = (): Promise<Socket> =>
        new Promise((resolve, reject) => {
          const s = netConnect({ host: '127.0.0.1', port }, () => resolve(s));
          s.once('error', reject);
        });
      const silent = [await open(), await open(), await open()];
      const closedSilent = silent.map(untilClosed);
      // A fourth from the same address is closed at once (it does not wait for the timeout of the others).
      const fourth = await open();
      await untilClosed(fourth);
      // … as the cap's refusal, audited (a silent peer's timeout is not): the fourth, not the third.
      let capped: { message?: string }[] = [];
      for (let i = 0; i < 100 && capped.length === 0; i++) {
        capped = (await keyd.audit()).filter((e) => e.code === 'PROVISION_TOO_MANY_CONNECTIONS');
        if (capped.length === 0) await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(capped.length, 1, JSON.stringify(capped));
      assert.equal(capped[0]!.message, '127.0.0.1 already has 3 connections open');
      // Another address (127.0.0.2 on the loopback) completes a TLS handshake meanwhile.
      const other = tlsConnect({ host: '127.0.0.1', port, localAddress: '127.0.0.2', ca: pki.keydCa.certPem, cert: pki.alice.certPem, key: pki.alice.keyPem, servername: 'localhost' } as import('node:tls').ConnectionOptions);
      await new Promise<void>((resolve, reject) => {
        other.once('secureConnect', () => resolve());
        other.once('error', reject);
      });
      other.destroy();
      // The silent ones are closed at the handshake timeout.
      await Promise.all(closedSilent);
    } finally {
      await keyd.close();
    }
  });
});
