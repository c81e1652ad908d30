import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import {
  DELEGATED_CREDENTIAL_SCHEMES,
  DELEGATION_USAGE_OID,
  MAX_DELEGATED_CREDENTIAL_SECONDS,
  RSA_PKCS1_SCHEMES,
  delegatedCredentialSignedContent,
  encodeCredential,
  encodeDelegatedCredential,
} from '../tls/messages/delegated-credential.js';
import { SCHEMES } from '../tls/signature-schemes.js';
import { keyTypeOf } from '../tls/signer.js';
import { KeydError } from './errors.js';
import type { KeyEntry } from './keyring.js';
import type { DelegationRequest } from './protocol.js';

/**
 * issueDelegatedCredential (docs/PROTOCOL.md, opcode 0x06): keyd signs an RFC 9345
 * credential for a short-lived key the edge made, and only that. Like CertificateVerify,
 * keyd builds the signed content itself (§4: 64 × 0x20, the server context string, 0x00,
 * the DER end-entity certificate it holds, the Credential it encodes, the algorithm it
 * picks), so the request cannot make it sign anything else. Refused, each with its own code:
 *
 *   KEYD_DC_NOT_ALLOWED      the leaf lacks DelegationUsage (non-critical, NULL) or the
 *                            digitalSignature key usage (§4.2), or the key has no certificate
 *   KEYD_DC_LIFETIME         lifetime 0, beyond 7 days (§4), beyond the operator's policy
 *                            (limits.delegatedCredentialMaxSeconds), or past the leaf's notAfter
 *   KEYD_SCHEME_UNSUPPORTED  an RSA-PKCS1 or rsa_pss_rsae scheme (§4 forbids rsaEncryption keys),
 *                            or one keyd does not issue
 *   KEYD_BAD_SPKI            the SubjectPublicKeyInfo does not parse, is not canonical DER, or
 *                            is not a key of the dc_cert_verify_algorithm
 *
 * The caller (server.ts) checks the name grant and the key reference first, as for signing.
 */

export interface IssuedCredential {
  /** The leaf the credential is bound to (the edge serves it only with this certificate). */
  readonly certificate: Uint8Array;
  /** The encoded DelegatedCredential. */
  readonly delegatedCredential: Buffer;
  /** When it expires: the leaf's notBefore + valid_time. */
  readonly notAfter: Date;
  /** SHA-256 of the credential's SPKI, hex: what the audit line names. */
  readonly spkiSha256: string;
  readonly scheme: number;
  readonly algorithm: number;
}

/** The leaf's facts that issuance checks, parsed once per certificate. */
interface LeafFacts {
  readonly delegationUsage: 'ok' | string;
  readonly notBefore: number;
  readonly notAfter: number;
}

const leafFacts = new WeakMap<Uint8Array, LeafFacts>();

/** DER NULL: DelegationUsage ::= NULL (§4.2). */
const DER_NULL = Buffer.of(0x05, 0x00);

function factsOf(leaf: Uint8Array): LeafFacts {
  let facts = leafFacts.get(leaf);
  if (facts) return facts;
  const cert = new x509.X509Certificate(leaf);
  const extension = cert.getExtension(DELEGATION_USAGE_OID);
  const keyUsage = cert.getExtension(x509.KeyUsagesExtension);
  let delegationUsage = 'ok';
  if (!extension) delegationUsage = `its certificate has no DelegationUsage extension (${DELEGATION_USAGE_OID}, RFC 9345 §4.2)`;
  else if (extension.critical) delegationUsage = 'its certificate marks DelegationUsage critical (RFC 9345 §4.2: MUST be non-critical)';
  else if (!Buffer.from(extension.value).equals(DER_NULL)) delegationUsage = 'its certificate\'s DelegationUsage is not NULL (RFC 9345 §4.2)';
  else if (!keyUsage || (keyUsage.usages & x509.KeyUsageFlags.digitalSignature) === 0) {
    delegationUsage = 'its certificate lacks the digitalSignature key usage (RFC 9345 §4.2)';
  }
  facts = { delegationUsage, notBefore: cert.notBefore.getTime(), notAfter: cert.notAfter.getTime() };
  leafFacts.set(leaf, facts);
  return facts;
}

/** Whether `publicKey` is a key of `scheme` (RFC 8446 §4.2.3: ECDSA bound to its curve). */
function keyFitsScheme(publicKey: KeyObject, scheme: number): boolean {
  const info = SCHEMES.get(scheme);
  return info !== undefined && keyTypeOf(publicKey) === info.keyType;
}

function parseSpki(spki: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch (err) {
    throw new KeydError('KEYD_BAD_SPKI', `the credential's SubjectPublicKeyInfo does not parse (${(err as Error).message})`);
  }
  // Only canonical DER: what the client verifies with must be exactly what keyd checked.
  if (!key.export({ format: 'der', type: 'spki' }).equals(spki)) {
    throw new KeydError('KEYD_BAD_SPKI', 'the credential\'s SubjectPublicKeyInfo is not canonical DER');
  }
  return key;
}

