import { createHash, randomBytes, timingSafeEqual, verify } from 'node:crypto';
import type * as x509 from '@peculiar/x509';
import { ProvisionError } from '../errors.js';
import { fingerprintOf } from '../fingerprint.js';
import { quoteQualifyingData, ATTESTATION_NONCE_LENGTH } from './binding.js';
import { verifyEkCertificate } from './ek-certificate.js';
import { makeCredential } from './make-credential.js';
import type { AttestationPolicy } from './policy.js';
import { HASH_ALG_IDS, parseAkPublic, parseQuote, TPMA } from './tpm-structures.js';

/** Bytes of one PCR value per bank (the bank's digest length). */
const DIGEST_LENGTHS: Record<string, number> = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };

/**
 * The admin's appraisal of keyd's TPM evidence (background-check model). Each check is
 * named in the error it throws, in this order:
 *   ek-certificate   EK certificate chains to the operator's manufacturer CA bundle
 *   ak-binding       the AK is a restricted, TPM-resident signing key, and the TPM holding
 *                    that EK released the admin's credential for it (ActivateCredential)
 *   quote-signature  the quote is a TPM-generated TPMS_ATTEST signed by that AK
 *   quote-freshness  it binds this request's nonce (not an old quote)
 *   quote-binding    it binds the provisioning key and TLS certificate of this connection
 *   pcr-policy       the quoted PCRs are those of the operator's recorded policy
 * Nothing is sealed or sent to keyd unless all pass.
 */

/** What keyd answers (src/keyd/tpm/attester.ts), as bytes. */
export interface AttestationEvidence {
  ekCertificate: Uint8Array;
  akPublic: Uint8Array;
}

export interface QuoteAnswer {
  activatedSecret: Uint8Array;
  attest: Uint8Array;
  signature: Uint8Array;
  pcrValues: Record<string, string>;
  /** What keyd says it bound (to name a mismatch precisely; the quote itself is what counts). */
  bound: { nonce: Uint8Array; provisioningPublicKey: Uint8Array; tlsCertificateDer: Uint8Array };
}

export interface AppraisalContext {
  manufacturerCas: x509.X509Certificate[];
  /** keyd's provisioning key from this connection's greeting, and its TLS certificate. */
  provisioningPublicKey: Uint8Array;
  tlsCertificateDer: Uint8Array;
  /** Expected PCR state; undefined only while recording a policy. */
  policy: AttestationPolicy | undefined;
  /** PCR selection to quote (the policy's when there is one). */
  pcrs: string;
}

export interface AppraisalResult {
  ekIssuer: string;
  ekSerialNumber: string;
  ekChain: string[];
  pcrs: string;
  pcrValues: Record<string, string>;
}

