import { Reader } from '../../lib/reader.js';
import { TlsAlert } from '../alert.js';
import { CipherSuite, ExtensionType as X, HandshakeType, ProtocolVersion } from '../wire/codepoints.js';
import type { ClientHello } from './client-hello.js';
import { encodeHandshake } from './handshake.js';

/**
 * The TLS 1.2 handshake messages a server sends and reads (RFC 5246 §7.4, RFC 8422 §5,
 * RFC 5077 §3.3), and the ClientHello extensions only TLS 1.2 acts on. TLS 1.3 never
 * looks at these, so a malformed TLS 1.2-only extension cannot change a TLS 1.3 handshake.
 */

/** What a ClientHello asks of a TLS 1.2 server beyond the common extensions. */
export interface ClientHello12Extensions {
  /** RFC 7627 §5.1: extended_master_secret offered (empty extension). */
  readonly extendedMasterSecret: boolean;
  /** RFC 5746 §3.6: renegotiation_info extension or TLS_EMPTY_RENEGOTIATION_INFO_SCSV. */
  readonly secureRenegotiation: boolean;
  /** RFC 5077 §3.1: the session_ticket extension's body (empty: "give me a ticket"). */
  readonly sessionTicket: Uint8Array | undefined;
  /** RFC 8422 §5.1.2: ec_point_formats was sent (we answer with uncompressed only). */
  readonly ecPointFormats: boolean;
}

/** RFC 8422 §5.1.2: the only point format this server uses. */
const UNCOMPRESSED = 0;

/** Decodes and checks the TLS 1.2-only extensions of a ClientHello; throws the alert each RFC names. */
export function decodeClientHello12Extensions(hello: ClientHello): ClientHello12Extensions {
  const ems = hello.extensions.get(X.extended_master_secret);
  // RFC 7627 §5.1: "extension_data" is empty; anything else is a malformed extension.
  if (ems && ems.length !== 0) throw new TlsAlert('decode_error', 'extended_master_secret extension is not empty');

  let secureRenegotiation = hello.cipherSuites.includes(CipherSuite.TLS_EMPTY_RENEGOTIATION_INFO_SCSV);
  const renegotiationInfo = hello.extensions.get(X.renegotiation_info);
  if (renegotiationInfo) {
    const r = new Reader(renegotiationInfo, 'renegotiation_info');
    const renegotiated = r.vec(1, 0, 255, 'renegotiated_connection');
    r.end();
    // RFC 5746 §3.6: in an initial handshake renegotiated_connection must be empty.
    if (renegotiated.length !== 0) throw new TlsAlert('handshake_failure', 'renegotiation_info is not empty in an initial handshake');
    secureRenegotiation = true;
  }

  const formats = hello.extensions.get(X.ec_point_formats);
  if (formats) {
    const r = new Reader(formats, 'ec_point_formats');
    const list = r.vec(1, 1, 255, 'ec_point_format_list');
    r.end();
    // RFC 8422 §5.1.2: the list must contain uncompressed; without it we cannot do ECDHE at all.
    if (!list.includes(UNCOMPRESSED)) throw new TlsAlert('illegal_parameter', 'ec_point_formats does not include uncompressed');
  }

  return {
    extendedMasterSecret: ems !== undefined,
    secureRenegotiation,
    sessionTicket: hello.extensions.get(X.session_ticket),
    ecPointFormats: formats !== undefined,
  };
}

export interface ServerHello12Params {
  readonly random: Uint8Array;
  readonly sessionId: Uint8Array;
  readonly cipherSuite: number;
  /** RFC 5746 §3.6: empty renegotiation_info when the client signalled secure renegotiation. */
  readonly secureRenegotiation: boolean;
  readonly extendedMasterSecret: boolean;
  /** RFC 5077 §3.2: empty session_ticket: a NewSessionTicket follows. */
  readonly sessionTicket: boolean;
  readonly alpnProtocol: string | undefined;
  /** RFC 6066 §3: empty server_name when the name was used (full handshakes only). */
  readonly serverNameAcknowledged: boolean;
  readonly ecPointFormats: boolean;
}

