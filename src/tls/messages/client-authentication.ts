import { Reader } from '../../lib/reader.js';
import { TlsAlert } from '../alert.js';
import { ExtensionType as X, HandshakeType } from '../wire/codepoints.js';
import { encodeHandshake } from './handshake.js';

/**
 * The messages of client authentication: our CertificateRequest, and the client's
 * Certificate and CertificateVerify, in TLS 1.3 (RFC 8446 §4.3.2, §4.4.2, §4.4.3) and
 * TLS 1.2 (RFC 5246 §7.4.4, §7.4.6, §7.4.8; the CertificateVerify layout is the same).
 */

/** Most certificates a client chain may hold; a longer one is refused before any parsing. */
export const MAX_CLIENT_CHAIN_LENGTH = 10;

/**
 * CertificateRequest (§4.3.2): an empty certificate_request_context (the request is part of
 * the handshake, §4.3.2), signature_algorithms (required), and certificate_authorities
 * (§4.2.4) when DistinguishedNames are configured.
 */
export function encodeCertificateRequest13(p: {
  signatureSchemes: readonly number[];
  certificateAuthorities?: readonly Uint8Array[];
}): Buffer {
  return encodeHandshake(
    HandshakeType.certificate_request,
    (w) => {
      w.opaque(1, new Uint8Array(0));
      w.vec(2, (exts) => {
        exts.u16(X.signature_algorithms).vec(2, (e) =>
          e.vec(2, (list) => {
            for (const scheme of p.signatureSchemes) list.u16(scheme);
          }),
        );
        const names = p.certificateAuthorities;
        if (names && names.length > 0) {
          exts.u16(X.certificate_authorities).vec(2, (e) =>
            e.vec(2, (list) => {
              for (const name of names) list.opaque(2, name);
            }),
          );
        }
      });
    },
    512,
  );
}

export interface ClientCertificate13 {
  readonly requestContext: Uint8Array;
  /** DER certificates, leaf first; empty when the client has none to send. */
  readonly chain: readonly Uint8Array[];
}

/**
 * The client's Certificate (§4.4.2): request context, then CertificateEntry list. Each
 * entry's extensions must answer extensions of our CertificateRequest, which asked for none
 * (status_request, signed_certificate_timestamp, delegated_credential), so any is refused:
 * a delegated_credential with unexpected_message (RFC 9345 §4.1.2: the server did not
 * indicate support), any other with unsupported_extension (§4.2).
 */
export function decodeClientCertificate13(raw: Uint8Array): ClientCertificate13 {
  const r = new Reader(raw, 'Certificate', 4);
  const requestContext = r.vec(1, 0, 255, 'certificate_request_context');
  const list = r.sub(3, 0, 0xffffff, 'certificate_list');
  const chain: Uint8Array[] = [];
  while (list.remaining > 0) {
    const cert = certData(list, chain.length);
    const extensions = list.vec(2, 0, 0xffff, 'extensions');
    if (extensions.length > 0) refuseEntryExtensions(extensions);
    chain.push(cert);
  }
  r.end();
  return { requestContext, chain };
}

/** Throws the alert for a CertificateEntry's non-empty extensions (decodeClientCertificate13). */
function refuseEntryExtensions(extensions: Uint8Array): never {
  // Only the types matter: a list that does not parse to its end is refused all the same.
  for (let at = 0; at + 4 <= extensions.length; at += 4 + ((extensions[at + 2]! << 8) | extensions[at + 3]!)) {
    if (((extensions[at]! << 8) | extensions[at + 1]!) === X.delegated_credential) {
      throw new TlsAlert('unexpected_message', 'client CertificateEntry carries a delegated credential, which our CertificateRequest did not offer (RFC 9345 §4.1.2)');
    }
  }
  throw new TlsAlert('unsupported_extension', 'client CertificateEntry carries extensions the CertificateRequest did not ask for');
}

/**
 * One certificate of a client chain: ASN.1Cert<1..2^24-1>, so a zero-length one is
 * decode_error; bytes that are not a certificate are the verifier's bad_certificate. The
 * chain length is capped before anything is parsed.
 */
function certData(list: Reader, index: number): Uint8Array {
  if (index === MAX_CLIENT_CHAIN_LENGTH) {
    throw new TlsAlert('bad_certificate', `client certificate chain longer than ${MAX_CLIENT_CHAIN_LENGTH} certificates`);
  }
  return list.vec(3, 1, 0xffffff, 'cert_data');
}

/** TLS 1.2 ClientCertificateType (RFC 5246 §7.4.4, RFC 8422 §5.5). */
export const ClientCertificateType = { rsa_sign: 1, ecdsa_sign: 64 } as const;

/**
 * TLS 1.2 CertificateRequest (RFC 5246 §7.4.4): certificate_types<1..2^8-1>,
 * supported_signature_algorithms<2..2^16-2>, certificate_authorities<0..2^16-1>.
 */
export function encodeCertificateRequest12(p: {
  certificateTypes: readonly number[];
  signatureSchemes: readonly number[];
  certificateAuthorities?: readonly Uint8Array[];
}): Buffer {
  return encodeHandshake(
    HandshakeType.certificate_request,
    (w) => {
      w.vec(1, (types) => {
        for (const t of p.certificateTypes) types.u8(t);
      });
      w.vec(2, (list) => {
        for (const scheme of p.signatureSchemes) list.u16(scheme);
      });
      w.vec(2, (list) => {
        for (const name of p.certificateAuthorities ?? []) list.opaque(2, name);
      });
    },
    512,
  );
}

/** TLS 1.2 client Certificate (RFC 5246 §7.4.6): certificate_list<0..2^24-1>; empty = no certificate. */
export function decodeClientCertificate12(raw: Uint8Array): readonly Uint8Array[] {
  const r = new Reader(raw, 'Certificate', 4);
  const list = r.sub(3, 0, 0xffffff, 'certificate_list');
  const chain: Uint8Array[] = [];
  while (list.remaining > 0) chain.push(certData(list, chain.length));
  r.end();
  return chain;
}

export interface CertificateVerifyMessage {
  readonly scheme: number;
  readonly signature: Uint8Array;
}

/** CertificateVerify (§4.4.3): scheme u16, signature<0..2^16-1>. */
export function decodeCertificateVerify(raw: Uint8Array): CertificateVerifyMessage {
  const r = new Reader(raw, 'CertificateVerify', 4);
  const scheme = r.u16('algorithm');
  const signature = r.vec(2, 0, 0xffff, 'signature');
  r.end();
  return { scheme, signature };
}
