import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { KeydError } from './errors.js';
import { DEFAULT_AUDIT_ROTATION, type AuditRotation } from './audit.js';
import { parseLimits, shownValue, type KeydLimits } from './limits.js';
import { configName, parsePrincipals, type LocalPrincipal } from './principals.js';
import { parseExpiryWarningDays } from '../lib/expiry.js';

/**
 * keyd's config file (JSON). Only what keyd itself reads is checked here; other
 * sections ("provisioning", "pkcs11", "rootKey", "tpmTcti") are passed through to their
 * owners. A key that is none of these is refused: a misspelt "limits" or "clients" would
 * otherwise leave keyd running without the bounds or grants the operator wrote.
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
  /** "limits" (limits.ts; docs/KEYD.md "Limits"). */
  limits: KeydLimits;
  /** "principals": local callers, one socket each (principals.ts). */
  principals: LocalPrincipal[];
  /** "auditLog": { maxBytes, keep } rotation of audit.log. */
  auditLog: AuditRotation;
  /** "metricsListen": HOST:PORT for Prometheus /metrics, or undefined. */
  metricsListen?: string;
  /** "expiryWarningDays": warn this many days before a certificate's notAfter (default 30). */
  expiryWarningDays: number;
  /**
   * "allowTls12OnlyServers" (default false): sign TLS 1.2 ServerKeyExchange content whose
   * server_random lacks the RFC 8446 §4.1.3 downgrade sentinel (docs/KEYD.md "TLS 1.2").
   */
  allowTls12OnlyServers: boolean;
  [section: string]: unknown;
}

export const DEFAULT_MAX_PENDING = 4096;
/**
 * Unanswered requests per connection: each holds its frame until answered (up to 1 KiB on
 * a signing socket, 1 MiB for an admin put), so 65536 is already 64 MiB of signing requests
 * from one connection; more is a typo, not a need.
 */
export const MAX_MAX_PENDING = 65_536;
/**
 * The largest audit.log before rotation. keyd reads audit.log whole at start to check its
 * hash chain (src/keyd/root/audit-chain.ts), as one string, with its parsed lines beside
 * it: V8's strings end short of 512 MiB, and a file past that would stop keyd starting.
 */
export const MAX_AUDIT_LOG_BYTES = 256 * 1024 * 1024;

/** Every top-level key of keyd's config: the ones parsed here and the sections of other owners. */
export const CONFIG_KEYS: readonly string[] = [
  'clients', 'principals', 'maxPending', 'limits', 'auditLog', 'metricsListen', 'expiryWarningDays', 'allowTls12OnlyServers',
  'rootKey', 'tpmTcti', 'pkcs11', 'provisioning',
];

/** Refuses a key of `obj` not in `allowed`, naming it, where it is and what is allowed. */
export function refuseUnknownKeys(obj: object, allowed: readonly string[], where: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) throw new KeydError('KEYD_CONFIG', `${where}: unknown key ${JSON.stringify(key)} (allowed: ${allowed.join(', ')})`);
  }
}

export async function loadConfig(source: string | object | undefined): Promise<KeydConfig> {
  if (source === undefined) return parseConfig({});
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
  // Relative paths in the file (a principal's "socket") are relative to the file's own
  // directory, as in the edge's and the provisioning listener's config: under systemd
  // keyd's working directory is "/" (docs/KEYD.md "Local callers").
  return parseConfig(raw, typeof source === 'string' ? dirname(resolve(source)) : undefined);
}

