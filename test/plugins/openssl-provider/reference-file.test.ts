/**
 * Hostile DELEGATOR KEY REFERENCE files (docs/OPENSSL-PROVIDER.md, "The reference file"),
 * hand-encoded here because export-ref refuses to write them: the provider's decoder
 * (plugins/openssl-provider/decoder.c) and keyd client must refuse each one, and never
 * reach a socket other than the one the file names. A fake keyd (fake-keyd.ts) counts the
 * connections it gets; the positive controls sign through it and verify the signature.
 */
import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireTool, runTool, type ToolResult } from '../../helpers/tools.js';
import { scratchDir } from '../../edge/system.js';
import { buildProvider, compileTestProgram } from './harness.js';
import { answerWithSignature, fakeKeyd, signer } from './fake-keyd.js';

/** ITU-T X.690 §8.1: tag, definite length (short or long form), value. */
function tlv(tag: number, value: Buffer): Buffer {
  const n = value.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), value]);
}

interface Fields {
  socketPath: Buffer | string;
  serverName?: Buffer | string;
  keyRef?: Buffer | string;
  spki: Buffer;
}

/** DelegatorKeyReference DER, any field any bytes. */
function referenceDer(f: Fields): Buffer {
  const utf8 = (v: Buffer | string) => tlv(0x0c, Buffer.from(v));
  return tlv(0x30, Buffer.concat([tlv(0x02, Buffer.from([1])), utf8(f.socketPath), utf8(f.serverName ?? 'a.test'), utf8(f.keyRef ?? 'k-fake'), f.spki]));
}

function writeReference(path: string, der: Buffer): string {
  writeFileSync(path, `-----BEGIN DELEGATOR KEY REFERENCE-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END DELEGATOR KEY REFERENCE-----\n`);
  return path;
}

/** Failed with exit status 1 (not a signal: no crash) and gave no key. */
function assertNoKey(r: ToolResult, what: string): void {
  assert.equal(r.signal, null, `${what}: openssl was killed by ${r.signal}: ${r.stderr}`);
  assert.equal(r.timedOut, false, `${what}: openssl did not finish`);
  assert.equal(r.code, 1, `${what}: ${r.stderr}`);
  assert.doesNotMatch(r.stdout, /BEGIN PUBLIC KEY/, what);
}

test('a socket path longer than sun_path is refused, never cut to a shorter path that names another socket', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-ref-');
  t.after(() => scratch.remove());
  // sun_path holds 108 bytes with its NUL: a 107-byte path is the longest that fits.
  const longest = join(scratch.dir, 's'.repeat(107 - scratch.dir.length - 1));
  assert.equal(longest.length, 107);
  const s = signer(scratch.dir, longest);
  const keyd = await fakeKeyd(t, longest, answerWithSignature(s));

  // Control: the 107-byte path itself is reached, and the signature verifies.
  const control = await s.sign(writeReference(join(scratch.dir, 'longest.ref'), referenceDer({ socketPath: longest, spki: s.spki })));
  assert.equal(control.code, 0, control.stderr);
  assert.ok(verify('sha256', s.content, s.key, control.signature!));
  assert.equal(keyd.connections, 1);

  // The same path and one byte more, or a hundred: cut to 107 bytes they would name the fake keyd.
  for (const extra of ['x', 'x'.repeat(100)]) {
    const r = await s.sign(writeReference(join(scratch.dir, `long${extra.length}.ref`), referenceDer({ socketPath: longest + extra, spki: s.spki })));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /keyd socket path too long/, r.stderr);
  }
  assert.equal(keyd.connections, 1, 'no connection reached the socket a cut path names');
});

test('a reference with a NUL byte, an empty or over-long field is no key', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-ref-');
  t.after(() => scratch.remove());
  const socketPath = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, socketPath);
  const keyd = await fakeKeyd(t, socketPath, answerWithSignature(s));
  const ref = (name: string, f: Omit<Fields, 'spki'>) => writeReference(join(scratch.dir, `${name}.ref`), referenceDer({ ...f, spki: s.spki }));
  const name255 = `${'n'.repeat(250)}.test`;
  const ref255 = 'r'.repeat(255);

  // Controls: the longest legal fields load and sign, and keyd is sent them whole.
  const legal = ref('legal', { socketPath, serverName: name255, keyRef: ref255 });
  const loaded = await s.load(legal);
  assert.equal(loaded.code, 0, loaded.stderr);
  assert.equal(loaded.stdout, createPublicKey(s.key).export({ type: 'spki', format: 'pem' }));
  const signed = await s.sign(legal);
  assert.equal(signed.code, 0, signed.stderr);
  assert.deepEqual(keyd.requests.map((r) => [r.serverName, r.keyRef]), [[name255, ref255]]);

  const bad: Array<[string, Omit<Fields, 'spki'>]> = [
    // The C string would end at the NUL: "fake.sock", another socket than the file names.
    ['NUL in the socket path', { socketPath: Buffer.concat([Buffer.from(socketPath), Buffer.from([0]), Buffer.from('.other')]) }],
    ['NUL in the server name', { socketPath, serverName: Buffer.from('a.test\0.evil') }],
    ['NUL in the key reference', { socketPath, keyRef: Buffer.from('k-fake\0x') }],
    ['empty socket path', { socketPath: '' }],
    ['empty server name', { socketPath, serverName: '' }],
    ['empty key reference', { socketPath, keyRef: '' }],
    // keyd's key_ref<1..255> and server_name<1..255> (docs/PROTOCOL.md): a 256th byte has no length to go in.
    ['server name of 256 bytes', { socketPath, serverName: `${'n'.repeat(251)}.test` }],
    ['key reference of 256 bytes', { socketPath, keyRef: 'r'.repeat(256) }],
  ];
  for (const [what, fields] of bad) {
    const file = ref(what.replace(/\W+/g, '-'), fields);
    assertNoKey(await s.load(file), what);
    assertNoKey(await s.sign(file), `${what} (signing)`);
  }
  assert.equal(keyd.requests.length, 1, 'keyd got no request from a bad reference');
});

