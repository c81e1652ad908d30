/**
 * Waits until the far end of `socket` is gone for good, seen from this end: FIN (if it
 * had not come yet), then a reset for what this end writes (data after the application's
 * close, RFC 9293 §3.6.1), which fails the next write: 'close'. A far end that is still
 * open takes every write. Each probe waits for the previous one's callback; loopback
 * delivers the reset before write() returns, so the second write fails; the cap only turns
 * "still open" into a failure instead of a hang. No timers.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';

const MAX_PROBES = 1000;

export async function peerClosed(socket: Socket): Promise<void> {
  // Plain listeners: events.once would reject on the 'error' (EPIPE, ECONNRESET) expected here.
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  if (!socket.readableEnded) {
    const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
    socket.resume();
    await Promise.race([ended, closed]);
  }
  let probes = 0;
  const probe = (err?: Error | null): void => {
    if (err || socket.destroyed) return;
    if (++probes > MAX_PROBES) {
      socket.destroy();
      return;
    }
    socket.write('late answer', probe);
  };
  probe();
  await closed;
  assert.ok(probes <= MAX_PROBES, `the far end took ${MAX_PROBES} writes: it is still open`);
}
