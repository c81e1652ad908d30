import { MAX_TIMER_MS, shownValue } from '../keyd/limits.js';
import { ProvisionError } from './errors.js';

/**
 * Limits of the provisioning listener (config "provisioning.limits", docs/PROVISIONING.md
 * "Limits"). The listener faces unauthenticated peers: each of these bounds what such a
 * peer can hold (connections, time) or make keyd write (audit and log bytes).
 */
export interface ListenerLimits {
  /** A TLS handshake not completed this long after accept is closed. */
  handshakeTimeoutMs: number;
  /** Connections open at once, all addresses together. */
  maxConnections: number;
  /** Connections open at once from one IP address. */
  maxConnectionsPerAddress: number;
  /** An authenticated connection idle this long is closed. */
  idleTimeoutMs: number;
  /** Bytes of individual refusal entries (audit and log each) per minute; beyond, refusals are counted and summarised. */
  refusalBytesPerMinute: number;
}

export const DEFAULT_LISTENER_LIMITS: Readonly<ListenerLimits> = Object.freeze({
  handshakeTimeoutMs: 10_000,
  maxConnections: 64,
  maxConnectionsPerAddress: 8,
  idleTimeoutMs: 5 * 60_000,
  refusalBytesPerMinute: 16 * 1024,
});

/** The largest connection count: each connection is a file descriptor (as keyd's own, src/keyd/limits.ts). */
const CONNECTIONS = { max: 1_048_576, why: "connections are file descriptors; 1048576 is Linux's default ceiling per process, fs.nr_open" };
/**
 * The longest delay node's timers keep: the socket timeouts these set cut a longer one to it
 * (with a TimeoutOverflowWarning), so a larger value is a typo, never a longer bound.
 */
const TIMER = { max: MAX_TIMER_MS, why: "ms; at most about 24.8 days, the longest delay node's timers keep" };

/**
 * Each limit's range. The maxima are there so that a typo (1e12, a value in the wrong unit)
 * is refused at start rather than turning a bound into none; each is far above any
 * deployment's need, and says why it is where it is.
 */
export const LISTENER_LIMIT_RANGE: Readonly<Record<keyof ListenerLimits, { min: number; max: number; why: string }>> = Object.freeze({
  handshakeTimeoutMs: { min: 1, ...TIMER },
  maxConnections: { min: 1, ...CONNECTIONS },
  maxConnectionsPerAddress: { min: 1, ...CONNECTIONS },
  idleTimeoutMs: { min: 1, ...TIMER },
  // Each refusal written is a log line and most are an audit entry synced to disk: the
  // listener counts each as 200 bytes or more, so 16 MiB a minute is up to some 80000 of them.
  refusalBytesPerMinute: { min: 1, max: 16_777_216, why: 'refusals written per minute, each a log line and most an audit entry synced to disk: 16 MiB is up to some 80000 of them' },
});

export function parseListenerLimits(config: unknown): ListenerLimits {
  const raw = ((config as { provisioning?: { limits?: unknown } } | null | undefined)?.provisioning ?? {}).limits;
  const limits: ListenerLimits = { ...DEFAULT_LISTENER_LIMITS };
  if (raw === undefined) return limits;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ProvisionError('PROVISION_USAGE', 'config "provisioning.limits" must be an object');
  for (const [key, value] of Object.entries(raw)) {
    // Own keys only: `in` also finds Object.prototype's members, so "constructor" or
    // "toString" passed as a limit (no range: every comparison false) and was set on the limits.
    if (!Object.hasOwn(LISTENER_LIMIT_RANGE, key)) {
      throw new ProvisionError('PROVISION_USAGE', `config "provisioning.limits.${key}" is not a known limit (${Object.keys(LISTENER_LIMIT_RANGE).join(', ')})`);
    }
    const { min, max, why } = LISTENER_LIMIT_RANGE[key as keyof ListenerLimits];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new ProvisionError('PROVISION_USAGE', `config "provisioning.limits.${key}" must be an integer from ${min} to ${max} (${why}), not ${shownValue(value)}`);
    }
    limits[key as keyof ListenerLimits] = value;
  }
  return limits;
}
