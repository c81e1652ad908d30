import { connect, type Socket, type TcpNetConnectOpts } from 'node:net';
import type { Duplex } from 'node:stream';
import { MAX_PLAINTEXT } from './record/protection.js';

/**
 * Every upstream made by `connectForRelay` reads into this one buffer (net's `onread`):
 * no 64 KiB buffer allocated per read and no readable-stream push per chunk (measured
 * against per-read buffers: 0.87–0.96× the CPU per megabyte down, docs/BENCHMARKS.md). One buffer
 * serves the whole process because each read is consumed before its callback returns:
 * sealed for the client at once (the ciphertext is a new buffer), or copied into the
 * turn's batch.
 */
const UPSTREAM_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** Where the reads of one `connectForRelay` upstream go: its relay, once attached. */
class UpstreamReads {
  relay: UpstreamRelay | undefined;
  /** Reads before the relay attached (the relay attaches in the turn of the connect, so normally none), copied. */
  early: Buffer[] = [];
  /** The relay stopped relaying upstream → client: later reads are dropped (the socket is paused). */
  closed = false;

  /** net's onread callback; false stops reading (until `resume()`). */
  readonly onRead = (bytesRead: number, buffer: Uint8Array): boolean => {
    if (this.closed) return false;
    const chunk = Buffer.from(buffer.buffer, buffer.byteOffset, bytesRead);
    if (this.relay) {
      this.relay.fromUpstream(chunk, true);
      return true;
    }
    // No relay yet: keep a copy and read no more until it attaches (one read at most).
    this.early.push(Buffer.from(chunk));
    return false;
  };
}

const upstreamReads = new WeakMap<Socket, UpstreamReads>();

/**
 * A TCP connection to an upstream whose data a relay will carry (TlsSocket.relayTo): its
 * reads land in one shared buffer instead of a new one per read. Before `relayTo`, nothing
 * may listen to its 'data' (there is none: `onread` replaces the readable stream's data).
 */
export function connectForRelay(options: TcpNetConnectOpts): Socket {
  const reads = new UpstreamReads();
  const socket = connect({ ...options, onread: { buffer: UPSTREAM_READ_BUFFER, callback: reads.onRead } });
  upstreamReads.set(socket, reads);
  return socket;
}

/**
 * What the relay needs of the TLS side (the TlsSocket in socket.ts): the Duplex for the
 * connection's life cycle (its 'end', 'finish', 'close', end() and destroy()), and three
 * doors around the stream layer for the data itself.
 */
export interface RelayHost extends Duplex {
  /** The client's TCP socket: its 'drain' and writableNeedDrain say when the client keeps up. */
  readonly rawSocket: Socket;
  /** Seals application data for the client now (TlsServerConnection.write); throws when the connection cannot send. */
  sealForClient(data: Uint8Array): void;
  /**
   * Keeps the client's output corked until the end of this turn of the event loop, when
   * `sealBatch` runs just before the uncork. False when the output is no longer open
   * (nothing to batch for: seal at once, and let the connection say what is wrong).
   */
  holdOutputForTurn(): boolean;
  /** Stop (true) or resume (false) reading the client because the upstream does not keep up. */
  setUpstreamBackpressure(full: boolean): void;
}

/**
 * The edge's data path between one TLS connection and its upstream TCP socket, without
 * the stream layers between them (docs/BENCHMARKS.md, profiles: Duplex.push → pipe →
 * net.Socket.write and back through Duplex._write was the bulk path's largest JavaScript
 * cost after the cipher objects):
 *
 * - client → upstream: each decrypted record goes straight to `upstream.write` (the socket
 *   adapter corks the upstream while it feeds the connection one client read, so the
 *   records of that read leave in one writev); when the upstream's buffer is full the
 *   client is not read until the upstream's 'drain';
 * - upstream → client: what the upstream sends in one turn is joined into records of up
 *   to 2^14 bytes (one AEAD call and 22 bytes of overhead per record, RFC 8446 §5.2) and
 *   sealed before the turn's single writev to the client; chunks of 2^14 bytes or more go
 *   as they are, without a copy; while the client's socket needs 'drain' the upstream is
 *   not read.
 *
 * The ends and failures behave as the two pipes they replace did: the client's
 * close_notify or FIN (the Duplex's 'end') ends the upstream; the upstream's end ends the
 * Duplex (close_notify + FIN after what was relayed); the upstream failing or closing
 * stops the client → upstream direction (the client's data then waits in the paused
 * Duplex, bounded by its high-water mark, as after an unpipe); the Duplex finishing or
 * closing stops reading the upstream. The upstream socket's life is its owner's: the edge
 * destroys it when the Duplex closes (src/edge/proxy.ts, docs/EDGE.md).
 */
export class UpstreamRelay {
  /** Upstream bytes of this turn not sealed yet (all shorter than 2^14 together). */
  private batch: Buffer[] = [];
  private batchSize = 0;
  /** Client → upstream is live (until the upstream fails, closes or finishes). */
  private clientToUpstream = true;
  /** Upstream → client is live (until the TLS side finishes or closes). */
  private upstreamToClient = true;
  /** The client is not read until the upstream's 'drain'. */
  private waitingForUpstream = false;
  /** The upstream is not read until the client's socket's 'drain'. */
  private waitingForClient = false;
  /** The upstream's reads when it was made by connectForRelay (else its 'data' events). */
  private readonly reads: UpstreamReads | undefined;

