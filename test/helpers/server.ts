/**
 * A test server on our TLS engine (`createServer` + `LocalSigner`), listening on an
 * ephemeral loopback port, that records what every connection negotiated and received.
 *
 * Application behaviour, chosen so that every kind of client has something to assert:
 * - a connection whose first bytes are an HTTP request (`GET `/`HEAD `) gets, once the
 *   request head is complete, `HTTP/1.1 200 OK` with a small fixed body
 *   (`TEST_RESPONSE_BODY`), then the server ends the connection (close_notify) —
 *   curl, tlsfuzzer-style `GET / HTTP/1.0` probes and browsers;
 * - anything else is echoed back byte for byte as it arrives (openssl s_client,
 *   gnutls-cli, node:tls), and the server ends when the client ends.
 *
 * `INTEROP_SERVER=node` runs the same tests against a node:tls server instead (same
 * key and chain): a way to check the tests themselves against a known-good server.
 * Engine-only details (group, signature scheme) are then `undefined`.
 */
import { createServer as createNodeTlsServer, type TLSSocket } from 'node:tls';
import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TestContext } from 'node:test';
import { LocalSigner } from '../../src/tls/signer.js';
import type { TlsServerOptions } from '../../src/tls/options.js';
import { NamedGroup, CipherSuite, nameOf } from '../../src/tls/wire/codepoints.js';
import { makeTestPki, type TestPki, type TestPkiOptions } from './pki.js';

export const TEST_RESPONSE_BODY = 'hello from the delegator test server\n';

/** The engine's TlsSocket as this helper uses it (see src/tls/socket.ts). */
interface EngineSocket extends Duplex {
  handshakeInfo: { version?: string };
  serverName: string | undefined;
  alpnProtocol: string | undefined;
  cipherSuite: string;
  group: string | undefined;
  signatureScheme: string | undefined;
  resumed: boolean;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
}

interface EngineModule {
  createServer(options: TlsServerOptions, onSecureConnection: (socket: EngineSocket) => void): Server;
}

/** What the server saw on one connection. */
export interface ServerConnection {
  /** 'TLSv1.3' or 'TLSv1.2'. */
  version: string | undefined;
  serverName: string | undefined;
  alpnProtocol: string | undefined;
  cipherSuite: string;
  group: string | undefined;
  signatureScheme: string | undefined;
  resumed: boolean;
  remotePort: number | undefined;
  /** Application data received so far. */
  received: Buffer;
  /** Application data written so far. */
  sent: Buffer;
  /** Resolves when the socket has closed (either side). */
  closed: Promise<void>;
  /** First error the socket emitted, if any. */
  error?: Error;
  socket: Duplex;
}

export interface TestServerOptions extends Partial<Omit<TlsServerOptions, 'resolveIdentity'>> {
  /** Use this PKI; otherwise one is generated from `keyType`/`extraNames`. */
  pki?: TestPki;
  keyType?: TestPkiOptions['keyType'];
  extraNames?: TestPkiOptions['extraNames'];
  /** Replaces the default identity resolver (one identity for every name). */
  resolveIdentity?: TlsServerOptions['resolveIdentity'];
  /** Called for every connection after the handshake, before the default behaviour is installed; return true to take it over. */
  onConnection?: (connection: ServerConnection) => boolean | void;
}

export interface TestServer {
  implementation: 'engine' | 'node';
  port: number;
  host: string;
  pki: TestPki;
  server: Server;
  connections: ServerConnection[];
  /** `tlsClientError`s: handshakes the server refused or that failed. */
  clientErrors: (Error & { code?: string; alert?: number })[];
  /** Resolves with connection number `index` (0-based) once its handshake completed. */
  connection(index: number, timeoutMs?: number): Promise<ServerConnection>;
  close(): Promise<void>;
}

function implementationFromEnv(): 'engine' | 'node' {
  return process.env['INTEROP_SERVER'] === 'node' ? 'node' : 'engine';
}

async function loadEngine(): Promise<EngineModule> {
  // Imported by URL so this helper compiles on its own; the engine is src/tls/socket.ts.
  return (await import(new URL('../../src/tls/socket.js', import.meta.url).href)) as EngineModule;
}

