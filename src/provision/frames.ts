import { LinearReassembler } from '../lib/reassembler.js';
import { ProvisionError } from './errors.js';

/**
 * Framing of the provisioning protocol inside TLS: a 4-byte big-endian length, then that many
 * bytes of UTF-8 JSON (one object). JSON because every message is small and rare and the
 * protocol is easier to audit; binary fields are base64. See docs/PROVISIONING.md.
 */
export const MAX_FRAME_BYTES = 1 << 20;

export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length > MAX_FRAME_BYTES) {
    throw new ProvisionError('PROVISION_FRAME_TOO_LARGE', `message of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  }
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  return Buffer.concat([header, body]);
}

/** Accumulates stream chunks and yields complete decoded frames; throws on oversize or bad JSON. */
export class FrameDecoder {
  /** Frames split across chunks are joined without re-copying per chunk (src/lib/reassembler.ts). */
  private readonly buffer = new LinearReassembler();

  push(chunk: Buffer): unknown[] {
    this.buffer.push(chunk);
    const messages: unknown[] = [];
    while (this.buffer.length >= 4) {
      const length = this.buffer.peek().readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) {
        throw new ProvisionError('PROVISION_FRAME_TOO_LARGE', `frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
      }
      if (this.buffer.length < 4 + length) break;
      const body = this.buffer.take(4 + length).subarray(4);
      let message: unknown;
      try {
        message = JSON.parse(body.toString('utf8'));
      } catch {
        throw new ProvisionError('PROVISION_BAD_REQUEST', 'frame is not valid JSON');
      }
      if (typeof message !== 'object' || message === null || Array.isArray(message)) {
        throw new ProvisionError('PROVISION_BAD_REQUEST', 'frame is not a JSON object');
      }
      messages.push(message);
    }
    return messages;
  }

  /** Bytes received but not yet part of a complete frame. */
  get pending(): number {
    return this.buffer.length;
  }
}
