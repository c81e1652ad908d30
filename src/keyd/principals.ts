import { chmod, chown, lstat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { KeydError } from './errors.js';
import { normaliseName } from './names.js';
import { shownValue } from './limits.js';

/** The largest uid or gid: 2^32 - 2 ((uid_t)-1 means "unchanged" to chown(2)). */
const MAX_ID = 4_294_967_294;

/**
 * Local principals (docs/KEYD.md "Local callers"). Node exposes no SO_PEERCRED, so keyd
 * cannot ask the kernel who is on the other end of a unix socket. Instead each local
 * principal gets its own socket, whose mode, owner and group keyd sets and re-checks on
 * every connection: whoever can connect to that socket *is* that principal, so grants
 * and audit entries name it. A world-accessible socket would make that claim false, so it
 * is refused in the config, refused at start, and refused (and repaired) on connection.
 */
export interface LocalPrincipal {
  /** The name audit entries, stats and metrics use. */
  name: string;
  /** Its socket; undefined for "local", which is --socket. */
  socket?: string;
  mode: number;
  uid?: number;
  gid?: number;
  /** Names it may sign for (`name`, `*.domain`, `*`). */
  names: string[];
}

/** The principal of --socket unless the config says otherwise: every local edge, every name. */
export const DEFAULT_LOCAL_PRINCIPAL: Readonly<LocalPrincipal> = Object.freeze({ name: 'local', mode: 0o660, names: ['*'] });
export const ADMIN_SOCKET_MODE = 0o600;

/**
 * Parses config "principals": { NAME: { socket?, mode?, uid?, gid?, names } }. A relative
 * "socket" is resolved from `baseDir`, the config file's directory (loadConfig passes it).
 */
export function parsePrincipals(raw: unknown, baseDir?: string): LocalPrincipal[] {
  const principals: LocalPrincipal[] = [];
  const entries = raw === undefined ? {} : raw;
  if (typeof entries !== 'object' || entries === null || Array.isArray(entries)) {
    throw new KeydError('KEYD_CONFIG', 'config "principals" must map principal names to { socket, mode, uid, gid, names }');
  }
  const given = entries as Record<string, unknown>;
  if (!('local' in given)) principals.push({ ...DEFAULT_LOCAL_PRINCIPAL, names: ['*'] });
  const sockets = new Set<string>();
  for (const [name, value] of Object.entries(given)) {
    const where = `config "principals"."${name}"`;
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name) || name === 'admin') throw new KeydError('KEYD_CONFIG', `${where}: a principal name is 1–64 letters, digits, ".", "_" or "-", and not "admin"`);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new KeydError('KEYD_CONFIG', `${where} must be an object`);
    const v = value as Record<string, unknown>;
    // A misspelt "mode" or "uid" would leave the socket at the default 0660 and keyd's owner.
    for (const key of Object.keys(v)) {
      if (!['socket', 'mode', 'uid', 'gid', 'names'].includes(key)) throw new KeydError('KEYD_CONFIG', `${where}: unknown key ${JSON.stringify(key)} (allowed: socket, mode, uid, gid, names)`);
    }
    if (name !== 'local' && typeof v.socket !== 'string') throw new KeydError('KEYD_CONFIG', `${where}: "socket" (a path) is required`);
    if (name === 'local' && v.socket !== undefined) throw new KeydError('KEYD_CONFIG', `${where}: the "local" principal's socket is --socket`);
    const mode = parseMode(v.mode ?? '0660', where);
    for (const id of ['uid', 'gid'] as const) {
      // (uid_t)-1, 4294967295, is no id: chown(2) takes it as "leave unchanged", and the socket would keep keyd's owner unsaid.
      if (v[id] !== undefined && (typeof v[id] !== 'number' || !Number.isInteger(v[id]) || (v[id] as number) < 0 || (v[id] as number) > MAX_ID)) {
        throw new KeydError('KEYD_CONFIG', `${where}: "${id}" must be an integer from 0 to ${MAX_ID} (4294967295 is chown's "unchanged"), not ${shownValue(v[id])}`);
      }
    }
    if (!Array.isArray(v.names) || !v.names.every((n) => typeof n === 'string')) throw new KeydError('KEYD_CONFIG', `${where}: "names" must be a list of names`);
    const socket = typeof v.socket === 'string' ? (baseDir === undefined ? resolve(v.socket) : resolve(baseDir, v.socket)) : undefined;
    if (socket) {
      if (sockets.has(socket)) throw new KeydError('KEYD_CONFIG', `${where}: socket ${socket} is already another principal's`);
      sockets.add(socket);
    }
    principals.push({
      name,
      ...(socket ? { socket } : {}),
      mode,
      ...(v.uid !== undefined ? { uid: v.uid as number } : {}),
      ...(v.gid !== undefined ? { gid: v.gid as number } : {}),
      names: (v.names as string[]).map((n) => (n === '*' ? '*' : configName(n, `${where}: "names"`))),
    });
  }
  return principals;
}