  constructor(
    private readonly host: RelayHost,
    readonly upstream: Socket,
  ) {
    const reads = upstreamReads.get(upstream);
    this.reads = reads;
    if (reads) {
      reads.relay = this;
      for (const chunk of reads.early.splice(0)) this.fromUpstream(chunk, false);
      if (!this.waitingForClient) upstream.resume(); // reading stopped at an early read
    } else upstream.on('data', this.onUpstreamData);
    upstream.on('end', this.onUpstreamEnd);
    // Before the edge's own 'error' listener, as pipe() did: the edge ends the TLS side
    // on an upstream error, and nothing more may be written to the failed upstream.
    upstream.prependListener('error', this.stopClientToUpstream);
    upstream.once('close', this.stopClientToUpstream);
    upstream.once('finish', this.stopClientToUpstream);
    host.once('end', this.onClientEnd);
    host.once('finish', this.stopUpstreamToClient);
    host.once('close', this.stopUpstreamToClient);
    // Data the client sent before the relay started (e.g. with its Finished) goes first.
    for (let early: Buffer | null; (early = host.read() as Buffer | null) !== null; ) this.fromClient(early);
    // Flowing with nothing pushed: the Duplex only carries the client's end ('end').
    host.resume();
  }

  /** Whether decrypted client data is relayed (else the Duplex buffers it, paused). */
  get relaysClient(): boolean {
    return this.clientToUpstream;
  }

  /** One decrypted record from the client. */
  fromClient(data: Buffer): void {
    if (this.upstream.write(data) || this.waitingForUpstream) return;
    this.waitingForUpstream = true;
    this.host.setUpstreamBackpressure(true);
    this.upstream.once('drain', this.onUpstreamDrain);
  }

  /** Seals what this turn's upstream reads left in the batch (the end of the turn, or before our close_notify). */
  sealBatch(): void {
    const size = this.batchSize;
    if (size === 0) return;
    const batch = this.batch;
    this.batch = [];
    this.batchSize = 0;
    this.seal(batch.length === 1 ? batch[0]! : Buffer.concat(batch, size));
  }

  private seal(data: Buffer): void {
    if (this.host.destroyed) return;
    try {
      this.host.sealForClient(data);
    } catch (err) {
      // As a failed _write did: the TLS side is destroyed with the error (the edge then destroys the upstream).
      this.host.destroy(err as Error);
    }
  }

  private readonly onUpstreamData = (chunk: Buffer): void => this.fromUpstream(chunk, false);

  /**
   * One read from the upstream. `transient`: the bytes live in the shared read buffer
   * and are overwritten by the next read, so whatever waits for the end of the turn is
   * copied first.
   */
  fromUpstream(chunk: Buffer, transient: boolean): void {
    if (this.batchSize + chunk.length > MAX_PLAINTEXT) this.sealBatch();
    if (chunk.length >= MAX_PLAINTEXT || (this.batchSize === 0 && !this.host.holdOutputForTurn())) {
      this.seal(chunk);
    } else {
      this.batch.push(transient ? Buffer.from(chunk) : chunk);
      this.batchSize += chunk.length;
    }
    const raw = this.host.rawSocket;
    if (raw.writableNeedDrain && !this.waitingForClient && this.upstreamToClient) {
      this.waitingForClient = true;
      this.upstream.pause();
      raw.once('drain', this.onClientDrain);
    }
  }

  private readonly onUpstreamEnd = (): void => {
    this.sealBatch();
    // Duplex.end(): close_notify + FIN after what was relayed (socket.ts, _final).
    if (!this.host.destroyed && !this.host.writableEnded) this.host.end();
  };

  private readonly onClientDrain = (): void => {
    this.waitingForClient = false;
    if (this.upstreamToClient) this.upstream.resume();
  };

  private readonly onUpstreamDrain = (): void => {
    this.waitingForUpstream = false;
    this.host.setUpstreamBackpressure(false);
  };

  /** The client's close_notify or FIN: the upstream gets our FIN after what was relayed. */
  private readonly onClientEnd = (): void => {
    if (this.clientToUpstream) this.upstream.end();
  };

  private readonly stopClientToUpstream = (): void => {
    if (!this.clientToUpstream) return;
    this.clientToUpstream = false;
    this.host.off('end', this.onClientEnd);
    if (this.waitingForUpstream) {
      this.waitingForUpstream = false;
      this.upstream.off('drain', this.onUpstreamDrain);
      this.host.setUpstreamBackpressure(false);
    }
    // What the client sends from now on waits in the Duplex (socket.ts pushes it), which
    // stops reading the client at its high-water mark.
    this.host.pause();
  };

  private readonly stopUpstreamToClient = (): void => {
    if (!this.upstreamToClient) return;
    this.upstreamToClient = false;
    this.batch = [];
    this.batchSize = 0;
    this.upstream.off('data', this.onUpstreamData);
    if (this.reads) this.reads.closed = true;
    this.upstream.off('end', this.onUpstreamEnd);
    if (this.waitingForClient) {
      this.waitingForClient = false;
      this.host.rawSocket.off('drain', this.onClientDrain);
    }
    this.upstream.pause();
  };
}
