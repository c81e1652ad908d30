/**
 * Errors of keyd and its client. Every failure carries a stable string `code`
 * (docs/PROTOCOL.md, "Error codes"); the message is one line for humans and never
 * contains key material.
 */
export type KeydErrorCode =
  | 'KEYD_BAD_FRAME'
  | 'KEYD_BAD_REQUEST'
  | 'KEYD_UNKNOWN_OPCODE'
  | 'KEYD_TOO_MANY_PENDING'
  | 'KEYD_UNKNOWN_KEY'
  | 'KEYD_UNKNOWN_NAME'
  | 'KEYD_NOT_AUTHORISED'
  | 'KEYD_BAD_HASH_LENGTH'
  | 'KEYD_DC_NOT_ALLOWED'
  | 'KEYD_DC_LIFETIME'
  | 'KEYD_BAD_SPKI'
  | 'KEYD_SCHEME_UNSUPPORTED'
  | 'KEYD_SCHEME_FORBIDDEN'
  | 'KEYD_NO_DOWNGRADE_SENTINEL'
  | 'KEYD_UNSUPPORTED_GROUP'
  | 'KEYD_BAD_ECDH_PARAMS'
  | 'KEYD_NOT_HANDSHAKE_CONTENT'
  | 'KEYD_BAD_KEY'
  | 'KEYD_BAD_CHAIN'
  | 'KEYD_KEY_MISMATCH'
  | 'KEYD_BAD_NAME'
  | 'KEYD_STORE_OTHER_ROOT_KEY'
  | 'KEYD_STORE_OTHER_MACHINE'
  | 'KEYD_STORE_CORRUPT'
  | 'KEYD_STORE_IO'
  | 'KEYD_ROOT_KEY'
  | 'KEYD_RECORD_TAMPERED'
  | 'KEYD_RECORD_ROLLED_BACK'
  | 'KEYD_RECORD_DELETED'
  | 'KEYD_STORE_ROLLED_BACK'
  | 'KEYD_MANIFEST_TAMPERED'
  | 'KEYD_MANIFEST_MISSING'
  | 'KEYD_COUNTER_MISSING'
  | 'KEYD_AUDIT_ROLLED_BACK'
  | 'KEYD_AUDIT_TAMPERED'
  | 'KEYD_ROOT_KEY_OTHER_TPM'
  | 'KEYD_ROOT_KEY_PCR_MISMATCH'
  | 'KEYD_TPM'
  | 'KEYD_TPM_UNAVAILABLE'
  | 'KEYD_ALREADY_RUNNING'
  | 'KEYD_NOT_A_SOCKET'
  | 'KEYD_CONFIG'
  | 'KEYD_INTERNAL'
  | 'KEYD_TOKEN_UNCONFIGURED'
  | 'KEYD_TOKEN_ABSENT'
  | 'KEYD_TOKEN_PIN'
  | 'KEYD_TOKEN_KEY_MISSING'
  | 'KEYD_TOKEN_KEY_MISMATCH'
  | 'KEYD_TOKEN_MECHANISM'
  | 'KEYD_TOKEN_SENSITIVE'
  | 'KEYD_TOKEN_FULL'
  | 'KEYD_TOKEN_ERROR'
  | 'KEYD_UNAVAILABLE'
  | 'KEYD_TIMEOUT'
  | 'KEYD_THROTTLED'
  | 'KEYD_TOO_MANY_CONNECTIONS'
  | 'KEYD_SOCKET_EXPOSED';

export class KeydError extends Error {
  override readonly name = 'KeydError';

  constructor(
    readonly code: KeydErrorCode | (string & {}),
    message: string,
  ) {
    super(message);
  }
}

/** True when `err` is a KeydError with this code. */
export function isKeydError(err: unknown, code?: string): err is KeydError {
  return err instanceof KeydError && (code === undefined || err.code === code);
}
