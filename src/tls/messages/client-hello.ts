import { TlsAlert } from '../alert.js';
import { ExtensionType as X, HandshakeType } from '../wire/codepoints.js';
import { isIP } from 'node:net';
import { Reader } from '../../lib/reader.js';

/**
 * ClientHello (RFC 8446 §4.1.2) with the extensions a TLS 1.3 server acts on
 * decoded (§4.2). Unknown extensions are kept as raw values and otherwise ignored;
 * unknown groups, schemes and versions (GREASE, X25519MLKEM768) stay plain numbers.
 */
export interface KeyShareEntry {
  readonly group: number;
  readonly keyExchange: Uint8Array;
}

export interface PskIdentity {
  readonly identity: Uint8Array;
  readonly obfuscatedTicketAge: number;
}

export interface PreSharedKeyOffer {
  readonly identities: readonly PskIdentity[];
  readonly binders: readonly Uint8Array[];
  /** Offset in the raw handshake message where the binders vector starts (§4.2.11.2 truncation point). */
  readonly bindersOffset: number;
}

export interface ClientHello {
  readonly legacyVersion: number;
  readonly random: Uint8Array;
  readonly legacySessionId: Uint8Array;
  readonly cipherSuites: readonly number[];
  readonly compressionMethods: Uint8Array;
  /** Extension types in the order sent. */
  readonly extensionOrder: readonly number[];
  /** Raw bodies of every extension, by type. */
  readonly extensions: ReadonlyMap<number, Uint8Array>;
  readonly serverName?: string;
  readonly supportedVersions?: readonly number[];
  readonly supportedGroups?: readonly number[];
  readonly keyShares?: readonly KeyShareEntry[];
  readonly signatureAlgorithms?: readonly number[];
  readonly signatureAlgorithmsCert?: readonly number[];
  readonly alpnProtocols?: readonly string[];
  readonly pskKeyExchangeModes?: readonly number[];
  readonly preSharedKey?: PreSharedKeyOffer;
  readonly earlyData: boolean;
  readonly cookie?: Uint8Array;
  readonly recordSizeLimit?: number;
  /** The whole handshake message (header included), for the transcript. */
  readonly raw: Buffer;
}

/** Extensions RFC 8446 §4.2 allows only in other messages: illegal_parameter in a ClientHello. */
const NOT_IN_CLIENT_HELLO = new Set<number>([X.oid_filters]);

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** Decodes a ClientHello handshake message (`raw` includes the 4-byte header). */
export function decodeClientHello(raw: Buffer): ClientHello {
  const r = new Reader(raw, 'ClientHello', 4);
  const legacyVersion = r.u16('legacy_version');
  const random = r.bytesN(32, 'random');
  const legacySessionId = r.vec(1, 0, 32, 'legacy_session_id');
  const cipherSuites = r.u16List(2, 2, 0xfffe, 'cipher_suites');
  const compressionMethods = r.vec(1, 1, 0xff, 'legacy_compression_methods');
  const hello: Mutable<ClientHello> = {
    legacyVersion,
    random,
    legacySessionId,
    cipherSuites,
    compressionMethods,
    extensionOrder: [],
    extensions: new Map(),
    earlyData: false,
    raw,
  };
  // §4.1.2: a ClientHello without extensions is a pre-TLS 1.3 client; the caller
  // answers protocol_version because supported_versions is missing.
  if (r.remaining === 0) return hello;
  const exts = r.sub(2, 0, 0xffff, 'extensions');
  r.end();
  const order: number[] = [];
  const map = new Map<number, Uint8Array>();
  while (exts.remaining > 0) {
    const type = exts.u16('extension_type');
    const startOfData = exts.position + 2;
    const data = exts.vec(2, 0, 0xffff, `extension ${type}`);
    if (map.has(type)) {
      // §4.2: "There MUST NOT be more than one extension of the same type in a given extension block."
      throw new TlsAlert('illegal_parameter', `ClientHello: duplicate extension ${type}`);
    }
    if (hello.preSharedKey) {
      // §4.2.11: pre_shared_key MUST be the last extension.
      throw new TlsAlert('illegal_parameter', 'ClientHello: pre_shared_key is not the last extension');
    }
    if (NOT_IN_CLIENT_HELLO.has(type)) {
      throw new TlsAlert('illegal_parameter', `ClientHello: extension ${type} is not allowed in a ClientHello`);
    }
    order.push(type);
    map.set(type, data);
    decodeExtension(hello, type, data, startOfData);
  }
  hello.extensionOrder = order;
  hello.extensions = map;
  return hello;
}

