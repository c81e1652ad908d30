/**
 * The provider's keyd client (plugins/openssl-provider/keyd.c) against a fake keyd that
 * answers with malformed or hostile frames (docs/PROTOCOL.md, "Frame"): the provider runs
 * inside someone else's server, so each bad answer must fail the one signature with the
 * provider's error, never crash, hang past `timeout_ms` or be taken as a signature. Each
 * case is `openssl pkeyutl` signing a TLS 1.3 server CertificateVerify content with a
 * reference file that names the fake socket; the fake keyd signs with a key made here, so
 * the positive controls verify with node:crypto.
 */
import assert from 'node:assert/strict';
import { randomBytes, verify } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { encodeKeyReferencePem } from '../../../src/keyd/key-reference.js';
import { requireTool, runTool, startTool, type ToolResult } from '../../helpers/tools.js';
import { scratchDir } from '../../edge/system.js';
import { buildProvider, compileTestProgram } from './harness.js';
import { answerWithSignature, fakeKeyd, frame, OP_CHANGED, OP_ERROR, OP_REPLY, OP_SIGN_HANDSHAKE_CONTENT, type Request, signatureReply, signer, type Signer, u16 } from './fake-keyd.js';

/** A fake keyd answering as `answer` says, and one pkeyutl signature through it. */
async function signThrough(t: TestContext, answer: (s: Signer, socket: Socket, request: Request) => void) {
  const scratch = scratchDir('provider-fake-keyd-');
  t.after(() => scratch.remove());
  const path = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, path);
  await fakeKeyd(t, path, (socket, request) => answer(s, socket, request));
  return { s, result: await s.sign() };
}

/** An openssl run that failed with the provider's error, not a signal (a crash). */
function assertRefused(r: ToolResult, message: RegExp): void {
  assert.equal(r.signal, null, `openssl was killed by ${r.signal}: ${r.stderr}`);
  assert.equal(r.timedOut, false, 'openssl did not finish');
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, message, r.stderr);
}

test('fake keyd, positive control: a well-formed reply is the signature, also when it arrives a byte at a time', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const whole = await signThrough(t, (s, socket, request) => {
    assert.equal(request.scheme, 0x0403, 'ecdsa_secp256r1_sha256 (RFC 8446 §4.2.3)');
    socket.write(frame(OP_REPLY | OP_SIGN_HANDSHAKE_CONTENT, request.id, signatureReply(s, request)));
  });
  assert.equal(whole.result.code, 0, whole.result.stderr);
  assert.ok(verify('sha256', whole.s.content, whole.s.key, whole.result.signature!));

  // Partial reads: every byte of the answer in its own write, after a `changed` push frame.
  const dribbled = await signThrough(t, (s, socket, request) => {
    const bytes = Buffer.concat([
      frame(OP_CHANGED, 0, Buffer.concat([u16(7), Buffer.from([6]), Buffer.from('a.test')])),
      frame(OP_REPLY | OP_SIGN_HANDSHAKE_CONTENT, request.id, signatureReply(s, request)),
    ]);
    const next = (i: number): void => {
      if (i < bytes.length) socket.write(bytes.subarray(i, i + 1), () => setImmediate(next, i + 1));
    };
    next(0);
  });
  assert.equal(dribbled.result.code, 0, dribbled.result.stderr);
  assert.ok(verify('sha256', dribbled.s.content, dribbled.s.key, dribbled.result.signature!));
});

