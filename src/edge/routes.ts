/**
 * Route table: server name → upstream. Names are exact (`api.example.com`) or a
 * wildcard that stands for exactly one leftmost label (`*.example.com` matches
 * `a.example.com`, not `example.com` nor `a.b.example.com`), as RFC 6125 §6.4.3
 * allows for certificates. An exact name always wins over a wildcard.
 */

export interface Upstream {
  readonly host: string;
  readonly port: number;
}

/**
 * A route's client-certificate setting (docs/EDGE.md, client certificates). The PEM bytes
 * are read when the config is loaded; the verifier is built from them when the edge starts.
 */
export interface RouteClientAuth {
  readonly mode: 'off' | 'optional' | 'required';
  /** PEM bundle of the client CAs (required unless mode is off). */
  readonly caPem?: Buffer;
  /** PEM CRL(s) signed by a CA of the bundle. */
  readonly crlPem?: Buffer;
  /** Send the CAs' names in certificate_authorities (RFC 8446 §4.2.4). */
  readonly advertiseCaNames: boolean;
}

export interface Route {
  /** Names as configured (lower case, no trailing dot). */
  readonly names: readonly string[];
  readonly upstream: Upstream;
  /** Send a PROXY protocol v2 header (client address + server name) before the plaintext. */
  readonly proxyProtocol: boolean;
  /** ALPN protocols this route speaks, server preference order; empty: the config has no list for it, and the edge negotiates from the union of all routes' lists. */
  readonly alpn: readonly string[];
  /** Client certificates for this route's names; undefined = off. */
  readonly clientAuth?: RouteClientAuth;
  /** Whether TLS 1.2 clients are served under this route's names (docs/TLS12.md); absent = yes. */
  readonly tls12?: boolean;
}

export class RouteError extends Error {
  readonly code = 'EDGE_BAD_ROUTE';
}

/** Lower-cases and strips one trailing dot; SNI carries no trailing dot (RFC 6066 §3) but configs may. */
export function normaliseName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
/** A client's label a wildcard stands for (the engine already refused non-ASCII); `_` is tolerated as clients send it. */
const WILDCARD_LABEL = /^[a-z0-9_-]+$/;

/** Checks a configured name: DNS labels, or `*.` followed by at least two labels. */
export function validateRouteName(name: string): string {
  const n = normaliseName(name);
  const labels = n.split('.');
  const rest = labels[0] === '*' ? labels.slice(1) : labels;
  if (n.length === 0 || n.length > 253) throw new RouteError(`route name '${name}' must be 1 to 253 characters`);
  if (labels[0] === '*' && rest.length < 2) {
    throw new RouteError(`wildcard route '${name}' must cover at least two labels (e.g. *.example.com)`);
  }
  for (const label of rest) {
    if (!LABEL.test(label)) throw new RouteError(`route name '${name}' has an invalid label '${label}'`);
  }
  return n;
}

export class RouteTable {
  private readonly exact = new Map<string, Route>();
  private readonly wildcard = new Map<string, Route>(); // key: the parent domain, without "*."

  constructor(routes: readonly Route[]) {
    for (const route of routes) {
      for (const raw of route.names) {
        const name = validateRouteName(raw);
        const [table, key] = name.startsWith('*.') ? [this.wildcard, name.slice(2)] : [this.exact, name];
        if (table.has(key)) throw new RouteError(`route name '${name}' is configured twice`);
        table.set(key, route);
      }
    }
  }

  /**
   * The route for a client's server name, or undefined when no route covers it. The engine
   * passes any ASCII host_name up to 65535 bytes (RFC 6066 §3); a wildcard covers only a
   * DNS host name (at most 253 characters, a first label of 1 to 63 letters, digits, `-` or
   * `_`), so a client cannot make the edge hold, log and ask keyd about a 64 KiB name (or a
   * literal `*`) as one of the wildcard's names. Exact names were checked when configured.
   */
  lookup(serverName: string): Route | undefined {
    const name = normaliseName(serverName);
    const exact = this.exact.get(name);
    if (exact) return exact;
    const dot = name.indexOf('.');
    if (dot <= 0 || dot > 63 || name.length > 253 || !WILDCARD_LABEL.test(name.slice(0, dot))) return undefined;
    return this.wildcard.get(name.slice(dot + 1));
  }

  /** Every route, each once. */
  routes(): Route[] {
    return [...new Set([...this.exact.values(), ...this.wildcard.values()])];
  }
}
