import type { KeyObject } from 'node:crypto';
import type { AuditQuery, AuditReply } from './audit.js';
import { KeydClient, type KeydIdentity } from './client.js';
import type { KeyInfo } from './keyring.js';
import type { GenerateKeyType } from './pki.js';
import { Opcode } from './protocol.js';
import { MAX_GENERATE_TIMEOUT_MS } from './pkcs11/config.js';

/** How long the admin CLI waits for an answer on the admin socket by default. */
export const DEFAULT_ADMIN_TIMEOUT_MS = 60_000;
/**
 * How long the admin CLI waits for a key generation by default (`gen`, without --timeout).
 * keyd gives a generation in a token up to the token's generateTimeoutMs (at most 600 s,
 * pkcs11/config.ts) before it fails it with KEYD_TOKEN_ABSENT; the CLI must wait longer, or on
 * a slow token the operator sees the CLI's own timeout while keyd goes on, and never keyd's
 * answer (the key, or which token did not answer). A minute more for keyd's work around the
 * call: the key stored and its audit entry synced.
 */
export const GENERATE_REQUEST_TIMEOUT_MS = MAX_GENERATE_TIMEOUT_MS + 60_000;

/**
 * The admin operations as the admin CLI sees them, whatever carries them: the local
 * admin unix socket (below) or a remote transport (the provisioning channel).
 */
export interface AdminTransport {
  /** `token`: a PKCS#11 URI or token label to put the key into (docs/KEYD.md, "Keys in a token"). */
  put(names: string[], privateKey: KeyObject, chainDer: Uint8Array[], opts?: TokenOption): Promise<KeyInfo>;
  generate(name: string, keyType: GenerateKeyType, subject: string, opts?: TokenOption): Promise<{ info: KeyInfo; csrPem: string }>;
  setChain(name: string, chainDer: Uint8Array[]): Promise<KeyInfo>;
  delete(name: string): Promise<void>;
  list(): Promise<KeyInfo[]>;
  show(name: string): Promise<KeyInfo>;
  /** The newest entries that fit one reply; `omitted` older ones matched but did not fit. */
  audit(query?: AuditQuery): Promise<AuditReply>;
  stats(): Promise<Record<string, { signatures: number; refusals: number; keys?: Record<string, { signatures: number; refusals: number }> }>>;
  /** The identity keyd serves for `serverName` (docs/PROTOCOL.md, identity); local admin socket only. */
  identity?(serverName: string): Promise<KeydIdentity | undefined>;
  close(): void;
}

export interface TokenOption {
  token?: string;
}

/** AdminTransport over keyd's admin unix socket (docs/PROTOCOL.md, admin operations). */
export class LocalAdminTransport implements AdminTransport {
  private constructor(private readonly client: KeydClient) {}

  static async connect(socketPath: string, requestTimeoutMs = DEFAULT_ADMIN_TIMEOUT_MS): Promise<LocalAdminTransport> {
    return new LocalAdminTransport(await KeydClient.connect({ socketPath }, { requestTimeoutMs }));
  }

  async put(names: string[], privateKey: KeyObject, chainDer: Uint8Array[], opts: TokenOption = {}): Promise<KeyInfo> {
    const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
    try {
      return (await this.client.admin(Opcode.put, { names, ...tokenField(opts) }, [pkcs8, ...chainDer])).json as unknown as KeyInfo;
    } finally {
      pkcs8.fill(0);
    }
  }

  async generate(name: string, keyType: GenerateKeyType, subject: string, opts: TokenOption = {}): Promise<{ info: KeyInfo; csrPem: string }> {
    return (await this.client.admin(Opcode.generate, { name, keyType, subject, ...tokenField(opts) })).json as unknown as { info: KeyInfo; csrPem: string };
  }

  async setChain(name: string, chainDer: Uint8Array[]): Promise<KeyInfo> {
    return (await this.client.admin(Opcode.setChain, { name }, chainDer)).json as unknown as KeyInfo;
  }

  async delete(name: string): Promise<void> {
    await this.client.admin(Opcode.delete, { name });
  }

  async list(): Promise<KeyInfo[]> {
    return (await this.client.admin(Opcode.list, {})).json.keys as KeyInfo[];
  }

  async show(name: string): Promise<KeyInfo> {
    return (await this.client.admin(Opcode.show, { name })).json as unknown as KeyInfo;
  }

  async audit(query: AuditQuery = {}): Promise<AuditReply> {
    return (await this.client.admin(Opcode.audit, query)).json as unknown as AuditReply;
  }

  async stats(): Promise<Record<string, { signatures: number; refusals: number; keys?: Record<string, { signatures: number; refusals: number }> }>> {
    return (await this.client.admin(Opcode.stats, {})).json.clients as Record<string, { signatures: number; refusals: number }>;
  }

  identity(serverName: string): Promise<KeydIdentity | undefined> {
    return this.client.identity(serverName);
  }

  close(): void {
    this.client.close();
  }
}

function tokenField(opts: TokenOption): { token?: string } {
  return opts.token !== undefined ? { token: opts.token } : {};
}
