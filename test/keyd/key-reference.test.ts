/**
 * The DELEGATOR KEY REFERENCE file (src/keyd/key-reference.ts, docs/OPENSSL-PROVIDER.md) and
 * `delegator admin export-ref`. The encoding is checked by `openssl asn1parse`, not by a
 * decoder of our own; the provider's tests load the same files into OpenSSL servers.
 */
import assert from 'node:assert/strict';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { main as adminMain } from '../../src/cli/admin.js';
import { encodeKeyReference, encodeKeyReferencePem, keyReferenceFor } from '../../src/keyd/key-reference.js';
import { makeTestPki } from '../helpers/pki.js';
import { requireTool, runTool } from '../helpers/tools.js';
import { KeydProcess, scratchDir } from '../edge/system.js';

test('a key reference is the DER SEQUENCE docs/OPENSSL-PROVIDER.md describes', async (t) => {
  if (!requireTool(t, 'openssl', 'openssl')) return;
  const pki = await makeTestPki({ keyType: 'rsa2048' });
  const ref = keyReferenceFor('/run/keyd/servers.sock', 'www.example.com', 'k0123456789abcdef', pki.leafCertDer);
  const pem = encodeKeyReferencePem(ref);
  assert.match(pem, /^-----BEGIN DELEGATOR KEY REFERENCE-----\n([A-Za-z0-9+/=]{1,64}\n)+-----END DELEGATOR KEY REFERENCE-----\n$/);
  const parsed = await runTool('openssl', ['asn1parse', '-inform', 'DER'], encodeKeyReference(ref));
  assert.equal(parsed.code, 0, parsed.stderr);
  const fields = parsed.stdout.split('\n').filter((l) => l.trim()).map((l) => l.replace(/^.*?(cons|prim): /, '$1: ').replace(/\s+/g, ' ').trim());
  assert.deepEqual(fields.slice(0, 5), [
    'cons: SEQUENCE',
    'prim: INTEGER :01',
    'prim: UTF8STRING :/run/keyd/servers.sock',
    'prim: UTF8STRING :www.example.com',
    'prim: UTF8STRING :k0123456789abcdef',
  ]);
  assert.equal(fields[5], 'cons: SEQUENCE', 'then the SubjectPublicKeyInfo');
  // The SubjectPublicKeyInfo is the certificate's, byte for byte, at the end.
  const spki = new X509Certificate(pki.leafCertPem).publicKey.export({ type: 'spki', format: 'der' });
  const der = encodeKeyReference(ref);
  assert.deepEqual(der.subarray(der.length - spki.length), spki);
  assert.ok(createPublicKey({ key: der.subarray(der.length - spki.length), format: 'der', type: 'spki' }).equals(createPublicKey(pki.leafCertPem)));
});

test('a key reference refuses empty, over-long or NUL-bearing fields', async () => {
  const pki = await makeTestPki();
  const ok = { socketPath: '/run/keyd/k.sock', serverName: 'a.test', keyRef: 'k1', spki: new Uint8Array(pki.leafCertDer) };
  assert.doesNotThrow(() => encodeKeyReference(ok));
  assert.throws(() => encodeKeyReference({ ...ok, serverName: '' }), /server name must be 1\.\.255 bytes/);
  assert.throws(() => encodeKeyReference({ ...ok, keyRef: 'k'.repeat(256) }), /key reference must be 1\.\.255 bytes/);
  assert.throws(() => encodeKeyReference({ ...ok, socketPath: `/${'s'.repeat(107)}` }), /socket path must be 1\.\.107 bytes/);
  assert.throws(() => encodeKeyReference({ ...ok, serverName: 'a\0b' }), /without NUL/);
  // The provider would resolve a relative path from the server's working directory (docs/OPENSSL-PROVIDER.md).
  for (const socketPath of ['k.sock', './k.sock', 'run/keyd/k.sock']) {
    assert.throws(() => encodeKeyReference({ ...ok, socketPath }), /socket path must be absolute/);
  }
});

test('admin export-ref: writes the reference (mode 0640) for a served name; refuses a missing --out or an unknown name', { timeout: 60_000 }, async (t) => {
  const scratch = scratchDir('export-ref-');
  t.after(() => scratch.remove());
  const keyd = new KeydProcess(scratch.dir);
  await keyd.start();
  t.after(() => keyd.kill());
  const pki = await makeTestPki({ extraNames: ['a.test'] });
  await keyd.put(['a.test'], pki.leafKey, pki.chainDer);
  const run = async (...args: string[]) => {
    let out = '';
    let err = '';
    const code = await adminMain(['--socket', keyd.adminSocket, ...args], { out: (s) => (out += s), err: (s) => (err += s) });
    return { code, out, err };
  };
  const file = join(scratch.dir, 'a.ref');

  const noOut = await run('export-ref', 'a.test');
  assert.equal(noOut.code, 2);
  assert.match(noOut.err, /export-ref needs --out FILE/);
  const unknown = await run('export-ref', 'b.test', '--out', file);
  assert.equal(unknown.code, 1);
  assert.match(unknown.err, /no key with a certificate chain serves b\.test \[KEYD_UNKNOWN_NAME\]/);
  assert.throws(() => statSync(file), 'nothing written for a refused export');

  const done = await run('export-ref', 'a.test', '--out', file, '--keyd-socket', '/run/keyd/servers.sock');
  assert.equal(done.code, 0, done.err);
  assert.equal(statSync(file).mode & 0o777, 0o640);
  const pem = readFileSync(file, 'utf8');
  const der = Buffer.from(pem.split('\n').filter((l) => l && !l.startsWith('-----')).join(''), 'base64');
  assert.ok(der.includes(Buffer.from('/run/keyd/servers.sock')) && der.includes(Buffer.from('a.test')));
  assert.ok(!pem.includes('PRIVATE'), 'no private part');
  const spki = new X509Certificate(pki.leafCertPem).publicKey.export({ type: 'spki', format: 'der' });
  assert.deepEqual(der.subarray(der.length - spki.length), spki, 'the certificate\'s public key');

  // A relative --keyd-socket is resolved from where the command runs, as a file argument is,
  // and the reference holds the absolute path (the server would resolve it from its own
  // working directory); the message names it.
  const cwd = process.cwd();
  process.chdir(scratch.dir);
  t.after(() => process.chdir(cwd));
  const relativeFile = join(scratch.dir, 'relative.ref');
  const relative = await run('export-ref', 'a.test', '--out', relativeFile, '--keyd-socket', 'keyd/servers.sock');
  assert.equal(relative.code, 0, relative.err);
  const absolute = join(scratch.dir, 'keyd/servers.sock');
  assert.match(relative.out, new RegExp(`keyd ${absolute.replace(/[.\/]/g, '\\$&')}\\)`));
  const relativeDer = Buffer.from(readFileSync(relativeFile, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----')).join(''), 'base64');
  assert.ok(relativeDer.includes(Buffer.from(absolute)), `the reference holds ${absolute}`);
});
