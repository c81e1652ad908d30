import { schemesForKeyType, type KeyType } from '../tls/signature-schemes.js';
import type { KeyHandle } from './key-handle.js';
import { parseChain, subjectKeyIdentifier } from './pki.js';
import { lookupCandidates } from './names.js';
import type { StoredKey } from './store.js';

/** What keyd serves from one stored key: its handle plus what identity/list need, computed once. */
export interface KeyEntry {
  id: string;
  version: number;
  seq: number;
  /** Names this key currently owns (a newer put of a name takes it over). */
  names: string[];
  key: KeyHandle;
  keyType: KeyType;
  schemes: number[];
  chain: Uint8Array[];
  addedAt: string;
  updatedAt: string;
  ski: string;
  notAfter: string | null;
  subject: string;
}

/** Admin view of a key; never key material. */
export interface KeyInfo {
  keyRef: string;
  names: string[];
  keyType: KeyType;
  ski: string;
  notAfter: string | null;
  subject: string;
  addedAt: string;
  updatedAt: string;
  version: number;
  hasChain: boolean;
  /** "software" (sealed store) or the token the key lives in. */
  location: string;
}

export function entryFromStored(stored: StoredKey): KeyEntry {
  const keyType = stored.key.keyType;
  let notAfter: string | null = null;
  let subject = stored.subject ?? '';
  if (stored.chain.length > 0) {
    const [leaf] = parseChain(stored.chain, { exactDer: false }); // admin put/setChain checked new chains
    notAfter = new Date(leaf!.validTo).toISOString();
    subject = leaf!.subject.split('\n').join(', ');
  }
  return {
    id: stored.id,
    version: stored.version,
    seq: stored.seq,
    names: [...stored.names],
    key: stored.key,
    keyType,
    schemes: schemesForKeyType(keyType),
    chain: stored.chain,
    addedAt: stored.addedAt,
    updatedAt: stored.updatedAt,
    ski: subjectKeyIdentifier(stored.key.publicKey),
    notAfter,
    subject,
  };
}

export function infoOf(entry: KeyEntry): KeyInfo {
  return {
    keyRef: entry.id,
    names: [...entry.names],
    keyType: entry.keyType,
    ski: entry.ski,
    notAfter: entry.notAfter,
    subject: entry.subject,
    addedAt: entry.addedAt,
    updatedAt: entry.updatedAt,
    version: entry.version,
    hasChain: entry.chain.length > 0,
    location: entry.key.location,
  };
}

/**
 * The in-memory index: key reference → entry, name → key reference. When two records
 * claim a name (a crash between writing a replacement and trimming the old record),
 * the one with the higher sequence number — the newer put — owns it.
 */
export class Keyring {
  private readonly byId = new Map<string, KeyEntry>();
  private readonly byName = new Map<string, KeyEntry>();

  get size(): number {
    return this.byId.size;
  }

  entries(): KeyEntry[] {
    return [...this.byId.values()].sort((a, b) => (a.names[0] ?? a.id).localeCompare(b.names[0] ?? b.id));
  }

  get(keyRef: string): KeyEntry | undefined {
    return this.byId.get(keyRef);
  }

  /** The entry that owns exactly this name. */
  owner(name: string): KeyEntry | undefined {
    return this.byName.get(name);
  }

  /** Server-name lookup: exact name, then one-label wildcard; only keys with a chain serve. */
  lookup(serverName: string): KeyEntry | undefined {
    for (const candidate of lookupCandidates(serverName)) {
      const entry = this.byName.get(candidate);
      if (entry && entry.chain.length > 0) return entry;
    }
    return undefined;
  }

  /** Adds or replaces an entry; names it claims are taken from older owners. */
  set(entry: KeyEntry): void {
    const previous = this.byId.get(entry.id);
    if (previous) for (const n of previous.names) if (this.byName.get(n) === previous) this.byName.delete(n);
    this.byId.set(entry.id, entry);
    const owned: string[] = [];
    for (const name of entry.names) {
      const holder = this.byName.get(name);
      if (holder && holder !== entry && holder.seq > entry.seq) continue; // a newer put owns it
      if (holder && holder !== entry) holder.names = holder.names.filter((n) => n !== name);
      this.byName.set(name, entry);
      owned.push(name);
    }
    entry.names = owned;
  }

  remove(keyRef: string): KeyEntry | undefined {
    const entry = this.byId.get(keyRef);
    if (!entry) return undefined;
    this.byId.delete(keyRef);
    for (const n of entry.names) if (this.byName.get(n) === entry) this.byName.delete(n);
    return entry;
  }
}
