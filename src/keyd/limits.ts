import { KeydError } from './errors.js';

/**
 * keyd's resource limits (config section "limits", docs/KEYD.md "Limits"). Every input a
 * client controls — connections, bytes of a partial frame, time, signatures — has a bound
 * here, so no client can hold keyd's memory, file descriptors or CPU without one.
 */
export interface KeydLimits {
  /** Connections open at once on one listener (signing socket, each principal socket, mTLS, admin). */
  maxConnectionsPerListener: number;
  /** Connections open at once for one client identity (local principal or mTLS subject). */
  maxConnectionsPerClient: number;
  /** A connection with no complete request for this long is closed. */
  idleTimeoutMs: number;
  /** A frame must arrive whole within this time from its first byte; more bytes do not extend it. */
  frameTimeoutMs: number;
  /** The mTLS listener closes a connection whose TLS handshake has not completed within this time. */
  tlsHandshakeTimeoutMs: number;
  /** Requests served per event-loop turn across all connections, one per connection per round. */
  schedulerBatch: number;
  /** Per-client token bucket for signatures: tokens per second (0 = no bucket). */
  signaturesPerSecond: number;
  /** Bucket size (burst); default: one second's worth. */
  signatureBurst: number;
  /** Window over which refusals and signing counts are aggregated into one audit entry each. */
  auditIntervalMs: number;
  /**
   * Longest delegated credential keyd issues (RFC 9345), in seconds; at most 7 days (604800).
   * Default 4 hours: what a compromised edge keeps after it is cut off (docs/KEYD.md).
   */
  delegatedCredentialMaxSeconds: number;
  /** Delegated credentials issued per client per minute (each is an audit line); 0 = none at all. */
  delegatedCredentialsPerMinute: number;
}

export const DEFAULT_LIMITS: Readonly<KeydLimits> = Object.freeze({
  maxConnectionsPerListener: 1024,
  maxConnectionsPerClient: 64,
  idleTimeoutMs: 300_000,
  frameTimeoutMs: 10_000,
  tlsHandshakeTimeoutMs: 5_000,
  schedulerBatch: 64,
  signaturesPerSecond: 0,
  signatureBurst: 0,
  auditIntervalMs: 60_000,
  delegatedCredentialMaxSeconds: 4 * 3600,
  delegatedCredentialsPerMinute: 60,
});

const MINIMUM: Record<keyof KeydLimits, number> = {
  maxConnectionsPerListener: 1,
  maxConnectionsPerClient: 1,
  idleTimeoutMs: 1,
  frameTimeoutMs: 1,
  tlsHandshakeTimeoutMs: 1,
  schedulerBatch: 1,
  signaturesPerSecond: 0,
  signatureBurst: 0,
  auditIntervalMs: 10,
  delegatedCredentialMaxSeconds: 60,
  delegatedCredentialsPerMinute: 0,
};

/**
 * The longest delay node's timers keep (2^31 - 1 ms, about 24.8 days). setTimeout and
 * setInterval run a longer one after 1 ms instead (TimeoutOverflowWarning), so a
 * frameTimeoutMs meant as "very long" would close every connection whose frame came in two
 * reads, and an auditIntervalMs would flush the ledger every millisecond.
 */
export const MAX_TIMER_MS = 2_147_483_647;
const TIMER_LIMITS: ReadonlySet<keyof KeydLimits> = new Set(['idleTimeoutMs', 'frameTimeoutMs', 'tlsHandshakeTimeoutMs', 'auditIntervalMs']);

/** Parses config "limits": every key optional, each a non-negative integer of at least its minimum (a time at most MAX_TIMER_MS). */
export function parseLimits(raw: unknown): KeydLimits {
  if (raw === undefined) return { ...DEFAULT_LIMITS };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new KeydError('KEYD_CONFIG', 'config "limits" must be an object');
  const limits: KeydLimits = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(raw)) {
    if (!(key in MINIMUM)) throw new KeydError('KEYD_CONFIG', `config "limits"."${key}" is not a known limit (${Object.keys(MINIMUM).join(', ')})`);
    const min = MINIMUM[key as keyof KeydLimits];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
      throw new KeydError('KEYD_CONFIG', `config "limits"."${key}" must be an integer ≥ ${min}`);
    }
    if (TIMER_LIMITS.has(key as keyof KeydLimits) && value > MAX_TIMER_MS) {
      throw new KeydError('KEYD_CONFIG', `config "limits"."${key}" must be at most ${MAX_TIMER_MS} ms (about 24.8 days; node's timers run a longer delay after 1 ms)`);
    }
    limits[key as keyof KeydLimits] = value;
  }
  if (limits.delegatedCredentialMaxSeconds > 604_800) {
    throw new KeydError('KEYD_CONFIG', 'config "limits"."delegatedCredentialMaxSeconds" must be at most 604800 (7 days, RFC 9345 §4)');
  }
  // Without a rate there is no bucket (token-bucket.ts): a burst alone would limit nothing, unsaid.
  if (limits.signatureBurst > 0 && limits.signaturesPerSecond === 0) {
    throw new KeydError('KEYD_CONFIG', 'config "limits"."signatureBurst" needs "signaturesPerSecond" (the bucket\'s rate); alone it limits nothing');
  }
  if (limits.signaturesPerSecond > 0 && limits.signatureBurst === 0) limits.signatureBurst = limits.signaturesPerSecond;
  return limits;
}
