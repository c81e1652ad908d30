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
  /** Received from another process's ring (importKeys), not made here. */
  readonly shared?: boolean;
}

/** A ring's keys as they travel between processes of one server (node:cluster IPC). Secret. */
export interface SharedTicketKey {
  readonly id: number;
  /** base64 of the 32-byte AES-256-GCM key. */
  readonly key: string;
  readonly createdAt: number;
}

export interface TicketKeyRingOptions {
  /** How often a new sealing key is made: an integer in [1000, 604 800 000] ms (1 s to 7 days). Default 1 hour. */
  rotationMs?: number;
  /**
   * How long a key still opens tickets, counted from its creation: an integer greater than
   * rotationMs and at most 2 × rotationMs + 7 days. Default 8 hours (> the 2 h default
   * ticket lifetime + rotation). A ticket sealed just before a rotation opens for
   * retainMs − rotationMs (− another rotationMs for keys imported from another ring).
   */
  retainMs?: number;
  now?: () => number;
}

export const DEFAULT_ROTATION_MS = 3_600_000;
export const DEFAULT_RETAIN_MS = 8 * 3_600_000;
/** RFC 8446 §4.6.1: no ticket lifetime exceeds 7 days (604 800 s); TLS 1.2 tickets use the same lifetime here. */
const MAX_TICKET_LIFETIME_MS = 604_800_000;
/**
 * Below this, a ring would make a new key for nearly every ticket and keep each one for all
 * of retainMs (open() looks keys up one by one).
 */
const MIN_ROTATION_MS = 1000;

const ID_LENGTH = 4;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;

export class TicketKeyRing {
  private keys: TicketKey[] = [];
  private readonly rotationMs: number;
  private retainMs: number;
  private readonly now: () => number;

  /**
   * Refuses (TypeError/RangeError naming the option) what would break the ring silently:
   * rotationMs 0, negative or NaN made a new key for every ticket, each kept for retainMs;
   * retainMs 0 or NaN opened nothing (no resumption, no HelloRetryRequest cookie); retainMs
   * below rotationMs retired the sealing key while it still sealed; Infinity never retired
   * keys at all. The upper bounds follow RFC 8446 §4.6.1 (no ticket outlives 7 days; a key
   * seals for up to 2 × rotationMs when imported), and keep both below 2^31 − 1 ms, the
   * longest node:timers delay, should a caller schedule rotations with them.
   */
  constructor(options: TicketKeyRingOptions = {}) {
    this.rotationMs = checkMs(options.rotationMs, DEFAULT_ROTATION_MS, 'rotationMs', MIN_ROTATION_MS, MAX_TICKET_LIFETIME_MS);
    this.retainMs = checkMs(options.retainMs, DEFAULT_RETAIN_MS, 'retainMs', this.rotationMs + 1, 2 * this.rotationMs + MAX_TICKET_LIFETIME_MS);
    if (options.now !== undefined && typeof options.now !== 'function') throw new TypeError('TicketKeyRing: now must be a function returning ms');
    this.now = options.now ?? Date.now;
  }

  /**
   * Changes how long keys open tickets from now on (a server whose ticket lifetime is
   * reloaded: the edge, docs/EDGE.md). Longer keeps the keys still held for longer; shorter
   * retires at once the keys older than it, and with them the tickets they sealed (RFC 8446
   * §4.6.1 lets a server stop honouring a ticket early). Same bounds as the constructor's;
   * throws, changing nothing, when outside them.
   */
  setRetainMs(retainMs: number): void {
    if (retainMs === undefined) throw new TypeError('TicketKeyRing: retainMs must be a number of milliseconds, not undefined');
    this.retainMs = checkMs(retainMs, this.retainMs, 'retainMs', this.rotationMs + 1, 2 * this.rotationMs + MAX_TICKET_LIFETIME_MS);
  }

  private current(): TicketKey {
    const now = this.now();
    const newest = this.keys[0];
    // A shared key from the ring's owner is used until the owner sends a newer one (plus
    // some slack), so processes sharing a ring do not drift onto keys of their own.
    const freshFor = newest?.shared ? this.rotationMs * 2 : this.rotationMs;
    if (newest && now - newest.createdAt < freshFor) return newest;
    const key: TicketKey = { id: randomBytes(ID_LENGTH).readUInt32BE(0), key: randomBytes(32), createdAt: now };
    this.keys = [key, ...this.keys.filter((k) => now - k.createdAt < this.retainMs)];
    return key;
  }

  /**
   * The live keys, newest first, rotating first if due: what the owner of a ring shared by
   * several processes (the edge's cluster primary) sends to the others. Key material: send
   * it only over a channel private to this server's processes, never log it.
   */
  exportKeys(): SharedTicketKey[] {
    this.current();
    return this.keys.map((k) => ({ id: k.id, key: k.key.toString('base64'), createdAt: k.createdAt }));
  }

  /**
   * Adopts keys exported by another ring: the newest becomes the sealing key, all open
   * tickets; keys made here before stay usable for opening until they age out.
   */
  importKeys(shared: readonly SharedTicketKey[]): void {
    const now = this.now();
    const imported: TicketKey[] = shared
      .map((k) => ({ id: k.id, key: Buffer.from(k.key, 'base64'), createdAt: k.createdAt, shared: true }))
      .filter((k) => k.key.length === 32 && now - k.createdAt < this.retainMs)
      .sort((a, b) => b.createdAt - a.createdAt);
    if (imported.length === 0) return;
    const ids = new Set(imported.map((k) => k.id));
    const local = this.keys.filter((k) => !ids.has(k.id) && now - k.createdAt < this.retainMs);
    this.keys = [...imported, ...local.filter((k) => !k.shared)];
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

/**
 * The ring a server makes when it is given none: its keys open tickets for at least one
 * rotation plus the ticket lifetime, so every ticket opens for as long as its NewSessionTicket
 * says (ticket_lifetime, RFC 8446 §4.6.1; the TLS 1.2 lifetime hint). The fixed 8 h default
 * dropped tickets of a longer lifetime (up to 7 days) hours before it ended; §4.6.1 lets a
 * server do so, but clients then hold and offer tickets the server announced and cannot open.
 * Not for rings that import keys (an imported key seals for up to 2 × rotationMs).
 */
export function ringForTicketLifetime(ticketLifetimeSeconds: number): TicketKeyRing {
  return new TicketKeyRing({ retainMs: retainMsForTicketLifetime(ticketLifetimeSeconds) });
}

/** How long the default ring (ringForTicketLifetime) keeps its keys for tickets of this lifetime. */
export function retainMsForTicketLifetime(ticketLifetimeSeconds: number): number {
  return Math.max(DEFAULT_RETAIN_MS, DEFAULT_ROTATION_MS + ticketLifetimeSeconds * 1000);
}

/** An integer number of ms in [min, max], or the default when undefined. */
function checkMs(value: unknown, fallback: number, name: string, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number') throw new TypeError(`TicketKeyRing: ${name} must be a number of milliseconds, not ${typeof value}`);
  if (!Number.isInteger(value) || value < min || value > max) {
    const floor = name === 'retainMs' ? `greater than rotationMs (${min - 1})` : `at least ${min}`;
    throw new RangeError(`TicketKeyRing: ${name} must be an integer number of ms, ${floor} and at most ${max} (got ${value})`);
  }
  return value;
}
