/**
 * Linear reassembly of length-prefixed messages from a byte stream (TLS handshake messages
 * across records, keyd frames, provisioning frames).
 *
 * The naive way — `Buffer.concat([buffered, chunk])` on every chunk — copies everything
 * buffered again for each arriving piece: a message of n bytes sent one byte at a time
 * costs n²/2 byte copies (a 125 KB ClientHello in 1-byte records: ~8·10⁹). Here:
 *
 * - A chunk that arrives while nothing is buffered is kept by reference (no copy); the
 *   common case, a whole message in one chunk, never copies at all.
 * - Once pieces must be joined, they go into one owned buffer that doubles when full,
 *   so every byte is copied once on arrival and at most about twice more over all the
 *   doublings: at most 3n bytes copied and O(log n) allocations per message.
 *
 * Bytes handed out by `take` are never written again (the buffer is only appended to
 * past them, or replaced), so callers may keep them after later pushes.
 */

export interface ReassemblerStats {
  /** Bytes copied (joining pieces and growing the buffer). */
  copiedBytes: number;
  /** Buffers allocated for joining. */
  allocations: number;
}

/** The smallest joining buffer: small pieces of small messages need not reallocate at once. */
const MIN_CAPACITY = 1024;

export class LinearReassembler {
  /** Where the pending bytes live: a borrowed chunk or the owned joining buffer. */
  private store: Buffer | undefined;
  /** Whether `store` is ours (may be appended to past `end`). */
  private owned = false;
  private start = 0;
  private end = 0;
  readonly stats: ReassemblerStats = { copiedBytes: 0, allocations: 0 };

  /** Bytes buffered and not yet taken. */
  get length(): number {
    return this.end - this.start;
  }

  push(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0) return;
    if (this.end === this.start) {
      // Nothing pending: borrow the chunk.
      this.store = chunk;
      this.owned = false;
      this.start = 0;
      this.end = n;
      return;
    }
    const pending = this.end - this.start;
    if (this.owned && this.store!.length - this.end >= n) {
      chunk.copy(this.store!, this.end);
      this.stats.copiedBytes += n;
      this.end += n;
      return;
    }
    // Move what is pending into a new buffer with room to grow; the old one is left as it
    // was, so views handed out earlier stay valid.
    const capacity = Math.max(MIN_CAPACITY, 2 * (pending + n));
    const next = Buffer.allocUnsafe(capacity);
    this.stats.allocations++;
    this.store!.copy(next, 0, this.start, this.end);
    chunk.copy(next, pending);
    this.stats.copiedBytes += pending + n;
    this.store = next;
    this.owned = true;
    this.start = 0;
    this.end = pending + n;
  }

  /** The byte at `offset` from the start of the pending bytes (offset < length). */
  byteAt(offset: number): number {
    return this.store![this.start + offset]!;
  }

  /** The pending bytes as one contiguous view (not copied; valid until the next push). */
  peek(): Buffer {
    return this.store ? this.store.subarray(this.start, this.end) : EMPTY;
  }

  /** Removes and returns the first `n` pending bytes (n ≤ length) as one contiguous view, not copied. */
  take(n: number): Buffer {
    if (n > this.end - this.start) throw new RangeError(`take(${n}) with only ${this.end - this.start} bytes pending`);
    if (n === 0) return EMPTY;
    const out = this.store!.subarray(this.start, this.start + n);
    this.start += n;
    if (this.start === this.end) this.reset();
    return out;
  }

  /** Drops everything pending. */
  reset(): void {
    this.store = undefined;
    this.owned = false;
    this.start = 0;
    this.end = 0;
  }
}

const EMPTY = Buffer.alloc(0);
