/**
 * keyd's replies are untrusted input for the client (the edge's side of docs/PROTOCOL.md):
 * a reply of the wrong opcode, one for an unknown or already answered request id, an
 * undecodable error or 'changed' frame each fail at most the request they answer and leave
 * the connection usable; a frame header over the maximum, or keyd closing mid-reply, fails
 * every pending request at once with KEYD_UNAVAILABLE. Nothing is left pending.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { KeydClient, KeydError } from '../../src/keyd/client.js';
import { FrameDecoder, MAX_PAYLOAD, Opcode, encodeFrame, encodePing, type Frame } from '../../src/keyd/protocol.js';
import { scratch } from './fixtures.js';

/** A stand-in keyd that hands each request frame to `answer` with the connection's socket. */
async function hostileKeyd(answer: (frame: Frame, sock: Socket) => void) {
  const t = await scratch('keyd-replies-');
  const path = join(t.dir, 'hostile.sock');
  const socks: Socket[] = [];
  const server = createServer((sock) => {
    socks.push(sock);
    const decoder = new FrameDecoder();
    sock.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) answer(frame, sock);
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return {
    path,
    async close() {
      for (const s of socks) s.destroy();
      await new Promise((r) => server.close(r));
      await t.cleanup();
    },
  };
}

const pong = encodePing(new Uint8Array(0));

function pendingCount(c: KeydClient): number {
  return (c as unknown as { pending: Map<number, unknown> }).pending.size;
}

function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'ok',
    (e: KeydError) => e.code,
  );
}

test('client: a hostile reply fails only the request it answers; the connection stays usable', { timeout: 20_000 }, async () => {
  let n = 0;
  const keyd = await hostileKeyd((frame, sock) => {
    n++;
    if (n === 1) {
      // An identity reply (0x82), with a payload a ping reply would decode, for a ping.
      sock.write(encodeFrame(Opcode.identity | Opcode.replyFlag, frame.requestId, pong));
    } else if (n === 2) {
      // Replies for no request, a 'changed' push with garbage, then the answer, twice.
      sock.write(encodeFrame(Opcode.ping | Opcode.replyFlag, 0xfffffff0, pong));
      sock.write(encodeFrame(Opcode.changed, 0, Buffer.from([0xff, 0xff, 1])));
      sock.write(encodeFrame(Opcode.ping | Opcode.replyFlag, frame.requestId, pong));
      sock.write(encodeFrame(Opcode.ping | Opcode.replyFlag, frame.requestId, pong));
    } else if (n === 3) {
      sock.write(encodeFrame(Opcode.error, frame.requestId, Buffer.from([0x00, 0x01])));
    } else {
      sock.write(encodeFrame(Opcode.ping | Opcode.replyFlag, frame.requestId, pong));
    }
  });
  const c = await KeydClient.connect({ socketPath: keyd.path }, { requestTimeoutMs: 30_000 });
  const changes: unknown[] = [];
  c.on('change', (change) => changes.push(change));
  try {
    const wrongOpcode = await c.ping().then(
      () => 'accepted',
      (e: KeydError) => e,
    );
    assert.ok(wrongOpcode instanceof KeydError, 'a ping answered with an identity reply is refused');
    assert.equal(wrongOpcode.code, 'KEYD_BAD_REQUEST');
    assert.match(wrongOpcode.message, /answered opcode 0x1 with opcode 0x82/);
    assert.equal(await outcome(c.ping()), 'ok', 'the stray, garbage and duplicate frames around it change nothing');
    assert.deepEqual(changes, [{ names: [] }], 'an undecodable changed push still means "drop everything cached"');
    assert.equal(await outcome(c.ping()), 'KEYD_BAD_REQUEST', 'an undecodable error frame');
    assert.equal(await outcome(c.ping()), 'ok', 'positive control: the connection still serves');
    assert.equal(c.closed, false);
    assert.equal(pendingCount(c), 0);
  } finally {
    c.close();
    await keyd.close();
  }
});

