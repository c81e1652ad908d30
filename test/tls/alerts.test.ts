/**
 * The assertion helper is itself tested: if its body were emptied, every test that leans
 * on it would pass without checking anything (see docs/ARCHITECTURE.md, tests).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TlsAlert } from '../../src/tls/alert.js';
import { assertAlert } from './alerts.js';

test('assertAlert returns the TlsAlert thrown with the expected alert', () => {
  const thrown = new TlsAlert('decode_error', 'truncated');
  const returned = assertAlert(() => {
    throw thrown;
  }, 'decode_error');
  assert.equal(returned, thrown);
  assert.equal(returned.alert, 50); // RFC 8446 §6: decode_error(50)
});

test('assertAlert fails when nothing is thrown', () => {
  assert.throws(() => assertAlert(() => 42, 'decode_error', 'no throw'), (err: Error) => {
    assert.equal(err.name, 'AssertionError');
    assert.match(err.message, /no throw: expected TlsAlert decode_error, nothing was thrown/);
    return true;
  });
});

test('assertAlert fails when something other than a TlsAlert is thrown', () => {
  assert.throws(
    () =>
      assertAlert(() => {
        throw new RangeError('not an alert');
      }, 'decode_error'),
    (err: Error) => err.name === 'AssertionError' && /got RangeError: not an alert/.test(err.message),
  );
});

test('assertAlert fails when another alert is thrown', () => {
  assert.throws(
    () =>
      assertAlert(() => {
        throw new TlsAlert('illegal_parameter', 'wrong value');
      }, 'decode_error'),
    (err: Error) => err.name === 'AssertionError' && /wrong value/.test(err.message),
  );
});

test('assertAlert fails when the alert name matches but the code does not (a forged alert object)', () => {
  const forged = new TlsAlert('decode_error', 'forged');
  Object.defineProperty(forged, 'code', { value: 'TLS_ALERT_ILLEGAL_PARAMETER' });
  assert.throws(
    () =>
      assertAlert(() => {
        throw forged;
      }, 'decode_error'),
    (err: Error) => err.name === 'AssertionError',
  );
});