function fail(check: string, message: string): never {
  throw new ProvisionError('PROVISION_ATTESTATION_FAILED', `${check}: ${message}`);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Step 1: the EK certificate and the AK; returns the credential to send and what step 2 needs. */
export async function prepareChallenge(evidence: AttestationEvidence, ctx: AppraisalContext) {
  const ek = await verifyEkCertificate(evidence.ekCertificate, ctx.manufacturerCas);
  const ak = parseAkPublic(evidence.akPublic);
  const required = TPMA.fixedTPM | TPMA.fixedParent | TPMA.sensitiveDataOrigin | TPMA.restricted | TPMA.sign;
  if ((ak.attributes & required) !== required || (ak.attributes & TPMA.decrypt) !== 0) {
    fail('ak-binding', `the attestation key's attributes 0x${ak.attributes.toString(16)} are not those of a TPM-resident restricted signing key`);
  }
  const secret = randomBytes(32);
  const nonce = randomBytes(ATTESTATION_NONCE_LENGTH);
  const credential = await makeCredential(ek.publicKey, ak.name, secret);
  return { ek, ak, secret, nonce, credential };
}

/** Step 2: the quote. */
export function appraiseQuote(challenge: Awaited<ReturnType<typeof prepareChallenge>>, answer: QuoteAnswer, ctx: AppraisalContext): AppraisalResult {
  const { ek, ak, secret, nonce } = challenge;
  if (!same(answer.activatedSecret, secret)) {
    fail('ak-binding', 'the TPM did not release the credential: the attestation key is not in the TPM whose EK certificate was presented');
  }
  if (!verify('sha256', answer.attest, { key: ak.publicKey, dsaEncoding: 'der' }, answer.signature)) {
    fail('quote-signature', 'the quote signature does not verify with the attestation key');
  }
  const quote = parseQuote(answer.attest);
  // quote.qualifiedSigner is the AK's *qualified* name (its parents' names hashed in), not
  // needed here: the signature verified with the very AK whose Name the credential bound.
  const expected = quoteQualifyingData({ nonce, provisioningPublicKey: ctx.provisioningPublicKey, tlsCertificateDer: ctx.tlsCertificateDer });
  if (!same(quote.extraData, expected)) {
    // Name what differs, using what keyd says it bound when that is what the TPM signed.
    const claimed = quoteQualifyingData(answer.bound);
    if (same(quote.extraData, claimed)) {
      if (!same(answer.bound.nonce, nonce)) fail('quote-freshness', 'the quote binds another nonce than this request\'s: a replayed (old) quote');
      if (!same(answer.bound.provisioningPublicKey, ctx.provisioningPublicKey)) {
        fail('quote-binding', `the quote binds provisioning key ${fingerprintOf(answer.bound.provisioningPublicKey)}, not ${fingerprintOf(ctx.provisioningPublicKey)} of the keyd on this connection`);
      }
      fail('quote-binding', 'the quote binds another TLS certificate than the one of this connection');
    }
    fail('quote-freshness', 'the quote\'s qualifying data binds neither this request\'s nonce nor this keyd\'s provisioning key');
  }
  const [bank, list] = ctx.pcrs.split(':') as [string, string];
  const wantedPcrs = list.split(/[+,]/).map(Number).sort((a, b) => a - b);
  const hashAlg = HASH_ALG_IDS[bank];
  const sel = quote.selection.filter((s) => s.pcrs.length > 0);
  if (sel.length !== 1 || sel[0]!.hashAlg !== hashAlg || sel[0]!.pcrs.join(',') !== wantedPcrs.join(',')) {
    fail('pcr-policy', `the quote covers other PCRs than ${ctx.pcrs}`);
  }
  // TPM2_Quote's pcrDigest is the hash (the AK's scheme hash, SHA-256) of the selected PCR values in order.
  const values = wantedPcrs.map((p) => answer.pcrValues[String(p)]);
  if (values.some((v) => typeof v !== 'string' || !/^[0-9a-f]+$/.test(v))) fail('pcr-policy', 'keyd did not report every quoted PCR value');
  // Each value must be one digest of the bank. The signed digest covers only the values'
  // concatenation: without this, bytes moved from one PCR's value to the next (or an odd
  // hex digit, which Buffer.from drops) still match it, and a policy recorded from such an
  // answer holds values no TPM reported.
  const digestHex = 2 * DIGEST_LENGTHS[bank]!;
  const misshapen = wantedPcrs.filter((_, i) => values[i]!.length !== digestHex);
  if (misshapen.length > 0) {
    fail('pcr-policy', `keyd reported ${bank} PCR ${misshapen.join(', ')} as ${values[wantedPcrs.indexOf(misshapen[0]!)]!.length / 2} bytes, not the ${digestHex / 2} of one ${bank} digest`);
  }
  const digest = createHash('sha256').update(Buffer.concat(values.map((v) => Buffer.from(v!, 'hex')))).digest();
  if (!same(digest, quote.pcrDigest)) fail('quote-signature', 'the reported PCR values do not match the digest the TPM signed');
  const pcrValues = Object.fromEntries(wantedPcrs.map((p, i) => [String(p), values[i]!]));
  if (ctx.policy) {
    if (ctx.policy.pcrs !== ctx.pcrs) fail('pcr-policy', `policy selects ${ctx.policy.pcrs}, quote was for ${ctx.pcrs}`);
    const changed = wantedPcrs.filter((p) => ctx.policy!.values[String(p)] !== pcrValues[String(p)]);
    if (changed.length > 0) {
      const p = changed[0]!;
      fail('pcr-policy', `${bank} PCR ${changed.join(', ')} differ from the recorded policy (PCR ${p} is ${pcrValues[String(p)]}, the policy expects ${ctx.policy.values[String(p)]}): keyd's machine is not in the recorded state`);
    }
  }
  return { ekIssuer: ek.issuer, ekSerialNumber: ek.serialNumber, ekChain: ek.chain, pcrs: ctx.pcrs, pcrValues };
}