/** Starts a server on 127.0.0.1, port 0; registers `close()` with `t.after` when `t` is given. */
export async function startEngineServer(options: TestServerOptions = {}, t?: TestContext): Promise<TestServer> {
  const pki = options.pki ?? (await makeTestPki({ keyType: options.keyType, extraNames: options.extraNames }));
  const implementation = implementationFromEnv();
  const connections: ServerConnection[] = [];
  const clientErrors: TestServer['clientErrors'] = [];
  const sockets = new Set<Duplex>();
  const connectionWaiters: (() => void)[] = [];

  const accept = (socket: Duplex, view: Omit<ServerConnection, 'received' | 'sent' | 'closed' | 'socket'>): void => {
    sockets.add(socket);
    const connection: ServerConnection = {
      ...view,
      received: Buffer.alloc(0),
      sent: Buffer.alloc(0),
      socket,
      closed: new Promise<void>((resolve) => socket.once('close', () => resolve())),
    };
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', (err: Error) => {
      connection.error ??= err;
    });
    connections.push(connection);
    for (const wake of connectionWaiters.splice(0)) wake();
    if (options.onConnection?.(connection)) return;
    serveConnection(connection);
  };

  let server: Server;
  if (implementation === 'engine') {
    const engine = await loadEngine();
    const signer = new LocalSigner(pki.leafKey);
    const identity = { certificateChain: pki.chainDer, signer };
    const { pki: _pki, keyType: _k, extraNames: _e, onConnection: _o, ...engineOptions } = options;
    server = engine.createServer(
      { ...engineOptions, resolveIdentity: options.resolveIdentity ?? (() => identity) },
      (socket) =>
        accept(socket, {
          version: socket.handshakeInfo.version,
          serverName: socket.serverName,
          alpnProtocol: socket.alpnProtocol,
          cipherSuite: socket.cipherSuite,
          group: socket.group,
          signatureScheme: socket.signatureScheme,
          resumed: socket.resumed,
          remotePort: socket.remotePort,
        }),
    );
  } else {
    server = createNodeTlsServer(
      {
        key: pki.leafKeyPem,
        cert: pki.leafCertPem + pki.caCertPem,
        minVersion: 'TLSv1.2',
        ALPNProtocols: options.alpnProtocols ? [...options.alpnProtocols] : undefined,
        ecdhCurve: options.groups ? options.groups.map((g) => openSslGroupName(g)).join(':') : undefined,
        ciphers: options.cipherSuites ? options.cipherSuites.map((s) => nameOf(CipherSuite, s)).join(':') : undefined,
      },
      (socket: TLSSocket) =>
        accept(socket, {
          version: socket.getProtocol() ?? undefined,
          serverName: socket.servername || undefined,
          alpnProtocol: socket.alpnProtocol || undefined,
          cipherSuite: socket.getCipher().standardName,
          group: undefined,
          signatureScheme: undefined,
          resumed: socket.isSessionReused(),
          remotePort: socket.remotePort,
        }),
    );
  }
  server.on('tlsClientError', (err: Error & { code?: string; alert?: number }) => clientErrors.push(err));
  // Raw TCP sockets, so close() can also abort connections stuck in a handshake.
  const rawSockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    rawSockets.add(socket);
    socket.once('close', () => rawSockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('test server has no TCP address');

  const testServer: TestServer = {
    implementation,
    port: address.port,
    host: '127.0.0.1',
    pki,
    server,
    connections,
    clientErrors,
    async connection(index, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (connections.length <= index) {
        const left = deadline - Date.now();
        if (left <= 0) {
          const errors = clientErrors.map((e) => `${e.code ?? ''} ${e.message}`).join('; ');
          throw new Error(`server saw ${connections.length} connection(s), wanted #${index}; client errors: ${errors || 'none'}`);
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          connectionWaiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return connections[index]!;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      for (const socket of rawSockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  t?.after(() => testServer.close());
  return testServer;
}

const HTTP_METHODS = ['GET ', 'HEAD '];

/** The default behaviour: HTTP answer for a request, echo for anything else. */
function serveConnection(connection: ServerConnection): void {
  const { socket } = connection;
  let mode: 'undecided' | 'http' | 'echo' = 'undecided';
  const send = (data: Buffer): void => {
    connection.sent = Buffer.concat([connection.sent, data]);
    socket.write(data);
  };
  socket.on('data', (chunk: Buffer) => {
    connection.received = Buffer.concat([connection.received, chunk]);
    if (mode === 'undecided') {
      // Decide on the first bytes: an HTTP method followed by a space, or anything else.
      const prefix = connection.received.subarray(0, 5).toString('latin1');
      if (HTTP_METHODS.some((method) => prefix.startsWith(method))) mode = 'http';
      else if (HTTP_METHODS.some((method) => method.startsWith(prefix))) return; // too short to tell yet
      else {
        mode = 'echo';
        send(connection.received);
        return;
      }
    }
    if (mode === 'echo') {
      send(chunk);
      return;
    }
    if (connection.received.includes('\r\n\r\n')) {
      mode = 'echo'; // answered; ignore the rest
      socket.removeAllListeners('data');
      socket.resume();
      const body = Buffer.from(TEST_RESPONSE_BODY);
      const isHead = connection.received.subarray(0, 5).toString('latin1') === 'HEAD ';
      const head = Buffer.from(
        `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
      );
      send(isHead ? head : Buffer.concat([head, body]));
      socket.end();
    }
  });
  socket.on('end', () => socket.end());
}

function openSslGroupName(group: number): string {
  switch (group) {
    case NamedGroup.x25519:
      return 'X25519';
    case NamedGroup.x448:
      return 'X448';
    case NamedGroup.secp256r1:
      return 'P-256';
    case NamedGroup.secp384r1:
      return 'P-384';
    case NamedGroup.secp521r1:
      return 'P-521';
    default:
      throw new Error(`no OpenSSL name for group 0x${group.toString(16)}`);
  }
}
