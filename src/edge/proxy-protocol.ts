import { isIPv4, isIPv6 } from 'node:net';

/**
 * PROXY protocol version 2 (HAProxy's "proxy-protocol.txt", §2.2): a binary header sent
 * once, before any plaintext, so the upstream learns the real client address and, through
 * TLVs, what the TLS terminator negotiated. We send the PROXY command over TCP with
 * PP2_TYPE_AUTHORITY = the client's server name (SNI), PP2_TYPE_ALPN, and PP2_TYPE_SSL
 * (§2.2.5) with the version, cipher, our certificate's signature and key algorithms, and,
 * when the client's certificate was verified, its CN and the PP2_CLIENT_CERT_* flags.
 */

export const PROXY_V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

const VERSION_2_PROXY = 0x21; // version 2 (high nibble), command PROXY (low nibble)
const FAMILY_UNSPEC = 0x00;
const TCP_OVER_IPV4 = 0x11;
const TCP_OVER_IPV6 = 0x21;

export const Pp2Type = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  SSL: 0x20,
  SUBTYPE_SSL_VERSION: 0x21,
  SUBTYPE_SSL_CN: 0x22,
  SUBTYPE_SSL_CIPHER: 0x23,
  SUBTYPE_SSL_SIG_ALG: 0x24,
  SUBTYPE_SSL_KEY_ALG: 0x25,
  /**
   * A custom TLV (the spec leaves 0xE0..0xEF to applications): what the handshake did
   * beyond the standard SSL sub-TLVs, as `key=value` pairs separated by `;` (docs/EDGE.md).
   */
  HANDSHAKE_DETAILS: 0xe0,
} as const;

/** PP2_TYPE_SSL `client` bits (§2.2.5). */
export const Pp2Client = {
  /** The client connected over SSL/TLS. */
  SSL: 0x01,
  /** The client presented a certificate over this connection. */
  CERT_CONN: 0x02,
  /** The client presented a certificate at least once over this TLS session (a resumed one included). */
  CERT_SESS: 0x04,
} as const;

export interface ProxyHeaderInfo {
  sourceAddress?: string;
  sourcePort?: number;
  destinationAddress?: string;
  destinationPort?: number;
  serverName?: string;
  alpnProtocol?: string;
  tlsVersion?: string;
  cipherSuite?: string;
  /** PP2_SUBTYPE_SSL_SIG_ALG / _KEY_ALG: the certificate the edge presented (§2.2.5). */
  serverSignatureAlgorithm?: string;
  serverKeyAlgorithm?: string;
  /** The client's verified certificate; `fromSession` when verified in the session this connection resumed. */
  clientCertificate?: { readonly commonName: string | undefined; readonly fromSession: boolean };
  /** Sent as the custom HANDSHAKE_DETAILS TLV: group, hrr, resumed, signature (key=value;…). */
  handshakeDetails?: Readonly<Record<string, string>>;
}

/** `key=value;key=value` for the HANDSHAKE_DETAILS TLV (keys and values must not hold `;` or `=`). */
export function encodeHandshakeDetails(details: Readonly<Record<string, string>>): Buffer {
  return Buffer.from(
    Object.entries(details)
      .map(([k, v]) => `${k}=${v}`.replace(/;/g, ','))
      .join(';'),
    'latin1',
  );
}

/** The HANDSHAKE_DETAILS TLV back as a map; pairs without `=` are skipped. */
export function decodeHandshakeDetails(value: Buffer | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const pair of (value ?? Buffer.alloc(0)).toString('latin1').split(';')) {
    const at = pair.indexOf('=');
    if (at > 0) out.set(pair.slice(0, at), pair.slice(at + 1));
  }
  return out;
}

export class ProxyProtocolError extends Error {
  readonly code = 'EDGE_PROXY_PROTOCOL';
}

function tlv(type: number, value: Uint8Array): Buffer {
  if (value.length > 0xffff) throw new ProxyProtocolError(`PROXY v2 TLV 0x${type.toString(16)} is too long`);
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

function unmapV4(address: string): string {
  return address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map((part) => Number(part)));
}

