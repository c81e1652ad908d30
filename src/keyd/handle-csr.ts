import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { SignatureScheme } from '../tls/wire/codepoints.js';
import { KeydError } from './errors.js';
import type { KeyHandle } from './key-handle.js';
import { ecdsaDerToRaw } from './pkcs11/key-material.js';

/**
 * A PKCS#10 CSR (SAN: the name) signed through a KeyHandle, for keys whose private half
 * keyd cannot hold as a WebCrypto key (a token key). @peculiar/x509 builds the request;
 * its one signing call is routed to the handle, with the signature scheme that matches
 * the algorithm it asks for.
 */
export async function csrForHandle(handle: KeyHandle, name: string, subject: string): Promise<string> {
  const dn = parseSubject(subject);
  const { algorithm, scheme, coordinateLength } = csrAlgorithm(handle);
  const publicKey = await webcrypto.subtle.importKey('spki', handle.publicKey.export({ format: 'der', type: 'spki' }), algorithm as never, true, ['verify']);
  const privateKey = { algorithm, type: 'private', extractable: false, usages: ['sign'] };
  const crypto = {
    subtle: {
      exportKey: (format: string, key: webcrypto.CryptoKey) => webcrypto.subtle.exportKey(format as 'spki', key),
      sign: async (_algorithm: unknown, _key: unknown, data: ArrayBuffer | Uint8Array) => {
        const signature = Buffer.from(await handle.sign(scheme, new Uint8Array(data instanceof ArrayBuffer ? data : data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength))));
        const out = coordinateLength ? ecdsaDerToRaw(signature, coordinateLength) : signature;
        return out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
      },
    },
  };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: dn,
      keys: { publicKey, privateKey } as never,
      signingAlgorithm: algorithm as never,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }])],
    },
    crypto as never,
  );
  return csr.toString('pem');
}

/** The CSR subject; checked before a token is asked to generate anything. */
export function parseSubject(subject: string): x509.Name {
  try {
    const dn = new x509.Name(subject);
    if (dn.toJSON().length === 0) throw new Error('empty subject');
    return dn;
  } catch (err) {
    throw new KeydError('KEYD_BAD_REQUEST', `subject ${JSON.stringify(subject)} is not a distinguished name like "CN=example.com, O=Org" (${(err as Error).message})`);
  }
}

function csrAlgorithm(handle: KeyHandle): { algorithm: object; scheme: number; coordinateLength?: number } {
  switch (handle.keyType) {
    case 'ecdsa-p256':
      return { algorithm: { name: 'ECDSA', namedCurve: 'P-256', hash: { name: 'SHA-256' } }, scheme: SignatureScheme.ecdsa_secp256r1_sha256, coordinateLength: 32 };
    case 'ecdsa-p384':
      return { algorithm: { name: 'ECDSA', namedCurve: 'P-384', hash: { name: 'SHA-384' } }, scheme: SignatureScheme.ecdsa_secp384r1_sha384, coordinateLength: 48 };
    case 'ed25519':
      return { algorithm: { name: 'Ed25519' }, scheme: SignatureScheme.ed25519 };
    case 'rsa':
      // CAs expect a PKCS#1 v1.5 CSR; the same key signs PSS in TLS 1.3.
      return { algorithm: { name: 'RSASSA-PKCS1-v1_5', hash: { name: 'SHA-256' } }, scheme: SignatureScheme.rsa_pkcs1_sha256 };
    default:
      throw new KeydError('KEYD_BAD_KEY', `no CSR for a ${handle.keyType} key`);
  }
}
