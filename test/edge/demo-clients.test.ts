/**
 * `delegator demo` against what real clients need: NSS (tstclnt) accepts the RSA demo leaf
 * (keyEncipherment), the demo answers on ::1 as well as 127.0.0.1 (`localhost` may resolve to
 * either), the page tells what the handshake did, and choosing ed25519 warns that browsers
 * will not open the site.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { freePort } from '../helpers/ports.js';
import { describeResult, hasTool, runTool, startTool } from '../helpers/tools.js';
import { MAIN, scratchDir } from './system.js';

/** GET / over TLS from `host` (SNI localhost, the demo CA trusted); the page as curl gets it. */
function fetchPage(host: string, port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host, port, servername: 'localhost', ca, minVersion: 'TLSv1.3' });
    let body = '';
    socket.setEncoding('utf8');
    socket.once('secureConnect', () => socket.write('GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nConnection: close\r\n\r\n'));
    socket.on('data', (d: string) => (body += d));
    socket.once('end', () => resolve(body));
    socket.once('error', reject);
  });
}

async function startDemo(t: TestContext, args: string[]) {
  const scratch = scratchDir('edge-demo-clients-');
  t.after(() => scratch.remove());
  const port = await freePort();
  const demo = startTool(t, process.execPath, [MAIN, 'demo', '--port', String(port), ...args], {
    env: { ...process.env, DELEGATOR_HOME: scratch.dir },
    timeoutMs: 90_000,
  });
  await demo.waitFor('Ctrl-C stops everything', 60_000);
  const caFile = /^demo CA:\s+(\S+)$/m.exec(demo.stdout)?.[1];
  assert.ok(caFile, demo.stdout);
  const stop = async () => {
    demo.child.kill('SIGTERM');
    const [code] = await once(demo.child, 'exit');
    assert.equal(code, 0, demo.stderr);
  };
  return { demo, port, caFile, stop };
}

test('RSA demo: the leaf has keyEncipherment, NSS tstclnt completes; the demo answers on ::1 and the page shows the handshake', { timeout: 120_000 }, async (t) => {
  const { demo, port, caFile, stop } = await startDemo(t, ['--key-type', 'rsa2048']);
  assert.match(demo.stdout, /on 127\.0\.0\.1 and ::1/);
  const ca = readFileSync(caFile, 'utf8');

  // ::1 first, as a resolver that prefers IPv6 gives it for localhost.
  const page6 = await fetchPage('::1', port, ca);
  assert.match(page6, /^HTTP\/1\.1 200/);
  assert.match(page6, /TLS version: TLSv1\.3/);
  assert.match(page6, /key exchange group: x25519/);
  assert.match(page6, /HelloRetryRequest: no/);
  assert.match(page6, /resumed: no/);
  assert.match(page6, /handshake signed: rsa_pss_rsae_sha256 by keyd/);
  assert.match(await fetchPage('127.0.0.1', port, ca), /TLS version: TLSv1\.3/);

  if (!hasTool('tstclnt') || !hasTool('certutil')) {
    await stop();
    t.skip('tstclnt/certutil not installed (apt-get install libnss3-tools)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'delegator-nss-demo-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const db = `sql:${dir}`;
  const request = join(dir, 'request.txt');
  writeFileSync(request, 'GET / HTTP/1.0\r\nHost: localhost\r\nUser-Agent: curl/8\r\n\r\n');
  for (const args of [
    ['-N', '-d', db, '--empty-password'],
    ['-A', '-d', db, '-n', 'delegator-demo-ca', '-t', 'C,,', '-i', caFile],
  ]) {
    const result = await runTool('certutil', args);
    assert.equal(result.code, 0, describeResult(result));
  }
  const nss = await runTool('tstclnt', ['-h', '127.0.0.1', '-p', String(port), '-a', 'localhost', '-d', db, '-V', 'tls1.3:tls1.3', '-A', request, '-v'], '', {
    timeoutMs: 20_000,
  });
  assert.equal(nss.code, 0, describeResult(nss));
  assert.match(nss.stdout, /Hello from the upstream app/, describeResult(nss));
  assert.match(nss.stderr, /Signature Scheme: rsa_pss_rsae_sha256/, describeResult(nss));
  await stop();
});

test('the demo leaf for an RSA key carries keyEncipherment; an EC leaf only digitalSignature', async () => {
  const { createDemoCa, generateLeafKeyPair, issueLeaf } = await import('../../src/demo/pki.js');
  const ca = await createDemoCa();
  const { X509Certificate: PeculiarCertificate, KeyUsagesExtension, KeyUsageFlags } = await import('@peculiar/x509');
  // The leaf's own keyUsage bits (RFC 5280 §4.2.1.3), read back from the DER.
  const flags = async (keyType: 'rsa2048' | 'ecdsa-p256') => {
    const leaf = await issueLeaf(ca, generateLeafKeyPair(keyType).publicKey);
    return new PeculiarCertificate(leaf.der).getExtension(KeyUsagesExtension)!.usages;
  };
  assert.equal(await flags('rsa2048'), KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment);
  assert.equal(await flags('ecdsa-p256'), KeyUsageFlags.digitalSignature);
});

test('--key-type ed25519: the demo warns that browsers will not open the site', { timeout: 120_000 }, async (t) => {
  const { demo, stop } = await startDemo(t, ['--key-type', 'ed25519']);
  assert.match(demo.stderr, /no browser opens an ed25519 site/);
  await stop();
});
