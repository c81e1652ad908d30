import { constants, createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import type { PKCS11 } from 'pkcs11js';
import { SCHEMES, type KeyType, type SchemeInfo } from '../../tls/signature-schemes.js';
import { keyTypeOf } from '../../tls/signer.js';
import { KeydError } from '../errors.js';
import { spkiOf, type KeyHandle, type KeyReference, type StoredKeyForm } from '../key-handle.js';
import type { GenerateKeyType } from '../pki.js';
import { formatTokenUri, parseTokenUri, takeEnvironmentPin, type TokenConfig } from './config.js';
import { CKA, CKG_MGF1, CKM, CKO_PRIVATE_KEY } from './constants.js';
import { ecdsaRawToDer, privateKeyAttributes, publicKeyFromAttributes, tokenKeyKind, type TemplateAttribute, type TokenKeyKind } from './key-material.js';
import type { Pkcs11Token } from './token.js';

/** What a token key's record holds: no key bytes, only where to find the object. */
export interface TokenKeyReference extends KeyReference {
  backend: 'pkcs11';
  /** Token label. */
  token: string;
  /** CKA_ID of the private key object, hex. */
  id: string;
  /** CKA_LABEL given at creation. */
  object: string;
}

/** The attributes every private key keyd puts into a token carries (PKCS#11 §4.9). */
const PROTECTED_PRIVATE_KEY: TemplateAttribute[] = [
  { type: CKA.TOKEN, value: true },
  { type: CKA.PRIVATE, value: true },
  { type: CKA.SENSITIVE, value: true },
  { type: CKA.EXTRACTABLE, value: false },
  { type: CKA.SIGN, value: true },
];

const HASH_MECHANISM = { sha256: CKM.SHA256, sha384: CKM.SHA384, sha512: CKM.SHA512 } as const;
const HASH_LENGTH = { sha256: 32, sha384: 48, sha512: 64 } as const;
const PKCS1_MECHANISM = { sha256: CKM.SHA256_RSA_PKCS, sha384: CKM.SHA384_RSA_PKCS, sha512: CKM.SHA512_RSA_PKCS } as const;

/**
 * keyd's tokens, by label. Holds no native code itself: the PKCS#11 binding
 * (src/keyd/pkcs11/token.ts) is imported the first time a configured token is used, so
 * a keyd without a "pkcs11" config section never loads it.
 */
export class TokenKeys {
  private readonly tokens = new Map<string, Promise<Pkcs11Token>>();

  /** `options.lib`: the PKCS#11 binding object every token uses (tests pass a wrapper around a real one; keyd passes none). */
  constructor(
    private readonly configs: readonly TokenConfig[],
    private readonly logger?: Logger,
    private readonly options: { lib?: PKCS11 } = {},
  ) {
    // Now, at start-up, before keyd runs any child process (the TPM root key's tpm2-tools).
    for (const config of configs) if (config.pinEnv !== undefined) takeEnvironmentPin(config.pinEnv);
  }

  /** Turns a stored reference into a handle; the token is only contacted when it signs. */
  resolve(reference: KeyReference): KeyHandle {
    if (reference.backend !== 'pkcs11' || typeof reference.token !== 'string' || typeof reference.id !== 'string' || typeof reference.spki !== 'string') {
      throw new Error(`unknown key reference (back-end ${JSON.stringify(reference.backend)})`);
    }
    return new TokenKeyHandle(reference as TokenKeyReference, this);
  }

  /** The token with this label, connected on first use. */
  token(label: string): Promise<Pkcs11Token> {
    let token = this.tokens.get(label);
    if (!token) {
      const config = this.configs.find((c) => c.label === label);
      if (!config) {
        return Promise.reject(new KeydError('KEYD_TOKEN_UNCONFIGURED', `token ${JSON.stringify(label)} is not in keyd's config "pkcs11" (configured: ${this.configs.map((c) => JSON.stringify(c.label)).join(', ') || 'none'})`));
      }
      token = import('./token.js').then(
        ({ Pkcs11Token }) => new Pkcs11Token(config, this.logger, { tokens: this.configs.length, ...(this.options.lib ? { lib: this.options.lib } : {}) }),
        (err: unknown) => {
          this.tokens.delete(label); // a later request tries again
          throw new KeydError('KEYD_TOKEN_ERROR', `the PKCS#11 binding (pkcs11js) could not be loaded for token ${JSON.stringify(label)}: ${(err as Error).message.split('\n')[0]} (run npm ci on this machine)`);
        },
      );
      this.tokens.set(label, token);
    }
    return token;
  }

  /** Generates a key pair inside the token (sensitive, never extractable); returns its handle. */
  async generate(uriText: string, keyType: GenerateKeyType, objectLabel: string): Promise<TokenKeyHandle> {
    const uri = parseTokenUri(uriText);
    const token = await this.token(uri.token);
    const { kind, bits } = generateKind(keyType);
    await token.requireMechanism(kind.generateMechanism, `a ${keyType} key`);
    await token.requireMechanism(kind.signMechanism, `signing with a ${keyType} key`);
    const id = uri.id ?? (await import('./token.js')).Pkcs11Token.newObjectId();
    if (uri.id) await refuseTakenId(token, uri.id);
    const label = uri.object ?? objectLabel;
    const common: TemplateAttribute[] = [
      { type: CKA.ID, value: id },
      { type: CKA.LABEL, value: label },
    ];
    const publicTemplate: TemplateAttribute[] = [{ type: CKA.TOKEN, value: true }, { type: CKA.VERIFY, value: true }, ...common];
    if (kind.ecParams) publicTemplate.push({ type: CKA.EC_PARAMS, value: kind.ecParams });
    if (bits) publicTemplate.push({ type: CKA.MODULUS_BITS, value: bits }, { type: CKA.PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) });
    const read = kind.ecParams ? [CKA.EC_POINT] : [CKA.MODULUS, CKA.PUBLIC_EXPONENT];
    // Decoded while keyd still holds the new pair's handles: a public key it cannot use
    // gets the pair destroyed (Pkcs11Token.generateKeyPair), not left unrecorded in the token.
    return token.generateKeyPair(kind.generateMechanism, publicTemplate, [...PROTECTED_PRIVATE_KEY, ...common], read, (attrs) => {
      const publicKey = publicKeyFromAttributes(kind, { ecPoint: attrs.get(CKA.EC_POINT), modulus: attrs.get(CKA.MODULUS), publicExponent: attrs.get(CKA.PUBLIC_EXPONENT) });
      const modulusBits = publicKey.asymmetricKeyDetails?.modulusLength;
      if (bits !== undefined && modulusBits !== bits) throw new Error(`CKA_MODULUS of ${modulusBits ?? '?'} bits, not the ${bits} asked for`);
      return this.handleFor(uri.token, id, label, kind.keyType, publicKey);
    });
  }

  /**
   * Puts an existing private key into the token (C_CreateObject, sensitive and never
   * extractable), then wipes keyd's DER copy of it. The KeyObject itself is dropped by
   * the caller; OpenSSL clears its memory when it is collected.
   */
  async importKey(uriText: string, privateKey: KeyObject, objectLabel: string): Promise<TokenKeyHandle> {
    const uri = parseTokenUri(uriText);
    const token = await this.token(uri.token);
    const keyType = keyTypeOf(privateKey);
    if (!keyType) throw new KeydError('KEYD_BAD_KEY', 'this key type cannot go into a token');
    const kind = tokenKeyKind(keyType);
    await token.requireMechanism(kind.signMechanism, `signing with a ${keyType} key`);
    const publicKey = createPublicKey(privateKey);
    const id = uri.id ?? (await import('./token.js')).Pkcs11Token.newObjectId();
    if (uri.id) await refuseTakenId(token, uri.id);
    const label = uri.object ?? objectLabel;
    const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
    try {
      let components: TemplateAttribute[];
      try {
        components = privateKeyAttributes(kind, pkcs8);
      } catch (err) {
        if (err instanceof KeydError) throw err; // already says why (a multi-prime RSA key)
        throw new KeydError('KEYD_BAD_KEY', `the key does not decode for the token: ${(err as Error).message}`);
      }
      await token.createObject([
        { type: CKA.CLASS, value: CKO_PRIVATE_KEY },
        { type: CKA.KEY_TYPE, value: kind.pkcs11KeyType },
        ...PROTECTED_PRIVATE_KEY,
        { type: CKA.ID, value: id },
        { type: CKA.LABEL, value: label },
        ...components,
      ]);
    } finally {
      pkcs8.fill(0); // the components are views into it
    }
    return this.handleFor(uri.token, id, label, kind.keyType, publicKey);
  }

  /**
   * Destroys the token objects of a key keyd made (generate, importKey) for a change that
   * failed before keyd recorded it (admin-service.ts). Returns why not, undefined when done.
   */
  async discard(key: TokenKeyHandle, why: string): Promise<string | undefined> {
    let token: Pkcs11Token;
    try {
      token = await this.token(key.reference.token);
    } catch (err) {
      return (err as Error).message;
    }
    return token.destroyObjectsWithId(Buffer.from(key.reference.id, 'hex'), why);
  }

  async close(): Promise<void> {
    const tokens = await Promise.allSettled(this.tokens.values());
    this.tokens.clear();
    for (const t of tokens) if (t.status === 'fulfilled') await t.value.close();
  }

  private handleFor(token: string, id: Buffer, object: string, keyType: KeyType, publicKey: KeyObject): TokenKeyHandle {
    return new TokenKeyHandle(
      { backend: 'pkcs11', keyType, spki: spkiOf(publicKey).toString('base64'), token, id: id.toString('hex'), object },
      this,
    );
  }
}

