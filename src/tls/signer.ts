import { sign as cryptoSign, constants, type KeyObject } from 'node:crypto';
import { SCHEMES, schemesForKeyType, TRANSCRIPT_HASH_LENGTHS, type KeyType } from './signature-schemes.js';

/**
 * The one seam between the TLS engine and whoever holds the private key.
 *
 * The signer receives the transcript hash, never a digest or message to sign:
 * it builds the RFC 8446 §4.4.3 CertificateVerify content itself, so a signer
 * (keyd in particular) can never be used as a generic signing oracle.
 */
export interface Signer {
  /** Signature schemes this key can produce (RFC 8446 §4.2.3 codepoints). */
  readonly schemes: readonly number[];
  /** Signs the server CertificateVerify content for `transcriptHash`. */
  sign(scheme: number, transcriptHash: Uint8Array): Promise<Uint8Array>;
}

/** What the server presents for one name: DER certificates (leaf first) and the signer for the leaf's key. */
export interface Identity {
  readonly certificateChain: readonly Uint8Array[];
  readonly signer: Signer;
  /** ALPN protocols served under this name, in preference order; overrides the server's list (RFC 7301). */
  readonly alpnProtocols?: readonly string[];
}

/** Picks the identity for a ClientHello's server_name (undefined when the client sent none). */
export type ResolveIdentity = (serverName: string | undefined) => Promise<Identity | undefined> | Identity | undefined;

const SERVER_CONTEXT = Buffer.from('TLS 1.3, server CertificateVerify', 'latin1');
const CONTENT_PREFIX = Buffer.alloc(64, 0x20);

/**
 * RFC 8446 §4.4.3: 64 spaces, the context string, a zero byte, then the transcript hash.
 * Throws when the hash length is not one a TLS 1.3 suite produces.
 */
export function certificateVerifyContent(transcriptHash: Uint8Array): Buffer {
  if (!TRANSCRIPT_HASH_LENGTHS.includes(transcriptHash.length)) {
    throw new RangeError(`transcript hash must be 32 or 48 bytes, got ${transcriptHash.length}`);
  }
  return Buffer.concat([CONTENT_PREFIX, SERVER_CONTEXT, Buffer.of(0), transcriptHash]);
}

/** Signs `content` with `key` under `scheme`; shared by LocalSigner and keyd. */
export function signWithScheme(key: KeyObject, scheme: number, content: Uint8Array): Buffer {
  const info = SCHEMES.get(scheme);
  if (!info) throw new RangeError(`unsupported signature scheme 0x${scheme.toString(16)}`);
  if (info.keyType === 'rsa') {
    return cryptoSign(info.hash, content, {
      key,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: constants.RSA_PSS_SALTLEN_DIGEST,
    });
  }
  // ECDSA: node:crypto emits DER (r, s), which is what TLS carries (§4.2.3).
  return cryptoSign(info.hash, content, key);
}

/** The key type of a node:crypto private key, or undefined when TLS 1.3 cannot use it. */
export function keyTypeOf(key: KeyObject): KeyType | undefined {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return 'rsa';
    case 'ed25519':
      return 'ed25519';
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      if (curve === 'prime256v1') return 'ecdsa-p256';
      if (curve === 'secp384r1') return 'ecdsa-p384';
      if (curve === 'secp521r1') return 'ecdsa-p521';
      return undefined;
    }
    default:
      return undefined;
  }
}

/** A Signer over an in-process node:crypto private key (tests, benchmarks, the stand-alone demo). */
export class LocalSigner implements Signer {
  readonly schemes: readonly number[];

  constructor(private readonly key: KeyObject) {
    const keyType = keyTypeOf(key);
    if (key.type !== 'private' || !keyType) {
      throw new TypeError('LocalSigner needs an ECDSA (P-256/P-384/P-521), RSA or Ed25519 private key');
    }
    this.schemes = schemesForKeyType(keyType);
  }

  async sign(scheme: number, transcriptHash: Uint8Array): Promise<Uint8Array> {
    if (!this.schemes.includes(scheme)) {
      throw new RangeError(`key cannot sign with scheme 0x${scheme.toString(16)}`);
    }
    return signWithScheme(this.key, scheme, certificateVerifyContent(transcriptHash));
  }
}
