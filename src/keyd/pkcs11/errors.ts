import { KeydError } from '../errors.js';

/** Where a token error happened, for its message. */
export interface TokenErrorContext {
  /** The PKCS#11 function, e.g. C_Sign. */
  operation: string;
  token?: string;
  /** e.g. the mechanism, or where the PIN came from (never the PIN). */
  detail?: string;
}

/**
 * keyd error codes for PKCS#11 return values (docs/PROTOCOL.md, "Error codes"); the
 * message always names the CKR value and the function that returned it.
 */
const CODE_BY_CKR: Record<string, string> = {
  CKR_TOKEN_NOT_PRESENT: 'KEYD_TOKEN_ABSENT',
  CKR_TOKEN_NOT_RECOGNIZED: 'KEYD_TOKEN_ABSENT',
  CKR_DEVICE_REMOVED: 'KEYD_TOKEN_ABSENT',
  CKR_SLOT_ID_INVALID: 'KEYD_TOKEN_ABSENT',
  CKR_SESSION_HANDLE_INVALID: 'KEYD_TOKEN_ABSENT',
  CKR_SESSION_CLOSED: 'KEYD_TOKEN_ABSENT',
  CKR_OBJECT_HANDLE_INVALID: 'KEYD_TOKEN_ABSENT',
  CKR_PIN_INCORRECT: 'KEYD_TOKEN_PIN',
  CKR_PIN_INVALID: 'KEYD_TOKEN_PIN',
  CKR_PIN_LEN_RANGE: 'KEYD_TOKEN_PIN',
  CKR_PIN_EXPIRED: 'KEYD_TOKEN_PIN',
  CKR_PIN_LOCKED: 'KEYD_TOKEN_PIN',
  CKR_USER_PIN_NOT_INITIALIZED: 'KEYD_TOKEN_PIN',
  CKR_USER_NOT_LOGGED_IN: 'KEYD_TOKEN_PIN',
  CKR_MECHANISM_INVALID: 'KEYD_TOKEN_MECHANISM',
  CKR_MECHANISM_PARAM_INVALID: 'KEYD_TOKEN_MECHANISM',
  CKR_KEY_TYPE_INCONSISTENT: 'KEYD_TOKEN_MECHANISM',
  CKR_DOMAIN_PARAMS_INVALID: 'KEYD_TOKEN_MECHANISM',
  CKR_CURVE_NOT_SUPPORTED: 'KEYD_TOKEN_MECHANISM',
  CKR_KEY_SIZE_RANGE: 'KEYD_TOKEN_MECHANISM',
  CKR_ATTRIBUTE_SENSITIVE: 'KEYD_TOKEN_SENSITIVE',
  CKR_DEVICE_MEMORY: 'KEYD_TOKEN_FULL',
  CKR_TOKEN_WRITE_PROTECTED: 'KEYD_TOKEN_ERROR',
};

export function tokenErrorFromCkr(err: unknown, ctx: TokenErrorContext): KeydError {
  const message = err instanceof Error ? err.message : String(err);
  const m = /(CKR_[A-Z0-9_]+)/.exec(message);
  const where = `${ctx.token !== undefined ? `token ${JSON.stringify(ctx.token)}: ` : ''}${ctx.operation}${ctx.detail ? ` (${ctx.detail})` : ''}`;
  if (!m) {
    // Not a return value: the module could not be loaded, or the binding refused an argument.
    return new KeydError('KEYD_TOKEN_ERROR', `${where} failed: ${message.split('\n')[0]}`);
  }
  const value = (err as { code?: unknown }).code;
  const hex = typeof value === 'number' ? ` (0x${value.toString(16).padStart(8, '0')})` : '';
  return new KeydError(CODE_BY_CKR[m[1]!] ?? 'KEYD_TOKEN_ERROR', `${where} returned ${m[1]}${hex}`);
}
