/**
 * A byte string that does not decode: a short read, a vector length outside its bounds,
 * or bytes left over. Neutral on purpose: the TLS engine maps it to the decode_error
 * alert (RFC 8446 §6.2: "a message could not be decoded because some field was out of
 * the specified range or the length of the message was incorrect"), keyd to its own
 * bad-request and store errors.
 */
export class DecodeError extends Error {
  readonly code = 'DECODE_ERROR';
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

/**
 * Bounds-checked reader over a byte slice (RFC 8446 §3 presentation language), shared
 * by the TLS engine, keyd's protocol and its store.
 *
 * Every short read, bad vector length or leftover byte throws `DecodeError`.
 * `sub(width)` hands out a bounded sub-reader for a length-prefixed vector, so a
 * nested decoder cannot read past its vector; `end()` asserts nothing is left.
 */
export class Reader {
  private offset: number;
  private readonly limit: number;

  constructor(
    private readonly bytes: Uint8Array,
    readonly what = 'message',
    start = 0,
    end = bytes.length,
  ) {
    this.offset = start;
    this.limit = end;
  }

  get remaining(): number {
    return this.limit - this.offset;
  }

  get position(): number {
    return this.offset;
  }

  private need(n: number, field: string): void {
    if (this.limit - this.offset < n) {
      throw new DecodeError(`${this.what}: truncated ${field}`);
    }
  }

  u8(field = 'u8'): number {
    this.need(1, field);
    return this.bytes[this.offset++]!;
  }

  u16(field = 'u16'): number {
    this.need(2, field);
    const b = this.bytes;
    const v = (b[this.offset]! << 8) | b[this.offset + 1]!;
    this.offset += 2;
    return v;
  }

  u24(field = 'u24'): number {
    this.need(3, field);
    const b = this.bytes;
    const v = (b[this.offset]! << 16) | (b[this.offset + 1]! << 8) | b[this.offset + 2]!;
    this.offset += 3;
    return v;
  }

  u32(field = 'u32'): number {
    this.need(4, field);
    const b = this.bytes;
    const v =
      ((b[this.offset]! << 24) >>> 0) +
      ((b[this.offset + 1]! << 16) | (b[this.offset + 2]! << 8) | b[this.offset + 3]!);
    this.offset += 4;
    return v;
  }

  /** Fixed-length field; returns a view (no copy). */
  bytesN(n: number, field = 'bytes'): Uint8Array {
    this.need(n, field);
    const v = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return v;
  }

  /** Rest of the reader; returns a view. */
  rest(): Uint8Array {
    const v = this.bytes.subarray(this.offset, this.limit);
    this.offset = this.limit;
    return v;
  }

  private length(width: 1 | 2 | 3, field: string): number {
    return width === 1 ? this.u8(field) : width === 2 ? this.u16(field) : this.u24(field);
  }

  /**
   * Length-prefixed opaque vector `opaque field<min..max>`; returns a view.
   * Lengths outside [min, max] are a DecodeError.
   */
  vec(width: 1 | 2 | 3, min: number, max: number, field: string): Uint8Array {
    const len = this.length(width, `${field} length`);
    if (len < min || len > max) {
      throw new DecodeError(`${this.what}: ${field} length ${len} outside [${min}, ${max}]`);
    }
    return this.bytesN(len, field);
  }

  /** Sub-reader over a length-prefixed vector. */
  sub(width: 1 | 2 | 3, min: number, max: number, field: string): Reader {
    const len = this.length(width, `${field} length`);
    if (len < min || len > max) {
      throw new DecodeError(`${this.what}: ${field} length ${len} outside [${min}, ${max}]`);
    }
    this.need(len, field);
    const r = new Reader(this.bytes, `${this.what}.${field}`, this.offset, this.offset + len);
    this.offset += len;
    return r;
  }

  /** Vector of u16 values (e.g. cipher suites, groups, signature schemes). */
  u16List(width: 1 | 2, min: number, max: number, field: string): number[] {
    const r = this.sub(width, min, max, field);
    if (r.remaining % 2 !== 0) {
      throw new DecodeError(`${this.what}: ${field} has odd length`);
    }
    const out: number[] = [];
    while (r.remaining > 0) out.push(r.u16(field));
    return out;
  }

  /** Asserts the whole input was consumed (trailing bytes are a decode_error). */
  end(): void {
    if (this.offset !== this.limit) {
      throw new DecodeError(`${this.what}: ${this.limit - this.offset} trailing bytes`);
    }
  }
}
