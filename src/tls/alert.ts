/**
 * TLS alerts as typed errors (RFC 8446 §6).
 *
 * The engine throws `TlsAlert` exactly where a problem is found, with a precise
 * message; one place (the connection) turns it into the alert record and closes.
 * A `DecodeError` from the neutral byte reader is the peer's malformed message and
 * becomes `decode_error` (§6.2); anything else thrown inside the core is a bug and
 * becomes `internal_error`.
 */
import { DecodeError } from '../lib/reader.js';

export const AlertDescription = {
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
} as const;

export type AlertName = keyof typeof AlertDescription;

const alertNames = new Map<number, AlertName>(
  Object.entries(AlertDescription).map(([name, code]) => [code, name as AlertName]),
);

export function alertName(code: number): string {
  return alertNames.get(code) ?? `unknown_alert(${code})`;
}

export class TlsAlert extends Error {
  readonly alert: number;
  readonly alertName: string;
  /** Stable machine-readable code, e.g. `TLS_ALERT_DECODE_ERROR`. */
  readonly code: string;

  constructor(alert: AlertName, message: string) {
    super(`tls: ${message}`);
    this.name = 'TlsAlert';
    this.alert = AlertDescription[alert];
    this.alertName = alert;
    this.code = `TLS_ALERT_${alert.toUpperCase()}`;
  }
}

/** Raised when the peer sent us a fatal alert (we do not answer it). */
export class TlsPeerAlert extends Error {
  readonly alert: number;
  readonly code: string;
  constructor(alert: number) {
    super(`tls: peer sent alert ${alertName(alert)}`);
    this.name = 'TlsPeerAlert';
    this.alert = alert;
    this.code = `TLS_PEER_ALERT_${alertName(alert).toUpperCase()}`;
  }
}

/**
 * The alert to send for whatever was thrown inside the engine: a TlsAlert as it is, a
 * DecodeError as decode_error (§6.2), anything else as internal_error with the original
 * error kept as `cause` (it is a bug).
 */
export function toAlert(err: unknown): TlsAlert {
  if (err instanceof TlsAlert) return err;
  if (err instanceof DecodeError) return new TlsAlert('decode_error', err.message);
  const alert = new TlsAlert('internal_error', `internal error: ${err instanceof Error ? err.message : String(err)}`);
  (alert as Error & { cause?: unknown }).cause = err;
  return alert;
}
