/**
 * The assertion helper is itself tested: if its body were emptied, every test that leans
 * on it would pass without checking anything (see docs/ARCHITECTURE.md, tests).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AlertDescription, alertName, TlsAlert, type AlertName } from '../../src/tls/alert.js';
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

test("the engine's alert table holds the numbers RFC 8446 §6 (and RFC 5246 §7.2, RFC 6066 §3, RFC 7301 §3.2, RFC 7507 §2) give", () => {
  // Written out from the RFCs, not from src/tls/alert.ts: tests that compare the wire with
  // AlertDescription[name] cannot see a wrong number in the table itself.
  const rfc: Record<string, number> = {
    close_notify: 0,
    unexpected_message: 10,
    bad_record_mac: 20,
    record_overflow: 22,
    handshake_failure: 40,
    bad_certificate: 42,
    unsupported_certificate: 43,
    certificate_revoked: 44,
    certificate_expired: 45,
    certificate_unknown: 46,
    illegal_parameter: 47,
    unknown_ca: 48,
    access_denied: 49,
    decode_error: 50,
    decrypt_error: 51,
    protocol_version: 70,
    insufficient_security: 71,
    internal_error: 80,
    inappropriate_fallback: 86,
    user_canceled: 90,
    no_renegotiation: 100,
    missing_extension: 109,
    unsupported_extension: 110,
    unrecognized_name: 112,
    bad_certificate_status_response: 113,
    unknown_psk_identity: 115,
    certificate_required: 116,
    no_application_protocol: 120,
  };
  assert.deepEqual({ ...AlertDescription }, rfc);
  for (const [name, code] of Object.entries(rfc)) {
    const alert = new TlsAlert(name as AlertName, 'x');
    assert.equal(alert.alert, code, name);
    assert.equal(alertName(code), name);
  }
});