/**
 * keyd finds a token key by its CKA_ID and needs exactly one: a second object with an id
 * the operator gave (id= in the URI) would make both keys unusable, the one already
 * serving names included. keyd's own ids are 16 random bytes.
 */
async function refuseTakenId(token: Pkcs11Token, id: Buffer): Promise<void> {
  if (await token.hasObjectWithId(id)) {
    throw new KeydError('KEYD_BAD_REQUEST', `token ${JSON.stringify(token.label)} already holds an object with CKA_ID ${id.toString('hex')}: give another id= in the URI, or none (keyd then picks a random one)`);
  }
}

function generateKind(keyType: GenerateKeyType): { kind: TokenKeyKind; bits?: number } {
  switch (keyType) {
    case 'ecdsa-p256':
    case 'ecdsa-p384':
    case 'ed25519':
      return { kind: tokenKeyKind(keyType) };
    case 'rsa2048':
      return { kind: tokenKeyKind('rsa'), bits: 2048 };
    case 'rsa3072':
      return { kind: tokenKeyKind('rsa'), bits: 3072 };
    case 'rsa4096':
      return { kind: tokenKeyKind('rsa'), bits: 4096 };
  }
}

/**
 * A private key object in a PKCS#11 token. keyd hashes the content it built (SoftHSM and
 * many HSMs have no combined ECDSA-with-SHA-2 mechanism) and the token signs the digest:
 * CKM_ECDSA for ECDSA, CKM_RSA_PKCS_PSS with MGF1 of the same hash and a salt as long as
 * the hash (RFC 8446 §4.2.3), CKM_EDDSA over the content itself for Ed25519 (RFC 8032:
 * PureEdDSA signs the message).
 */
