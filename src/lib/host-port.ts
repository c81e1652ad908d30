/**
 * `HOST:PORT` as every command and config of the project writes an address: a name or IPv4
 * address, or an IPv6 address in brackets (`[::1]:8443`, RFC 3986 §3.2.2), then a port of
 * 0..65535. One parser for the edge, keyd, provisioning and the CLIs.
 */

export interface HostPort {
  host: string;
  port: number;
}

export class HostPortError extends Error {
  readonly code = 'BAD_HOST_PORT';
}

/** Parses `HOST:PORT`; with `defaultHost`, a bare `PORT` is accepted too. `where` names the flag or key in the error. */
export function parseHostPort(text: string, where: string, defaultHost?: string): HostPort {
  const m = /^(?:\[([^\]]+)\]:|([^:[\]]+):)?(\d{1,5})$/.exec(text);
  if (!m || (m[1] === undefined && m[2] === undefined && defaultHost === undefined)) {
    throw new HostPortError(`${where}: '${text}' is not HOST:PORT`);
  }
  const port = Number(m[3]);
  if (port > 65535) throw new HostPortError(`${where}: port ${port} is out of range`);
  return { host: m[1] ?? m[2] ?? defaultHost!, port };
}