function decodeExtension(hello: Mutable<ClientHello>, type: number, data: Uint8Array, startOfData: number): void {
  const r = new Reader(data, `ClientHello extension ${type}`);
  switch (type) {
    case X.server_name:
      hello.serverName = decodeServerName(r);
      break;
    case X.supported_versions:
      hello.supportedVersions = r.u16List(1, 2, 254, 'supported_versions');
      break;
    case X.supported_groups:
      hello.supportedGroups = r.u16List(2, 2, 0xffff, 'named_group_list');
      break;
    case X.key_share:
      hello.keyShares = decodeKeyShares(r);
      break;
    case X.signature_algorithms:
      hello.signatureAlgorithms = r.u16List(2, 2, 0xfffe, 'supported_signature_algorithms');
      break;
    case X.signature_algorithms_cert:
      hello.signatureAlgorithmsCert = r.u16List(2, 2, 0xfffe, 'supported_signature_algorithms_cert');
      break;
    case X.application_layer_protocol_negotiation:
      hello.alpnProtocols = decodeAlpn(r);
      break;
    case X.psk_key_exchange_modes: {
      const modes = r.vec(1, 1, 255, 'ke_modes');
      hello.pskKeyExchangeModes = [...modes];
      break;
    }
    case X.pre_shared_key:
      hello.preSharedKey = decodePreSharedKey(r, startOfData);
      break;
    case X.early_data:
      hello.earlyData = true; // §4.2.10: empty in a ClientHello
      break;
    case X.cookie:
      hello.cookie = r.vec(2, 1, 0xffff, 'cookie');
      break;
    case X.record_size_limit: {
      const limit = r.u16('record_size_limit');
      // RFC 8449 §4: a value below 64 is illegal_parameter.
      if (limit < 64) throw new TlsAlert('illegal_parameter', `record_size_limit ${limit} is below 64`);
      hello.recordSizeLimit = limit;
      break;
    }
    default:
      // Unknown or not acted on: ignored (§4.1.2), body kept raw. delegated_credential
      // (RFC 9345 §4.1.1) is also kept raw here: the server MUST ignore it unless TLS 1.3
      // is negotiated, so the TLS 1.3 handshake decodes it (handshake/delegation.ts).
      return;
  }
  r.end();
}

function decodeServerName(r: Reader): string | undefined {
  const list = r.sub(2, 1, 0xffff, 'server_name_list');
  let hostName: string | undefined;
  let seenHostName = false;
  while (list.remaining > 0) {
    const nameType = list.u8('name_type');
    const name = list.vec(2, 1, 0xffff, 'host_name');
    if (nameType !== 0) continue; // RFC 6066 §3: only host_name (0) is defined
    if (seenHostName) {
      throw new TlsAlert('illegal_parameter', 'server_name: more than one host_name');
    }
    seenHostName = true;
    // RFC 6066 §3: HostName is sent "without a trailing dot". A client that sends one anyway
    // names the same host (RFC 1034 §3.1: the absolute form of the name), so the one dot is
    // dropped here, where every consumer reads the name (identity lookup and routing, the
    // session a ticket or session id is bound to, info.serverName): each sees one form, and
    // none strips again (docs/ARCHITECTURE.md, "server_name").
    const text = Buffer.from(name).toString('latin1');
    const host = text.endsWith('.') ? text.slice(0, -1) : text;
    // RFC 6066 §3: "Literal IPv4 and IPv6 addresses are not permitted in HostName." Some
    // clients send one anyway when they connect by address; it names no host, so it is
    // read as no server name (the default identity, no acknowledgement), as rustls does,
    // rather than failing the handshake or being looked up as a name.
    if (isIP(host) !== 0) continue;
    // RFC 6066 §3: ASCII host name; compare case-insensitively (RFC 4343).
    for (const c of name) {
      const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x2a;
      if (!ok) throw new TlsAlert('illegal_parameter', 'server_name: host_name is not an ASCII host name');
    }
    // An empty label ("a..b", ".a", "." or a second trailing dot) names no host (RFC 1035 §2.3.1).
    if (host.length === 0 || host.startsWith('.') || host.endsWith('.') || host.includes('..')) {
      throw new TlsAlert('illegal_parameter', 'server_name: host_name has an empty label');
    }
    hostName = host.toLowerCase();
  }
  return hostName;
}

function decodeKeyShares(r: Reader): KeyShareEntry[] {
  const list = r.sub(2, 0, 0xffff, 'client_shares');
  const shares: KeyShareEntry[] = [];
  const seen = new Set<number>();
  while (list.remaining > 0) {
    const group = list.u16('group');
    // key_exchange<1..2^16-1>: an empty share is a bad share for its group (illegal_parameter when
    // the group is used), not a framing error, so the length is checked by the group.
    const keyExchange = list.vec(2, 0, 0xffff, 'key_exchange');
    // §4.2.8: "Clients MUST NOT offer multiple KeyShareEntry values for the same group."
    if (seen.has(group)) throw new TlsAlert('illegal_parameter', `key_share: two entries for group ${group}`);
    seen.add(group);
    shares.push({ group, keyExchange });
  }
  return shares;
}

function decodeAlpn(r: Reader): string[] {
  const list = r.sub(2, 2, 0xffff, 'protocol_name_list');
  const names: string[] = [];
  while (list.remaining > 0) names.push(Buffer.from(list.vec(1, 1, 0xff, 'protocol_name')).toString('latin1'));
  return names;
}

function decodePreSharedKey(r: Reader, startOfData: number): PreSharedKeyOffer {
  const ids = r.sub(2, 7, 0xffff, 'identities');
  const identities: PskIdentity[] = [];
  while (ids.remaining > 0) {
    const identity = ids.vec(2, 1, 0xffff, 'identity');
    identities.push({ identity, obfuscatedTicketAge: ids.u32('obfuscated_ticket_age') });
  }
  const bindersOffset = startOfData + r.position;
  const list = r.sub(2, 33, 0xffff, 'binders');
  const binders: Uint8Array[] = [];
  while (list.remaining > 0) binders.push(list.vec(1, 32, 255, 'binder'));
  if (binders.length !== identities.length) {
    throw new TlsAlert('illegal_parameter', `pre_shared_key: ${identities.length} identities but ${binders.length} binders`);
  }
  return { identities, binders, bindersOffset };
}

export const CLIENT_HELLO = HandshakeType.client_hello;
