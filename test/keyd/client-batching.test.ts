/**
 * KeydClient sends the requests made in one turn of the event loop in ONE write: requests
 * made from different callbacks of the same turn (here: across process.nextTick, as the
 * edge makes them from different connections' callbacks) share it, so keyd reads them
 * once. Observed on the client's socket (each write call counted) against a stand-in keyd
 * that answers pings.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { KeydClient } from '../../src/keyd/client.js';
import { FrameDecoder, Opcode, encodeFrame } from '../../src/keyd/protocol.js';
import { scratch } from './fixtures.js';

async function pingServer(path: string): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    const decoder = new FrameDecoder();
    socket.on('data', (chunk: Buffer) => {
      for (const f of decoder.push(chunk)) socket.write(encodeFrame(f.opcode | Opcode.replyFlag, f.requestId, f.payload));
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Counts the frames in each write call the client makes on its socket. */
function countWrites(client: KeydClient): number[] {
  const socket = (client as unknown as { socket: Socket }).socket;
  const framesPerWrite: number[] = [];
  const write = socket.write.bind(socket) as (data: Uint8Array) => boolean;
  socket.write = ((data: Uint8Array) => {
    framesPerWrite.push(new FrameDecoder().push(data).length);
    return write(data);
  }) as typeof socket.write;
  return framesPerWrite;
}

test('requests made in one turn, across nextTick callbacks, leave in one write', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const server = await pingServer(join(s.dir, 'k.sock'));
  const client = await KeydClient.connect({ socketPath: join(s.dir, 'k.sock') });
  try {
    const writes = countWrites(client);
    const replies: Promise<void>[] = [client.ping()];
    await new Promise<void>((resolve) => process.nextTick(resolve));
    replies.push(client.ping());
    await new Promise<void>((resolve) => process.nextTick(resolve));
    replies.push(client.ping());
    await Promise.all(replies);
    assert.deepEqual(writes, [3], 'three requests, one write');

    // A request made in a later turn goes in its own write.
    await client.ping();
    await new Promise<void>((resolve) => setImmediate(resolve));
    await client.ping();
    assert.deepEqual(writes, [3, 1, 1]);
  } finally {
    client.close();
    await server.close();
    await s.cleanup();
  }
});

test('requests made before the connection drops fail with KEYD_UNAVAILABLE, never written', { timeout: 20_000 }, async () => {
  const s = await scratch();
  const server = await pingServer(join(s.dir, 'k.sock'));
  const client = await KeydClient.connect({ socketPath: join(s.dir, 'k.sock') });
  try {
    const writes = countWrites(client);
    const pending = client.ping();
    client.close();
    await assert.rejects(pending, { code: 'KEYD_UNAVAILABLE' });
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, []);
  } finally {
    await server.close();
    await s.cleanup();
  }
});