/** A granted name (names.ts) of keyd's config, its refusal a KEYD_CONFIG error that says where it is. */
export function configName(name: string, where: string): string {
  try {
    return normaliseName(name);
  } catch (err) {
    throw new KeydError('KEYD_CONFIG', `${where}: ${(err as Error).message}`);
  }
}

function parseMode(value: unknown, where: string): number {
  const mode = typeof value === 'string' && /^0?[0-7]{3}$/.test(value) ? parseInt(value, 8) : typeof value === 'number' ? value : NaN;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) throw new KeydError('KEYD_CONFIG', `${where}: "mode" must be an octal string such as "0660"`);
  if (mode & 0o007) throw new KeydError('KEYD_CONFIG', `${where}: mode ${mode.toString(8).padStart(4, '0')} lets every local user connect; a principal's socket must not be world-accessible`);
  return mode;
}

/**
 * The expected mode/owner/group of one socket, set after binding and re-checked on every
 * connection. `check()` returns undefined when the socket is as keyd left it, else what
 * is wrong (after trying to put it right: the next caller finds it repaired).
 */
export class SocketGuard {
  private ino: number | undefined;

  constructor(
    readonly path: string,
    readonly mode: number,
    readonly uid = process.getuid?.() ?? 0,
    readonly gid?: number,
  ) {}

  /** After listen(): sets owner, group and mode; refuses to run if they do not hold. */
  async establish(): Promise<void> {
    if (this.uid !== (process.getuid?.() ?? 0) || this.gid !== undefined) {
      await chown(this.path, this.uid, this.gid ?? -1).catch((err: NodeJS.ErrnoException) => {
        throw new KeydError('KEYD_CONFIG', `cannot give socket ${this.path} owner ${this.uid} group ${this.gid ?? '(unchanged)'}: ${err.code ?? err.message}`);
      });
    }
    await chmod(this.path, this.mode);
    this.ino = (await lstat(this.path)).ino;
    const problem = await this.inspect();
    if (problem) throw new KeydError('KEYD_SOCKET_EXPOSED', `refusing to run: ${problem}`);
  }

  async check(): Promise<string | undefined> {
    const problem = await this.inspect();
    if (problem && !problem.includes('replaced')) {
      await chown(this.path, this.uid, this.gid ?? -1).catch(() => undefined);
      await chmod(this.path, this.mode).catch(() => undefined);
    }
    return problem;
  }

  /** What describes the caller in audit entries: who can open this socket. */
  describe(): string {
    return `socket ${this.path} (owner uid ${this.uid}${this.gid !== undefined ? `, group ${this.gid}` : ''}, mode ${this.mode.toString(8).padStart(4, '0')})`;
  }

  private async inspect(): Promise<string | undefined> {
    let st;
    try {
      st = await lstat(this.path);
    } catch (err) {
      return `socket ${this.path} is gone (${(err as NodeJS.ErrnoException).code})`;
    }
    if (!st.isSocket() || (this.ino !== undefined && st.ino !== this.ino)) return `socket ${this.path} was replaced by another file`;
    const mode = st.mode & 0o777;
    if (mode & 0o007) return `socket ${this.path} has mode ${mode.toString(8).padStart(4, '0')}: every local user can connect`;
    if (mode !== this.mode) return `socket ${this.path} has mode ${mode.toString(8).padStart(4, '0')}, expected ${this.mode.toString(8).padStart(4, '0')}`;
    if (st.uid !== this.uid) return `socket ${this.path} is owned by uid ${st.uid}, expected ${this.uid}`;
    if (this.gid !== undefined && st.gid !== this.gid) return `socket ${this.path} has group ${st.gid}, expected ${this.gid}`;
    return undefined;
  }
}
