import { createHmac, timingSafeEqual } from 'node:crypto';
import { join } from 'node:path';
import { KeydError } from '../errors.js';
import { writeFileDurably } from '../../lib/durable-file.js';
import { readRegularFileBounded } from '../../lib/bounded-file.js';

/**
 * The store manifest (data/manifest.json): what the store holds at its last committed
 * change — every record's id and version, a tombstone for every deleted record, the
 * versions of keyd's own secrets (the provisioning nonce store among them), the head of
 * the hash-chained audit log — and, when the root key is in a TPM, the value of the TPM
 * NV counter this change committed. Authenticated with HMAC-SHA-256 under a key derived
 * from the store's seal key, so nobody without the root key can write one.
 *
 * The body is kept as the exact JSON text that was MACed (no re-serialisation on read).
 */

export interface ManifestState {
  format: 1;
  /** Grows by one per committed change, with or without a counter. */
  sequence: number;
  /** NV counter value (decimal) this manifest commits; null without a counter. */
  counter: string | null;
  /** The counter it is bound to, for messages. */
  counterDescription: string | null;
  keys: Record<string, number>;
  secrets: Record<string, number>;
  /** Tombstones: id → last version, never pruned (ids are random and never reused). */
  deletedKeys: Record<string, number>;
  deletedSecrets: Record<string, number>;
  /** Audit chain head (hex) and its entry number at the time of the commit. */
  audit: { head: string; entries: number } | null;
  committedAt: string;
}

export const MANIFEST_FILE = 'manifest.json';
/**
 * Largest manifest read. It grows by a tombstone (about 30 bytes) per deleted record and is
 * rewritten whole at every change, so a store is unusable long before this; a larger file
 * is not keyd's and is refused unread.
 */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

export function emptyManifest(): ManifestState {
  return {
    format: 1,
    sequence: 0,
    counter: null,
    counterDescription: null,
    keys: {},
    secrets: {},
    deletedKeys: {},
    deletedSecrets: {},
    audit: null,
    committedAt: new Date().toISOString(),
  };
}

/** HMAC-SHA-256 as writeManifest writes it: 32 bytes, 64 lowercase hex digits. */
const MAC_TEXT = /^[0-9a-f]{64}$/;

function mac(key: Buffer, body: string): string {
  return createHmac('sha256', key).update('keyd manifest v1\0').update(body, 'utf8').digest('hex');
}

/** Reads and authenticates the manifest; undefined when there is none. */
export async function readManifest(dataDir: string, macKey: Buffer): Promise<ManifestState | undefined> {
  const path = join(dataDir, MANIFEST_FILE);
  let text: string;
  try {
    const bytes = await readRegularFileBounded(
      path,
      MAX_MANIFEST_BYTES,
      (why) => new KeydError('KEYD_MANIFEST_TAMPERED', `${path} ${why}: not a manifest keyd wrote; refusing to open the store`),
    );
    text = bytes.toString('utf8');
  } catch (err) {
    if (err instanceof KeydError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new KeydError('KEYD_STORE_IO', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let outer: { body?: unknown; mac?: unknown } | null;
  try {
    outer = JSON.parse(text) as { body?: unknown; mac?: unknown } | null;
  } catch {
    throw new KeydError('KEYD_MANIFEST_TAMPERED', `${path} is not valid JSON: the store manifest was damaged; refusing to open the store`);
  }
  // `null` is valid JSON too: reading .body of it would be a TypeError, not this refusal.
  if (outer === null || typeof outer.body !== 'string' || typeof outer.mac !== 'string') {
    throw new KeydError('KEYD_MANIFEST_TAMPERED', `${path} is not a keyd store manifest; refusing to open the store`);
  }
  const expected = Buffer.from(mac(macKey, outer.body), 'hex');
  // Only the form writeManifest writes: Buffer.from(hex) stops at the first non-hex
  // character and drops an odd last digit, so the right MAC with anything after it
  // would decode to the right bytes. A malformed MAC is refused like a wrong one.
  const given = MAC_TEXT.test(outer.mac) ? Buffer.from(outer.mac, 'hex') : undefined;
  if (!given || given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new KeydError('KEYD_MANIFEST_TAMPERED', `${path} fails authentication: it was edited, or belongs to another store; refusing to open the store`);
  }
  const state = JSON.parse(outer.body) as ManifestState;
  if (state.format !== 1) throw new KeydError('KEYD_MANIFEST_TAMPERED', `${path} has unknown format ${String(state.format)}`);
  return state;
}

export async function writeManifest(dataDir: string, macKey: Buffer, state: ManifestState): Promise<void> {
  const body = JSON.stringify(state);
  await writeFileDurably(join(dataDir, MANIFEST_FILE), Buffer.from(JSON.stringify({ body, mac: mac(macKey, body) }) + '\n'));
}
