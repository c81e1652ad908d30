import assert from 'node:assert/strict';
import { TlsAlert, type AlertName } from '../../src/tls/alert.js';

/** Asserts that `fn` throws a TlsAlert with the given alert (and returns it for further checks). */
export function assertAlert(fn: () => unknown, alert: AlertName, message?: string): TlsAlert {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown !== undefined, `${message ?? 'call'}: expected TlsAlert ${alert}, nothing was thrown`);
  assert.ok(thrown instanceof TlsAlert, `${message ?? 'call'}: expected TlsAlert ${alert}, got ${String(thrown)}`);
  assert.equal(thrown.alertName, alert, `${message ?? 'call'}: ${thrown.message}`);
  assert.equal(thrown.code, `TLS_ALERT_${alert.toUpperCase()}`);
  return thrown;
}
