/**
 * The "key file" an unmodified OpenSSL server is given instead of a private key: a PEM
 * block `DELEGATOR KEY REFERENCE` that names keyd's signing socket, the server name keyd
 * signs for, the key reference and the key's public half. The OpenSSL provider
 * (plugins/openssl-provider, docs/OPENSSL-PROVIDER.md) decodes it; nothing in it is secret.
 *
 *   DelegatorKeyReference ::= SEQUENCE {
 *     version     INTEGER (1),
 *     socketPath  UTF8String,
 *     serverName  UTF8String,
 *     keyRef      UTF8String,
 *     publicKey   SubjectPublicKeyInfo }   -- RFC 5280 §4.1.2.7
 */
import { X509Certificate } from 'node:crypto';

export const KEY_REFERENCE_PEM_LABEL = 'DELEGATOR KEY REFERENCE';

export interface KeyReference {
  socketPath: string;
  serverName: string;
  keyRef: string;
  /** DER SubjectPublicKeyInfo of the key (the leaf certificate's). */
  spki: Uint8Array;
}

/** The reference for a key whose leaf certificate is `leafDer`. */
export function keyReferenceFor(socketPath: string, serverName: string, keyRef: string, leafDer: Uint8Array): KeyReference {
  const spki = new X509Certificate(leafDer).publicKey.export({ type: 'spki', format: 'der' });
  return { socketPath, serverName, keyRef, spki };
}

export function encodeKeyReference(ref: KeyReference): Buffer {
  for (const [what, value, max] of [['socket path', ref.socketPath, 107], ['server name', ref.serverName, 255], ['key reference', ref.keyRef, 255]] as const) {
    if (value.length === 0 || Buffer.byteLength(value) > max || value.includes('\0')) throw new RangeError(`${what} must be 1..${max} bytes without NUL`);
  }
  // The provider refuses a relative path (docs/OPENSSL-PROVIDER.md, "The reference file"): the
  // server would resolve it from its own working directory.
  if (!ref.socketPath.startsWith('/')) throw new RangeError(`socket path must be absolute: ${ref.socketPath}`);
  return tlv(0x30, Buffer.concat([
    tlv(0x02, Buffer.from([1])),
    tlv(0x0c, Buffer.from(ref.socketPath, 'utf8')),
    tlv(0x0c, Buffer.from(ref.serverName, 'utf8')),
    tlv(0x0c, Buffer.from(ref.keyRef, 'utf8')),
    Buffer.from(ref.spki),
  ]));
}

export function encodeKeyReferencePem(ref: KeyReference): string {
  const body = encodeKeyReference(ref).toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${KEY_REFERENCE_PEM_LABEL}-----\n${body}-----END ${KEY_REFERENCE_PEM_LABEL}-----\n`;
}

/** ITU-T X.690 §8.1: tag, definite length (short form below 128, else long form), value. */
function tlv(tag: number, value: Buffer): Buffer {
  const n = value.length;
  const length = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...length]), value]);
}
