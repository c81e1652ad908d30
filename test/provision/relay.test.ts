import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { main as runRemoteAdmin } from '../../src/cli/admin.js';
import { makePki, startKeydForTest, type Keyd, type Pki } from './harness.js';
import { issue, makeCa, type Issued } from './pki.js';

/**
 * "The key is never plaintext on the wire, even inside TLS": a TLS-terminating relay sits
 * between the CLI and keyd (it holds a certificate the CLI trusts and re-originates TLS to
 * keyd), records every decrypted byte in both directions, and must never see the key.
 */

let pki: Pki;
let keyd: Keyd;

interface Relay {
  port: number;
  recorded: Buffer[];
  close(): Promise<void>;
}

/** Terminates the operator's TLS, opens its own to keyd as `upstreamAs`, pipes and records plaintext. */
async function startRelay(relayCert: Issued, upstreamAs: Issued): Promise<Relay> {
  const recorded: Buffer[] = [];
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer({ cert: relayCert.certPem, key: relayCert.keyPem, ca: pki.operatorCa.certPem, requestCert: true, rejectUnauthorized: true });
  server.on('secureConnection', (downstream: tls.TLSSocket) => {
    const upstream = tls.connect({ host: '127.0.0.1', port: keyd.listener.port, ca: pki.keydCa.certPem, cert: upstreamAs.certPem, key: upstreamAs.keyPem });
    for (const s of [downstream, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        downstream.destroy();
        upstream.destroy();
      });
    }
    downstream.on('data', (chunk: Buffer) => {
      recorded.push(Buffer.from(chunk));
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      recorded.push(Buffer.from(chunk));
      downstream.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    recorded,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runRemoteAdmin(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

before(async () => {
  pki = await makePki();
  keyd = await startKeydForTest(pki);
});

after(async () => {
  await keyd.close();
});

describe('a TLS-terminating relay between operator and keyd', () => {
  it('sees only the HPKE-sealed key, never the key itself', async () => {
    const relayCert = await issue(pki.keydCa, 'CN=relay', { usage: 'server', ipAddresses: ['127.0.0.1'] });
    const relay = await startRelay(relayCert, pki.alice);
    try {
      const siteCa = await makeCa('CN=Site CA');
      const site = await issue(siteCa, 'CN=relay.example.com', { usage: 'server', dnsNames: ['relay.example.com'] });
      const files = {
        cert: join(keyd.dir, 'alice.pem'),
        key: join(keyd.dir, 'alice.key'),
        ca: join(keyd.dir, 'keyd-ca.pem'),
        siteKey: join(keyd.dir, 'relay-site.key'),
        siteChain: join(keyd.dir, 'relay-site.pem'),
      };
      await writeFile(files.cert, pki.alice.certPem);
      await writeFile(files.key, pki.alice.keyPem);
      await writeFile(files.ca, pki.keydCa.certPem);
      await writeFile(files.siteKey, site.keyPem);
      await writeFile(files.siteChain, site.certPem);
      const conn = ['--server', `127.0.0.1:${relay.port}`, '--cert', files.cert, '--key', files.key, '--ca', files.ca, '--keyd-fingerprint', keyd.listener.fingerprint];
      const put = await cli([...conn, 'put', 'relay.example.com', '--key', files.siteKey, '--chain', files.siteChain]);
      assert.equal(put.code, 0, put.err);
      assert.ok(keyd.keyring.owner('relay.example.com'), 'the key went through the relay and was installed');

      const seen = Buffer.concat(relay.recorded);
      assert.ok(seen.includes(Buffer.from('"sealed"')), 'the relay did see the put request');
      const key = createPrivateKey(site.keyPem);
      const pkcs8 = key.export({ format: 'der', type: 'pkcs8' });
      const sec1 = key.export({ format: 'der', type: 'sec1' });
      const scalar = Buffer.from(key.export({ format: 'jwk' }).d!, 'base64url');
      const forbidden: Array<[string, Buffer]> = [
        ['PKCS#8 DER', pkcs8],
        ['SEC1 DER', sec1],
        ['raw private scalar', scalar],
        ['PKCS#8 base64', Buffer.from(pkcs8.toString('base64'))],
        ['scalar base64', Buffer.from(scalar.toString('base64'))],
        ['scalar base64url', Buffer.from(scalar.toString('base64url'))],
        ['scalar hex', Buffer.from(scalar.toString('hex'))],
        ['PEM body line', Buffer.from(site.keyPem.split('\n')[1]!)],
      ];
      for (const [what, bytes] of forbidden) assert.ok(!seen.includes(bytes), `relay saw the ${what}`);
    } finally {
      await relay.close();
    }
  });

  it('re-authenticating as another operator is detected by the CLI before anything is sent', async () => {
    const relayCert = await issue(pki.keydCa, 'CN=relay', { usage: 'server', ipAddresses: ['127.0.0.1'] });
    const relay = await startRelay(relayCert, pki.dave);
    try {
      await writeFile(join(keyd.dir, 'alice.pem'), pki.alice.certPem);
      await writeFile(join(keyd.dir, 'alice.key'), pki.alice.keyPem);
      await writeFile(join(keyd.dir, 'keyd-ca.pem'), pki.keydCa.certPem);
      const result = await cli([
        '--server', `127.0.0.1:${relay.port}`, '--cert', join(keyd.dir, 'alice.pem'), '--key', join(keyd.dir, 'alice.key'),
        '--ca', join(keyd.dir, 'keyd-ca.pem'), '--keyd-fingerprint', keyd.listener.fingerprint, 'list',
      ]);
      assert.equal(result.code, 1);
      assert.match(result.err, /keyd authenticated this connection as "CN=dave, O=Example Ops", but your certificate is "CN=alice, O=Example Ops"/);
      assert.match(result.err, /\[PROVISION_OPERATOR_MISMATCH\]/);
    } finally {
      await relay.close();
    }
  });
});
