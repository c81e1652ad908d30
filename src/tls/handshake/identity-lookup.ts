import { TlsAlert } from '../alert.js';
import type { Identity } from '../signer.js';
import type { HandshakeContext } from './context.js';

/**
 * The identity for a ClientHello's server name, as both handshakes (server12.ts, server13.ts)
 * look it up: a failing resolver is internal_error, no identity is unrecognized_name for a
 * named ClientHello (RFC 6066 §3) and handshake_failure for one without server_name.
 * Undefined when the connection closed during an asynchronous lookup.
 */
export async function lookUpIdentity(ctx: HandshakeContext, serverName: string | undefined): Promise<Identity | undefined> {
  let identity: Identity | undefined;
  try {
    identity = await ctx.options.resolveIdentity(serverName);
  } catch (e) {
    throw new TlsAlert('internal_error', `identity lookup failed: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (ctx.closed) return undefined;
  if (!identity) {
    throw serverName !== undefined
      ? new TlsAlert('unrecognized_name', `no certificate for server name "${serverName}"`)
      : new TlsAlert('handshake_failure', 'no default certificate for a ClientHello without server_name');
  }
  return identity;
}
