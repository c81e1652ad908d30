import type * as X509 from '@peculiar/x509';
import { X509Certificate } from 'node:crypto';

/**
 * What the PROXY v2 PP2_SUBTYPE_SSL_SIG_ALG and PP2_SUBTYPE_SSL_KEY_ALG carry: facts of the
 * certificate the frontend (the edge) presented (proxy-protocol.txt §2.2.5), in the
 * spelling haproxy sends: OpenSSL's short name of the signature algorithm
 * ("ecdsa-with-SHA256", "RSA-SHA256") and the key algorithm with its size ("EC256",
 * "RSA2048"). Computed once per chain (identities share their chain arrays).
 */
export interface ServerCertificateFacts {
  readonly signatureAlgorithm: string | undefined;
  readonly keyAlgorithm: string | undefined;
}

const cache = new WeakMap<readonly Uint8Array[], ServerCertificateFacts>();

/**
 * @peculiar/x509 (for the signature algorithm) is loaded only by an edge that sends PROXY
 * headers (`loadCertificateFacts` at start): importing it costs hundreds of ms per process.
 */
let x509: typeof X509 | undefined;
export async function loadCertificateFacts(): Promise<void> {
  if (x509) return;
  await import('reflect-metadata');
  x509 = await import('@peculiar/x509');
}

const HASH_SUFFIX: Record<string, string> = { 'SHA-1': 'SHA1', 'SHA-224': 'SHA224', 'SHA-256': 'SHA256', 'SHA-384': 'SHA384', 'SHA-512': 'SHA512' };

function signatureAlgorithmName(cert: X509.X509Certificate): string | undefined {
  const alg = cert.signatureAlgorithm as { name: string; hash?: { name: string } };
  const hash = alg.hash ? HASH_SUFFIX[alg.hash.name] : undefined;
  switch (alg.name) {
    case 'ECDSA':
      return hash ? `ecdsa-with-${hash}` : undefined;
    case 'RSASSA-PKCS1-v1_5':
      return hash ? `RSA-${hash}` : undefined;
    case 'RSA-PSS':
      return 'RSASSA-PSS';
    case 'Ed25519':
      return 'ED25519';
    default:
      return undefined;
  }
}

const CURVE_BITS: Record<string, number> = { prime256v1: 256, secp384r1: 384, secp521r1: 521 };

function keyAlgorithmName(cert: X509Certificate): string | undefined {
  const key = cert.publicKey;
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      return `RSA${key.asymmetricKeyDetails?.modulusLength ?? ''}`;
    case 'ec': {
      const bits = CURVE_BITS[key.asymmetricKeyDetails?.namedCurve ?? ''];
      return bits ? `EC${bits}` : 'EC';
    }
    case 'ed25519':
      return 'ED25519';
    default:
      return undefined;
  }
}

export function serverCertificateFacts(chain: readonly Uint8Array[]): ServerCertificateFacts {
  let facts = cache.get(chain);
  if (facts) return facts;
  const leaf = chain[0];
  facts = { signatureAlgorithm: undefined, keyAlgorithm: undefined };
  if (leaf) {
    try {
      const der = Buffer.from(leaf.buffer, leaf.byteOffset, leaf.byteLength);
      facts = {
        signatureAlgorithm: x509 ? signatureAlgorithmName(new x509.X509Certificate(der)) : undefined,
        keyAlgorithm: keyAlgorithmName(new X509Certificate(der)),
      };
    } catch {
      // A chain keyd handed out that does not parse: the TLVs are left out, the connection goes on.
    }
  }
  cache.set(chain, facts);
  return facts;
}