test('client: a frame over the maximum or keyd closing mid-reply fails every pending request with KEYD_UNAVAILABLE', { timeout: 20_000 }, async () => {
  for (const how of ['oversized', 'mid-reply'] as const) {
    const keyd = await hostileKeyd((frame, sock) => {
      if (frame.requestId !== 2) return; // answer once both requests are there
      const reply = encodeFrame(Opcode.ping | Opcode.replyFlag, frame.requestId, pong);
      if (how === 'oversized') reply.writeUInt32BE(MAX_PAYLOAD + 1, 8);
      // Oversized: the header alone is refused. Mid-reply: all but the payload's last byte.
      sock.write(how === 'oversized' ? reply.subarray(0, 12) : reply.subarray(0, reply.length - 1));
      if (how === 'mid-reply') setImmediate(() => sock.destroy());
    });
    const c = await KeydClient.connect({ socketPath: keyd.path }, { requestTimeoutMs: 30_000 });
    try {
      const closed = new Promise((r) => c.once('close', r));
      const outcomes = await Promise.all([outcome(c.ping()), outcome(c.ping())]);
      assert.deepEqual(outcomes, ['KEYD_UNAVAILABLE', 'KEYD_UNAVAILABLE'], how);
      await closed;
      assert.equal(c.closed, true, how);
      assert.equal(pendingCount(c), 0, how);
      assert.equal(await outcome(c.ping()), 'KEYD_UNAVAILABLE', `${how}: a new request fails at once`);
    } finally {
      c.close();
      await keyd.close();
    }
  }
});

test('client: a changed frame carrying a request id answers that request (the wrong opcode); only id 0 is a change notice', { timeout: 20_000 }, async () => {
  let n = 0;
  const keyd = await hostileKeyd((frame, sock) => {
    n++;
    // First: a 'changed' frame under the ping's id. Then a real notice (id 0) and the answer.
    if (n === 1) sock.write(encodeFrame(Opcode.changed, frame.requestId, Buffer.from([0, 0])));
    else {
      sock.write(encodeFrame(Opcode.changed, 0, Buffer.from([0, 0])));
      sock.write(encodeFrame(Opcode.ping | Opcode.replyFlag, frame.requestId, pong));
    }
  });
  const c = await KeydClient.connect({ socketPath: keyd.path }, { requestTimeoutMs: 30_000 });
  const changes: unknown[] = [];
  c.on('change', (change) => changes.push(change));
  try {
    await assert.rejects(c.ping(), (e: KeydError) => e.code === 'KEYD_BAD_REQUEST' && /answered opcode 0x1 with opcode 0x40/.test(e.message));
    assert.deepEqual(changes, [], 'not taken as a notice');
    // Control: the notice with id 0 is one, and the connection still serves.
    assert.equal(await outcome(c.ping()), 'ok');
    assert.deepEqual(changes, [{ names: [] }]);
    assert.equal(pendingCount(c), 0);
  } finally {
    c.close();
    await keyd.close();
  }
});

test('client: a request keyd never answers fails with KEYD_TIMEOUT after requestTimeoutMs; the connection keeps serving', { timeout: 20_000 }, async () => {
  let n = 0;
  const keyd = await hostileKeyd((frame, sock) => {
    if (++n > 1) sock.write(encodeFrame(Opcode.ping | Opcode.replyFlag, frame.requestId, pong)); // the first is never answered
  });
  const c = await KeydClient.connect({ socketPath: keyd.path }, { requestTimeoutMs: 200 });
  try {
    await assert.rejects(c.ping(), (e: KeydError) => e.code === 'KEYD_TIMEOUT' && /did not answer within 200 ms/.test(e.message));
    assert.equal(pendingCount(c), 0);
    assert.equal(await outcome(c.ping()), 'ok', 'control: answered requests still complete');
    assert.equal(c.closed, false);
  } finally {
    c.close();
    await keyd.close();
  }
});
