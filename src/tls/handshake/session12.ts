import { Reader } from '../../lib/reader.js';
import { Writer } from '../../lib/writer.js';
import type { ClientIdentity } from './context.js';
import { readClientAuth, readTime, writeClientAuth, writeTime } from './ticket-fields.js';
import type { TicketKeyRing } from './ticket-keys.js';

/**
 * A resumable TLS 1.2 session (RFC 5246 §7.4.1.2, RFC 5077 §4): the master secret and
 * what a resumption must agree with. Kept in a bounded in-memory cache by session id, or
 * sealed into a ticket with the same rotating ticket keys as TLS 1.3 tickets, under
 * its own label so a ticket of one version never opens as the other.
 */
export interface Session12 {
  readonly cipherSuite: number;
  readonly masterSecret: Buffer;
  /** RFC 7627 §5.3: a session made with EMS resumes only with EMS, and one without only without. */
  readonly extendedMasterSecret: boolean;
  /** Server clock when the session was made (ms). */
  readonly issuedAt: number;
  readonly lifetimeSeconds: number;
  /** RFC 6066 §3: a session resumes only under the name it was made for. */
  readonly serverName: string;
  /** The client-auth policy the session was made under (client-auth-policy.ts). */
  readonly clientAuthPolicy: string;
  /** The client certificate verified in the full handshake, carried to resumed connections. */
  readonly clientIdentity: ClientIdentity | undefined;
}

const LABEL = 'tls12 ticket';
/** 2: client-auth policy and identity added; tickets of version 1 are not resumed. */
const VERSION = 2;

export function sealTicket12(ring: TicketKeyRing, s: Session12): Buffer {
  const w = new Writer(128);
  w.u8(VERSION).u16(s.cipherSuite).opaque(1, s.masterSecret).u8(s.extendedMasterSecret ? 1 : 0);
  writeTime(w, s.issuedAt);
  w.u32(s.lifetimeSeconds);
  w.opaque(1, Buffer.from(s.serverName, 'latin1'));
  writeClientAuth(w, s.clientAuthPolicy, s.clientIdentity);
  return ring.seal(LABEL, w.finish());
}

/** undefined when the ticket is not ours, from a retired key, altered, or of another format. */
export function openTicket12(ring: TicketKeyRing, ticket: Uint8Array): Session12 | undefined {
  const plain = ring.open(LABEL, ticket);
  if (!plain) return undefined;
  try {
    const r = new Reader(plain, 'ticket');
    if (r.u8() !== VERSION) return undefined;
    const cipherSuite = r.u16();
    const masterSecret = Buffer.from(r.vec(1, 48, 48, 'master_secret'));
    const ems = r.u8();
    const issuedAt = readTime(r);
    const lifetimeSeconds = r.u32();
    const serverName = Buffer.from(r.vec(1, 0, 255, 'server_name')).toString('latin1');
    const { clientAuthPolicy, clientIdentity } = readClientAuth(r);
    r.end();
    if (ems > 1) return undefined;
    return { cipherSuite, masterSecret, extendedMasterSecret: ems === 1, issuedAt, lifetimeSeconds, serverName, clientAuthPolicy, clientIdentity };
  } catch {
    return undefined;
  }
}

/** Whether a session may still be resumed at `now` (its lifetime, and a clock that went back). */
export function sessionIsLive(s: Session12, now: number): boolean {
  const age = now - s.issuedAt;
  return age >= 0 && age <= s.lifetimeSeconds * 1000;
}

/**
 * RFC 5246 Appendix F.1.4: "an upper limit of 24 hours is suggested for session ID lifetimes,
 * since an attacker who obtains a master_secret may be able to impersonate the compromised
 * party until the corresponding session ID is retired". Session ids took ticketLifetimeSeconds
 * (up to 7 days); they now stop at 24 h whatever it is (tickets keep the configured lifetime).
 */
export const SESSION_ID_MAX_LIFETIME_SECONDS = 86_400;

/** Whether a session may still be resumed by its session id at `now`: sessionIsLive, at most 24 h. */
export function sessionIdIsLive(s: Session12, now: number): boolean {
  const age = now - s.issuedAt;
  return age >= 0 && age <= Math.min(s.lifetimeSeconds, SESSION_ID_MAX_LIFETIME_SECONDS) * 1000;
}

/**
 * Sessions by session id (RFC 5246 §7.4.1.2), bounded: past `maxEntries` the oldest entry
 * goes first, so no client can make the cache grow without limit. Private to one process
 * (tickets are what processes share).
 */
export class SessionCache12 {
  private readonly sessions = new Map<string, Session12>();

  constructor(readonly maxEntries = 10_000) {
    if (!Number.isInteger(maxEntries) || maxEntries < 0) throw new RangeError('maxEntries must be a non-negative integer');
  }

  get size(): number {
    return this.sessions.size;
  }

  set(sessionId: Uint8Array, session: Session12): void {
    if (this.maxEntries === 0 || sessionId.length === 0) return;
    const key = Buffer.from(sessionId).toString('hex');
    this.sessions.delete(key);
    this.sessions.set(key, session);
    while (this.sessions.size > this.maxEntries) {
      const oldest = this.sessions.keys().next();
      if (oldest.done) break;
      this.sessions.delete(oldest.value);
    }
    this.dropExpired(session.issuedAt);
  }

  /**
   * Sessions past their lifetime are never resumed (get), and their master secrets need not
   * stay in memory until newer sessions push them out (RFC 5246 §F.1.4: a retired session's
   * master secret is what an attacker wants). Called on every insert and every lookup (get,
   * and the TLS 1.2 handshake for a ticket): a sweep on insert alone never ran on a server
   * that makes no new sessions, whose expired secrets then stayed in memory indefinitely. The
   * oldest come first (insertion order), so this stops at the first one not yet expired: each
   * call costs one comparison plus one per session it drops. A session dated ahead of `now`
   * (a clock that went back) is not expired, only not resumable now (get).
   */
  dropExpired(now: number): void {
    for (const [key, session] of this.sessions) {
      if (sessionIdIsLive(session, now) || session.issuedAt > now) break;
      this.sessions.delete(key);
    }
  }

  /** RFC 5246 §7.2: the session of a connection that ended with a fatal alert is not resumed again. */
  delete(sessionId: Uint8Array): void {
    if (sessionId.length === 0) return;
    this.sessions.delete(Buffer.from(sessionId).toString('hex'));
  }

  /** The live session for this id (at most 24 h old); expired ones are dropped, whatever the id. */
  get(sessionId: Uint8Array, now: number): Session12 | undefined {
    this.dropExpired(now);
    if (sessionId.length === 0) return undefined;
    const key = Buffer.from(sessionId).toString('hex');
    const session = this.sessions.get(key);
    if (!session) return undefined;
    if (!sessionIdIsLive(session, now)) {
      this.sessions.delete(key);
      return undefined;
    }
    return session;
  }
}