test('fake keyd: malformed replies fail the signature with the provider\'s error, no crash', { timeout: 120_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const cases: Array<[string, (s: Signer, socket: Socket, request: Request) => void, RegExp]> = [
    ['payload length 2^32-1', (_s, socket, request) => socket.write(frame(OP_REPLY | 5, request.id, Buffer.alloc(0), 0xffffffff)), /bad frame header/],
    ['payload length 1 MiB + 1', (_s, socket, request) => socket.write(frame(OP_REPLY | 5, request.id, Buffer.alloc(0), 1048577)), /bad frame header/],
    ['wrong version', (s, socket, request) => {
      const f = frame(OP_REPLY | 5, request.id, signatureReply(s, request));
      f[0] = 1;
      socket.write(f);
    }, /bad frame header/],
    // 60 announced (within the 72 OpenSSL was told), 10 sent: copying 60 would over-read.
    ['signature length larger than the payload', (_s, socket, request) =>
      socket.write(frame(OP_REPLY | 5, request.id, Buffer.concat([u16(60), randomBytes(10)]))), /malformed signature reply/],
    ['empty signature', (_s, socket, request) => socket.write(frame(OP_REPLY | 5, request.id, u16(0))), /malformed signature reply/],
    ['one-byte payload', (_s, socket, request) => socket.write(frame(OP_REPLY | 5, request.id, Buffer.from([0]))), /malformed signature reply/],
    ['signature larger than the size OpenSSL was told', (s, socket, request) => socket.write(frame(OP_REPLY | 5, request.id, signatureReply(s, request, randomBytes(200)))),
      /signature \(200 bytes\) exceeds the buffer \(72\)/],
    ['another request id', (s, socket, request) => socket.write(frame(OP_REPLY | 5, request.id + 1, signatureReply(s, request))), /answered request id/],
    ['a reply of another opcode', (s, socket, request) => socket.write(frame(OP_REPLY | 3, request.id, signatureReply(s, request))), /unexpected opcode 0x83/],
    ['error frame whose code overruns the payload', (_s, socket, request) => socket.write(frame(OP_ERROR, request.id, Buffer.from([200, 0x41, 0x42]))), /malformed error frame/],
    ['error frame whose message overruns the payload', (_s, socket, request) =>
      socket.write(frame(OP_ERROR, request.id, Buffer.concat([Buffer.from([4]), Buffer.from('KEYD'), u16(500), Buffer.from('short')]))), /malformed error frame/],
    ['error frame of request id 0 (a connection refusal) that overruns its payload', (_s, socket) =>
      socket.end(frame(OP_ERROR, 0, Buffer.concat([Buffer.from([30]), Buffer.from('KEYD_TOO_MANY')]))), /malformed error frame/],
    ['closed after half a header', (_s, socket) => socket.end(Buffer.from([2, 0x85, 0, 0, 0, 0])), /closed the connection/],
    ['closed inside the payload', (s, socket, request) => socket.end(frame(OP_REPLY | 5, request.id, signatureReply(s, request)).subarray(0, 30)), /closed the connection/],
  ];
  for (const [what, answer, message] of cases) {
    const { result } = await signThrough(t, answer);
    try {
      assertRefused(result, message);
    } catch (err) {
      throw new Error(`${what}: ${(err as Error).message}`);
    }
  }
  // Control for the error-frame cases: a well-formed refusal is reported with keyd's code and message.
  const refused = await signThrough(t, (_s, socket, request) =>
    socket.write(frame(OP_ERROR, request.id, Buffer.concat([Buffer.from([9]), Buffer.from('KEYD_NOPE'), u16(6), Buffer.from('no way')]))));
  assertRefused(refused.result, /keyd refused k-fake for a\.test: KEYD_NOPE: no way/);
});

test('keyd\'s error frame with a 64 KiB message, or with control bytes: the code and the start of the message reach the log, one line', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const refuse = (code: Buffer, message: Buffer) => (_s: Signer, socket: Socket, request: Request) =>
    socket.write(frame(OP_ERROR, request.id, Buffer.concat([Buffer.from([code.length]), code, u16(message.length), message])));
  const errorLines = (r: ToolResult) => r.stderr.split('\n').filter((l) => l.includes(':error:'));

  // The longest message the frame allows: OpenSSL keeps at most 1 KiB of an error's text and,
  // given more, kept none (the log read "keyd refused to sign:" with no code).
  const huge = await signThrough(t, refuse(Buffer.from('KEYD_THROTTLED'), Buffer.alloc(65535, 'x')));
  assertRefused(huge.result, /keyd refused k-fake for a\.test: KEYD_THROTTLED: x{400,}\.\.\./);
  assert.ok(errorLines(huge.result).every((l) => l.length < 1200), huge.result.stderr);
  // With the longest key reference and server name a reference may hold, the text passes
  // OpenSSL's 1 KiB: cut, its beginning kept.
  const longRef = join(dirname(huge.s.refFile), 'long.ref');
  writeFileSync(longRef, encodeKeyReferencePem({ socketPath: join(dirname(huge.s.refFile), 'fake.sock'), serverName: `${'n'.repeat(250)}.test`, keyRef: 'r'.repeat(255), spki: huge.s.spki }));
  const long = await huge.s.sign(longRef);
  assertRefused(long, /keyd refused r{255} for n{250}\.test: KEYD_THROTTLED: x{100,}\.\.\. \(cut\)\n/);

  // A newline would start a line of keyd's choosing in the server's log; a NUL hid the rest.
  const control = await signThrough(t, refuse(Buffer.from('KEYD_NOPE\n'), Buffer.from('no\nerror:forged line\0hidden\x1b[0m')));
  assertRefused(control.result, /keyd refused k-fake for a\.test: KEYD_NOPE\\x0a: no\\x0aerror:forged line\\x00hidden\\x1b\[0m\n/);
  assert.equal(errorLines(control.result).length, 1, control.result.stderr);
  assert.doesNotMatch(control.result.stderr, /^error:forged/m);
  // Control: a plain code and message are printed as they are (also in the test above).
  const plain = await signThrough(t, refuse(Buffer.from('KEYD_NOT_AUTHORISED'), Buffer.from('servers may not use b.test')));
  assertRefused(plain.result, /keyd refused k-fake for a\.test: KEYD_NOT_AUTHORISED: servers may not use b\.test\n/);
});

