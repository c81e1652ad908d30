import { decodeDelegatedCredential, decodeDelegatedCredentialExtension } from '../messages/delegated-credential.js';
import type { ClientHello } from '../messages/client-hello.js';
import { encodeCertificate } from '../messages/server-messages.js';
import type { DelegatedCredentialOffer, Identity } from '../signer.js';
import { ExtensionType } from '../wire/codepoints.js';

/**
 * Whether a handshake authenticates with the identity's delegated credential (RFC 9345):
 * only when the client offered delegated_credential, and both schemes fit what it offered
 * (§4.1.1: dc_cert_verify_algorithm in its SignatureSchemeList, the credential's own
 * algorithm in signature_algorithms), and the credential has not expired. Otherwise the
 * identity's signer authenticates as without delegation.
 *
 * Beyond §4.1.1, the credential's `algorithm` must also be in the delegated_credential
 * list: NSS (and so Firefox) checks `algorithm` against that list, not against
 * signature_algorithms, and aborts with illegal_parameter otherwise. NSS lists only ECDSA
 * schemes there, so a credential certified by an RSA certificate (rsa_pss_rsae_*) would fail
 * every such handshake; §4.1.1 lets the server choose not to send one, and the certificate
 * key signs instead (docs/EDGE.md, "Delegated credentials").
 */
export interface ChosenCredential {
  readonly offer: DelegatedCredentialOffer;
  /** dc_cert_verify_algorithm: the CertificateVerify scheme. */
  readonly scheme: number;
}

interface CredentialSchemes {
  readonly dcCertVerifyAlgorithm: number;
  readonly algorithm: number;
}

/** Decoded once per credential (the edge hands the same bytes to every handshake). */
const schemesOf = new WeakMap<Uint8Array, CredentialSchemes | null>();

function credentialSchemes(credential: Uint8Array): CredentialSchemes | null {
  let schemes = schemesOf.get(credential);
  if (schemes === undefined) {
    try {
      const dc = decodeDelegatedCredential(credential);
      schemes = { dcCertVerifyAlgorithm: dc.credential.dcCertVerifyAlgorithm, algorithm: dc.algorithm };
    } catch {
      schemes = null; // not a credential: never sent
    }
    schemesOf.set(credential, schemes);
  }
  return schemes;
}

/**
 * The schemes of the client's delegated_credential extension (RFC 9345 §4.1.1), undefined
 * when it sent none. Called for every TLS 1.3 ClientHello, whether or not a credential is
 * configured: a body that is not a SignatureSchemeList throws DecodeError, sent as
 * decode_error (RFC 8446 §6.2) like any other malformed extension. Below TLS 1.3 the
 * extension is never read (§4.1.1: the server MUST ignore it).
 */
export function offeredCredentialSchemes(hello: ClientHello): readonly number[] | undefined {
  const body = hello.extensions.get(ExtensionType.delegated_credential);
  return body === undefined ? undefined : decodeDelegatedCredentialExtension(body);
}

/** `accepted`: offeredCredentialSchemes of this ClientHello. */
export function chooseDelegatedCredential(
  hello: ClientHello,
  accepted: readonly number[] | undefined,
  identity: Identity,
  now: number,
): ChosenCredential | undefined {
  const offer = identity.delegatedCredential;
  if (!offer || !accepted || now >= offer.notAfter) return undefined;
  const schemes = credentialSchemes(offer.credential);
  if (!schemes) return undefined;
  if (!accepted.includes(schemes.dcCertVerifyAlgorithm)) return undefined;
  if (!hello.signatureAlgorithms?.includes(schemes.algorithm)) return undefined;
  if (!accepted.includes(schemes.algorithm)) return undefined; // NSS's reading of §4.1.1 (above)
  if (!offer.signer.schemes.includes(schemes.dcCertVerifyAlgorithm)) return undefined;
  return { offer, scheme: schemes.dcCertVerifyAlgorithm };
}

/** The Certificate message with the credential in the end-entity entry, encoded once per credential and chain. */
const messages = new WeakMap<Uint8Array, { readonly chain: readonly Uint8Array[]; readonly message: Buffer }>();

export function certificateMessageWithCredential(chain: readonly Uint8Array[], credential: Uint8Array): Buffer {
  const cached = messages.get(credential);
  if (cached && cached.chain === chain) return cached.message;
  const message = encodeCertificate(chain, [{ type: ExtensionType.delegated_credential, data: credential }]);
  messages.set(credential, { chain, message });
  return message;
}
