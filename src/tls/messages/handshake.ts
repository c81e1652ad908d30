import { Writer } from '../../lib/writer.js';

/** Handshake message framing (RFC 8446 §4): msg_type u8, length u24, body. */
export function encodeHandshake(type: number, body: (w: Writer) => void, capacity = 256): Buffer {
  const w = new Writer(capacity);
  w.u8(type);
  w.vec(3, body);
  return w.finish();
}

export interface HandshakeMessage {
  readonly type: number;
  readonly body: Buffer;
  /** Header + body, exactly as received: what goes into the transcript. */
  readonly raw: Buffer;
}