/**
 * A keyd whose event loop is busy (blocked reading its stdin) accepts no connection; once
 * unblocked it answers every request with an error frame KEYD_BUSY "accepted late".
 */
const BUSY_KEYD = `
const { createServer } = require('node:net');
const { readSync } = require('node:fs');
const server = createServer((socket) => {
  let buffered = Buffer.alloc(0);
  socket.on('error', () => {});
  socket.on('data', (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 12 && buffered.length >= 12 + buffered.readUInt32BE(8)) {
      const id = buffered.readUInt32BE(4);
      buffered = buffered.subarray(12 + buffered.readUInt32BE(8));
      const payload = Buffer.concat([Buffer.from([9]), Buffer.from('KEYD_BUSY'), Buffer.from([0, 13]), Buffer.from('accepted late')]);
      const header = Buffer.alloc(12);
      header[0] = 2, header[1] = 0xff, header.writeUInt32BE(id, 4), header.writeUInt32BE(payload.length, 8);
      socket.write(Buffer.concat([header, payload]));
    }
  });
});
server.listen({ path: process.argv[1], backlog: 1 }, () => {
  process.stdout.write('listening\\n');
  readSync(0, Buffer.alloc(1)); // blocks the event loop (process.stdin untouched: fd 0 stays blocking)
});
`;

test('a keyd too busy to accept (its accept queue full): the signature waits for room until timeout_ms, and gets through once keyd accepts', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-busy-keyd-');
  t.after(() => scratch.remove());
  const path = join(scratch.dir, 'busy.sock');
  const keyd = spawn(process.execPath, ['-e', BUSY_KEYD, path], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => keyd.kill('SIGKILL'));
  await new Promise((resolve) => keyd.stdout.once('data', resolve));
  // Other clients fill keyd's accept queue: connects succeed until the kernel answers EAGAIN.
  const held: Socket[] = [];
  t.after(() => held.forEach((s) => s.destroy()));
  for (;;) {
    const socket = connect(path);
    held.push(socket);
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      socket.once('connect', () => resolve(undefined));
      socket.once('error', resolve);
    });
    if (error) {
      assert.equal(error.code, 'EAGAIN');
      break;
    }
  }

  // keyd never accepts: the connect waits, and the signature fails after timeout_ms, naming it
  // (a non-blocking connect would fail at once with EAGAIN, long before keyd could catch up).
  mkdirSync(join(scratch.dir, 'short'));
  const short = signer(join(scratch.dir, 'short'), path, 700);
  assertRefused(await short.sign(), /keyd did not answer in time.*keyd at \S+ did not accept the connection within 700 ms/);

  // Control: keyd catches up while the signature waits, and the request reaches it (keyd's
  // answer, a refusal here, comes back).
  mkdirSync(join(scratch.dir, 'long'));
  const long = signer(join(scratch.dir, 'long'), path, 20_000);
  const signing = long.sign();
  keyd.stdin.write('x');
  assertRefused(await signing, /keyd refused k-fake for a\.test: KEYD_BUSY: accepted late/);
  keyd.stdin.end();
});

