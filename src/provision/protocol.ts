import type { KeyObject } from 'node:crypto';
import type { AuditEntry } from '../keyd/audit.js';
import { newestEntriesWithin } from '../keyd/audit-reader.js';
import { MAX_FRAME_BYTES } from './frames.js';
import type { Operation, Role } from './roles.js';

/**
 * Messages of the provisioning protocol (framed by frames.ts, inside TLS 1.3 with a client
 * certificate). The exchange:
 *
 *   keyd → operator   greeting: {type:"welcome", …} or {type:"refused", code, message} (then close)
 *   operator → keyd   request:  {id, op, args}
 *   keyd → operator   response: {id, ok:true, result} | {id, ok:false, error:{code, message}}
 *
 * keyd speaks first so the operator's CLI can check keyd's provisioning key against its pin
 * before it sends anything, and so a refused operator learns exactly why.
 */
export const PROTOCOL_VERSION = 1;

export interface Welcome {
  type: 'welcome';
  v: number;
  /** The operator as keyd sees it (normalised certificate subject) and its role. */
  operator: string;
  role: Role;
  /** keyd's X25519 provisioning public key (base64 raw 32 bytes) and its fingerprint. */
  keyd: { publicKey: string; fingerprint: string };
}

export interface Refused {
  type: 'refused';
  code: string;
  message: string;
}

export type Greeting = Welcome | Refused;

/**
 * `clientRefused`: the CLI tells keyd it refused keyd (fingerprint mismatch), so keyd audits it too.
 * `attestStart` / `attestQuote`: TPM evidence for attested provisioning (docs/PROVISIONING.md);
 * any authenticated operator may ask, they change nothing.
 */
export type RequestOp = Operation | 'clientRefused' | 'attestStart' | 'attestQuote';

export interface Request {
  id: number;
  op: RequestOp;
  args: Record<string, unknown>;
}

export type Response =
  | { id: number; ok: true; result: unknown; truncated?: true; omitted?: number }
  | { id: number; ok: false; error: { code: string; message: string } };

/**
 * An `audit` answer is one frame (frames.ts, 1 MiB): its result is the newest of the entries
 * asked for that fit, whole, as keyd's admin socket answers (audit-reader.ts
 * newestEntriesWithin). When older ones are left out the response says so beside its result,
 * `"truncated": true, "omitted": N`, so that the result stays the list of entries this
 * protocol version has always answered (docs/PROVISIONING.md).
 */
export function auditResponse(id: number, entries: readonly AuditEntry[]): Response {
  // newestEntriesWithin sizes {"entries":[…],"truncated":true,"omitted":N}; the response is
  // {"id":ID,"ok":true,"result":[…],"truncated":true,"omitted":N}: the same bytes but for the
  // part before the list, so the frame's budget less that difference makes the two sizes equal.
  const wire = toWire(entries) as AuditEntry[];
  const before = Buffer.byteLength(JSON.stringify({ id, ok: true, result: [] })) - Buffer.byteLength(JSON.stringify({ entries: [] }));
  const reply = newestEntriesWithin(wire, MAX_FRAME_BYTES - before);
  return { id, ok: true, result: reply.entries, ...(reply.truncated ? { truncated: true as const, omitted: reply.omitted! } : {}) };
}

/** Same operations as keyd's in-process AdminService (src/keyd/admin-service.ts), as seen by provisioning. */
export interface AdminCaller {
  kind: 'local' | 'operator';
  id: string;
}

/** Key types keyd can generate (AdminService.generate). */
export const GENERATE_KEY_TYPES = ['ecdsa-p256', 'ecdsa-p384', 'rsa2048', 'rsa3072', 'rsa4096', 'ed25519'] as const;
export type GenerateKeyType = (typeof GENERATE_KEY_TYPES)[number];

export interface ProvisioningAdmin {
  put(caller: AdminCaller, names: string[], privateKey: KeyObject, chainDer: Uint8Array[]): Promise<unknown>;
  generate(caller: AdminCaller, name: string, keyType: GenerateKeyType, subject: string): Promise<{ info: unknown; csrPem: string }>;
  setChain(caller: AdminCaller, name: string, chainDer: Uint8Array[]): Promise<unknown>;
  delete(caller: AdminCaller, name: string): Promise<unknown>;
  list(caller: AdminCaller): Promise<unknown[]>;
  show(caller: AdminCaller, name: string): Promise<unknown>;
  audit(caller: AdminCaller, opts?: Record<string, unknown>): Promise<unknown[]>;
  stats(caller: AdminCaller): Promise<unknown>;
  /** Writes a refusal decided before the service was reached (keyd's AdminService.recordAudit). */
  recordAudit(entry: { op: string; caller: AdminCaller; ok: false; code: string; message: string; remote: string; names?: string[] }): Promise<void>;
}

const BYTES_TAG = '$base64';

/** Makes an admin result JSON-safe: bytes → {"$base64": …}, Date → ISO string, bigint → string. */
export function toWire(value: unknown): unknown {
  if (value instanceof Uint8Array) return { [BYTES_TAG]: Buffer.from(value).toString('base64') };
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) return value.map(toWire);
  if (typeof value === 'object' && value !== null) {
    if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return toWire((value as { toJSON(): unknown }).toJSON());
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, v]) => v !== undefined && typeof v !== 'function')
        .map(([k, v]) => [k, toWire(v)]),
    );
  }
  return value;
}

/** Inverse of toWire for bytes (dates stay ISO strings). */
export function fromWire(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(fromWire);
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value);
    if (entries.length === 1 && entries[0]![0] === BYTES_TAG && typeof entries[0]![1] === 'string') {
      return new Uint8Array(Buffer.from(entries[0]![1], 'base64'));
    }
    return Object.fromEntries(entries.map(([k, v]) => [k, fromWire(v)]));
  }
  return value;
}