function schemeName(scheme: number): string {
  return SCHEMES.get(scheme)?.name ?? `0x${scheme.toString(16).padStart(4, '0')}`;
}

/** Checks the request against the key's leaf and the policy, then has the key sign the §4 content. */
export async function issueDelegatedCredential(entry: KeyEntry, request: DelegationRequest, maxSeconds: number, now: number): Promise<IssuedCredential> {
  const scheme = request.dcCertVerifyAlgorithm;
  if (RSA_PKCS1_SCHEMES.includes(scheme)) {
    throw new KeydError('KEYD_SCHEME_UNSUPPORTED', `${schemeName(scheme)} is RSA-PKCS1: never a TLS 1.3 signature, so never a credential's (RFC 9345 §4)`);
  }
  if (!DELEGATED_CREDENTIAL_SCHEMES.includes(scheme)) {
    throw new KeydError(
      'KEYD_SCHEME_UNSUPPORTED',
      `keyd does not issue credentials for ${schemeName(scheme)} (issued: ${DELEGATED_CREDENTIAL_SCHEMES.map(schemeName).join(', ')}; RFC 9345 §4 forbids rsa_pss_rsae_*)`,
    );
  }
  const publicKey = parseSpki(request.subjectPublicKeyInfo);
  if (!keyFitsScheme(publicKey, scheme)) {
    const curve = publicKey.asymmetricKeyDetails?.namedCurve;
    throw new KeydError('KEYD_BAD_SPKI', `the credential's key (${publicKey.asymmetricKeyType}${curve ? ` ${curve}` : ''}) cannot sign with ${schemeName(scheme)}`);
  }

  const leaf = entry.chain[0];
  if (!leaf) throw new KeydError('KEYD_DC_NOT_ALLOWED', `key ${entry.id} has no certificate to delegate from`);
  const facts = factsOf(leaf);
  if (facts.delegationUsage !== 'ok') throw new KeydError('KEYD_DC_NOT_ALLOWED', `key ${entry.id} may not delegate: ${facts.delegationUsage}`);

  const lifetime = request.lifetimeSeconds;
  const limit = Math.min(MAX_DELEGATED_CREDENTIAL_SECONDS, maxSeconds);
  if (lifetime < 1) throw new KeydError('KEYD_DC_LIFETIME', 'a credential lifetime must be at least 1 second');
  if (lifetime > MAX_DELEGATED_CREDENTIAL_SECONDS) {
    throw new KeydError('KEYD_DC_LIFETIME', `lifetime ${lifetime} s is beyond the 7 days (${MAX_DELEGATED_CREDENTIAL_SECONDS} s) RFC 9345 §4 allows`);
  }
  if (lifetime > limit) {
    throw new KeydError('KEYD_DC_LIFETIME', `lifetime ${lifetime} s is beyond this keyd's policy of ${limit} s (limits.delegatedCredentialMaxSeconds)`);
  }
  if (now < facts.notBefore) throw new KeydError('KEYD_DC_LIFETIME', `key ${entry.id}'s certificate is not valid yet`);
  // valid_time counts from the leaf's notBefore (§4), in whole seconds, rounded down: §4.1.3
  // refuses a credential that expires more than 7 days from the verifier's now, and §4 says
  // never to issue one beyond that, so the expiry never passes now + lifetime (rounding up
  // made a 7-day credential expire up to 999 ms past 7 days, beyond the policy too).
  const validTime = Math.floor((now + lifetime * 1000 - facts.notBefore) / 1000);
  const notAfter = facts.notBefore + validTime * 1000;
  if (notAfter > facts.notAfter) {
    throw new KeydError('KEYD_DC_LIFETIME', `a credential of ${lifetime} s would outlive key ${entry.id}'s certificate (notAfter ${new Date(facts.notAfter).toISOString()})`);
  }
  if (validTime > 0xffffffff) throw new KeydError('KEYD_DC_LIFETIME', 'valid_time does not fit in 32 bits');

  // The certificate's key signs with its first scheme (RFC 8446 order: ECDSA on its curve, RSA-PSS, Ed25519).
  const algorithm = entry.schemes[0];
  if (algorithm === undefined) throw new KeydError('KEYD_SCHEME_UNSUPPORTED', `key ${entry.id} has no TLS 1.3 signature scheme`);
  const credential = { validTime, dcCertVerifyAlgorithm: scheme, subjectPublicKeyInfo: request.subjectPublicKeyInfo };
  const credentialBytes = encodeCredential(credential);
  const content = delegatedCredentialSignedContent(leaf, credentialBytes, algorithm);
  const signature = entry.key.signNow ? entry.key.signNow(algorithm, content) : await entry.key.sign(algorithm, content);
  return {
    certificate: leaf,
    delegatedCredential: encodeDelegatedCredential({ credential, algorithm, signature }),
    notAfter: new Date(notAfter),
    spkiSha256: createHash('sha256').update(request.subjectPublicKeyInfo).digest('hex'),
    scheme,
    algorithm,
  };
}
