/**
 * A peer that closes right after its last record makes our next write fail (EPIPE or
 * ECONNRESET) synchronously inside the socket's uncork()/end(). TlsSocket runs those calls
 * without stack traces (socket.ts, withoutStackTraces): the error is still reported, with
 * its message, but Node does not capture and format frames for an expected failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { TlsSocket } from '../../src/tls/socket.js';
import { ed25519Identity, handshakeThroughPeer, makeOptions, until } from './connection-harness.js';

/** The TCP socket under a TlsSocket; once `gone`, every write fails as a reset peer's would. */
class ClosingPeer extends Duplex {
  readonly out: Buffer[] = [];
  gone = false;
  readonly remoteAddress = '127.0.0.1';
  readonly remotePort = 1;
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error) => void): void {
    if (this.gone) return done(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    this.out.push(chunk);
    done();
  }
  override _read(): void {}
  setTimeout(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
}

async function established(): Promise<{ peer: ClosingPeer; tls: TlsSocket; errors: Error[] }> {
  const peer = new ClosingPeer();
  const tls = new TlsSocket(peer as unknown as Socket, makeOptions(ed25519Identity(), { ticketCount: 0 }));
  const errors: Error[] = [];
  tls.on('tlsError', (err: Error) => errors.push(err));
  tls.on('error', () => undefined);
  await handshakeThroughPeer(peer, tls);
  return { peer, tls, errors };
}

const hasFrames = (err: Error) => /\n\s+at /.test(err.stack ?? '');

test('our close_notify to a peer that is gone: the EPIPE is reported, without stack frames; the stack limit is restored', async () => {
  const { peer, tls, errors } = await established();
  const limit = Error.stackTraceLimit;
  peer.gone = true;
  tls.end();
  await until(() => errors.length > 0);
  assert.equal((errors[0] as Error & { code?: string }).code, 'EPIPE');
  assert.equal(errors[0]!.message, 'write EPIPE');
  assert.equal(hasFrames(errors[0]!), false, errors[0]!.stack);
  assert.equal(Error.stackTraceLimit, limit);
});

test('control: the same failing write made outside TlsSocket carries stack frames', async () => {
  const { peer } = await established();
  peer.gone = true;
  const failed = new Promise<Error>((resolve) => peer.once('error', resolve));
  peer.write(Buffer.from('x'));
  assert.equal(hasFrames(await failed), true);
});
