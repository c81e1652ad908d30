/**
 * TLS 1.2 through the whole product (`delegator demo`: edge + keyd + the demo upstream),
 * keyd signing the ServerKeyExchange (opcode 0x04): real clients with TLS 1.2 forced, for
 * an ECDSA P-256 and an RSA-2048 key. The page the upstream returns says what the edge
 * negotiated and that keyd signed.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { freePort } from '../helpers/ports.js';
import { describeResult, hasTool, runTool, startTool } from '../helpers/tools.js';
import { MAIN, scratchDir } from './system.js';

async function startDemo(t: TestContext, keyType: string) {
  const scratch = scratchDir('edge-tls12-');
  t.after(() => scratch.remove());
  const port = await freePort();
  const demo = startTool(t, process.execPath, [MAIN, 'demo', '--port', String(port), '--key-type', keyType], {
    env: { ...process.env, DELEGATOR_HOME: scratch.dir },
    timeoutMs: 240_000,
  });
  await demo.waitFor('Ctrl-C stops everything', 90_000);
  const caFile = /^demo CA:\s+(\S+)$/m.exec(demo.stdout)?.[1];
  assert.ok(caFile, demo.stdout);
  const stop = async () => {
    demo.child.kill('SIGTERM');
    const [code] = await once(demo.child, 'exit');
    assert.equal(code, 0, demo.stderr);
  };
  return { port, caFile, stop };
}

function fetchPage12(port: number, ca: string, session?: Buffer): Promise<{ page: string; reused: boolean; session: Buffer | undefined }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, maxVersion: 'TLSv1.2', ...(session ? { session } : {}) });
    let page = '';
    let reused = false;
    let kept: Buffer | undefined;
    socket.setEncoding('utf8');
    socket.once('secureConnect', () => {
      reused = socket.isSessionReused();
      kept = socket.getSession();
      socket.write('GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n');
    });
    socket.on('data', (d: string) => (page += d));
    socket.once('end', () => resolve({ page, reused, session: kept }));
    socket.once('error', reject);
  });
}

for (const { keyType, auth, scheme } of [
  { keyType: 'ecdsa-p256', auth: 'ECDSA', scheme: /handshake signed: ecdsa_secp256r1_sha256 by keyd/ },
  { keyType: 'rsa2048', auth: 'RSA', scheme: /handshake signed: rsa_pss_rsae_sha256 by keyd/ },
]) {
  test(`${keyType} demo over TLS 1.2: node:tls (with resumption), openssl s_client, curl, gnutls-cli; keyd signs`, { timeout: 300_000 }, async (t) => {
    const { port, caFile, stop } = await startDemo(t, keyType);
    const ca = readFileSync(caFile, 'utf8');

    const first = await fetchPage12(port, ca);
    assert.match(first.page, /^HTTP\/1\.1 200/);
    assert.match(first.page, /TLS version: TLSv1\.2/);
    assert.match(first.page, new RegExp(`cipher suite: TLS_ECDHE_${auth}_WITH_`));
    assert.match(first.page, scheme);
    const second = await fetchPage12(port, ca, first.session);
    assert.equal(second.reused, true, 'node:tls resumed');
    assert.match(second.page, /resumed: yes/);

    if (hasTool('openssl')) {
      const s = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'localhost', '-CAfile', caFile, '-verify_return_error', '-tls1_2', '-reconnect'], '', { timeoutMs: 60_000 });
      assert.equal(s.code, 0, describeResult(s));
      assert.match(s.stdout, new RegExp(`New, TLSv1\\.2, Cipher is ECDHE-${auth}-`), describeResult(s));
      assert.match(s.stdout, /Extended master secret: yes/);
      assert.match(s.stdout, /Reused, TLSv1\.2/);
    }
    if (hasTool('curl')) {
      const c = await runTool('curl', ['--silent', '--show-error', '--tlsv1.2', '--tls-max', '1.2', '--cacert', caFile, '--resolve', `localhost:${port}:127.0.0.1`, '--max-time', '30', `https://localhost:${port}/`], '', { timeoutMs: 60_000 });
      assert.equal(c.code, 0, describeResult(c));
      assert.match(c.stdout, /TLS version: TLSv1\.2/);
    }
    if (hasTool('gnutls-cli')) {
      const g = startTool(t, 'gnutls-cli', ['127.0.0.1', '--port', String(port), '--sni-hostname', 'localhost', '--verify-hostname', 'localhost', '--x509cafile', caFile, '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.2', '--resume'], { timeoutMs: 60_000 });
      await g.waitFor(/This is a resumed session/, 60_000);
      g.closeStdin();
      await g.done;
    }
    await stop();
  });
}
