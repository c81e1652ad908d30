import { ProvisionError } from './errors.js';
import { dataRecord } from '../lib/data-record.js';

/**
 * Who may do what over the provisioning channel. Operators are identified by the subject of
 * their client certificate (issued by the operator CA) and get a role from keyd's config:
 *
 *   "provisioning": { "operators": { "O=Example Ops, CN=alice": "admin", "CN=audit-bot": "auditor" } }
 *
 * `admin` changes keys (put, gen, chain, delete) and may read; `auditor` only reads (list,
 * show, audit, stats). A subject not in the table is refused even with a valid certificate: the CA
 * says who someone is, the config says what they may do.
 */
export type Role = 'admin' | 'auditor';

export type Operation = 'put' | 'generate' | 'setChain' | 'delete' | 'list' | 'show' | 'audit' | 'stats';

export const OPERATIONS: readonly Operation[] = ['put', 'generate', 'setChain', 'delete', 'list', 'show', 'audit', 'stats'];

const READ_OPERATIONS: readonly Operation[] = ['list', 'show', 'audit', 'stats'];

export function roleAllows(role: Role, operation: Operation): boolean {
  return role === 'admin' || READ_OPERATIONS.includes(operation);
}

/**
 * One spelling per subject: attribute types upper case, no spaces around "=", RDNs sorted
 * and joined by ", " (as keyd's own `clients` config does, so "CN=alice, O=Ops" and OpenSSL's
 * "O = Ops, CN = alice" name the same operator). Accepts node's X509Certificate.subject
 * ("O=Ops\nCN=alice"), OpenSSL's output with or without "subject=", and "/O=Ops/CN=alice".
 */
export function normalizeSubject(subject: string): string {
  return subjectAttributes(subject)
    .map((rdn) => {
      const eq = rdn.indexOf('=');
      if (eq <= 0) return rdn;
      return `${rdn.slice(0, eq).trim().toUpperCase()}=${rdn.slice(eq + 1).trim()}`;
    })
    .sort()
    .join(', ');
}

/** The subject's attributes as written ("CN = alice"), split at unescaped separators. */
function subjectAttributes(subject: string): string[] {
  const trimmed = subject.trim().replace(/^subject\s*=\s*/i, '');
  const separator = trimmed.startsWith('/') ? /(?<!\\)\// : /(?<!\\)[,\n]/;
  return trimmed
    .split(separator)
    .map((rdn) => rdn.trim())
    .filter((rdn) => rdn !== '');
}

/** Whether `subject` has at least one attribute and only TYPE=value attributes. */
function isDistinguishedName(subject: string): boolean {
  const rdns = subjectAttributes(subject);
  return rdns.length > 0 && rdns.every((rdn) => rdn.indexOf('=') > 0);
}

export class OperatorRoles {
  private readonly roles = new Map<string, Role>();

  constructor(operators: Record<string, Role>) {
    for (const [subject, role] of Object.entries(operators)) this.roles.set(normalizeSubject(subject), role);
  }

  roleOf(subject: string): Role | undefined {
    return this.roles.get(normalizeSubject(subject));
  }

  get size(): number {
    return this.roles.size;
  }
}

/** The `provisioning` section of keyd's config file. */
export interface ProvisioningConfig {
  operators: Record<string, Role>;
  /** keyd's TLS server certificate chain and key for the provisioning listener (PEM paths). */
  tlsCert?: string;
  tlsKey?: string;
  /** How far a sealed payload's time may be from keyd's clock, and how long nonces are remembered. */
  replayWindowSeconds: number;
}

export const DEFAULT_REPLAY_WINDOW_SECONDS = 300;

/** The keys of the `provisioning` section ("limits": listener-limits.ts). */
const PROVISIONING_KEYS: readonly string[] = ['operators', 'tlsCert', 'tlsKey', 'replayWindowSeconds', 'limits'];

/** Validates `config.provisioning` (an untrusted JSON value) with messages naming the bad field. */
export function parseProvisioningConfig(config: unknown): ProvisioningConfig {
  const section = (config as { provisioning?: unknown } | null | undefined)?.provisioning;
  if (section === undefined) {
    throw new ProvisionError(
      'PROVISION_USAGE',
      'keyd config has no "provisioning" section: add "provisioning": { "operators": { "<certificate subject>": "admin" } }',
    );
  }
  if (typeof section !== 'object' || section === null || Array.isArray(section)) {
    throw new ProvisionError('PROVISION_USAGE', 'config "provisioning" must be an object');
  }
  const s = section as Record<string, unknown>;
  // A misspelt key ("limts", "replayWindowSecond") would leave its default in force unsaid.
  for (const key of Object.keys(s)) {
    if (!PROVISIONING_KEYS.includes(key)) {
      throw new ProvisionError('PROVISION_USAGE', `config "provisioning": unknown key ${JSON.stringify(key)} (allowed: ${PROVISIONING_KEYS.join(', ')})`);
    }
  }
  const operators = s.operators;
  if (typeof operators !== 'object' || operators === null || Array.isArray(operators)) {
    throw new ProvisionError('PROVISION_USAGE', 'config "provisioning.operators" must map certificate subjects to "admin" or "auditor"');
  }
  // Prototype-less: a key such as "__proto__" is an own entry, not Object.prototype's setter.
  const parsed = dataRecord<Role>();
  const spelled = new Map<string, string>();
  for (const [subject, role] of Object.entries(operators)) {
    if (role !== 'admin' && role !== 'auditor') {
      throw new ProvisionError('PROVISION_USAGE', `config "provisioning.operators": role of "${subject}" must be "admin" or "auditor", got ${JSON.stringify(role)}`);
    }
    // A certificate subject is a sequence of TYPE=value attributes (RFC 5280 §4.1.2.6); a key
    // that is not ("alice", "", "__proto__") matches no certificate, so the operator it was
    // meant for would be refused at every connection with nothing said at start.
    if (!isDistinguishedName(subject)) {
      throw new ProvisionError(
        'PROVISION_USAGE',
        `config "provisioning.operators": ${JSON.stringify(subject.slice(0, 256))} is not a certificate subject: write it as TYPE=value attributes, e.g. "CN=alice, O=Example Ops"`,
      );
    }
    // Two spellings of one operator (RDN order, spacing): OperatorRoles would keep the later
    // role, so "auditor" written first and "admin" after would make that operator an admin.
    const key = normalizeSubject(subject);
    const earlier = spelled.get(key);
    if (earlier !== undefined) {
      throw new ProvisionError('PROVISION_USAGE', `config "provisioning.operators": "${subject}" is the same operator as "${earlier}" (${key}): list it once`);
    }
    spelled.set(key, subject);
    parsed[subject] = role;
  }
  for (const field of ['tlsCert', 'tlsKey'] as const) {
    if (s[field] !== undefined && typeof s[field] !== 'string') {
      throw new ProvisionError('PROVISION_USAGE', `config "provisioning.${field}" must be a file path`);
    }
  }
  const window = s.replayWindowSeconds ?? DEFAULT_REPLAY_WINDOW_SECONDS;
  if (typeof window !== 'number' || !(window > 0) || window > 86400) {
    throw new ProvisionError('PROVISION_USAGE', 'config "provisioning.replayWindowSeconds" must be a number of seconds in (0, 86400]');
  }
  return {
    operators: parsed,
    tlsCert: s.tlsCert as string | undefined,
    tlsKey: s.tlsKey as string | undefined,
    replayWindowSeconds: window,
  };
}