test('a pooled connection keyd closed: the next signature is retried on a fresh one, without SIGPIPE killing a process that does not ignore it', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-sigpipe-');
  t.after(() => scratch.remove());
  // sign-twice.c: an OpenSSL application with SIGPIPE's default action (nginx and haproxy
  // ignore SIGPIPE; a server embedding OpenSSL need not).
  const program = compileTestProgram('sign-twice', scratch.dir);

  const path = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, path);
  const sign = answerWithSignature(s);
  let firstClosed!: Promise<void>;
  const keyd = await fakeKeyd(t, path, (socket, request) => {
    sign(socket, request);
    if (keyd.requests.length === 1) {
      // keyd's idle timeout, or a restart: the connection the provider keeps is closed after its answer.
      firstClosed = new Promise((resolve) => socket.once('close', () => resolve()));
      socket.end(() => socket.destroy());
    }
  });
  const run = startTool(t, program, [s.refFile], { env: { ...process.env, OPENSSL_CONF: s.conf }, timeoutMs: 30_000 });
  await run.waitFor('signed 1');
  await firstClosed;
  run.write('\n');
  const result = await run.done;
  assert.equal(result.signal, null, `killed by ${result.signal}: ${result.stderr}`);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /signed 2/);
  assert.equal(keyd.connections, 2, 'the second signature went over a fresh connection');
  assert.equal(keyd.requests.length, 2);
});

test('a `changed` push waiting in a pooled connection that keyd then closes without reading the request: the push is not an answer, the signature is retried', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-push-close-');
  t.after(() => scratch.remove());
  const program = compileTestProgram('sign-twice', scratch.dir);
  const path = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, path);
  const sign = answerWithSignature(s);
  const pushed = frame(OP_CHANGED, 0, Buffer.concat([u16(7), Buffer.from([6]), Buffer.from('a.test')]));
  let pushSent!: Promise<void>;
  const answered: number[] = [];
  const keyd = await fakeKeyd(t, path, (socket, request) => {
    if (keyd.requests.length === 1) {
      sign(socket, request);
      // A key changed while the connection sat idle in the provider's pool: the push waits there unread.
      pushSent = new Promise((resolve) => socket.write(pushed, () => resolve()));
    } else if (keyd.requests.length === 2) {
      // keyd's idle timeout firing as the request comes in: the connection is destroyed, the request never served.
      socket.destroy();
    } else {
      answered.push(keyd.requests.length);
      sign(socket, request);
    }
  });
  const run = startTool(t, program, [s.refFile], { env: { ...process.env, OPENSSL_CONF: s.conf }, timeoutMs: 30_000 });
  await run.waitFor('signed 1');
  await pushSent;
  run.write('\n');
  const result = await run.done;
  assert.equal(result.signal, null, `killed by ${result.signal}: ${result.stderr}`);
  // The push's bytes made the closed connection look answered: "keyd ... closed the connection", no retry.
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /signed 2/);
  assert.equal(keyd.connections, 2, 'the retry went over a fresh connection');
  assert.deepEqual(answered, [3]);
  // Control: the request retried is the one keyd dropped, the same content as the first (sign-twice signs one message twice).
  assert.deepEqual(keyd.requests.map((r) => r.content), [keyd.requests[0]!.content, keyd.requests[0]!.content, keyd.requests[0]!.content]);
});

test('openssl.cnf timeout_ms that is not a whole number of ms from 1 to 600000: every signature fails naming it, keyd is not asked', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-timeout-conf-');
  t.after(() => scratch.remove());
  const path = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, path);
  const keyd = await fakeKeyd(t, path, answerWithSignature(s));
  const conf = readFileSync(s.conf, 'utf8');
  const withTimeout = (value: string) => writeFileSync(s.conf, conf.replace('timeout_ms = 5000', `timeout_ms = ${value}`));

  // Controls: the bounds themselves sign, and the signature verifies.
  for (const value of ['1000', '600000']) {
    withTimeout(value);
    const r = await s.sign();
    assert.equal(r.code, 0, `timeout_ms = ${value}: ${r.stderr}`);
    assert.ok(verify('sha256', s.content, s.key, r.signature!));
  }
  assert.equal(keyd.requests.length, 2);

  // "10s" was read as 10 ms (strtol stops at the "s"); the others were replaced by 5000 without a word.
  for (const value of ['10s', '5 000', 'abc', '0', '-5', '600001', '99999999999999999999']) {
    withTimeout(value);
    const r = await s.sign();
    try {
      assertRefused(r, new RegExp(`bad provider configuration.*timeout_ms = "${value.slice(0, 40)}": not a whole number of milliseconds from 1 to 600000`));
    } catch (err) {
      throw new Error(`timeout_ms = ${value}: ${(err as Error).message}`);
    }
  }
  assert.equal(keyd.requests.length, 2, 'keyd got no request under a bad timeout_ms');
});