export class TokenKeyHandle implements KeyHandle {
  readonly keyType: KeyType;
  readonly publicKey: KeyObject;
  readonly location: string;
  private readonly kind: TokenKeyKind;
  private readonly id: Buffer;
  private readonly signatureLength: number;
  /** The object handle whose signature last verified (see sign). */
  private vouchedObject?: object;

  constructor(
    readonly reference: TokenKeyReference,
    private readonly tokens: TokenKeys,
  ) {
    this.keyType = reference.keyType;
    this.kind = tokenKeyKind(reference.keyType);
    this.publicKey = createPublicKey({ key: Buffer.from(reference.spki, 'base64'), format: 'der', type: 'spki' });
    this.id = Buffer.from(reference.id, 'hex');
    this.location = formatTokenUri({ token: reference.token, object: reference.object, id: this.id });
    // An RSA signature is as long as the modulus in whole bytes (RFC 8017 §8.1.1: k octets):
    // a 2050-bit key signs 257 bytes, and a shorter buffer makes C_Sign fail.
    this.signatureLength = this.kind.coordinateLength ? 2 * this.kind.coordinateLength : this.keyType === 'ed25519' ? 64 : Math.ceil((this.publicKey.asymmetricKeyDetails?.modulusLength ?? 4096) / 8);
  }

