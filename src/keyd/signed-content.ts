import { ECDH, createECDH } from 'node:crypto';
import { SCHEMES, TRANSCRIPT_HASH_LENGTHS, type SchemeInfo } from '../tls/signature-schemes.js';
import { NamedGroup } from '../tls/wire/codepoints.js';
import { KeydError } from './errors.js';

/**
 * The one place that builds and checks what keyd signs (docs/PROTOCOL.md, docs/KEYD.md
 * "Why keyd is not a signing oracle"). keyd signs exactly two fixed-format handshake
 * contents and nothing else:
 *
 * - a TLS 1.3 server CertificateVerify content (RFC 8446 §4.4.3), built by keyd from a
 *   transcript hash (signCertificateVerify) or recognised byte for byte
 *   (signHandshakeContent);
 * - a TLS 1.2 ECDHE ServerKeyExchange content (RFC 5246 §7.4.3, RFC 8422 §5.4):
 *   client_random, server_random — which must carry the RFC 8446 §4.1.3 downgrade
 *   sentinel unless the operator allows TLS 1.2-only servers — and one named-curve
 *   point of a supported group, checked to be on its curve, with nothing after it.
 *
 * Every refusal is a KeydError with its own code, so the edge, the OpenSSL provider and
 * the audit log can say exactly why.
 */

export type HandshakeContentKind = 'tls13-certificate-verify' | 'tls12-server-key-exchange';

/** The operator's signing policy (keyd config, docs/KEYD.md "TLS 1.2"). */
export interface SignedContentPolicy {
  /**
   * Sign TLS 1.2 ServerKeyExchange content whose server_random lacks the downgrade
   * sentinel, as a server that does not speak TLS 1.3 sends it. Off by default: then a
   * compromised edge cannot have keyd sign a TLS 1.2 handshake that a TLS 1.3 client,
   * which checks the sentinel (RFC 8446 §4.1.3), would take for a genuine one.
   */
  readonly allowTls12OnlyServers: boolean;
}

export const DEFAULT_SIGNED_CONTENT_POLICY: SignedContentPolicy = Object.freeze({ allowTls12OnlyServers: false });

/** A content that passed its checks: the exact bytes to sign and what they are. */
export interface CheckedContent {
  readonly kind: HandshakeContentKind;
  readonly content: Buffer;
}

// ---- TLS 1.3 server CertificateVerify (RFC 8446 §4.4.3) -------------------------------

const CERTIFICATE_VERIFY_PREFIX = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify', 'latin1'), Buffer.of(0)]);

/**
 * 64 × 0x20, the server context string, 0x00, then the transcript hash. The hash is the
 * cipher suite's (SHA-256 or SHA-384), whatever the signature scheme's hash is, so its
 * length is checked against the suites, not the scheme.
 */
export function certificateVerifyContent(transcriptHash: Uint8Array): Buffer {
  checkTranscriptHashLength(transcriptHash.length);
  return Buffer.concat([CERTIFICATE_VERIFY_PREFIX, transcriptHash]);
}

function checkTranscriptHashLength(length: number): void {
  if (!TRANSCRIPT_HASH_LENGTHS.includes(length)) {
    throw new KeydError('KEYD_BAD_HASH_LENGTH', `transcript hash is ${length} bytes; a TLS 1.3 transcript hash is 32 (SHA-256) or 48 (SHA-384)`);
  }
}

function startsWithCertificateVerifyPrefix(bytes: Uint8Array): boolean {
  return bytes.length >= CERTIFICATE_VERIFY_PREFIX.length && CERTIFICATE_VERIFY_PREFIX.equals(bytes.subarray(0, CERTIFICATE_VERIFY_PREFIX.length));
}

// ---- TLS 1.2 ECDHE ServerKeyExchange (RFC 5246 §7.4.3, RFC 8422 §5.4) ------------------

const RANDOM_LENGTH = 32;
/** ServerHello.random of a TLS 1.3-capable server that negotiated TLS 1.2 ends with "DOWNGRD" 01 (RFC 8446 §4.1.3). */
export const TLS12_DOWNGRADE_SENTINEL: Readonly<Buffer> = Buffer.from('444f574e47524401', 'hex');
/** ECCurveType.named_curve (RFC 8422 §5.4); explicit curves (1, 2) are deprecated and refused. */
const NAMED_CURVE = 3;
/** ServerECDHParams start after client_random and server_random. */
const PARAMS_OFFSET = 2 * RANDOM_LENGTH;
/** The randoms, then curve_type, named_curve and the point's length byte. */
const MIN_SERVER_KEY_EXCHANGE_CONTENT = PARAMS_OFFSET + 4;

interface EcdheGroup {
  readonly name: string;
  readonly pointLength: number;
  /** node:crypto curve name for the on-curve check; undefined for x25519 (every 32-byte string is a u-coordinate, RFC 7748 §5). */
  readonly curve?: string;
}