/** A well-formed error frame payload: opaque code<1..255>, opaque message<0..2^16-1>. */
const errorPayload = (code: string, message: string): Buffer => Buffer.concat([Buffer.from([code.length]), Buffer.from(code), u16(message.length), Buffer.from(message)]);

test('keyd refusing the connection (an error frame of request id 0, then close): the signature fails with keyd\'s code and message', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const refusal = frame(OP_ERROR, 0, errorPayload('KEYD_TOO_MANY_CONNECTIONS', 'client servers already has 64 connections open (limits.maxConnectionsPerClient)'));
  const expected = /keyd refused to sign.*keyd at \S+fake\.sock refused the connection: KEYD_TOO_MANY_CONNECTIONS: client servers already has 64 connections open \(limits\.maxConnectionsPerClient\)/;
  // As keyd answers once the request is in (it was "answered request id 0, expected 1").
  const afterRequest = await signThrough(t, (_s, socket) => socket.end(refusal));
  assertRefused(afterRequest.result, expected);

  // As keyd does it, on accepting the connection (src/keyd/server.ts refuseConnection), before
  // reading the request.
  const scratch = scratchDir('provider-refused-conn-');
  t.after(() => scratch.remove());
  const path = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, path);
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    socket.on('error', () => {});
    socket.resume(); // the request is read and dropped, so that the provider's close ends this socket
    socket.end(refusal);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  assertRefused(await s.sign(), expected);
  assert.equal(accepted, 1, 'a refused connection is not retried');

  // Control: an error frame carrying the request's id is still that request's refusal.
  const request = await signThrough(t, (_s, socket, req) => socket.write(frame(OP_ERROR, req.id, errorPayload('KEYD_THROTTLED', 'slow down'))));
  assertRefused(request.result, /keyd refused k-fake for a\.test: KEYD_THROTTLED: slow down/);
});

test('a connection the provider kept before fork(): the child opens its own, the parent keeps using its own, and an exec() does not inherit it', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const scratch = scratchDir('provider-fork-');
  t.after(() => scratch.remove());
  // sign-fork.c: signs, forks, the child signs, then the parent signs again.
  const program = compileTestProgram('sign-fork', scratch.dir);
  const path = join(scratch.dir, 'fake.sock');
  const s = signer(scratch.dir, path);
  const sign = answerWithSignature(s);
  // The connection (in accept order) each request came on.
  const ids = new Map<Socket, number>();
  const on: number[] = [];
  const keyd = await fakeKeyd(t, path, (socket, request) => {
    if (!ids.has(socket)) ids.set(socket, ids.size + 1);
    on.push(ids.get(socket)!);
    sign(socket, request);
  });
  const r = await runTool(program, [s.refFile], '', { env: { ...process.env, OPENSSL_CONF: s.conf }, timeoutMs: 30_000 });
  assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
  assert.equal(r.code, 0, r.stderr);
  const [signed, fds] = [r.stdout.split('\n').filter((l) => l.includes('signed')), r.stdout.split('\n').filter((l) => l.startsWith('fd '))];
  assert.deepEqual(signed, ['parent signed 1', 'child signed', 'parent signed 2'], r.stdout);
  // The parent's kept connection is SOCK_CLOEXEC: the program it executes does not inherit it.
  assert.deepEqual(fds.filter((l) => l.includes('socket:')), [], r.stdout);
  assert.ok(fds.some((l) => l.endsWith(': /dev/null')), `control: an inheritable descriptor is listed: ${r.stdout}`);
  // Shared, the two processes' frames would interleave on one socket, both numbering from the
  // same next request id, so that either could read the other's signature.
  assert.deepEqual(on, [1, 2, 1], 'the child signed on a connection of its own; the parent reused its own');
  assert.equal(keyd.connections, 2);
});
