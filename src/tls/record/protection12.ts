import { createCipheriv, createDecipheriv, type CipherGCM, type DecipherGCM } from 'node:crypto';
import { TlsAlert } from '../alert.js';
import type { Suite12Info } from '../crypto/suites12.js';

const TAG_LENGTH = 16;
const EXPLICIT_NONCE_LENGTH = 8;

/**
 * One direction of TLS 1.2 AEAD record protection (RFC 5246 §6.2.3.3): the content type
 * stays in the record header (no inner type, no padding), and the additional data is
 * seq_num(8) + type(1) + version(2) + plaintext length(2).
 *
 * The nonce differs by AEAD:
 * - AES-GCM (RFC 5288 §3): 4-byte salt from the key block + an 8-byte explicit nonce sent
 *   in front of each record. We send the sequence number, which never repeats under one key
 *   (RFC 5288 §3 allows it; nonce reuse would break GCM).
 * - ChaCha20-Poly1305 (RFC 7905 §2): the 12-byte IV xor the sequence number, nothing sent.
 */
export class RecordProtection12 {
  private sequence = 0n;
  private readonly explicitNonce: boolean;

  constructor(
    readonly suite: Suite12Info,
    private readonly key: Buffer,
    private readonly iv: Buffer,
  ) {
    this.explicitNonce = suite.fixedIvLength === 4;
  }

  /** The sequence number of the next record, then advance it (RFC 5246 §6.1: it never wraps). */
  private nextSequence(): bigint {
    const seq = this.sequence;
    if (seq >= 0xffffffffffffffffn) throw new TlsAlert('internal_error', 'record sequence number exhausted');
    return seq;
  }

  private nonce(seq: bigint, explicit: Uint8Array | undefined): Buffer {
    if (explicit) return Buffer.concat([this.iv, explicit]);
    const nonce = Buffer.from(this.iv);
    const hi = Number(seq >> 32n);
    const lo = Number(seq & 0xffffffffn);
    nonce.writeUInt32BE((nonce.readUInt32BE(4) ^ hi) >>> 0, 4);
    nonce.writeUInt32BE((nonce.readUInt32BE(8) ^ lo) >>> 0, 8);
    return nonce;
  }

  private static additionalData(seq: bigint, type: number, length: number): Buffer {
    const ad = Buffer.allocUnsafe(13);
    ad.writeBigUInt64BE(seq, 0);
    ad[8] = type;
    ad[9] = 3;
    ad[10] = 3;
    ad.writeUInt16BE(length, 11);
    return ad;
  }

  /** Encrypts one record; returns header + (explicit nonce) + ciphertext + tag. */
  seal(contentType: number, content: Uint8Array): Buffer {
    const seq = this.nextSequence();
    const explicitLength = this.explicitNonce ? EXPLICIT_NONCE_LENGTH : 0;
    const recordLength = explicitLength + content.length + TAG_LENGTH;
    const out = Buffer.allocUnsafe(5 + recordLength);
    out[0] = contentType;
    out[1] = 3;
    out[2] = 3;
    out.writeUInt16BE(recordLength, 3);
    let explicit: Buffer | undefined;
    if (this.explicitNonce) {
      out.writeBigUInt64BE(seq, 5);
      explicit = out.subarray(5, 5 + EXPLICIT_NONCE_LENGTH);
    }
    const cipher = createCipheriv(this.suite.aead, this.key, this.nonce(seq, explicit), { authTagLength: TAG_LENGTH } as never) as unknown as CipherGCM;
    cipher.setAAD(RecordProtection12.additionalData(seq, contentType, content.length));
    const written = cipher.update(content);
    written.copy(out, 5 + explicitLength);
    cipher.final().copy(out, 5 + explicitLength + written.length);
    cipher.getAuthTag().copy(out, 5 + explicitLength + content.length);
    this.sequence = seq + 1n;
    return out;
  }

  /**
   * Encrypts one record as three pieces for a gathered write: header + explicit nonce, the
   * ciphertext as the cipher returned it, and the tag; bulk data is not copied into a
   * record buffer (as RecordProtection.sealParts).
   */
  sealParts(contentType: number, content: Uint8Array): [header: Buffer, ciphertext: Buffer, tag: Buffer] {
    const seq = this.nextSequence();
    const explicitLength = this.explicitNonce ? EXPLICIT_NONCE_LENGTH : 0;
    const header = Buffer.allocUnsafe(5 + explicitLength);
    header[0] = contentType;
    header[1] = 3;
    header[2] = 3;
    header.writeUInt16BE(explicitLength + content.length + TAG_LENGTH, 3);
    let explicit: Buffer | undefined;
    if (this.explicitNonce) {
      header.writeBigUInt64BE(seq, 5);
      explicit = header.subarray(5);
    }
    const cipher = createCipheriv(this.suite.aead, this.key, this.nonce(seq, explicit), { authTagLength: TAG_LENGTH } as never) as unknown as CipherGCM;
    cipher.setAAD(RecordProtection12.additionalData(seq, contentType, content.length));
    const ciphertext = cipher.update(content);
    // These AEADs return all of it from update() and nothing from final(), which checks nothing when sealing.
    const rest = cipher.final();
    if (ciphertext.length + rest.length !== content.length) throw new Error(`${this.suite.aead} returned ${ciphertext.length + rest.length} bytes for ${content.length}`);
    const tag = cipher.getAuthTag();
    this.sequence = seq + 1n;
    return [header, rest.length ? Buffer.concat([ciphertext, rest]) : ciphertext, tag];
  }

  /**
   * Decrypts one record (type from its header, body = (explicit nonce) + ciphertext + tag).
   * null when it does not authenticate, a record too short to hold a tag included
   * (bad_record_mac for the caller, RFC 5246 §7.2.2).
   */
  tryOpen(header: Uint8Array, body: Uint8Array): { type: number; content: Buffer } | null {
    const explicitLength = this.explicitNonce ? EXPLICIT_NONCE_LENGTH : 0;
    if (body.length < explicitLength + TAG_LENGTH) return null;
    const type = header[0] ?? 0;
    const seq = this.nextSequence();
    const explicit = this.explicitNonce ? body.subarray(0, EXPLICIT_NONCE_LENGTH) : undefined;
    const ciphertext = body.subarray(explicitLength, body.length - TAG_LENGTH);
    const decipher = createDecipheriv(this.suite.aead, this.key, this.nonce(seq, explicit), { authTagLength: TAG_LENGTH } as never) as unknown as DecipherGCM;
    decipher.setAAD(RecordProtection12.additionalData(seq, type, ciphertext.length));
    decipher.setAuthTag(body.subarray(body.length - TAG_LENGTH));
    let content: Buffer;
    try {
      content = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    } catch {
      return null;
    }
    this.sequence = seq + 1n;
    return { type, content };
  }
}
