import { KeydError } from './errors.js';
import { MAX_TIMER_MS } from '../lib/timer-range.js';

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

/**
 * The longest delay node's timers keep (src/lib/timer-range.ts): a longer frameTimeoutMs,
 * meant as "very long", would close every connection whose frame came in two reads, and an
 * auditIntervalMs would flush the ledger every millisecond.
 */
export { MAX_TIMER_MS };
const TIMER = { max: MAX_TIMER_MS, why: "ms; at most about 24.8 days: node's timers run a longer delay after 1 ms" };

/**
 * Each limit's range. The maxima are there so that a typo (1e12, a value in the wrong unit)
 * is refused at start rather than turning a bound into none; each is far above any
 * deployment's need, and says why it is where it is.
 */
export const LIMIT_RANGE: Readonly<Record<keyof KeydLimits, { min: number; max: number; why?: string }>> = Object.freeze({
  // Each connection is a file descriptor: 2^20 is Linux's ceiling on one process's (fs.nr_open's default).
  maxConnectionsPerListener: { min: 1, max: 1_048_576, why: "connections are file descriptors; 1048576 is Linux's default ceiling per process, fs.nr_open" },
  maxConnectionsPerClient: { min: 1, max: 1_048_576, why: "connections are file descriptors; 1048576 is Linux's default ceiling per process, fs.nr_open" },
  idleTimeoutMs: { min: 1, ...TIMER },
  frameTimeoutMs: { min: 1, ...TIMER },
  tlsHandshakeTimeoutMs: { min: 1, ...TIMER },
  // One turn serves its batch with no timer or new connection in between: 4096 software
  // signatures (about 40 µs each, docs/KEYD.md "Signing rates") already hold the loop ≈ 160 ms.
  schedulerBatch: { min: 1, max: 4096, why: 'requests served in one event-loop turn, with no timer or accept in between' },
  // keyd signs some 24 000 per second in software: a rate or burst of millions bounds nothing.
  signaturesPerSecond: { min: 0, max: 1_000_000, why: 'far above what keyd can sign per second' },
  signatureBurst: { min: 0, max: 1_000_000, why: 'far above what keyd can sign per second' },
  auditIntervalMs: { min: 10, ...TIMER },
  delegatedCredentialMaxSeconds: { min: 60, max: 604_800, why: '7 days, RFC 9345 §4' },
  // Each issuance is an audit line synced to disk: a thousand per second per client is more than a disk syncs.
  delegatedCredentialsPerMinute: { min: 0, max: 60_000, why: 'each is an audit line synced to disk' },
});

/** A config value as an error message shows it: numbers as written, anything else as short JSON. */
export function shownValue(value: unknown): string {
  if (typeof value === 'number') return String(value);
  const json = JSON.stringify(value) ?? String(value);
  return json.length > 40 ? `${json.slice(0, 40)}…` : json;
}

/** Parses config "limits": every key optional, each an integer within LIMIT_RANGE. */
export function parseLimits(raw: unknown): KeydLimits {
  if (raw === undefined) return { ...DEFAULT_LIMITS };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new KeydError('KEYD_CONFIG', 'config "limits" must be an object');
  const limits: KeydLimits = { ...DEFAULT_LIMITS };
  for (const [key, value] of Object.entries(raw)) {
    // Own keys only: `in` also finds Object.prototype's members, so "constructor" or
    // "toString" passed as a limit (no range: every comparison false) and was set on the limits.
    if (!Object.hasOwn(LIMIT_RANGE, key)) throw new KeydError('KEYD_CONFIG', `config "limits"."${key}" is not a known limit (${Object.keys(LIMIT_RANGE).join(', ')})`);
    const { min, max, why } = LIMIT_RANGE[key as keyof KeydLimits];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new KeydError('KEYD_CONFIG', `config "limits"."${key}" must be an integer from ${min} to ${max}${why ? ` (${why})` : ''}, not ${shownValue(value)}`);
    }
    limits[key as keyof KeydLimits] = value;
  }
  // Without a rate there is no bucket (token-bucket.ts): a burst alone would limit nothing, unsaid.
  if (limits.signatureBurst > 0 && limits.signaturesPerSecond === 0) {
    throw new KeydError('KEYD_CONFIG', 'config "limits"."signatureBurst" needs "signaturesPerSecond" (the bucket\'s rate); alone it limits nothing');
  }
  if (limits.signaturesPerSecond > 0 && limits.signatureBurst === 0) limits.signatureBurst = limits.signaturesPerSecond;
  return limits;
}
