/**
 * The PKCS#11 v2.40/3.0 constants keyd uses, by value (OASIS PKCS#11 Base Specification,
 * §4 and the pkcs11t.h header). Kept here rather than read from the native binding so
 * that code which only describes token keys never loads it.
 */
export const CKA = {
  CLASS: 0x000,
  TOKEN: 0x001,
  PRIVATE: 0x002,
  LABEL: 0x003,
  VALUE: 0x011,
  KEY_TYPE: 0x100,
  ID: 0x102,
  SENSITIVE: 0x103,
  SIGN: 0x108,
  VERIFY: 0x10a,
  MODULUS: 0x120,
  MODULUS_BITS: 0x121,
  PUBLIC_EXPONENT: 0x122,
  PRIVATE_EXPONENT: 0x123,
  PRIME_1: 0x124,
  PRIME_2: 0x125,
  EXPONENT_1: 0x126,
  EXPONENT_2: 0x127,
  COEFFICIENT: 0x128,
  EXTRACTABLE: 0x162,
  NEVER_EXTRACTABLE: 0x164,
  ALWAYS_SENSITIVE: 0x165,
  EC_PARAMS: 0x180,
  EC_POINT: 0x181,
} as const;

export const CKO_PUBLIC_KEY = 2;
export const CKO_PRIVATE_KEY = 3;

export const CKK_RSA = 0x00;
export const CKK_EC = 0x03;
export const CKK_EC_EDWARDS = 0x40;

export const CKM = {
  RSA_PKCS_KEY_PAIR_GEN: 0x0000,
  RSA_PKCS_PSS: 0x000d,
  SHA256_RSA_PKCS: 0x0040,
  SHA384_RSA_PKCS: 0x0041,
  SHA512_RSA_PKCS: 0x0042,
  SHA256: 0x0250,
  SHA384: 0x0260,
  SHA512: 0x0270,
  EC_KEY_PAIR_GEN: 0x1040,
  ECDSA: 0x1041,
  EC_EDWARDS_KEY_PAIR_GEN: 0x1055,
  EDDSA: 0x1057,
} as const;

export const CKG_MGF1 = { sha256: 0x2, sha384: 0x3, sha512: 0x4 } as const;

export const CKU_USER = 1;
export const CKF_OS_LOCKING_OK = 0x2;
export const CKF_RW_SESSION = 0x2;
export const CKF_SERIAL_SESSION = 0x4;

/** Names of mechanisms for error messages. */
export function mechanismName(value: number): string {
  const entry = Object.entries(CKM).find(([, v]) => v === value);
  return entry ? `CKM_${entry[0]}` : `mechanism 0x${value.toString(16)}`;
}
