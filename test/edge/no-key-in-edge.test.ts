/**
 * DESIGN rule 1: no private key in the edge. A running edge (child process, signing through
 * a keyd child) is loaded with handshakes, then we look for the key's bytes:
 *  - in a V8 heap snapshot of the edge (--heapsnapshot-signal): every string the JS heap
 *    holds — PEM text, hex/base64/base64url of the PKCS#8 DER and of the raw scalar;
 *  - in the edge's whole process memory (/proc/PID/mem): the raw DER and scalar bytes,
 *    which would sit in ArrayBuffers or OpenSSL memory that a heap snapshot does not show.
 * Positive controls prove each probe finds the key where it is: keyd's memory holds the
 * scalar, and a process that merely keeps the PEM in a string shows it in its snapshot.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { heapSnapshot, scanProcessMemory } from '../helpers/memory-scan.js';
import { makeTestPki } from '../helpers/pki.js';
import { KeydProcess, scratchDir, startEdgeProcess, startHttpUpstream } from './system.js';

interface KeyForms {
  /** Binary needles for process memory. */
  bytes: { name: string; value: Buffer }[];
  /** Text needles for the heap snapshot (JSON text). */
  text: { name: string; value: string }[];
}

function keyForms(pem: string, der: Buffer, scalar: Buffer): KeyForms {
  const body = pem.split('\n').filter((l) => l && !l.startsWith('-----'));
  return {
    bytes: [
      { name: 'PKCS#8 DER', value: der },
      { name: 'raw scalar', value: scalar },
    ],
    text: [
      ...body.map((line, i) => ({ name: `PEM line ${i + 1}`, value: line })),
      { name: 'DER hex', value: der.toString('hex').slice(0, 64) },
      { name: 'scalar hex', value: scalar.toString('hex') },
      { name: 'scalar base64', value: scalar.toString('base64').replace(/=+$/, '') },
      { name: 'scalar base64url (JWK d)', value: scalar.toString('base64url') },
    ],
  };
}

function handshakeOnce(port: number, ca: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername: 'a.test', ca });
    s.once('secureConnect', () => {
      s.write('GET / HTTP/1.0\r\n\r\n');
      s.resume();
    });
    s.once('end', () => resolve());
    s.once('error', reject);
  });
}

test('a loaded edge holds none of the private key bytes (heap snapshot and process memory)', { timeout: 120_000 }, async (t) => {
  const scratch = scratchDir('edge-nokey-');
  t.after(() => scratch.remove());
  const pki = await makeTestPki({ commonName: 'a.test', extraNames: ['a.test'] });
  const der = pki.leafKey.export({ format: 'der', type: 'pkcs8' });
  const scalar = Buffer.from(pki.leafKey.export({ format: 'jwk' }).d!, 'base64url');
  const forms = keyForms(pki.leafKeyPem, der, scalar);

  const keyd = new KeydProcess(scratch.dir);
  await keyd.start();
  t.after(() => keyd.kill());
  await keyd.put(['a.test'], pki.leafKey, pki.chainDer); // the admin put: the test knows the bytes
  const upstream = await startHttpUpstream('A');
  t.after(() => upstream.close());
  const edge = await startEdgeProcess(
    ['--keyd', keyd.socket, '--route', `a.test=127.0.0.1:${upstream.port}`, '--log-level', 'warn'],
    { execArgv: ['--heapsnapshot-signal=SIGUSR2'], cwd: scratch.dir },
  );
  t.after(() => edge.stop('SIGKILL'));

  for (let round = 0; round < 20; round++) {
    await Promise.all(Array.from({ length: 10 }, () => handshakeOnce(edge.port, pki.caCertPem)));
  }

  const snapshot = await heapSnapshot(edge.child.pid!, scratch.dir);
  assert.ok(snapshot.includes('a.test'), 'the snapshot holds the edge\'s strings');
  const inSnapshot = forms.text.filter((f) => snapshot.includes(f.value)).map((f) => f.name);
  assert.deepEqual(inSnapshot, [], 'key material in the edge heap snapshot');

  let memoryReadable = true;
  try {
    readFileSync(`/proc/${edge.child.pid}/maps`);
  } catch {
    memoryReadable = false;
  }
  if (!memoryReadable) {
    t.diagnostic('/proc/PID/mem not readable here: process-memory scan skipped');
    return;
  }
  assert.deepEqual(scanProcessMemory(edge.child.pid!, forms.bytes), [], 'key bytes in the edge process memory');
  // Positive control: the same scan finds the key bytes in a process that holds them.
  // (Not keyd: OpenSSL keeps its scalar as little-endian BIGNUM words, and keyd's copies of
  // the DER it was sent may already be collected, so keyd is no reliable control.)
  const holder = spawn(process.execPath, ['-e', 'const k = Buffer.from(process.argv[1], "hex"); setInterval(() => k.length, 1000); console.log("ready")', der.toString('hex')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  t.after(() => holder.kill('SIGKILL'));
  await once(holder.stdout!, 'data');
  assert.ok(scanProcessMemory(holder.pid!, forms.bytes).includes('PKCS#8 DER'), 'control: the scan finds DER key bytes held by a process');
});

test('control: the snapshot probe finds a PEM key held in a string', { timeout: 60_000 }, async (t) => {
  const scratch = scratchDir('edge-nokey-control-');
  t.after(() => scratch.remove());
  const pki = await makeTestPki();
  writeFileSync(join(scratch.dir, 'key.pem'), pki.leafKeyPem);
  const child = spawn(
    process.execPath,
    ['--heapsnapshot-signal=SIGUSR2', '-e', `globalThis.k = require('fs').readFileSync('key.pem', 'utf8'); console.log('ready'); setInterval(() => {}, 1000);`],
    { cwd: scratch.dir, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.after(() => child.kill('SIGKILL'));
  await once(child.stdout!, 'data');
  const snapshot = await heapSnapshot(child.pid!, scratch.dir);
  const der = pki.leafKey.export({ format: 'der', type: 'pkcs8' });
  const scalar = Buffer.from(pki.leafKey.export({ format: 'jwk' }).d!, 'base64url');
  const found = keyForms(pki.leafKeyPem, der, scalar).text.filter((f) => snapshot.includes(f.value));
  assert.ok(found.some((f) => f.name.startsWith('PEM line')), 'the PEM text is found');
});