  /**
   * A signature from the token is verified under the public key keyd stored for the object
   * before it leaves keyd: the first one from each object handle found (an object replaced
   * in the token under the same CKA_ID would otherwise sign for the name with a key its
   * certificate does not hold; replacing it invalidates the handle, so the next find
   * verifies again), and every RSA one (a faulty RSA-CRT signature released to a peer
   * gives away the key's factors; RSA verification costs little next to RSA signing).
   */
  async sign(scheme: number, content: Uint8Array): Promise<Uint8Array> {
    const { signature, object } = await this.signInToken(scheme, content);
    if (this.keyType === 'rsa' || object !== this.vouchedObject) {
      if (!signatureVerifies(this.publicKey, SCHEMES.get(scheme)!, content, signature)) {
        throw new KeydError(
          'KEYD_TOKEN_KEY_MISMATCH',
          `token ${JSON.stringify(this.reference.token)}: the signature of the object with CKA_ID ${this.reference.id} does not verify under the public key keyd stored for it (object replaced in the token, or a faulty signature); not used`,
        );
      }
      this.vouchedObject = object;
    }
    return signature;
  }

  private async signInToken(scheme: number, content: Uint8Array): Promise<{ signature: Buffer; object: object }> {
    const token = await this.tokens.token(this.reference.token);
    const info = SCHEMES.get(scheme);
    // keyd's server checked the scheme against the request kind (schemeFitsKey): a TLS 1.2
    // ECDSA scheme names only its hash, so any ECDSA token key may sign it.
    const ecdsaAnyCurve = info !== undefined && info.keyType.startsWith('ecdsa-') && this.keyType.startsWith('ecdsa-');
    if (!info || (info.keyType !== this.keyType && !ecdsaAnyCurve)) {
      throw new KeydError('KEYD_SCHEME_UNSUPPORTED', `a ${this.keyType} token key cannot sign with scheme 0x${scheme.toString(16).padStart(4, '0')}`);
    }
    if (info.rsaPadding === 'pkcs1' && info.hash && info.hash !== 'sha224') {
      // The CSR keyd builds at generation (CAs expect PKCS#1 v1.5 there) and the TLS 1.2
      // ServerKeyExchange; keyd never lets PKCS#1 sign a TLS 1.3 CertificateVerify
      // (src/keyd/signed-content.ts). The token hashes: the mechanism takes the content.
      return token.sign(this.id, { mechanism: PKCS1_MECHANISM[info.hash] }, Buffer.from(content), this.signatureLength);
    }
    if (info.hash === null) return token.sign(this.id, { mechanism: CKM.EDDSA }, Buffer.from(content), this.signatureLength);
    const digest = createHash(info.hash).update(content).digest();
    if (this.keyType === 'rsa' && info.hash !== 'sha224') {
      const { CK_PARAMS_RSA_PSS } = (await import('pkcs11js')).default;
      const parameter = { type: CK_PARAMS_RSA_PSS, hashAlg: HASH_MECHANISM[info.hash], mgf: CKG_MGF1[info.hash], saltLen: HASH_LENGTH[info.hash] };
      return token.sign(this.id, { mechanism: CKM.RSA_PKCS_PSS, parameter }, digest, this.signatureLength);
    }
    const { signature, object } = await token.sign(this.id, { mechanism: CKM.ECDSA }, digest, this.signatureLength);
    if (signature.length !== this.signatureLength) {
      throw new KeydError('KEYD_TOKEN_ERROR', `token ${JSON.stringify(this.reference.token)}: C_Sign (CKM_ECDSA) returned ${signature.length} bytes, not r ‖ s of ${this.signatureLength}`);
    }
    return { signature: ecdsaRawToDer(signature), object };
  }

  storedForm(): StoredKeyForm {
    return { kind: 'reference', reference: this.reference };
  }
}

/** node:crypto's verification of a signature as TLS carries it (ECDSA: DER), for `info`'s scheme. */
function signatureVerifies(publicKey: KeyObject, info: SchemeInfo, content: Uint8Array, signature: Uint8Array): boolean {
  try {
    if (info.rsaPadding === 'pss') {
      return verify(info.hash, content, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
    }
    if (info.rsaPadding === 'pkcs1') return verify(info.hash, content, { key: publicKey, padding: constants.RSA_PKCS1_PADDING }, signature);
    return verify(info.hash, content, publicKey, signature);
  } catch {
    return false; // e.g. an ECDSA signature that is no DER at all
  }
}
