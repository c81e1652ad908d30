import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer, type ClientIdentity, type ConnectionInfo, type TlsServerOptions } from '../tls/index.js';

/**
 * The part of the TLS engine's node:net adapter (src/tls/socket.ts) the edge uses,
 * declared here so the edge can be driven by the engine or, in tests, by a stand-in.
 */
export interface EngineSocket extends Duplex {
  readonly serverName?: string;
  readonly alpnProtocol?: string;
  readonly cipherSuite?: string;
  readonly group?: string;
  readonly signatureScheme?: string;
  readonly resumed?: boolean;
  /** Everything the handshake negotiated (version, group, HelloRetryRequest, resumption, scheme). */
  readonly handshakeInfo?: Readonly<ConnectionInfo>;
  /** The verified client certificate (this handshake, or the session it resumed). */
  readonly clientCertificate?: ClientIdentity;
  readonly clientCertificateFromSession?: boolean;
  /** The chain of the identity that served the connection. */
  readonly serverCertificateChain?: readonly Uint8Array[];
  /** Our flight asked for a client certificate (RFC 8446 §4.3.2). */
  readonly clientCertificateRequested?: boolean;
  /** CertificateVerify was signed with a delegated credential (RFC 9345), in the edge. */
  readonly delegatedCredential?: boolean;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  readonly localAddress?: string;
  readonly localPort?: number;
  /** The TCP socket under the TLS connection (the engine exposes it; gives the local address). */
  readonly rawSocket?: Socket;
  /** The engine moves application data to and from the upstream without pipes (src/tls/relay.ts). */
  relayTo?(upstream: Socket): void;
}

/** A listening server; `setTlsOptions` (the engine has it) applies reloaded options to new connections. */
export type EngineServer = Server & { setTlsOptions?(options: TlsServerOptions): void };

export type CreateTlsServer = (options: TlsServerOptions, onSecureConnection: (socket: EngineSocket) => void) => EngineServer;

/** The engine's `createServer`. */
export async function loadEngine(): Promise<CreateTlsServer> {
  return createServer as CreateTlsServer;
}
