/**
 * Growable byte writer. `vec(width, body)` writes a placeholder length prefix,
 * runs `body`, then patches the length in — so encoders never compute lengths by hand.
 * The initial capacity is a hint: any, 0 included, grows as needed.
 */
export class Writer {
  private buf: Uint8Array;
  private len = 0;

  constructor(initialCapacity = 256) {
    this.buf = new Uint8Array(initialCapacity);
  }

  get length(): number {
    return this.len;
  }

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    // At least 1: doubling a capacity of 0 (new Writer(0)) would stay 0 and loop forever.
    let cap = Math.max(this.buf.length, 1) * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.len++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.ensure(2);
    this.buf[this.len++] = (v >>> 8) & 0xff;
    this.buf[this.len++] = v & 0xff;
    return this;
  }

  u24(v: number): this {
    this.ensure(3);
    this.buf[this.len++] = (v >>> 16) & 0xff;
    this.buf[this.len++] = (v >>> 8) & 0xff;
    this.buf[this.len++] = v & 0xff;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf[this.len++] = (v >>> 24) & 0xff;
    this.buf[this.len++] = (v >>> 16) & 0xff;
    this.buf[this.len++] = (v >>> 8) & 0xff;
    this.buf[this.len++] = v & 0xff;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }

  /** Length-prefixed vector: the prefix is patched after `body` has written. */
  vec(width: 1 | 2 | 3, body: (w: this) => void): this {
    this.ensure(width);
    const at = this.len;
    this.len += width;
    body(this);
    const n = this.len - at - width;
    if (n >= 2 ** (8 * width)) throw new RangeError(`vector of ${n} bytes does not fit a ${width}-byte length`);
    for (let i = width - 1, v = n; i >= 0; i--, v >>>= 8) this.buf[at + i] = v & 0xff;
    return this;
  }

  /** Length-prefixed opaque bytes. */
  opaque(width: 1 | 2 | 3, b: Uint8Array): this {
    return this.vec(width, (w) => w.bytes(b));
  }

  /** A copy of the written bytes, as a Buffer (what sockets and node:crypto take). */
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }
}