/** The ECDHE groups of the TLS 1.2 profile (docs/PROTOCOL.md); points uncompressed (RFC 8422 §5.1.2). */
const ECDHE_GROUPS: ReadonlyMap<number, EcdheGroup> = new Map([
  [NamedGroup.x25519, { name: 'x25519', pointLength: 32 }],
  [NamedGroup.secp256r1, { name: 'secp256r1', pointLength: 65, curve: 'prime256v1' }],
  [NamedGroup.secp384r1, { name: 'secp384r1', pointLength: 97, curve: 'secp384r1' }],
]);

/** The named groups keyd signs TLS 1.2 ECDHE parameters for. */
export const TLS12_ECDHE_GROUPS: readonly number[] = [...ECDHE_GROUPS.keys()];

/**
 * Checks a TLS 1.2 ECDHE ServerKeyExchange content: exact lengths, curve_type
 * named_curve, a supported group, one uncompressed point of the group's size that is on
 * its curve, nothing after it, and the downgrade sentinel unless the policy allows
 * TLS 1.2-only servers. Returns the named group.
 */
export function checkServerKeyExchangeContent(content: Uint8Array, policy: SignedContentPolicy): number {
  if (content.length < MIN_SERVER_KEY_EXCHANGE_CONTENT) {
    throw new KeydError(
      'KEYD_BAD_ECDH_PARAMS',
      `TLS 1.2 ServerKeyExchange content is ${content.length} bytes: it needs client_random[32], server_random[32] and ServerECDHParams (at least 4 bytes)`,
    );
  }
  const curveType = content[PARAMS_OFFSET]!;
  if (curveType !== NAMED_CURVE) {
    throw new KeydError('KEYD_BAD_ECDH_PARAMS', `ServerECDHParams curve_type is ${curveType}; only named_curve (3) is signed (RFC 8422 §5.4)`);
  }
  const namedCurve = (content[PARAMS_OFFSET + 1]! << 8) | content[PARAMS_OFFSET + 2]!;
  const group = ECDHE_GROUPS.get(namedCurve);
  if (!group) {
    throw new KeydError('KEYD_UNSUPPORTED_GROUP', `named_curve 0x${namedCurve.toString(16).padStart(4, '0')} is not one keyd signs for (x25519, secp256r1, secp384r1)`);
  }
  const pointLength = content[PARAMS_OFFSET + 3]!;
  const pointStart = PARAMS_OFFSET + 4;
  const available = content.length - pointStart;
  if (pointLength !== group.pointLength) {
    throw new KeydError('KEYD_BAD_ECDH_PARAMS', `${group.name} point is ${pointLength} bytes; it must be ${group.pointLength}`);
  }
  if (available < pointLength) {
    throw new KeydError('KEYD_BAD_ECDH_PARAMS', `${group.name} point announces ${pointLength} bytes but ${available} follow`);
  }
  if (available > pointLength) {
    throw new KeydError('KEYD_BAD_ECDH_PARAMS', `${available - pointLength} trailing bytes after the ${group.name} point: the content must end with ServerECDHParams`);
  }
  if (group.curve) checkNistPoint(group, content.subarray(pointStart));
  if (!policy.allowTls12OnlyServers && !TLS12_DOWNGRADE_SENTINEL.equals(content.subarray(PARAMS_OFFSET - TLS12_DOWNGRADE_SENTINEL.length, PARAMS_OFFSET))) {
    throw new KeydError(
      'KEYD_NO_DOWNGRADE_SENTINEL',
      'server_random does not end with the TLS 1.2 downgrade sentinel "DOWNGRD" 01 (RFC 8446 §4.1.3); keyd signs TLS 1.2 without it only when config "allowTls12OnlyServers" is true',
    );
  }
  return namedCurve;
}

/**
 * Decodes a point onto its curve, throwing when it is not on it (OpenSSL's
 * EC_POINT_oct2point). `ECDH.convertKey` does that but builds the curve anew on every
 * call (about four times the cost: 16 against 4 µs, half a P-256 signature;
 * `npm run bench:keyd`, docs/BENCHMARKS.md); an ECDH object's `setPublicKey` does the
 * same decoding on a curve built once. Node documents `setPublicKey` as deprecated
 * (DEP0031, documentation only: a public key alone computes no secret) and its type
 * definitions omit it, so it is used only where it exists, with `convertKey` as the
 * fallback.
 */
type PointCheck = (point: Uint8Array) => void;
const pointChecks = new Map<string, PointCheck>();

function pointCheckFor(curve: string): PointCheck {
  let check = pointChecks.get(curve);
  if (check) return check;
  const ecdh = createECDH(curve) as ECDH & { setPublicKey?: (point: Uint8Array) => void };
  const setPublicKey = ecdh.setPublicKey;
  check = typeof setPublicKey === 'function' ? (point) => setPublicKey.call(ecdh, point) : (point) => void ECDH.convertKey(point, curve);
  pointChecks.set(curve, check);
  return check;
}

