import { ExtensionType as X, HandshakeType, ProtocolVersion } from '../wire/codepoints.js';
import type { Writer } from '../../lib/writer.js';
import { encodeHandshake } from './handshake.js';

/** §4.1.3: the ServerHello.random that marks a HelloRetryRequest (SHA-256 of "HelloRetryRequest"). */
export const HELLO_RETRY_REQUEST_RANDOM = Buffer.from(
  'cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c',
  'hex',
);

export interface ServerHelloParams {
  random: Uint8Array;
  legacySessionIdEcho: Uint8Array;
  cipherSuite: number;
  /** Server key share (full handshake or psk_dhe_ke). */
  keyShare?: { group: number; keyExchange: Uint8Array };
  /** Index of the accepted PSK identity. */
  selectedIdentity?: number;
}

function supportedVersions(w: Writer): void {
  w.u16(X.supported_versions).vec(2, (e) => e.u16(ProtocolVersion.TLS13));
}

function helloPrefix(w: Writer, random: Uint8Array, sessionId: Uint8Array, suite: number): void {
  w.u16(ProtocolVersion.TLS12); // legacy_version (§4.1.3)
  w.bytes(random);
  w.opaque(1, sessionId);
  w.u16(suite);
  w.u8(0); // legacy_compression_method
}

/** ServerHello (§4.1.3). */
export function encodeServerHello(p: ServerHelloParams): Buffer {
  return encodeHandshake(HandshakeType.server_hello, (w) => {
    helloPrefix(w, p.random, p.legacySessionIdEcho, p.cipherSuite);
    w.vec(2, (exts) => {
      supportedVersions(exts);
      if (p.keyShare) {
        const share = p.keyShare;
        exts.u16(X.key_share).vec(2, (e) => e.u16(share.group).opaque(2, share.keyExchange));
      }
      if (p.selectedIdentity !== undefined) {
        const id = p.selectedIdentity;
        exts.u16(X.pre_shared_key).vec(2, (e) => e.u16(id));
      }
    });
  });
}

/** HelloRetryRequest (§4.1.4): a ServerHello with the special random. */
export function encodeHelloRetryRequest(p: {
  legacySessionIdEcho: Uint8Array;
  cipherSuite: number;
  selectedGroup?: number;
  cookie: Uint8Array;
}): Buffer {
  return encodeHandshake(HandshakeType.server_hello, (w) => {
    helloPrefix(w, HELLO_RETRY_REQUEST_RANDOM, p.legacySessionIdEcho, p.cipherSuite);
    w.vec(2, (exts) => {
      supportedVersions(exts);
      if (p.selectedGroup !== undefined) {
        const group = p.selectedGroup;
        exts.u16(X.key_share).vec(2, (e) => e.u16(group));
      }
      exts.u16(X.cookie).vec(2, (e) => e.opaque(2, p.cookie));
    });
  });
}

export interface EncryptedExtensionsParams {
  /** Acknowledge server_name (RFC 6066 §3: empty extension when SNI was used). */
  serverNameAcknowledged: boolean;
  alpnProtocol?: string;
  recordSizeLimit?: number;
}

/** EncryptedExtensions (§4.3.1). */
export function encodeEncryptedExtensions(p: EncryptedExtensionsParams): Buffer {
  return encodeHandshake(HandshakeType.encrypted_extensions, (w) => {
    w.vec(2, (exts) => {
      if (p.serverNameAcknowledged) exts.u16(X.server_name).u16(0);
      if (p.alpnProtocol !== undefined) {
        const name = Buffer.from(p.alpnProtocol, 'utf8'); // as selectAlpn matched it
        exts.u16(X.application_layer_protocol_negotiation).vec(2, (e) => e.vec(2, (l) => l.opaque(1, name)));
      }
      if (p.recordSizeLimit !== undefined) {
        const limit = p.recordSizeLimit;
        exts.u16(X.record_size_limit).vec(2, (e) => e.u16(limit));
      }
    });
  });
}

/** Certificate (§4.4.2), server side: empty request context, no per-certificate extensions. */
export function encodeCertificate(chain: readonly Uint8Array[], endEntityExtensions: readonly { type: number; data: Uint8Array }[] = []): Buffer {
  const size = chain.reduce((n, c) => n + c.length + 5, 16) + endEntityExtensions.reduce((n, e) => n + e.data.length + 4, 0);
  return encodeHandshake(
    HandshakeType.certificate,
    (w) => {
      w.opaque(1, new Uint8Array(0));
      w.vec(3, (list) => {
        chain.forEach((cert, index) => {
          list.opaque(3, cert);
          // §4.4.2: extensions of a CertificateEntry; only the end-entity's carry any (RFC 9345 §4.1.1).
          if (index > 0 || endEntityExtensions.length === 0) list.u16(0);
          else list.vec(2, (exts) => endEntityExtensions.forEach((e) => exts.u16(e.type).opaque(2, e.data)));
        });
      });
    },
    size,
  );
}

/** CertificateVerify (§4.4.3). */
export function encodeCertificateVerify(scheme: number, signature: Uint8Array): Buffer {
  return encodeHandshake(HandshakeType.certificate_verify, (w) => w.u16(scheme).opaque(2, signature), signature.length + 16);
}

/** Finished (§4.4.4). */
export function encodeFinished(verifyData: Uint8Array): Buffer {
  return encodeHandshake(HandshakeType.finished, (w) => w.bytes(verifyData));
}

/** NewSessionTicket (§4.6.1). We never allow 0-RTT, so no early_data extension. */
export function encodeNewSessionTicket(p: { lifetime: number; ageAdd: number; nonce: Uint8Array; ticket: Uint8Array }): Buffer {
  return encodeHandshake(HandshakeType.new_session_ticket, (w) => {
    w.u32(p.lifetime).u32(p.ageAdd).opaque(1, p.nonce).opaque(2, p.ticket).u16(0);
  });
}

/** KeyUpdate (§4.6.3). */
export function encodeKeyUpdate(updateRequested: boolean): Buffer {
  return encodeHandshake(HandshakeType.key_update, (w) => w.u8(updateRequested ? 1 : 0));
}
