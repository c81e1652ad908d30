import { readFile } from 'node:fs/promises';
import { KeydError } from './errors.js';
import { normaliseName } from './names.js';

/**
 * keyd's config file (JSON). Only what keyd itself reads is checked here; other
 * sections (e.g. "provisioning") are passed through to their owners.
 *
 * {
 *   "clients": { "CN=edge-1, O=Example": ["*.example.com", "example.com"], "CN=edge-2": ["*"] },
 *   "maxPending": 4096
 * }
 */
export interface KeydConfig {
  /** mTLS client certificate subject → names it may sign for (`*` = all). */
  clients: Record<string, string[]>;
  maxPending: number;
  [section: string]: unknown;
}

export const DEFAULT_MAX_PENDING = 4096;

export async function loadConfig(source: string | object | undefined): Promise<KeydConfig> {
  if (source === undefined) return { clients: {}, maxPending: DEFAULT_MAX_PENDING };
  let raw: unknown = source;
  if (typeof source === 'string') {
    let text: string;
    try {
      text = await readFile(source, 'utf8');
    } catch (err) {
      throw new KeydError('KEYD_CONFIG', `cannot read config ${source}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new KeydError('KEYD_CONFIG', `config ${source} is not valid JSON: ${(err as Error).message}`);
    }
  }
  return parseConfig(raw);
}

export function parseConfig(raw: unknown): KeydConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new KeydError('KEYD_CONFIG', 'config must be a JSON object');
  const obj = raw as Record<string, unknown>;
  const clients: Record<string, string[]> = {};
  if (obj.clients !== undefined) {
    if (typeof obj.clients !== 'object' || obj.clients === null || Array.isArray(obj.clients)) {
      throw new KeydError('KEYD_CONFIG', 'config "clients" must map certificate subjects to lists of names');
    }
    for (const [subject, names] of Object.entries(obj.clients)) {
      if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
        throw new KeydError('KEYD_CONFIG', `config "clients"."${subject}" must be a list of names`);
      }
      clients[normaliseSubject(subject)] = names.map((n) => (n === '*' ? '*' : normaliseName(n)));
    }
  }
  const maxPending = obj.maxPending ?? DEFAULT_MAX_PENDING;
  if (typeof maxPending !== 'number' || !Number.isInteger(maxPending) || maxPending < 1) {
    throw new KeydError('KEYD_CONFIG', 'config "maxPending" must be a positive integer');
  }
  return { ...obj, clients, maxPending };
}

/**
 * A certificate subject as a canonical string: RDNs split on "," or newlines (node's
 * X509Certificate.subject uses newlines), trimmed, attribute names upper-cased, sorted.
 */
export function normaliseSubject(subject: string): string {
  return subject
    .split(/\n|,(?=\s*[A-Za-z][A-Za-z0-9.]*\s*=)/)
    .map((rdn) => rdn.trim())
    .filter((rdn) => rdn.length > 0)
    .map((rdn) => {
      const eq = rdn.indexOf('=');
      return `${rdn.slice(0, eq).trim().toUpperCase()}=${rdn.slice(eq + 1).trim()}`;
    })
    .sort()
    .join(', ');
}