/**
 * An uncompressed point (0x04 || x || y) on the group's curve; node:crypto decodes and checks
 * it. The prefix check is not redundant with the decoding: OpenSSL also decodes the X9.62
 * hybrid form (0x06 / 0x07 || x || y), which has the uncompressed length, and RFC 8422
 * §5.1.2 allows only 0x04 in TLS.
 */
function checkNistPoint(group: EcdheGroup, point: Uint8Array): void {
  if (point[0] !== 0x04) {
    throw new KeydError('KEYD_BAD_ECDH_PARAMS', `${group.name} point starts with 0x${point[0]!.toString(16).padStart(2, '0')}; only the uncompressed form (0x04) is signed (RFC 8422 §5.1.2)`);
  }
  try {
    pointCheckFor(group.curve!)(point);
  } catch {
    throw new KeydError('KEYD_BAD_ECDH_PARAMS', `the ${group.name} point is not on the curve`);
  }
}

// ---- raw content (signHandshakeContent) --------------------------------------------------

/**
 * Decides what raw content is, accepting only the two handshake shapes: content that
 * starts with the TLS 1.3 server CertificateVerify prefix is checked as that (hash length
 * included); content with room for the TLS 1.2 params header and curve_type 3 where it
 * belongs is checked as a ServerKeyExchange content; anything else is not handshake
 * content. The two shapes cannot be confused: the TLS 1.3 prefix has 'T' (0x54) where
 * TLS 1.2 has its curve_type.
 */
export function classifyHandshakeContent(bytes: Uint8Array, policy: SignedContentPolicy): CheckedContent {
  // A copy: a token signs it later, after the request's frame is gone.
  const content = Buffer.from(bytes);
  if (startsWithCertificateVerifyPrefix(content)) {
    checkTranscriptHashLength(content.length - CERTIFICATE_VERIFY_PREFIX.length);
    return { kind: 'tls13-certificate-verify', content };
  }
  if (content.length >= MIN_SERVER_KEY_EXCHANGE_CONTENT && content[PARAMS_OFFSET] === NAMED_CURVE) {
    checkServerKeyExchangeContent(content, policy);
    return { kind: 'tls12-server-key-exchange', content };
  }
  throw new KeydError(
    'KEYD_NOT_HANDSHAKE_CONTENT',
    `${content.length} bytes that are neither a TLS 1.3 server CertificateVerify content (RFC 8446 §4.4.3) nor a TLS 1.2 ECDHE ServerKeyExchange content (RFC 5246 §7.4.3); keyd signs nothing else`,
  );
}

// ---- signature schemes per kind ---------------------------------------------------------

/**
 * A legacy SignatureAndHashAlgorithm (RFC 5246 §7.4.1.4.1) with MD5 or SHA-1 as its hash
 * (high byte 1–2) and RSA, DSA or ECDSA as its signature (low byte 1–3): refused for every
 * kind (RFC 9155). SHA-224 is not deprecated: ecdsa_sha224 signs a TLS 1.2
 * ServerKeyExchange only (it is no TLS 1.3 scheme), as OpenSSL's TLS 1.2 servers do.
 */
function isWeakHashScheme(scheme: number): boolean {
  const hash = scheme >> 8;
  const signature = scheme & 0xff;
  return hash >= 1 && hash <= 2 && signature >= 1 && signature <= 3;
}

/**
 * Whether a key of `keyType` produces `info`'s scheme for this kind. In TLS 1.3 an ECDSA
 * scheme names its curve; in TLS 1.2 only its hash (RFC 8446 §4.2.3), so any ECDSA key
 * signs a ServerKeyExchange with any ECDSA scheme.
 */
export function schemeFitsKey(kind: HandshakeContentKind, info: SchemeInfo, keyType: string): boolean {
  if (info.keyType === keyType) return true;
  return kind === 'tls12-server-key-exchange' && info.keyType.startsWith('ecdsa-') && keyType.startsWith('ecdsa-');
}

/**
 * Throws unless `scheme` may sign content of this kind at all; returns what the scheme
 * is, for the caller to ask whether the key can produce it.
 */
export function checkSchemeForKind(kind: HandshakeContentKind, scheme: number): SchemeInfo {
  const hex = `0x${scheme.toString(16).padStart(4, '0')}`;
  if (isWeakHashScheme(scheme)) {
    throw new KeydError('KEYD_SCHEME_FORBIDDEN', `scheme ${hex} hashes with MD5 or SHA-1: refused for every handshake signature (RFC 9155)`);
  }
  const info = SCHEMES.get(scheme);
  if (!info) throw new KeydError('KEYD_SCHEME_UNSUPPORTED', `scheme ${hex} is not one keyd signs with`);
  if (kind === 'tls13-certificate-verify' && !info.tls13) {
    throw new KeydError('KEYD_SCHEME_FORBIDDEN', `scheme ${hex} (${info.name}) is no TLS 1.3 scheme (RFC 8446 §4.2.3: RSASSA-PKCS1-v1_5 and SHA-224 are TLS 1.2 only); it signs TLS 1.2 ServerKeyExchange only`);
  }
  return info;
}
