/**
 * Initialises a tpm2-pkcs11 token through the PKCS#11 API (C_InitToken on the free slot,
 * then C_InitPIN as the security officer). argv[2]: JSON { module, label, pin, soPin };
 * the environment names the TPM (TPM2_PKCS11_TCTI) and the store (TPM2_PKCS11_STORE).
 */
import pkcs11js from 'pkcs11js';

const { module, label, pin, soPin } = JSON.parse(process.argv[2] ?? '{}') as { module: string; label: string; pin: string; soPin: string };
const p = new pkcs11js.PKCS11();
p.load(module);
p.C_Initialize();
try {
  const [slot] = p.C_GetSlotList(false);
  if (slot === undefined) throw new Error('tpm2-pkcs11 offers no slot');
  // CK_TOKEN_INFO.label is 32 bytes padded with blanks (PKCS#11 §5.5).
  p.C_InitToken(slot, soPin, label.padEnd(32));
  const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  p.C_Login(session, pkcs11js.CKU_SO, soPin);
  p.C_InitPIN(session, pin);
  p.C_Logout(session);
  p.C_CloseSession(session);
} finally {
  p.C_Finalize();
}
