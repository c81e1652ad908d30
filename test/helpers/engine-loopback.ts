/**
 * The two loopback servers the relay and proxy tests put around the edge's data path: a
 * plaintext upstream app whose accepted sockets the test drives, and an engine server
 * (allowHalfOpen, as the edge runs it; no tickets) handing each connection to the test after
 * its handshake. Both listen on 127.0.0.1:0 and are closed, with their sockets, after the test.
 */
import { once } from 'node:events';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { createServer, type TlsSocket } from '../../src/tls/socket.js';
import type { Identity } from '../../src/tls/signer.js';

export interface UpstreamApp {
  port: number;
  /** Every socket accepted so far, in order. */
  accepted: Socket[];
  /** Resolves with the next accepted socket not yet handed out. */
  nextAccepted(): Promise<Socket>;
}

export async function startUpstreamApp(t: TestContext, onAccept?: (s: Socket, index: number) => void): Promise<UpstreamApp> {
  const accepted: Socket[] = [];
  const waiters: ((s: Socket) => void)[] = [];
  const app = createNetServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    onAccept?.(s, accepted.length);
    accepted.push(s);
    waiters.shift()?.(s);
  });
  app.listen(0, '127.0.0.1');
  await once(app, 'listening');
  t.after(async () => {
    for (const s of accepted) s.destroy();
    await new Promise<void>((resolve) => app.close(() => resolve()));
  });
  return {
    port: (app.address() as AddressInfo).port,
    accepted,
    nextAccepted: () => new Promise((resolve) => (accepted.length > waiters.length ? resolve(accepted[waiters.length]!) : waiters.push(resolve))),
  };
}

/** An engine server serving `identity`; returns its port. */
export async function startEngineServer(t: TestContext, identity: Identity, onSecure: (tls: TlsSocket) => void): Promise<number> {
  const raws = new Set<Socket>();
  const server = createServer({ resolveIdentity: () => identity, allowHalfOpen: true, ticketCount: 0 }, onSecure);
  server.on('connection', (raw: Socket) => {
    raws.add(raw);
    raw.on('close', () => raws.delete(raw));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    for (const raw of raws) raw.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as AddressInfo).port;
}
