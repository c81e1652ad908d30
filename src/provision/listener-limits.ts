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

export function parseListenerLimits(config: unknown): ListenerLimits {
  const raw = ((config as { provisioning?: { limits?: unknown } } | null | undefined)?.provisioning ?? {}).limits;
  const limits: ListenerLimits = { ...DEFAULT_LISTENER_LIMITS };
  if (raw === undefined) return limits;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ProvisionError('PROVISION_USAGE', 'config "provisioning.limits" must be an object');
  for (const [key, value] of Object.entries(raw)) {
    if (!(key in DEFAULT_LISTENER_LIMITS)) {
      throw new ProvisionError('PROVISION_USAGE', `config "provisioning.limits.${key}" is not a known limit (${Object.keys(DEFAULT_LISTENER_LIMITS).join(', ')})`);
    }
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
      throw new ProvisionError('PROVISION_USAGE', `config "provisioning.limits.${key}" must be a positive integer`);
    }
    limits[key as keyof ListenerLimits] = value;
  }
  return limits;
}