/** `baseDir`: the config file's directory, which relative paths are resolved from (default: the working directory). */
export function parseConfig(raw: unknown, baseDir?: string): KeydConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new KeydError('KEYD_CONFIG', 'config must be a JSON object');
  const obj = raw as Record<string, unknown>;
  refuseUnknownKeys(obj, CONFIG_KEYS, 'config');
  const clients: Record<string, string[]> = {};
  if (obj.clients !== undefined) {
    if (typeof obj.clients !== 'object' || obj.clients === null || Array.isArray(obj.clients)) {
      throw new KeydError('KEYD_CONFIG', 'config "clients" must map certificate subjects to lists of names');
    }
    const spelled = new Map<string, string>();
    for (const [subject, names] of Object.entries(obj.clients)) {
      if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
        throw new KeydError('KEYD_CONFIG', `config "clients"."${subject}" must be a list of names`);
      }
      const key = normaliseSubject(subject);
      // Every RDN must be TYPE=value: "edge-1" alone would become a subject no certificate has.
      if (!isSubject(subject)) {
        throw new KeydError('KEYD_CONFIG', `config "clients"."${subject}" is not a certificate subject (TYPE=value, ..., e.g. "CN=edge-1, O=Example")`);
      }
      // Two spellings of one subject (RDN order, spacing, case of the type): the later one
      // would silently replace the earlier one's grants.
      const earlier = spelled.get(key);
      if (earlier !== undefined) throw new KeydError('KEYD_CONFIG', `config "clients"."${subject}" is the same subject as "${earlier}" (${key}): list it once`);
      spelled.set(key, subject);
      clients[key] = names.map((n) => (n === '*' ? '*' : configName(n, `config "clients"."${subject}"`)));
    }
  }
  const maxPending = obj.maxPending ?? DEFAULT_MAX_PENDING;
  if (typeof maxPending !== 'number' || !Number.isInteger(maxPending) || maxPending < 1 || maxPending > MAX_MAX_PENDING) {
    throw new KeydError('KEYD_CONFIG', `config "maxPending" must be an integer from 1 to ${MAX_MAX_PENDING} (unanswered requests per connection, each holding its frame), not ${shownValue(maxPending)}`);
  }
  if (obj.metricsListen !== undefined && typeof obj.metricsListen !== 'string') throw new KeydError('KEYD_CONFIG', 'config "metricsListen" must be "HOST:PORT"');
  let expiryWarningDays: number;
  try {
    expiryWarningDays = parseExpiryWarningDays(obj.expiryWarningDays, 'config "expiryWarningDays"');
  } catch (err) {
    throw new KeydError('KEYD_CONFIG', (err as Error).message);
  }
  const allowTls12OnlyServers = obj.allowTls12OnlyServers === undefined ? false : obj.allowTls12OnlyServers;
  if (typeof allowTls12OnlyServers !== 'boolean') throw new KeydError('KEYD_CONFIG', 'config "allowTls12OnlyServers" must be true or false');
  return { ...obj, clients, maxPending, expiryWarningDays, allowTls12OnlyServers, limits: parseLimits(obj.limits), principals: parsePrincipals(obj.principals, baseDir), auditLog: parseAuditRotation(obj.auditLog) };
}

function parseAuditRotation(raw: unknown): AuditRotation {
  if (raw === undefined) return { ...DEFAULT_AUDIT_ROTATION };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new KeydError('KEYD_CONFIG', 'config "auditLog" must be { "maxBytes", "keep" }');
  refuseUnknownKeys(raw, ['maxBytes', 'keep'], 'config "auditLog"');
  const { maxBytes = DEFAULT_AUDIT_ROTATION.maxBytes, keep = DEFAULT_AUDIT_ROTATION.keep } = raw as Record<string, unknown>;
  if (typeof maxBytes !== 'number' || !Number.isInteger(maxBytes) || maxBytes < 4096 || maxBytes > MAX_AUDIT_LOG_BYTES) {
    throw new KeydError('KEYD_CONFIG', `config "auditLog"."maxBytes" must be an integer from 4096 to ${MAX_AUDIT_LOG_BYTES} (256 MiB: keyd reads audit.log whole at start to check its hash chain), not ${shownValue(maxBytes)}`);
  }
  if (typeof keep !== 'number' || !Number.isInteger(keep) || keep < 1 || keep > 1000) throw new KeydError('KEYD_CONFIG', `config "auditLog"."keep" must be an integer from 1 to 1000, not ${shownValue(keep)}`);
  return { maxBytes, keep };
}

/**
 * A certificate subject as a canonical string: RDNs split on "," or newlines (node's
 * X509Certificate.subject uses newlines), trimmed, attribute names upper-cased, sorted.
 */
export function normaliseSubject(subject: string): string {
  return subjectRdns(subject)
    .map((rdn) => {
      const eq = rdn.indexOf('=');
      return `${rdn.slice(0, eq).trim().toUpperCase()}=${rdn.slice(eq + 1).trim()}`;
    })
    .sort()
    .join(', ');
}

function subjectRdns(subject: string): string[] {
  return subject
    .split(/\n|,(?=\s*[A-Za-z][A-Za-z0-9.]*\s*=)/)
    .map((rdn) => rdn.trim())
    .filter((rdn) => rdn.length > 0);
}

/** True when every RDN of a configured subject is TYPE=value (normaliseSubject would mangle one without "="). */
function isSubject(subject: string): boolean {
  const rdns = subjectRdns(subject);
  return rdns.length > 0 && rdns.every((rdn) => /^[A-Za-z0-9][A-Za-z0-9.]*\s*=/.test(rdn));
}