test('every truncation of a reference, and one with a trailing byte, is no key (no crash)', { timeout: 120_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-ref-');
  t.after(() => scratch.remove());
  const s = signer(scratch.dir, join(scratch.dir, 'fake.sock'));
  const der = referenceDer({ socketPath: join(scratch.dir, 'fake.sock'), spki: s.spki });
  const whole = await s.load(writeReference(join(scratch.dir, 'whole.ref'), der));
  assert.equal(whole.code, 0, whole.stderr);
  // Prefixes cut inside each field (a sample: each is an openssl run), and the whole plus one byte.
  const lengths = [...new Set([1, 2, 3, 5, 6, 8, 9, 10, 20, 40, 60, 80, 100, der.length - 60, der.length - 20, der.length - 2, der.length - 1])];
  for (const n of lengths) assertNoKey(await s.load(writeReference(join(scratch.dir, `cut${n}.ref`), der.subarray(0, n))), `first ${n} of ${der.length} bytes`);
  assertNoKey(await s.load(writeReference(join(scratch.dir, 'trailing.ref'), Buffer.concat([der, Buffer.from([0])]))), 'a trailing byte');
  // The outer SEQUENCE claiming 2^32-1 bytes.
  const header = der[1]! & 0x80 ? 2 + (der[1]! & 0x7f) : 2;
  const huge = Buffer.concat([Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), der.subarray(header)]);
  assertNoKey(await s.load(writeReference(join(scratch.dir, 'huge.ref'), huge)), 'a 2^32-1 byte SEQUENCE');
});

test('a relative socket path is refused when the key loads, naming it: it would be resolved from the server\'s working directory, not the reference file\'s', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-ref-');
  t.after(() => scratch.remove());
  const loadPem = compileTestProgram('load-pem', scratch.dir);
  // The reference file and the keyd it means in refs/; the server runs in cwd/, where another
  // socket of the same name listens (nginx runs in its prefix, or /).
  const refs = join(scratch.dir, 'refs');
  const cwd = join(scratch.dir, 'cwd');
  mkdirSync(refs);
  mkdirSync(cwd);
  const s = signer(refs, join(refs, 'fake.sock'));
  const meant = await fakeKeyd(t, join(refs, 'fake.sock'), answerWithSignature(s));
  const other = await fakeKeyd(t, join(cwd, 'fake.sock'), answerWithSignature(s));
  const env = { ...process.env, OPENSSL_CONF: s.conf };
  const signIn = (ref: string) => runTool('openssl', ['pkeyutl', '-sign', '-rawin', '-digest', 'sha256', '-inkey', ref, '-in', join(refs, 'cv.bin'), '-out', join(cwd, 'sig.bin')], '',
    { env, cwd, timeoutMs: 30_000 });

  // Control: the absolute path loads as nginx loads a key file, and signs through the keyd it names.
  const absolute = writeReference(join(refs, 'absolute.ref'), referenceDer({ socketPath: join(refs, 'fake.sock'), spki: s.spki }));
  const loaded = await runTool(loadPem, [absolute], '', { env, cwd, timeoutMs: 30_000 });
  assert.equal(loaded.code, 0, loaded.stderr);
  assert.equal(loaded.stdout, 'loaded\n');
  assert.equal((await signIn(absolute)).code, 0);
  assert.deepEqual([meant.connections, other.connections], [1, 0]);

  for (const relative of ['fake.sock', './fake.sock', '../cwd/fake.sock']) {
    const ref = writeReference(join(refs, 'relative.ref'), referenceDer({ socketPath: relative, spki: s.spki }));
    const r = await runTool(loadPem, [ref], '', { env, cwd, timeoutMs: 30_000 });
    assertNoKey(r, relative);
    assert.match(r.stderr, new RegExp(`malformed DELEGATOR KEY REFERENCE:.*keyd socket path "${relative.replace(/\./g, '\\.')}" is relative: a reference must name keyd's socket by an absolute path`), r.stderr);
    // Before, it loaded and signed through cwd/fake.sock: a socket the file's directory does not hold.
    assertNoKey(await signIn(ref), `${relative} (signing)`);
  }
  assert.deepEqual([meant.connections, other.connections], [1, 0], 'no relative path reached a socket');
});
