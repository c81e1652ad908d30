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
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): unknown[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const messages: unknown[] = [];
    while (this.buffered.length >= 4) {
      const length = this.buffered.readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) {
        throw new ProvisionError('PROVISION_FRAME_TOO_LARGE', `frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
      }
      if (this.buffered.length < 4 + length) break;
      const body = this.buffered.subarray(4, 4 + length);
      this.buffered = this.buffered.subarray(4 + length);
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
}
