import { decodeClientHello } from '../messages/client-hello.js';
import { ProtocolVersion } from '../wire/codepoints.js';
import type { HandshakeContext } from './context.js';
import { negotiateVersion } from './negotiate.js';
import { ServerHandshake13, type AwaitSecondClientHello, type Negotiating } from './server13.js';

/** What follows a ClientHello: a HelloRetryRequest sent, or our flight under way. */
export type AfterClientHello = AwaitSecondClientHello | Negotiating;

/**
 * Reads a ClientHello, negotiates the protocol version (RFC 8446 §4.2.1) and hands the
 * handshake to that version's server: server13.ts for TLS 1.3. This is the one place a
 * second version joins: a TLS 1.2 server (RFC 5246) gets its own `server12.ts` with its
 * own steps and phases, and a case below.
 *
 * `retry` is set when this ClientHello answers our HelloRetryRequest (TLS 1.3 only).
 */
export function receiveClientHello(ctx: HandshakeContext, raw: Buffer, retry: AwaitSecondClientHello | undefined): AfterClientHello {
  const hello = decodeClientHello(raw);
  const version = negotiateVersion(hello);
  switch (version) {
    case ProtocolVersion.TLS13:
      ctx.info.version = 'TLSv1.3';
      return new ServerHandshake13(ctx).handshake(hello, retry);
    default:
      return unreachable(version);
  }
}

function unreachable(version: never): never {
  throw new Error(`no handshake for negotiated version ${String(version)}`);
}
