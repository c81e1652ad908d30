import type { ClientAuthOptions, ResolvedOptions } from '../options.js';
import type { Identity } from '../signer.js';
import type { ClientIdentity } from './context.js';

/**
 * Which client-auth setting a handshake runs under, and what a resumed session must agree
 * with: shared by the TLS 1.3 and TLS 1.2 handshakes so both treat tickets alike.
 */

/** The ticket policy of handshakes that ask for no client certificate. */
export const CLIENT_AUTH_OFF = 'off';

/** The identity's setting (else the server's); undefined when it asks for no certificate. */
export function clientAuthFor(identity: Identity, options: ResolvedOptions): ClientAuthOptions | undefined {
  const clientAuth = identity.clientAuth ?? options.clientAuth;
  return clientAuth && clientAuth.mode !== 'off' ? clientAuth : undefined;
}

/** What a session records as its policy: the policy id, the mode, or "off". */
export function clientAuthPolicyId(clientAuth: ClientAuthOptions | undefined): string {
  return clientAuth ? (clientAuth.policyId ?? clientAuth.mode) : CLIENT_AUTH_OFF;
}

/**
 * A session resumes only under the policy it was made under (RFC 8446 §4.6.1 and RFC 5246
 * §7.4.1.2 let a server decline), and only while a client certificate it carries is within
 * its notAfter: otherwise a session from a route without client certificates would skip
 * another route's requirement.
 */
export function sessionFitsClientAuth(
  session: { readonly clientAuthPolicy: string; readonly clientIdentity: ClientIdentity | undefined },
  policy: string,
  now: number,
): boolean {
  if (session.clientAuthPolicy !== policy) return false;
  return !session.clientIdentity || session.clientIdentity.notAfter >= now;
}