/** Expands an IPv6 text address (with `::` and an optional dotted IPv4 tail) to 16 bytes. */
function ipv6Bytes(address: string): Buffer {
  let text = address.split('%')[0];
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (isIPv4(text.slice(lastColon + 1))) {
    const v4 = ipv4Bytes(text.slice(lastColon + 1));
    text = text.slice(0, lastColon + 1) + '0:0';
    tail.push(v4.readUInt16BE(0), v4.readUInt16BE(2));
  }
  const [head, rest] = text.includes('::') ? text.split('::') : [text, undefined];
  const headGroups = head ? head.split(':') : [];
  const restGroups = rest ? rest.split(':') : [];
  const zeros = rest === undefined ? 0 : 8 - headGroups.length - restGroups.length;
  const groups = [...headGroups, ...Array<string>(zeros).fill('0'), ...restGroups].map((g) => parseInt(g, 16));
  if (tail.length) groups.splice(6, 2, ...tail);
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

function addressBlock(info: ProxyHeaderInfo): { family: number; block: Buffer } {
  const { sourcePort, destinationPort } = info;
  if (!info.sourceAddress || !info.destinationAddress || sourcePort === undefined || destinationPort === undefined) {
    return { family: FAMILY_UNSPEC, block: Buffer.alloc(0) };
  }
  let src = unmapV4(info.sourceAddress);
  let dst = unmapV4(info.destinationAddress);
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(sourcePort, 0);
  ports.writeUInt16BE(destinationPort, 2);
  if (isIPv4(src) && isIPv4(dst)) {
    return { family: TCP_OVER_IPV4, block: Buffer.concat([ipv4Bytes(src), ipv4Bytes(dst), ports]) };
  }
  // Mixed families: carry both as IPv6, the IPv4 one mapped (::ffff:a.b.c.d).
  if (isIPv4(src)) src = `::ffff:${src}`;
  if (isIPv4(dst)) dst = `::ffff:${dst}`;
  if (!isIPv6(src) || !isIPv6(dst)) return { family: FAMILY_UNSPEC, block: Buffer.alloc(0) };
  return { family: TCP_OVER_IPV6, block: Buffer.concat([ipv6Bytes(src), ipv6Bytes(dst), ports]) };
}

/** Encodes a PROXY v2 header for one proxied TLS connection. */
export function encodeProxyV2(info: ProxyHeaderInfo): Buffer {
  const { family, block } = addressBlock(info);
  const tlvs: Buffer[] = [];
  if (info.alpnProtocol) tlvs.push(tlv(Pp2Type.ALPN, Buffer.from(info.alpnProtocol, 'utf8'))); // the bytes negotiated (negotiate.ts selectAlpn)
  if (info.serverName) tlvs.push(tlv(Pp2Type.AUTHORITY, Buffer.from(info.serverName, 'utf8')));
  const sslSub: Buffer[] = [];
  if (info.tlsVersion) sslSub.push(tlv(Pp2Type.SUBTYPE_SSL_VERSION, Buffer.from(info.tlsVersion, 'latin1')));
  const client = info.clientCertificate;
  if (client?.commonName) sslSub.push(tlv(Pp2Type.SUBTYPE_SSL_CN, Buffer.from(client.commonName, 'utf8')));
  if (info.cipherSuite) sslSub.push(tlv(Pp2Type.SUBTYPE_SSL_CIPHER, Buffer.from(info.cipherSuite, 'latin1')));
  if (info.serverSignatureAlgorithm) sslSub.push(tlv(Pp2Type.SUBTYPE_SSL_SIG_ALG, Buffer.from(info.serverSignatureAlgorithm, 'latin1')));
  if (info.serverKeyAlgorithm) sslSub.push(tlv(Pp2Type.SUBTYPE_SSL_KEY_ALG, Buffer.from(info.serverKeyAlgorithm, 'latin1')));
  // struct pp2_tlv_ssl { uint8 client; uint32 verify; sub-TLVs } (§2.2.5). verify is 0: a
  // client certificate that did not verify never gets this far (the handshake failed), and
  // without one haproxy too sends 0; the CERT_* bits say whether there was a certificate.
  const sslHead = Buffer.alloc(5);
  sslHead[0] = Pp2Client.SSL | (client ? Pp2Client.CERT_SESS | (client.fromSession ? 0 : Pp2Client.CERT_CONN) : 0);
  tlvs.push(tlv(Pp2Type.SSL, Buffer.concat([sslHead, ...sslSub])));
  if (info.handshakeDetails) tlvs.push(tlv(Pp2Type.HANDSHAKE_DETAILS, encodeHandshakeDetails(info.handshakeDetails)));
  const body = Buffer.concat([block, ...tlvs]);
  if (body.length > 0xffff) throw new ProxyProtocolError('PROXY v2 header is longer than 65535 bytes');
  const fixed = Buffer.alloc(4);
  fixed[0] = VERSION_2_PROXY;
  fixed[1] = family;
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([PROXY_V2_SIGNATURE, fixed, body]);
}

export interface DecodedProxyV2 {
  command: 'LOCAL' | 'PROXY';
  sourceAddress?: string;
  sourcePort?: number;
  destinationAddress?: string;
  destinationPort?: number;
  tlvs: Map<number, Buffer>;
  /** Bytes the header took; the application data starts after them. */
  length: number;
}

function ipv6Text(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return groups.join(':');
}

/**
 * Decodes a PROXY v2 header at the start of `data` (used by the demo upstream and by tests).
 * Returns undefined while more bytes are needed; throws on anything that is not a v2 header.
 */
export function decodeProxyV2(data: Buffer): DecodedProxyV2 | undefined {
  const probe = Math.min(data.length, PROXY_V2_SIGNATURE.length);
  if (!data.subarray(0, probe).equals(PROXY_V2_SIGNATURE.subarray(0, probe))) {
    throw new ProxyProtocolError('data does not start with the PROXY v2 signature');
  }
  if (data.length < 16) return undefined;
  const versionCommand = data[12];
  if (versionCommand >> 4 !== 2) throw new ProxyProtocolError(`PROXY protocol version ${versionCommand >> 4} is not 2`);
  const commandBits = versionCommand & 0x0f;
  if (commandBits > 1) throw new ProxyProtocolError(`unknown PROXY v2 command ${commandBits}`);
  const family = data[13];
  const length = 16 + data.readUInt16BE(14);
  if (data.length < length) return undefined;
  const body = data.subarray(16, length);
  const out: DecodedProxyV2 = { command: commandBits === 1 ? 'PROXY' : 'LOCAL', tlvs: new Map(), length };
  let offset = 0;
  if (family === TCP_OVER_IPV4) {
    if (body.length < 12) throw new ProxyProtocolError('PROXY v2 IPv4 address block is short');
    out.sourceAddress = [...body.subarray(0, 4)].join('.');
    out.destinationAddress = [...body.subarray(4, 8)].join('.');
    out.sourcePort = body.readUInt16BE(8);
    out.destinationPort = body.readUInt16BE(10);
    offset = 12;
  } else if (family === TCP_OVER_IPV6) {
    if (body.length < 36) throw new ProxyProtocolError('PROXY v2 IPv6 address block is short');
    out.sourceAddress = ipv6Text(body.subarray(0, 16));
    out.destinationAddress = ipv6Text(body.subarray(16, 32));
    out.sourcePort = body.readUInt16BE(32);
    out.destinationPort = body.readUInt16BE(34);
    offset = 36;
  } else if (family !== FAMILY_UNSPEC) {
    throw new ProxyProtocolError(`PROXY v2 family/transport 0x${family.toString(16)} is not supported`);
  }
  while (offset < body.length) {
    if (body.length - offset < 3) throw new ProxyProtocolError('PROXY v2 TLV header is truncated');
    const type = body[offset];
    const len = body.readUInt16BE(offset + 1);
    if (offset + 3 + len > body.length) throw new ProxyProtocolError(`PROXY v2 TLV 0x${type.toString(16)} overruns the header`);
    out.tlvs.set(type, Buffer.from(body.subarray(offset + 3, offset + 3 + len)));
    offset += 3 + len;
  }
  return out;
}
