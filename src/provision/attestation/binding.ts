import { createHash } from 'node:crypto';

/**
 * What a quote's qualifying data (TPMS_ATTEST.extraData) binds: the admin's fresh nonce,
 * keyd's X25519 provisioning public key (what the private key will be sealed to) and
 * keyd's provisioning TLS certificate (the endpoint the admin is talking to). Both sides
 * compute it; the TPM signs it inside the quote, so a quote answers for this request and
 * this keyd only.
 */
export interface QuoteBinding {
  nonce: Uint8Array;
  provisioningPublicKey: Uint8Array;
  tlsCertificateDer: Uint8Array;
}

export function quoteQualifyingData(b: QuoteBinding): Buffer {
  return createHash('sha256')
    .update('delegator attested provisioning v1\0')
    .update(b.nonce)
    .update(b.provisioningPublicKey)
    .update(createHash('sha256').update(b.tlsCertificateDer).digest())
    .digest();
}

/** Nonce length the admin uses and keyd requires (bytes). */
export const ATTESTATION_NONCE_LENGTH = 32;
