import assert from 'node:assert/strict';
import { DecodeError } from '../../src/lib/reader.js';
import { TlsAlert, toAlert, type AlertName } from '../../src/tls/alert.js';

/**
 * Asserts that `fn` throws what the engine sends as the given alert: a TlsAlert, or a
 * DecodeError from the byte reader when the alert is decode_error (the engine maps it,
 * toAlert). Returns the alert the engine would send, for further checks.
 */
export function assertAlert(fn: () => unknown, alert: AlertName, message?: string): TlsAlert {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown !== undefined, `${message ?? 'call'}: expected TlsAlert ${alert}, nothing was thrown`);
  const decodeFailure = thrown instanceof DecodeError && alert === 'decode_error';
  assert.ok(thrown instanceof TlsAlert || decodeFailure, `${message ?? 'call'}: expected TlsAlert ${alert}, got ${String(thrown)}`);
  const sent = toAlert(thrown);
  assert.equal(sent.alertName, alert, `${message ?? 'call'}: ${sent.message}`);
  assert.equal(sent.code, `TLS_ALERT_${alert.toUpperCase()}`);
  return sent;
}
