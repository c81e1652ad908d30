/**
 * Drives a sans-I/O TlsServerConnection in memory and records what it did, so tests can
 * compare outcomes (events and bytes sent) between runs.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { TlsAlert, TlsPeerAlert } from '../../src/tls/alert.js';
import { TlsServerConnection } from '../../src/tls/connection.js';
import { resolveOptions } from '../../src/tls/options.js';
import type { TlsServerOptions } from '../../src/tls/options.js';
import { LocalSigner, type Identity } from '../../src/tls/signer.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import type { TlsSocket } from '../../src/tls/socket.js';
import { MiniTlsClient } from '../helpers/mini-tls-client.js';

export type Event =
  | { kind: 'error'; name: string; code: string; alert: number; internalBug: boolean }
  | { kind: 'handshakeComplete' }
  | { kind: 'peerClose' }
  | { kind: 'data'; length: number };

export interface Outcome {
  events: Event[];
  sent: Buffer[];
  /** Something other than TlsAlert / TlsPeerAlert reached onError, or receive() threw. */
  foreignErrors: unknown[];
}

/**
 * An Ed25519 identity: its signatures always have 64 bytes, so the server flight has the
 * same length on every run (ECDSA's DER signatures vary by a byte or two). The chain is
 * opaque bytes: the engine never parses certificates.
 */
export function ed25519Identity(): Identity {
  const { privateKey } = generateKeyPairSync('ed25519');
  return { certificateChain: [randomBytes(300), randomBytes(200)], signer: new LocalSigner(privateKey) };
}

export function makeOptions(identity: Identity, extra: Partial<TlsServerOptions> = {}) {
  return resolveOptions({ resolveIdentity: () => identity, ticketKeys: new TicketKeyRing(), ...extra });
}

/** Lets every pending promise of the connection (identity lookup, signing) settle. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Feeds `chunks` one by one (synchronously, as a socket would deliver them) and records the outcome. */
export async function run(options: ReturnType<typeof makeOptions>, chunks: Buffer[], now = () => 1_700_000_000_000): Promise<Outcome> {
  const conn = new TlsServerConnection(options, now);
  const outcome: Outcome = { events: [], sent: [], foreignErrors: [] };
  conn.onSend = (b) => outcome.sent.push(Buffer.from(b));
  conn.onHandshakeComplete = () => outcome.events.push({ kind: 'handshakeComplete' });
  conn.onPeerClose = () => outcome.events.push({ kind: 'peerClose' });
  conn.onApplicationData = (d) => outcome.events.push({ kind: 'data', length: d.length });
  conn.onError = (err) => {
    if (!(err instanceof TlsAlert) && !(err instanceof TlsPeerAlert)) {
      outcome.foreignErrors.push(err);
      return;
    }
    // fail() attaches the original error as `cause` when something other than a TlsAlert was thrown.
    const internalBug = (err as Error & { cause?: unknown }).cause !== undefined;
    outcome.events.push({ kind: 'error', name: err.name, code: err.code, alert: err.alert, internalBug });
  };
  for (const chunk of chunks) {
    try {
      conn.receive(chunk);
    } catch (err) {
      outcome.foreignErrors.push(err);
    }
  }
  await settle();
  return outcome;
}

/** Splits `bytes` at the given cut points (any numbers; reduced modulo the length, sorted, deduplicated). */
export function splitAt(bytes: Buffer, cuts: number[]): Buffer[] {
  if (bytes.length === 0) return [bytes];
  const points = [...new Set(cuts.map((c) => c % bytes.length))].filter((c) => c > 0).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  out.push(bytes.subarray(prev));
  return out;
}

/** True when everything sent is plaintext alert records (deterministic bytes, comparable exactly). */
export function onlyPlaintextAlerts(sent: Buffer[]): boolean {
  const all = Buffer.concat(sent);
  let off = 0;
  while (off < all.length) {
    if (all.length - off < 5 || all[off] !== 21) return false;
    off += 5 + all.readUInt16BE(off + 3);
  }
  return off === all.length;
}

/** Waits, turn by turn of the event loop, until `condition` holds. */
export async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * Completes a TLS 1.3 handshake with a TlsSocket whose TCP socket is an in-memory stand-in:
 * `peer.push` delivers the client's bytes, `peer.out` collects what the server wrote.
 * Returns the client, to go on talking.
 */
export async function handshakeThroughPeer(peer: Duplex & { out: Buffer[] }, tls: TlsSocket): Promise<MiniTlsClient> {
  const client = new MiniTlsClient();
  const secure = once(tls, 'secure');
  peer.push(client.clientHello());
  await until(() => peer.out.length > 0);
  peer.push(client.receive(Buffer.concat(peer.out.splice(0))));
  await secure;
  return client;
}
