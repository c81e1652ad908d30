/**
 * A second PKCS#11 client for the token tests: logs into the token on its own and prints,
 * as JSON, what the PKCS#11 API says about one private key object (its protection
 * attributes, and what reading its secret value returns). argv[2]: JSON
 * { module, label, pin, id (hex CKA_ID or null), control }.
 */
import pkcs11js from 'pkcs11js';

const { module, label, pin, id, control } = JSON.parse(process.argv[2] ?? '{}') as { module: string; label: string; pin: string; id: string | null; control: boolean };
const p = new pkcs11js.PKCS11();
p.load(module);
p.C_Initialize();
try {
  const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trimEnd() === label);
  if (slot === undefined) throw new Error(`no token ${label}`);
  const mechanisms = p.C_GetMechanismList(slot);
  const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  p.C_Login(session, pkcs11js.CKU_USER, pin);
  let key: Buffer | undefined;
  let isRsa = false;
  if (control) {
    // A key made to be readable: proves that this inspector does read a value when allowed.
    const pair = p.C_GenerateKeyPair(
      session,
      { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      [{ type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') }, { type: pkcs11js.CKA_TOKEN, value: false }],
      [{ type: pkcs11js.CKA_TOKEN, value: false }, { type: pkcs11js.CKA_SENSITIVE, value: false }, { type: pkcs11js.CKA_EXTRACTABLE, value: true }, { type: pkcs11js.CKA_SIGN, value: true }],
    );
    key = pair.privateKey;
  } else if (id !== null) {
    p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }, { type: pkcs11js.CKA_ID, value: Buffer.from(id, 'hex') }]);
    const found = p.C_FindObjects(session, 2);
    p.C_FindObjectsFinal(session);
    if (found.length !== 1) throw new Error(`expected one private key with CKA_ID ${id}, found ${found.length}`);
    key = found[0];
  }
  const result: Record<string, unknown> = { mechanisms };
  if (key) {
    const flag = (type: number) => {
      const [a] = p.C_GetAttributeValue(session, key!, [{ type }]);
      return (a!.value as Buffer)[0] === 1;
    };
    const [keyType] = p.C_GetAttributeValue(session, key, [{ type: pkcs11js.CKA_KEY_TYPE }]);
    const kt = keyType!.value as Buffer;
    isRsa = (kt.length === 8 ? Number(kt.readBigUInt64LE()) : kt.readUIntLE(0, kt.length)) === pkcs11js.CKK_RSA;
    result.sensitive = flag(pkcs11js.CKA_SENSITIVE);
    result.extractable = flag(pkcs11js.CKA_EXTRACTABLE);
    result.private = flag(pkcs11js.CKA_PRIVATE);
    result.alwaysSensitive = flag(pkcs11js.CKA_ALWAYS_SENSITIVE);
    result.neverExtractable = flag(pkcs11js.CKA_NEVER_EXTRACTABLE);
    try {
      const [v] = p.C_GetAttributeValue(session, key, [{ type: isRsa ? pkcs11js.CKA_PRIVATE_EXPONENT : pkcs11js.CKA_VALUE }]);
      result.secretRead = `read ${(v!.value as Buffer).length} bytes`;
    } catch (err) {
      result.secretRead = /(CKR_[A-Z_]+)/.exec((err as Error).message)?.[1] ?? (err as Error).message;
    }
  }
  process.stdout.write(JSON.stringify(result));
} finally {
  p.C_Finalize();
}
