/**
 * The node:net adapter's timer options (handshakeTimeoutMs, lingerMs, lingerIdleMs,
 * ticketDelayMs) reach setTimeout / socket.setTimeout (src/tls/socket.ts). Node runs a delay
 * over 2^31 - 1 ms after 1 ms (TimeoutOverflowWarning): handshakeTimeoutMs 2^31, meant as
 * "very long", cut every handshake at once. resolveOptions refuses such values; the largest
 * timer node keeps is taken and behaves as a long deadline.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { resolveOptions, type TlsServerOptions } from '../../src/tls/options.js';
import { createServer } from '../../src/tls/socket.js';
import { MAX_TIMER_MS } from '../../src/lib/timer-range.js';
import { ed25519Identity } from './connection-harness.js';

const identity = ed25519Identity();
const base: TlsServerOptions = { resolveIdentity: () => identity };
const TIMERS = [
  ['handshakeTimeoutMs', 1],
  ['lingerMs', 1],
  ['lingerIdleMs', 1],
  ['ticketDelayMs', 0],
] as const;

test('timer options beyond 2^31 - 1 ms (node runs them after 1 ms), below their minimum, NaN, fractions and Infinity are refused, naming the option and the range', () => {
  assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
  for (const [name, min] of TIMERS) {
    for (const value of [MAX_TIMER_MS + 1, 3_000_000_000_000, Infinity, NaN, 1.5, min - 1]) {
      assert.throws(() => resolveOptions({ ...base, [name]: value }), {
        name: 'RangeError',
        message: `${name} must be an integer number of ms from ${min} to 2147483647 (node's timers run a longer delay after 1 ms), not ${value}`,
      }, `${name} ${value}`);
    }
  }
  // createServer (and so setTlsOptions' callers) resolve the same way: nothing is listening.
  assert.throws(() => createServer({ ...base, handshakeTimeoutMs: 2 ** 31 }), { name: 'RangeError', message: /^handshakeTimeoutMs must be an integer number of ms from 1 to 2147483647/ });
});

test('positive control: 2^31 - 1 and the minimum are taken as given; the defaults are unchanged', () => {
  for (const [name, min] of TIMERS) {
    assert.equal(resolveOptions({ ...base, [name]: MAX_TIMER_MS })[name], MAX_TIMER_MS, name);
    assert.equal(resolveOptions({ ...base, [name]: min })[name], min, name);
  }
  const d = resolveOptions(base);
  assert.deepEqual([d.handshakeTimeoutMs, d.lingerMs, d.lingerIdleMs, d.ticketDelayMs], [10_000, 120_000, 2000, 0]);
});

test('positive control: handshakeTimeoutMs 2^31 - 1 is a long deadline, not an immediate one: a silent client stays connected', { timeout: 20_000 }, async () => {
  const clientErrors: (Error & { code?: string })[] = [];
  const server = createServer({ ...base, handshakeTimeoutMs: MAX_TIMER_MS });
  server.on('tlsClientError', (err: Error & { code?: string }) => clientErrors.push(err));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const raw = netConnect((server.address() as AddressInfo).port, '127.0.0.1');
  raw.on('error', () => {});
  let closed = false;
  raw.once('close', () => (closed = true));
  raw.resume();
  try {
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(closed, false, 'the connection is still open 300 ms after accept');
    assert.deepEqual(clientErrors.map((e) => e.code), []);
  } finally {
    raw.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
