/**
 * A small ClientHello encoder for tests (RFC 8446 §4.1.2), built on the engine's Writer,
 * so that tests can make valid ClientHellos and then break exactly one thing.
 */
import { Writer } from '../../src/lib/writer.js';
import { ExtensionType as X, HandshakeType, NamedGroup, SignatureScheme } from '../../src/tls/wire/codepoints.js';
import { montgomeryKeyPair } from '../helpers/montgomery-keys.js';

export interface RawExtension {
  type: number;
  data: Uint8Array;
}

export interface ClientHelloSpec {
  legacyVersion?: number;
  random?: Uint8Array;
  sessionId?: Uint8Array;
  cipherSuites?: number[];
  compressionMethods?: number[];
  /** Extensions in wire order; `undefined` writes no extensions block at all. */
  extensions?: RawExtension[];
}

export function ext(type: number, body: (w: Writer) => void): RawExtension {
  const w = new Writer();
  body(w);
  return { type, data: w.finish() };
}

export const extensions = {
  serverName: (name: string) =>
    ext(X.server_name, (w) => w.vec(2, (l) => l.u8(0).opaque(2, Buffer.from(name, 'latin1')))),
  supportedVersions: (versions: number[] = [0x0304]) =>
    ext(X.supported_versions, (w) => w.vec(1, (l) => versions.forEach((v) => l.u16(v)))),
  supportedGroups: (groups: number[]) => ext(X.supported_groups, (w) => w.vec(2, (l) => groups.forEach((g) => l.u16(g)))),
  keyShare: (shares: { group: number; keyExchange: Uint8Array }[]) =>
    ext(X.key_share, (w) => w.vec(2, (l) => shares.forEach((s) => l.u16(s.group).opaque(2, s.keyExchange)))),
  signatureAlgorithms: (schemes: number[]) =>
    ext(X.signature_algorithms, (w) => w.vec(2, (l) => schemes.forEach((s) => l.u16(s)))),
  signatureAlgorithmsCert: (schemes: number[]) =>
    ext(X.signature_algorithms_cert, (w) => w.vec(2, (l) => schemes.forEach((s) => l.u16(s)))),
  alpn: (protocols: string[]) =>
    ext(X.application_layer_protocol_negotiation, (w) => w.vec(2, (l) => protocols.forEach((p) => l.opaque(1, Buffer.from(p, 'latin1'))))),
  pskModes: (modes: number[]) => ext(X.psk_key_exchange_modes, (w) => w.vec(1, (l) => modes.forEach((m) => l.u8(m)))),
  preSharedKey: (identities: { identity: Uint8Array; age: number }[], binders: Uint8Array[]) =>
    ext(X.pre_shared_key, (w) => {
      w.vec(2, (l) => identities.forEach((i) => l.opaque(2, i.identity).u32(i.age)));
      w.vec(2, (l) => binders.forEach((b) => l.opaque(1, b)));
    }),
  earlyData: () => ({ type: X.early_data, data: new Uint8Array(0) }),
  cookie: (cookie: Uint8Array) => ext(X.cookie, (w) => w.opaque(2, cookie)),
  recordSizeLimit: (limit: number) => ext(X.record_size_limit, (w) => w.u16(limit)),
  raw: (type: number, data: Uint8Array = new Uint8Array(0)) => ({ type, data }),
};

/** Encodes the ClientHello handshake message (4-byte header included). */
export function encodeClientHello(spec: ClientHelloSpec): Buffer {
  const w = new Writer(512);
  w.u8(HandshakeType.client_hello);
  w.vec(3, (b) => {
    b.u16(spec.legacyVersion ?? 0x0303);
    b.bytes(spec.random ?? Buffer.alloc(32, 0x11));
    b.opaque(1, spec.sessionId ?? Buffer.alloc(32, 0x22));
    b.vec(2, (l) => (spec.cipherSuites ?? [0x1301, 0x1302, 0x1303]).forEach((s) => l.u16(s)));
    b.vec(1, (l) => (spec.compressionMethods ?? [0]).forEach((c) => l.u8(c)));
    if (spec.extensions) {
      const list = spec.extensions;
      b.vec(2, (l) => list.forEach((e) => l.u16(e.type).opaque(2, e.data)));
    }
  });
  return w.finish();
}

/** A fresh X25519 public key (raw 32 bytes) for a key_share. */
export function x25519Share(): Buffer {
  return montgomeryKeyPair('x25519').publicRaw;
}

/** The extensions of a typical, valid TLS 1.3 ClientHello with an x25519 share. */
export function typicalExtensions(share: Uint8Array = x25519Share(), serverName = 'example.test'): RawExtension[] {
  return [
    extensions.serverName(serverName),
    extensions.supportedVersions([0x0304, 0x0303]),
    extensions.supportedGroups([NamedGroup.x25519, NamedGroup.secp256r1]),
    extensions.keyShare([{ group: NamedGroup.x25519, keyExchange: share }]),
    extensions.signatureAlgorithms([SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.ed25519]),
    extensions.alpn(['h2', 'http/1.1']),
    extensions.pskModes([1]),
  ];
}

/** Wraps handshake bytes into TLSPlaintext records of at most `fragment` bytes. */
export function handshakeRecords(message: Uint8Array, fragment = 16384): Buffer {
  const out: Buffer[] = [];
  for (let off = 0; off < message.length; off += fragment) {
    const body = message.subarray(off, off + fragment);
    const h = Buffer.from([22, 3, 1, 0, 0]);
    h.writeUInt16BE(body.length, 3);
    out.push(h, Buffer.from(body));
  }
  return Buffer.concat(out);
}
