/**
 * The one check of an ALPN preference list (RFC 7301), shared by the engine's
 * `alpnProtocols` option (options.ts), the edge's `routes[].alpn` (src/edge/config.ts) and
 * `serve --alpn` (src/cli/serve.ts); each caller wraps the error in its own kind.
 *
 * RFC 7301 §3.1: a ProtocolName is opaque<1..2^8-1>. The engine sends and matches a configured
 * name as its UTF-8 bytes (selectAlpn in handshake/negotiate.ts), so the bounds are on those
 * bytes, not on UTF-16 code units. A lone UTF-16 surrogate has no UTF-8 form (Buffer.from
 * would send EF BF BD in its place, a name nobody configured). A name listed twice in one
 * preference list is a mistake: its second place can never be chosen (§3.2, server order).
 *
 * An empty list is valid here (the engine and an identity read it as "no ALPN"); whether a
 * caller's users may write one is the caller's decision.
 */

/** RFC 7301 §3.1: ProtocolName is opaque<1..2^8-1>. */
export const MAX_ALPN_NAME_BYTES = 255;

const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Returns `value` as a list of names, or throws: TypeError when it is not a list or an entry
 * is not a string, RangeError for an empty name, a lone surrogate, a name over 255 UTF-8
 * bytes or a name listed twice. `list` names the whole list in messages, `entry(i)` its i-th
 * entry (e.g. `routes[0].alpn[2]`).
 */
export function checkAlpnNames(value: unknown, list: string, entry: (i: number) => string): string[] {
  if (!Array.isArray(value)) throw new TypeError(`${list} must be a list of protocol names`);
  const first = new Map<string, number>();
  return value.map((name: unknown, i) => {
    if (typeof name !== 'string') throw new TypeError(`${entry(i)} must be a non-empty string`);
    if (name.length === 0) throw new RangeError(`${entry(i)} must be a non-empty string`);
    if (LONE_SURROGATE.test(name)) throw new RangeError(`${entry(i)} holds a lone UTF-16 surrogate, which has no UTF-8 encoding`);
    if (Buffer.byteLength(name) > MAX_ALPN_NAME_BYTES) throw new RangeError(`${entry(i)} is longer than 255 bytes (RFC 7301 §3.1)`);
    const earlier = first.get(name);
    if (earlier !== undefined) throw new RangeError(`${entry(i)}: '${name}' is already ${entry(earlier)}; each protocol is listed once`);
    first.set(name, i);
    return name;
  });
}
