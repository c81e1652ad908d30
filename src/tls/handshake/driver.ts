import { decodeClientHello } from '../messages/client-hello.js';
import { ProtocolVersion } from '../wire/codepoints.js';
import type { HandshakeContext } from './context.js';
import { negotiateVersion } from './negotiate.js';
import { ServerHandshake12, type Negotiating12 } from './server12.js';
import { ServerHandshake13, type AwaitSecondClientHello, type Negotiating } from './server13.js';

/** What follows a ClientHello: a HelloRetryRequest sent, or our flight under way (TLS 1.3 or TLS 1.2). */
export type AfterClientHello = AwaitSecondClientHello | Negotiating | Negotiating12;

/**
 * Reads a ClientHello, negotiates the protocol version (RFC 8446 §4.2.1, RFC 5246 §E.1) and
 * hands the handshake to that version's server: server13.ts for TLS 1.3, server12.ts for
 * TLS 1.2. Each has its own steps and phases.
 *
 * `retry` is set when this ClientHello answers our HelloRetryRequest (TLS 1.3 only: the
 * second ClientHello must offer TLS 1.3 again, §4.1.4).
 */
export function receiveClientHello(ctx: HandshakeContext, raw: Buffer, retry: AwaitSecondClientHello | undefined): AfterClientHello {
  const hello = decodeClientHello(raw);
  const { tls12, tls13 } = ctx.options;
  const version = negotiateVersion(hello, { tls12: tls12 && !retry, tls13 });
  switch (version) {
    case ProtocolVersion.TLS13:
      ctx.info.version = 'TLSv1.3';
      return new ServerHandshake13(ctx).handshake(hello, retry);
    case ProtocolVersion.TLS12:
      return new ServerHandshake12(ctx).handshake(hello);
    default:
      return unreachable(version);
  }
}

function unreachable(version: never): never {
  throw new Error(`no handshake for negotiated version ${String(version)}`);
}
