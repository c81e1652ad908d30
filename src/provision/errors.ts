/**
 * Errors of the provisioning channel. `code` is stable (tests, scripts and the audit log
 * match on it); `message` says exactly what was refused and why, without key material.
 */
export type ProvisionErrorCode =
  // Operator authentication (keyd side, sent to the client before it may do anything).
  | 'PROVISION_NO_CLIENT_CERT'
  | 'PROVISION_UNTRUSTED_CLIENT_CERT'
  | 'PROVISION_CLIENT_CERT_EXPIRED'
  | 'PROVISION_UNKNOWN_OPERATOR'
  | 'PROVISION_FORBIDDEN'
  // The sealed payload of `put` (keyd side).
  | 'PROVISION_SEALED_TO_OTHER_KEYD'
  | 'PROVISION_OPERATOR_MISMATCH'
  | 'PROVISION_PAYLOAD_TAMPERED'
  | 'PROVISION_REPLAY'
  | 'PROVISION_STALE'
  // Pinning of keyd's provisioning key (client side).
  | 'PROVISION_KEYD_NOT_TRUSTED'
  | 'PROVISION_KEYD_FINGERPRINT_MISMATCH'
  // Attestation of keyd's TPM (client side): the message starts with the failed check's name.
  | 'PROVISION_ATTESTATION_FAILED'
  | 'PROVISION_ATTESTATION_UNAVAILABLE'
  // Transport and framing.
  | 'PROVISION_BAD_REQUEST'
  | 'PROVISION_FRAME_TOO_LARGE'
  | 'PROVISION_UNAVAILABLE'
  | 'PROVISION_SERVER_NOT_TRUSTED'
  | 'PROVISION_CONNECTION_CLOSED'
  | 'PROVISION_TIMEOUT'
  | 'PROVISION_USAGE'
  | 'PROVISION_INTERNAL';

export class ProvisionError extends Error {
  override readonly name = 'ProvisionError';

  constructor(
    /** Stable error code; keyd's own admin errors (e.g. KEYD_UNKNOWN_KEY) pass through unchanged. */
    readonly code: ProvisionErrorCode | (string & {}),
    message: string,
  ) {
    super(message);
  }
}

/** The `code` of any thrown value, for errors that cross the wire. */
export function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.length > 0 ? code : 'PROVISION_INTERNAL';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