/**
 * ServerHello (RFC 5246 §7.4.1.3): only extensions the client offered (§7.4.1.4); no
 * extensions block at all when there are none.
 */
export function encodeServerHello12(p: ServerHello12Params): Buffer {
  return encodeHandshake(HandshakeType.server_hello, (w) => {
    w.u16(ProtocolVersion.TLS12).bytes(p.random).opaque(1, p.sessionId).u16(p.cipherSuite).u8(0);
    const any = p.secureRenegotiation || p.extendedMasterSecret || p.sessionTicket || p.alpnProtocol !== undefined || p.serverNameAcknowledged || p.ecPointFormats;
    if (!any) return;
    w.vec(2, (exts) => {
      if (p.secureRenegotiation) exts.u16(X.renegotiation_info).vec(2, (e) => e.u8(0));
      if (p.extendedMasterSecret) exts.u16(X.extended_master_secret).u16(0);
      if (p.sessionTicket) exts.u16(X.session_ticket).u16(0);
      if (p.serverNameAcknowledged) exts.u16(X.server_name).u16(0);
      if (p.ecPointFormats) exts.u16(X.ec_point_formats).vec(2, (e) => e.vec(1, (l) => l.u8(UNCOMPRESSED)));
      if (p.alpnProtocol !== undefined) {
        const name = Buffer.from(p.alpnProtocol, 'utf8'); // as selectAlpn matched it
        exts.u16(X.application_layer_protocol_negotiation).vec(2, (e) => e.vec(2, (l) => l.opaque(1, name)));
      }
    });
  });
}

/** Certificate (RFC 5246 §7.4.2): certificate_list<0..2^24-1> of ASN.1Cert<1..2^24-1>, leaf first. */
export function encodeCertificate12(chain: readonly Uint8Array[]): Buffer {
  const size = chain.reduce((n, c) => n + c.length + 3, 16);
  return encodeHandshake(HandshakeType.certificate, (w) => w.vec(3, (list) => chain.forEach((cert) => list.opaque(3, cert))), size);
}

/** RFC 8422 §5.4 ServerECDHParams: curve_type named_curve (3), the group, the point<1..255>. What the signature covers after the randoms. */
export function encodeServerEcdhParams(group: number, publicKey: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + publicKey.length);
  out[0] = 3;
  out.writeUInt16BE(group, 1);
  out[3] = publicKey.length;
  out.set(publicKey, 4);
  return out;
}

/** ServerKeyExchange (RFC 8422 §5.4, RFC 5246 §7.4.1.4.1 digitally-signed): params, scheme, signature<0..2^16-1>. */
export function encodeServerKeyExchange(serverParams: Uint8Array, scheme: number, signature: Uint8Array): Buffer {
  return encodeHandshake(
    HandshakeType.server_key_exchange,
    (w) => w.bytes(serverParams).u16(scheme).opaque(2, signature),
    serverParams.length + signature.length + 16,
  );
}

/** ServerHelloDone (RFC 5246 §7.4.5): empty. */
export function encodeServerHelloDone(): Buffer {
  return Buffer.of(HandshakeType.server_hello_done, 0, 0, 0);
}

/** NewSessionTicket (RFC 5077 §3.3): lifetime hint in seconds, the opaque ticket. */
export function encodeNewSessionTicket12(lifetimeHintSeconds: number, ticket: Uint8Array): Buffer {
  return encodeHandshake(HandshakeType.new_session_ticket, (w) => w.u32(lifetimeHintSeconds).opaque(2, ticket), ticket.length + 16);
}

/**
 * ClientKeyExchange for ECDHE (RFC 8422 §5.7): ClientECDiffieHellmanPublic, the point<1..255>
 * in an opaque vector; `raw` includes the handshake header. Bad lengths are decode_error.
 */
export function decodeClientKeyExchange(raw: Buffer): Uint8Array {
  const r = new Reader(raw, 'ClientKeyExchange', 4);
  const point = r.vec(1, 1, 255, 'ecdh_Yc');
  r.end();
  return point;
}
