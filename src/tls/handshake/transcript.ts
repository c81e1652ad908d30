import { createHash, type Hash } from 'node:crypto';
import type { HashName } from '../crypto/hkdf.js';
import { HandshakeType } from '../wire/codepoints.js';

/**
 * The running transcript hash (RFC 8446 §4.4.1). Messages seen before the cipher
 * suite (and so the hash) is known are held and hashed once `start` is called.
 */
export class Transcript {
  private hash: Hash | undefined;
  private pending: Uint8Array[] = [];

  start(name: HashName): void {
    this.hash = createHash(name);
    for (const m of this.pending) this.hash.update(m);
    this.pending = [];
  }

  add(message: Uint8Array): void {
    if (this.hash) this.hash.update(message);
    else this.pending.push(message);
  }

  /** Transcript-Hash of everything added so far. */
  current(): Buffer {
    if (!this.hash) throw new Error('transcript hash used before the cipher suite was chosen');
    return this.hash.copy().digest();
  }

  /** Transcript-Hash of everything so far followed by `extra` (e.g. a truncated ClientHello), without adding it. */
  peekWith(extra: Uint8Array): Buffer {
    if (!this.hash) throw new Error('transcript hash used before the cipher suite was chosen');
    return this.hash.copy().update(extra).digest();
  }
}

/** §4.4.1: the synthetic message that replaces ClientHello1 after a HelloRetryRequest. */
export function messageHash(clientHello1Hash: Uint8Array): Buffer {
  const m = Buffer.alloc(4 + clientHello1Hash.length);
  m[0] = HandshakeType.message_hash;
  m.writeUIntBE(clientHello1Hash.length, 1, 3);
  m.set(clientHello1Hash, 4);
  return m;
}
