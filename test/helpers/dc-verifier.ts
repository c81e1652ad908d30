/**
 * An independent verifier of RFC 9345 delegated credentials, written from the RFC's text
 * for the tests (it shares no code with src/): it reads the Certificate message and the
 * DelegatedCredential by hand, applies the checks of §4.1.3 ("Validating a Delegated
 * Credential") and §4.2 (certificate requirements), and verifies CertificateVerify under
 * the credential's key. node:crypto's own X.509 parser reads the certificate's key.
 */
import { X509Certificate, createPublicKey, verify, type KeyObject } from 'node:crypto';

export interface ParsedCredential {
  validTime: number;
  dcCertVerifyAlgorithm: number;
  spki: Buffer;
  /** The Credential struct's bytes (what §4 item 5 signs). */
  credentialBytes: Buffer;
  algorithm: number;
  signature: Buffer;
}

/** §4: struct { uint32 valid_time; SignatureScheme dc_cert_verify_algorithm; opaque ASN1_subjectPublicKeyInfo<1..2^24-1>; } cred; SignatureScheme algorithm; opaque signature<0..2^16-1>. */
export function parseDelegatedCredential(bytes: Buffer): ParsedCredential {
  let o = 0;
  const need = (n: number) => {
    if (o + n > bytes.length) throw new Error('delegated credential truncated');
  };
  need(4 + 2 + 3);
  const validTime = bytes.readUInt32BE(o);
  const dcCertVerifyAlgorithm = bytes.readUInt16BE(o + 4);
  const spkiLength = bytes.readUIntBE(o + 6, 3);
  o += 9;
  if (spkiLength < 1) throw new Error('empty SubjectPublicKeyInfo');
  need(spkiLength);
  const spki = bytes.subarray(o, o + spkiLength);
  o += spkiLength;
  const credentialBytes = bytes.subarray(0, o);
  need(4);
  const algorithm = bytes.readUInt16BE(o);
  const signatureLength = bytes.readUInt16BE(o + 2);
  o += 4;
  need(signatureLength);
  const signature = bytes.subarray(o, o + signatureLength);
  o += signatureLength;
  if (o !== bytes.length) throw new Error('trailing bytes after the delegated credential');
  return { validTime, dcCertVerifyAlgorithm, spki, credentialBytes, algorithm, signature };
}

export interface CertificateEntry {
  certificate: Buffer;
  /** Extension type → data. */
  extensions: Map<number, Buffer>;
}

/** RFC 8446 §4.4.2: the Certificate handshake message (4-byte header included). */
export function parseCertificateMessage(message: Buffer): CertificateEntry[] {
  if (message[0] !== 11) throw new Error(`not a Certificate message (type ${message[0]})`);
  let o = 4;
  o += 1 + message[o]!; // certificate_request_context
  const listEnd = o + 3 + message.readUIntBE(o, 3);
  o += 3;
  const entries: CertificateEntry[] = [];
  while (o < listEnd) {
    const certLength = message.readUIntBE(o, 3);
    const certificate = message.subarray(o + 3, o + 3 + certLength);
    o += 3 + certLength;
    const extsEnd = o + 2 + message.readUInt16BE(o);
    o += 2;
    const extensions = new Map<number, Buffer>();
    while (o < extsEnd) {
      const type = message.readUInt16BE(o);
      const length = message.readUInt16BE(o + 2);
      extensions.set(type, message.subarray(o + 4, o + 4 + length));
      o += 4 + length;
    }
    entries.push({ certificate, extensions });
  }
  return entries;
}

/** The DER of OID 1.3.6.1.4.1.44363.44 then a DER NULL value (extnValue OCTET STRING 05 00), as §4.2 defines. */
const DELEGATION_USAGE_OID_DER = Buffer.from('06092b0601040182da4b2c', 'hex');

function hasDelegationUsage(der: Buffer): boolean {
  const at = der.indexOf(DELEGATION_USAGE_OID_DER);
  if (at < 0) return false;
  const after = der.subarray(at + DELEGATION_USAGE_OID_DER.length, at + DELEGATION_USAGE_OID_DER.length + 8);
  // Optional critical BOOLEAN (must be absent or FALSE: non-critical), then OCTET STRING { NULL }.
  const rest = after[0] === 0x01 ? after.subarray(3) : after;
  if (after[0] === 0x01 && after[2] !== 0x00) return false;
  return rest.subarray(0, 4).equals(Buffer.from('04020500', 'hex'));
}

