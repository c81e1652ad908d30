/**
 * config "provisioning.limits" (docs/PROVISIONING.md "Limits"): every limit has a maximum, so
 * that a typo (1e12, a value in the wrong unit) is refused at start with the key, the range,
 * the reason and the value, instead of turning a bound into none.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LISTENER_LIMITS, parseListenerLimits, type ListenerLimits } from '../../src/provision/listener-limits.js';

const withLimits = (limits: Record<string, unknown>) => ({ provisioning: { operators: {}, limits } });
const TIMER = "ms; at most about 24.8 days, the longest delay node's timers keep";
const CONNECTIONS = "connections are file descriptors; 1048576 is Linux's default ceiling per process, fs.nr_open";

const EXPECTED: Record<keyof ListenerLimits, { max: number; why: string }> = {
  handshakeTimeoutMs: { max: 2_147_483_647, why: TIMER },
  maxConnections: { max: 1_048_576, why: CONNECTIONS },
  maxConnectionsPerAddress: { max: 1_048_576, why: CONNECTIONS },
  idleTimeoutMs: { max: 2_147_483_647, why: TIMER },
  refusalBytesPerMinute: { max: 16_777_216, why: 'refusals written per minute, each a log line and most an audit entry synced to disk: 16 MiB is up to some 80000 of them' },
};

test('provisioning.limits above its maximum: refused with the key, the range, the reason and the value; each maximum accepted', () => {
  assert.deepEqual(Object.keys(EXPECTED).sort(), Object.keys(DEFAULT_LISTENER_LIMITS).sort(), 'every limit is checked here');
  for (const [key, { max, why }] of Object.entries(EXPECTED)) {
    for (const value of [max + 1, 1e12]) {
      assert.throws(() => parseListenerLimits(withLimits({ [key]: value })), {
        code: 'PROVISION_USAGE',
        message: `config "provisioning.limits.${key}" must be an integer from 1 to ${max} (${why}), not ${value}`,
      }, `${key} ${value}`);
    }
    // Below the minimum, not an integer, not a number: the same message, the value shown as written.
    for (const [value, shown] of [[0, '0'], [1.5, '1.5'], ['64', '"64"']] as const) {
      assert.throws(() => parseListenerLimits(withLimits({ [key]: value })), {
        message: `config "provisioning.limits.${key}" must be an integer from 1 to ${max} (${why}), not ${shown}`,
      }, `${key} ${shown}`);
    }
    // Control: the maximum and the minimum are accepted as written, the other limits keep their defaults.
    assert.deepEqual(parseListenerLimits(withLimits({ [key]: max })), { ...DEFAULT_LISTENER_LIMITS, [key]: max });
    assert.deepEqual(parseListenerLimits(withLimits({ [key]: 1 })), { ...DEFAULT_LISTENER_LIMITS, [key]: 1 });
  }
  // All at their maxima together.
  assert.deepEqual(parseListenerLimits(withLimits(Object.fromEntries(Object.entries(EXPECTED).map(([k, { max }]) => [k, max])))), Object.fromEntries(Object.entries(EXPECTED).map(([k, { max }]) => [k, max])));
});

test('provisioning.limits: a key named like an Object.prototype member (constructor, toString, __proto__) is an unknown limit, not one without a range', () => {
  const known = Object.keys(DEFAULT_LISTENER_LIMITS).join(', ');
  for (const name of ['constructor', 'toString', 'hasOwnProperty', 'valueOf', '__proto__']) {
    // JSON.parse, as keyd reads its config file: "__proto__" is an own key there.
    const config = JSON.parse(`{"provisioning": {"operators": {}, "limits": {"${name}": 5}}}`) as unknown;
    assert.throws(() => parseListenerLimits(config), { code: 'PROVISION_USAGE', message: `config "provisioning.limits.${name}" is not a known limit (${known})` }, name);
  }
  // Positive control: a known limit, read the same way.
  assert.deepEqual(parseListenerLimits(JSON.parse('{"provisioning": {"operators": {}, "limits": {"maxConnections": 5}}}')), { ...DEFAULT_LISTENER_LIMITS, maxConnections: 5 });
});

test('provisioning.limits that is not an object (an array, a number, null) is refused; an empty object keeps the defaults (control)', () => {
  for (const limits of [[], [5], 5, null, 'x']) {
    assert.throws(() => parseListenerLimits({ provisioning: { operators: {}, limits } }), { code: 'PROVISION_USAGE', message: 'config "provisioning.limits" must be an object' }, JSON.stringify(limits));
  }
  assert.deepEqual(parseListenerLimits(withLimits({})), DEFAULT_LISTENER_LIMITS);
});
