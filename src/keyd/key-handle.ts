import { createPublicKey, type KeyObject } from 'node:crypto';
import { keyTypeOf, signWithScheme } from '../tls/signer.js';
import type { KeyType } from '../tls/signature-schemes.js';

/**
 * The seam between keyd and wherever a private key lives. keyd builds every signed
 * content itself (docs/PROTOCOL.md, signCertificateVerify) and hands it to the handle
 * with the signature scheme; the handle only signs. The software store's KeyObject is
 * one implementation; a PKCS#11 token object (src/keyd/pkcs11/) is another, whose
 * private key never enters keyd's memory.
 */
export interface KeyHandle {
  readonly keyType: KeyType;
  /** The public half, for SKI, the leaf/key match and CSRs. */
  readonly publicKey: KeyObject;
  /** Where the key lives, for `admin list` and logs: "software" or e.g. "pkcs11:token=…". */
  readonly location: string;
  /**
   * Signs `content` under the TLS signature scheme `scheme` (RFC 8446 §4.2.3 codepoint),
   * returning the signature as TLS carries it (ECDSA: DER). Asynchronous: a token call
   * may block for milliseconds, and keyd must keep serving meanwhile.
   */
  sign(scheme: number, content: Uint8Array): Promise<Uint8Array>;
  /**
   * The same, synchronously — only for a key in keyd's own memory, where signing cannot
   * block: keyd then answers within the read that brought the request (docs/PROTOCOL.md).
   */
  signNow?(scheme: number, content: Uint8Array): Uint8Array;
  /** What the sealed store writes for this key (see docs/KEYD.md, "Store"). */
  storedForm(): StoredKeyForm;
}

/**
 * A key as the sealed store records it: PKCS#8 bytes for a software key (the caller
 * wipes them after sealing), or a reference to a key held elsewhere (no key bytes).
 */
export type StoredKeyForm =
  | { kind: 'pkcs8'; der: Buffer }
  | { kind: 'reference'; reference: KeyReference };

/** A key held outside keyd: which back-end, and what that back-end needs to find it again. */
export interface KeyReference {
  backend: string;
  keyType: KeyType;
  /** SubjectPublicKeyInfo DER, base64: the handle is usable for identity while the token is away. */
  spki: string;
  [field: string]: unknown;
}

/** Turns a stored reference back into a handle (the store knows no back-end). */
export type ReferenceResolver = (reference: KeyReference) => KeyHandle;

/** A node:crypto private key held in keyd's memory, sealed on disk by the software store. */
export class SoftwareKeyHandle implements KeyHandle {
  readonly keyType: KeyType;
  readonly publicKey: KeyObject;
  readonly location = 'software';

  constructor(private readonly privateKey: KeyObject) {
    const keyType = keyTypeOf(privateKey);
    if (privateKey.type !== 'private' || !keyType) throw new TypeError('SoftwareKeyHandle needs a private key of a type TLS 1.3 uses');
    this.keyType = keyType;
    this.publicKey = createPublicKey(privateKey);
  }

  sign(scheme: number, content: Uint8Array): Promise<Uint8Array> {
    try {
      return Promise.resolve(this.signNow(scheme, content));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  signNow(scheme: number, content: Uint8Array): Uint8Array {
    return signWithScheme(this.privateKey, scheme, content);
  }

  storedForm(): StoredKeyForm {
    return { kind: 'pkcs8', der: this.privateKey.export({ format: 'der', type: 'pkcs8' }) };
  }
}

/** The DER SubjectPublicKeyInfo of a public key (to compare keys and to store references). */
export function spkiOf(publicKey: KeyObject): Buffer {
  return publicKey.export({ format: 'der', type: 'spki' });
}