/** RFC 5280 §4.2.1.3: keyUsage (2.5.29.15) present with bit 0, digitalSignature. (node's keyUsage is the EKU list.) */
function hasDigitalSignature(der: Buffer): boolean {
  const oid = Buffer.from('0603551d0f', 'hex');
  const at = der.indexOf(oid);
  if (at < 0) return false;
  let o = at + oid.length;
  if (der[o] === 0x01) o += 3; // critical BOOLEAN
  // OCTET STRING { BIT STRING: length, unused bits, first byte }
  if (der[o] !== 0x04 || der[o + 2] !== 0x03) return false;
  return (der[o + 5]! & 0x80) !== 0;
}

/** Schemes §4 allows for dc_cert_verify_algorithm that this verifier knows (no rsaEncryption keys). */
const VERIFY: Record<number, { hash: string | null; type: string; curve?: string }> = {
  0x0403: { hash: 'sha256', type: 'ec', curve: 'prime256v1' },
  0x0503: { hash: 'sha384', type: 'ec', curve: 'secp384r1' },
  0x0603: { hash: 'sha512', type: 'ec', curve: 'secp521r1' },
  0x0807: { hash: null, type: 'ed25519' },
};

function verifyWith(scheme: number, key: KeyObject, content: Buffer, signature: Buffer): boolean {
  if (scheme === 0x0804 || scheme === 0x0805 || scheme === 0x0806) {
    const hash = { 0x0804: 'sha256', 0x0805: 'sha384', 0x0806: 'sha512' }[scheme]!;
    return verify(hash, content, { key, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: -1 /* digest length */ }, signature);
  }
  const v = VERIFY[scheme];
  if (!v) throw new Error(`verifier does not know scheme 0x${scheme.toString(16)}`);
  return verify(v.hash, content, key, signature);
}

/**
 * §4.1.3 and §4.2: checks `dcBytes` against the end-entity certificate `leafDer` at `now`
 * (ms); returns the credential's public key, or throws naming the failed check.
 * `cvScheme`: the scheme of the CertificateVerify to be checked with it.
 */
export function validateDelegatedCredential(dcBytes: Buffer, leafDer: Buffer, now: number, cvScheme?: number): { key: KeyObject; dc: ParsedCredential; expiry: number } {
  const dc = parseDelegatedCredential(dcBytes);
  const leaf = new X509Certificate(leafDer);
  const expiry = Date.parse(leaf.validFrom) + dc.validTime * 1000;
  // 1. the current time does not exceed the expiry time
  if (now > expiry) throw new Error('credential expired');
  // 2. the expiry time does not exceed the current time plus 7 days
  if (expiry > now + 7 * 24 * 3600 * 1000) throw new Error('credential valid for more than 7 days from now');
  // 3. dc_cert_verify_algorithm matches CertificateVerify and is allowed (no rsa_pss_rsae_*, §4)
  if (cvScheme !== undefined && dc.dcCertVerifyAlgorithm !== cvScheme) throw new Error('dc_cert_verify_algorithm differs from the CertificateVerify scheme');
  if (!(dc.dcCertVerifyAlgorithm in VERIFY)) throw new Error(`dc_cert_verify_algorithm 0x${dc.dcCertVerifyAlgorithm.toString(16)} not allowed`);
  // 4. the certificate has DelegationUsage and digitalSignature (§4.2)
  if (!hasDelegationUsage(leafDer)) throw new Error('certificate lacks a non-critical DelegationUsage');
  if (!hasDigitalSignature(leafDer)) throw new Error('certificate lacks the digitalSignature key usage');
  // 5. the certificate's key signs the credential (§4 items 1-6)
  const content = Buffer.concat([
    Buffer.alloc(64, 0x20),
    Buffer.from('TLS, server delegated credentials', 'ascii'),
    Buffer.of(0),
    leafDer,
    dc.credentialBytes,
    Buffer.of(dc.algorithm >> 8, dc.algorithm & 0xff),
  ]);
  if (!verifyWith(dc.algorithm, leaf.publicKey, content, dc.signature)) throw new Error('credential signature does not verify under the certificate key');
  const key = createPublicKey({ key: dc.spki, format: 'der', type: 'spki' });
  const expected = VERIFY[dc.dcCertVerifyAlgorithm]!;
  if (key.asymmetricKeyType !== expected.type || (expected.curve && key.asymmetricKeyDetails?.namedCurve !== expected.curve)) {
    throw new Error('credential key does not match dc_cert_verify_algorithm');
  }
  return { key, dc, expiry };
}

/** RFC 8446 §4.4.3: whether the CertificateVerify message verifies under `key` for `transcriptHash`. */
export function certificateVerifyVerifies(message: Buffer, key: KeyObject, transcriptHash: Buffer): boolean {
  const scheme = message.readUInt16BE(4);
  const signature = message.subarray(8, 8 + message.readUInt16BE(6));
  const content = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify', 'ascii'), Buffer.of(0), transcriptHash]);
  return verifyWith(scheme, key, content, signature);
}

export function certificateVerifyScheme(message: Buffer): number {
  return message.readUInt16BE(4);
}
