import { randomBytesFromPool } from '../crypto/random-pool.js';
import { createCipheriv, createDecipheriv, randomBytes, type CipherGCM, type DecipherGCM } from 'node:crypto';

/**
 * Rotating keys that seal session tickets (RFC 8446 §4.6.1, self-encrypted tickets)
 * and HelloRetryRequest cookies (§4.2.2).
 *
 * A new AES-256-GCM key is made every `rotationMs`; older keys still open tickets
 * until `retainMs` has passed, so rotation never breaks resumption of a live ticket.
 * Keys exist only in memory and are never logged or exported.
 */
interface TicketKey {
  readonly id: number;
  readonly key: Buffer;
  readonly createdAt: number;
}

export interface TicketKeyRingOptions {
  /** How often a new sealing key is made. Default 1 hour. */
  rotationMs?: number;
  /** How long an old key still opens tickets. Default 8 hours (> the 2 h default ticket lifetime + rotation). */
  retainMs?: number;
  now?: () => number;
}

const ID_LENGTH = 4;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;

export class TicketKeyRing {
  private keys: TicketKey[] = [];
  private readonly rotationMs: number;
  private readonly retainMs: number;
  private readonly now: () => number;

  constructor(options: TicketKeyRingOptions = {}) {
    this.rotationMs = options.rotationMs ?? 3_600_000;
    this.retainMs = options.retainMs ?? 8 * 3_600_000;
    this.now = options.now ?? Date.now;
  }

  private current(): TicketKey {
    const now = this.now();
    const newest = this.keys[0];
    if (newest && now - newest.createdAt < this.rotationMs) return newest;
    const key: TicketKey = { id: randomBytes(ID_LENGTH).readUInt32BE(0), key: randomBytes(32), createdAt: now };
    this.keys = [key, ...this.keys.filter((k) => now - k.createdAt < this.retainMs)];
    return key;
  }

  /** Seals `plaintext`; `label` separates ticket and cookie uses of the same key. */
  seal(label: string, plaintext: Uint8Array): Buffer {
    const k = this.current();
    const head = Buffer.allocUnsafe(ID_LENGTH + IV_LENGTH);
    head.writeUInt32BE(k.id, 0);
    randomBytesFromPool(IV_LENGTH).copy(head, ID_LENGTH);
    const cipher = createCipheriv('aes-256-gcm', k.key, head.subarray(ID_LENGTH)) as CipherGCM;
    cipher.setAAD(Buffer.concat([Buffer.from(label, 'latin1'), head.subarray(0, ID_LENGTH)]));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([head, body, cipher.getAuthTag()]);
  }

  /** Opens what `seal` made; undefined when the key is unknown/retired or the bytes were altered. */
  open(label: string, sealed: Uint8Array): Buffer | undefined {
    if (sealed.length < ID_LENGTH + IV_LENGTH + TAG_LENGTH) return undefined;
    const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length);
    const id = buf.readUInt32BE(0);
    const now = this.now();
    const k = this.keys.find((x) => x.id === id && now - x.createdAt < this.retainMs);
    if (!k) return undefined;
    const decipher = createDecipheriv('aes-256-gcm', k.key, buf.subarray(ID_LENGTH, ID_LENGTH + IV_LENGTH)) as DecipherGCM;
    decipher.setAAD(Buffer.concat([Buffer.from(label, 'latin1'), buf.subarray(0, ID_LENGTH)]));
    decipher.setAuthTag(buf.subarray(buf.length - TAG_LENGTH));
    try {
      return Buffer.concat([decipher.update(buf.subarray(ID_LENGTH + IV_LENGTH, buf.length - TAG_LENGTH)), decipher.final()]);
    } catch {
      return undefined;
    }
  }
}
