/**
 * The configured ticket lifetime (RFC 8446 §4.6.1): which values resolveOptions takes, and
 * that what a NewSessionTicket advertises is what the server honours.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { resolveOptions } from '../../src/tls/options.js';
import { ed25519Identity } from './connection-harness.js';
import { memoryTransport, Tls13Client, type ReceivedTicket } from '../helpers/tls13-client.js';

const identity = ed25519Identity();

// NaN passed `<= 0 || > 604800` and went out as ticket_lifetime 0, its tickets and session
// ids never resuming; a fraction went out truncated while the session-id cache used it whole.
test('ticketLifetimeSeconds must be an integer in [1, 604800]: NaN, fractions, 0, 604801 refused', () => {
  for (const value of [NaN, 0.5, 7200.5, 0, -1, 604_801, Infinity]) {
    assert.throws(() => resolveOptions({ resolveIdentity: () => identity, ticketLifetimeSeconds: value }), {
      name: 'RangeError',
      message: 'ticketLifetimeSeconds must be an integer in [1, 604800] (RFC 8446 §4.6.1)',
    }, String(value));
  }
});

test('positive control: 1, 7200 and 604800 are taken as given, and the default is 7200', () => {
  for (const value of [1, 7200, 604_800]) {
    assert.equal(resolveOptions({ resolveIdentity: () => identity, ticketLifetimeSeconds: value }).ticketLifetimeSeconds, value);
  }
  assert.equal(resolveOptions({ resolveIdentity: () => identity }).ticketLifetimeSeconds, 7200);
});

const T0 = 1_800_000_000_000;
const HOUR = 3_600_000;

/**
 * A server with the default ticket key ring (made by resolveOptions, on Date.now), its clock
 * mocked (mockDate first): a full handshake at T0 + issuedAfterMs yields one ticket (another at
 * T0 first, which makes the ring's key, when issuedAfterMs > 0); `resumesAt(ms)` offers the
 * ticket ms after it was issued.
 */
function mockDate(t: TestContext): void {
  t.mock.timers.enable({ apis: ['Date'], now: T0 });
}

async function defaultRingServer(t: TestContext, ticketLifetimeSeconds: number, issuedAfterMs = 0) {
  t.mock.timers.setTime(T0);
  const options = resolveOptions({ resolveIdentity: () => identity, ticketCount: 1, ticketLifetimeSeconds });
  const fullHandshake = async () => {
    const client = new Tls13Client(memoryTransport(options, () => Date.now()));
    await client.handshake();
    return (await client.readTickets(1))[0]!;
  };
  if (issuedAfterMs > 0) {
    await fullHandshake(); // the ring's key is made at T0
    t.mock.timers.setTime(T0 + issuedAfterMs);
  }
  const ticket = await fullHandshake();
  assert.equal(ticket.lifetime, ticketLifetimeSeconds, 'the advertised ticket_lifetime');
  const issuedAt = T0 + issuedAfterMs;
  const resumesAt = async (elapsedMs: number, offered: ReceivedTicket = ticket) => {
    t.mock.timers.setTime(issuedAt + elapsedMs);
    const transport = memoryTransport(options, () => Date.now());
    const client = new Tls13Client(transport, { psk: { ticket: offered.ticket, psk: offered.psk, obfuscatedAge: (elapsedMs + offered.ageAdd) >>> 0 } });
    client.sendClientHello();
    const sh = await client.readServerFlight();
    client.sendFinished();
    assert.equal(await client.readAlert(), undefined);
    assert.equal(transport.server.handshakeComplete, true);
    assert.equal(transport.server.conn.info.resumed, sh.selectedIdentity === 0);
    return transport.server.conn.info.resumed;
  };
  return { resumesAt };
}

// The default ring kept keys 8 h whatever ticketLifetimeSeconds said (up to 7 days): a ticket
// advertised for 24 h was refused after 8 h, and clients kept offering it for 16 h more.
test("default ring: a ticket advertised for 24 h still resumes after 23 h, one for 7 days at 7 days, whenever in the key's rotation it was sealed (the ring kept keys 8 h)", async (t) => {
  mockDate(t);
  const { resumesAt } = await defaultRingServer(t, 86_400);
  assert.equal(await resumesAt(23 * HOUR), true);
  assert.equal(await resumesAt(86_400_000), true, 'at its lifetime');
  const week = await defaultRingServer(t, 604_800);
  assert.equal(await week.resumesAt(604_800_000), true, 'a 7-day ticket at 7 days');
  // Sealed with a key made 59 min before: the key must open for a rotation + the lifetime.
  const late = await defaultRingServer(t, 86_400, 59 * 60_000);
  assert.equal(await late.resumesAt(86_400_000), true, 'a ticket sealed late in its key\'s rotation, at its lifetime');
});

test('controls: the same ticket resumes after 1 s and not 1 s past its 24 h; the 2 h default as before', async (t) => {
  mockDate(t);
  const day = await defaultRingServer(t, 86_400);
  assert.equal(await day.resumesAt(1000), true);
  assert.equal(await day.resumesAt(86_401_000), false, 'past its lifetime: a full handshake');
  const usual = await defaultRingServer(t, 7200);
  assert.equal(await usual.resumesAt(2 * HOUR), true);
  assert.equal(await usual.resumesAt(2 * HOUR + 1000), false);
});
