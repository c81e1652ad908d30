import { TlsAlert } from '../alert.js';
import { ContentType } from '../wire/codepoints.js';
import { MAX_CIPHERTEXT } from './protection.js';

export interface RawRecord {
  readonly type: number;
  readonly version: number;
  /** The 5 header bytes (AEAD additional data for protected records). */
  readonly header: Buffer;
  readonly body: Buffer;
}

const KNOWN_TYPES = new Set<number>([
  ContentType.change_cipher_spec,
  ContentType.alert,
  ContentType.handshake,
  ContentType.application_data,
]);

/**
 * Splits the byte stream into TLSPlaintext/TLSCiphertext records (RFC 8446 §5.1).
 * Checks only what holds for every record: a known content type and a length
 * within 2^14 + 256 (record_overflow, §5.2). Stricter per-state limits are the
 * connection's job.
 */
export class Deframer {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(data: Buffer): void {
    if (data.length === 0) return;
    this.chunks.push(data);
    this.buffered += data.length;
  }

  get pending(): number {
    return this.buffered;
  }

  /**
   * The first chunk, holding at least `n` bytes. When a record spans reads, only its own
   * bytes (at most 5 + 2^14 + 256) are joined, not everything buffered: with 64 KiB reads
   * and 16 KiB records, joining all of it copied about every byte received once more.
   */
  private peek(n: number): Buffer {
    const chunks = this.chunks;
    if (chunks[0]!.length >= n) return chunks[0]!;
    const joined = Buffer.allocUnsafe(n);
    let filled = 0;
    let used = 0;
    while (filled < n) {
      const chunk = chunks[used]!;
      const take = Math.min(chunk.length, n - filled);
      chunk.copy(joined, filled, 0, take);
      filled += take;
      if (take < chunk.length) chunks[used] = chunk.subarray(take);
      else used++;
    }
    chunks.splice(0, used, joined);
    return joined;
  }

  /** The next complete record, or undefined when more bytes are needed. */
  next(): RawRecord | undefined {
    if (this.buffered < 5) return undefined;
    const head = this.peek(5);
    const type = head[0]!;
    const version = head.readUInt16BE(1);
    const length = head.readUInt16BE(3);
    if (!KNOWN_TYPES.has(type)) {
      throw new TlsAlert('unexpected_message', `record of unknown content type ${type}`);
    }
    if (length > MAX_CIPHERTEXT) {
      throw new TlsAlert('record_overflow', `record of ${length} bytes exceeds 2^14 + 256`);
    }
    if (this.buffered < 5 + length) return undefined;
    const first = this.peek(5 + length);
    const header = first.subarray(0, 5);
    const body = first.subarray(5, 5 + length);
    if (first.length === 5 + length) this.chunks.shift();
    else this.chunks[0] = first.subarray(5 + length);
    this.buffered -= 5 + length;
    return { type, version, header, body };
  }
}
