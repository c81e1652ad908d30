/**
 * The configured ticket lifetime (RFC 8446 §4.6.1): which values resolveOptions takes, and
 * that what a NewSessionTicket advertises is what the server honours.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveOptions } from '../../src/tls/options.js';
import { ed25519Identity } from './connection-harness.js';

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
