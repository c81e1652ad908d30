/**
 * The point of the provider: an nginx worker that served handshakes with an ECDSA key
 * holds none of the key's bytes. Its whole process memory (/proc/PID/mem) is searched for
 * the PKCS#8 DER and the raw private scalar; the control is the key's public point, which
 * the worker does hold (certificate and reference), so the scan is shown to read the worker.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { test } from 'node:test';
import { nginxBinary, startNginx } from '../../../bench/lib/nginx.js';
import { processMemoryReadable, scanProcessMemory } from '../../helpers/memory-scan.js';
import { freePort, waitForPort } from '../../helpers/ports.js';
import { requireTool } from '../../helpers/tools.js';
import { scratchDir } from '../../edge/system.js';
import { buildProvider, curlOnce, setUpKeyAndReference } from './harness.js';

test('an nginx worker signing through the provider holds no private key bytes', { timeout: 180_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'curl', 'curl')) return;
  const binary = nginxBinary();
  if (!binary) return t.skip('nginx not installed (apt-get install nginx)');
  const scratch = scratchDir('provider-memscan-');
  t.after(() => scratch.remove());
  const setup = await setUpKeyAndReference(scratch.dir, 'ecdsa-p256');
  t.after(() => setup.keyd.kill());
  const nginx = await startNginx(binary, setup.dir, await freePort(), setup.certFile, setup.refFile, { protocols: 'TLSv1.2 TLSv1.3', env: setup.env });
  t.after(() => nginx.stop());
  await waitForPort(nginx.port);
  for (let i = 0; i < 10; i++) {
    const r = await curlOnce(nginx.port, i % 2 === 0 ? '1.3' : '1.2', setup.caFile);
    assert.ok(r.ok, r.output);
  }
  const worker = nginx.pids[1]!;
  if (!processMemoryReadable(worker)) return t.skip('/proc/PID/mem of the nginx worker not readable here');

  const der = setup.pki.leafKey.export({ format: 'der', type: 'pkcs8' });
  const jwk = setup.pki.leafKey.export({ format: 'jwk' });
  const scalar = Buffer.from(jwk.d!, 'base64url');
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  assert.ok(new X509Certificate(setup.pki.leafCertPem).publicKey.export({ type: 'spki', format: 'der' }).includes(point), 'the point is the certificate\'s');

  const found = scanProcessMemory(worker, [
    { name: 'PKCS#8 DER', value: der },
    { name: 'raw scalar', value: scalar },
    { name: 'scalar, little-endian (BIGNUM words)', value: Buffer.from(scalar).reverse() },
    { name: 'public point (control)', value: point },
  ]);
  assert.ok(found.includes('public point (control)'), 'control: the scan finds the public point in the worker');
  assert.deepEqual(found.filter((n) => !n.includes('control')), [], 'private key bytes in the nginx worker');
});
