import { sign as cryptoSign, constants, type KeyObject } from 'node:crypto';
import type { ClientAuthOptions } from './options.js';
import { SCHEMES, schemesForKeyType, tls12SchemesForKeyType, TRANSCRIPT_HASH_LENGTHS, type KeyType } from './signature-schemes.js';

/**
 * What the engine asks a signer to sign. The request carries the handshake values, never
 * a digest or message: the signer builds the signed content itself, so a signer (keyd in
 * particular) can never be used as a generic signing oracle (docs/KEYD.md).
 */
export type SignRequest = Tls13CertificateVerifyRequest | Tls12ServerKeyExchangeRequest;

/** RFC 8446 §4.4.3: the server CertificateVerify over the transcript hash. */
export interface Tls13CertificateVerifyRequest {
  readonly kind: 'tls13-certificate-verify';
  readonly scheme: number;
  readonly transcriptHash: Uint8Array;
}

/** RFC 5246 §7.4.3 / RFC 8422 §5.4: the ECDHE ServerKeyExchange over both randoms and the parameters. */
export interface Tls12ServerKeyExchangeRequest {
  readonly kind: 'tls12-server-key-exchange';
  readonly scheme: number;
  readonly clientRandom: Uint8Array;
  /** Ends with the RFC 8446 §4.1.3 downgrade sentinel when the server also speaks TLS 1.3. */
  readonly serverRandom: Uint8Array;
  /** ServerECDHParams: curve_type (3 = named_curve), named_curve u16, point<1..255>. */
  readonly serverParams: Uint8Array;
}

/** The one seam between the TLS engine and whoever holds the private key. */
export interface Signer {
  /** TLS 1.3 CertificateVerify schemes this key can produce (RFC 8446 §4.2.3 codepoints). */
  readonly schemes: readonly number[];
  /** TLS 1.2 ServerKeyExchange schemes (adds RSA PKCS#1 v1.5); absent when the signer cannot sign for TLS 1.2. */
  readonly tls12Schemes?: readonly number[];
  /** Signs the content `request` describes; rejects a kind or scheme it cannot serve. */
  sign(request: SignRequest): Promise<Uint8Array>;
}

/** What the server presents for one name: DER certificates (leaf first) and the signer for the leaf's key. */
export interface Identity {
  readonly certificateChain: readonly Uint8Array[];
  readonly signer: Signer;
  /**
   * ALPN protocols served under this name, in preference order; overrides the server's list
   * (RFC 7301); empty: no ALPN for this name. Not checked per handshake as the server's list is
   * at creation: build it with checkAlpnNames (alpn-names.ts) where the identity is made.
   */
  readonly alpnProtocols?: readonly string[];
  /** Client certificate policy for this name (e.g. one per edge route); overrides the server's. */
  readonly clientAuth?: ClientAuthOptions;
  /** false: this name is served over TLS 1.3 only, a TLS 1.2 ClientHello for it gets protocol_version (an edge route's `tls12: false`). */
  readonly tls12?: boolean;
  /**
   * A delegated credential (RFC 9345) the leaf's key signed, with the credential's own
   * signer: used instead of `signer` for clients that offer delegated_credential with the
   * credential's scheme. The engine reads the schemes from the credential itself.
   */
  readonly delegatedCredential?: DelegatedCredentialOffer;
}

/** RFC 9345: a credential bound to the identity's leaf certificate, and the key it delegates to. */
export interface DelegatedCredentialOffer {
  /** The encoded DelegatedCredential (§4), sent in the end-entity CertificateEntry's extensions. */
  readonly credential: Uint8Array;
  /** Signs CertificateVerify with the credential's key, under its dc_cert_verify_algorithm. */
  readonly signer: Signer;
  /** When the credential expires, in ms since the epoch (engine clock); not offered from then on. */
  readonly notAfter: number;
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

/**
 * RFC 5246 §7.4.3: client_random, server_random, then ServerECDHParams. Only the shape is
 * built here; keyd checks the parameters and the downgrade sentinel before it signs.
 */
export function serverKeyExchangeContent(clientRandom: Uint8Array, serverRandom: Uint8Array, serverParams: Uint8Array): Buffer {
  if (clientRandom.length !== 32 || serverRandom.length !== 32) {
    throw new RangeError(`client_random and server_random are 32 bytes each, got ${clientRandom.length} and ${serverRandom.length}`);
  }
  return Buffer.concat([clientRandom, serverRandom, serverParams]);
}

/** Signs `content` with `key` under `scheme`; shared by LocalSigner and keyd. */
export function signWithScheme(key: KeyObject, scheme: number, content: Uint8Array): Buffer {
  const info = SCHEMES.get(scheme);
  if (!info) throw new RangeError(`unsupported signature scheme 0x${scheme.toString(16)}`);
  if (info.rsaPadding === 'pkcs1') return cryptoSign(info.hash, content, { key, padding: constants.RSA_PKCS1_PADDING });
  if (info.rsaPadding === 'pss') {
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
  readonly tls12Schemes: readonly number[];

  constructor(private readonly key: KeyObject) {
    const keyType = keyTypeOf(key);
    if (key.type !== 'private' || !keyType) {
      throw new TypeError('LocalSigner needs an ECDSA (P-256/P-384/P-521), RSA or Ed25519 private key');
    }
    this.schemes = schemesForKeyType(keyType);
    this.tls12Schemes = tls12SchemesForKeyType(keyType);
  }

  async sign(request: SignRequest): Promise<Uint8Array> {
    const { scheme } = request;
    if (request.kind === 'tls13-certificate-verify') {
      if (!this.schemes.includes(scheme)) throw new RangeError(`key cannot sign a TLS 1.3 CertificateVerify with scheme 0x${scheme.toString(16)}`);
      return signWithScheme(this.key, scheme, certificateVerifyContent(request.transcriptHash));
    }
    if (!this.tls12Schemes.includes(scheme)) throw new RangeError(`key cannot sign a TLS 1.2 ServerKeyExchange with scheme 0x${scheme.toString(16)}`);
    return signWithScheme(this.key, scheme, serverKeyExchangeContent(request.clientRandom, request.serverRandom, request.serverParams));
  }
}
