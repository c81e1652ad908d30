import type * as x509 from '@peculiar/x509';
import { ProvisionError } from '../errors.js';
import type { RemoteAdminClient } from '../remote-client.js';
import { appraiseQuote, prepareChallenge, type AppraisalResult, type AttestationEvidence, type QuoteAnswer } from './appraise.js';
import type { AttestationPolicy } from './policy.js';

export interface AttestOptions {
  manufacturerCas: x509.X509Certificate[];
  /** The recorded policy; undefined while recording one. */
  policy: AttestationPolicy | undefined;
  /** PCR selection to quote (the policy's when there is one). */
  pcrs: string;
}

/**
 * Runs the two-step attestation over an open provisioning connection (appraise.ts says
 * what is checked). Throws PROVISION_ATTESTATION_FAILED naming the failed check; the
 * caller sends nothing else to keyd in that case.
 */
export async function attestKeyd(client: RemoteAdminClient, opts: AttestOptions): Promise<AppraisalResult> {
  const ctx = {
    manufacturerCas: opts.manufacturerCas,
    provisioningPublicKey: client.keydPublicKey,
    tlsCertificateDer: client.peerCertificateDer,
    policy: opts.policy,
    pcrs: opts.pcrs,
  };
  const start = (await client.request('attestStart')) as Partial<AttestationEvidence>;
  if (!(start.ekCertificate instanceof Uint8Array) || !(start.akPublic instanceof Uint8Array)) {
    throw new ProvisionError('PROVISION_ATTESTATION_FAILED', 'ek-certificate: keyd sent no EK certificate or attestation key');
  }
  const challenge = await prepareChallenge(start as AttestationEvidence, ctx);
  const answer = (await client.request('attestQuote', {
    credential: challenge.credential.toString('base64'),
    nonce: challenge.nonce.toString('base64'),
    pcrs: opts.pcrs,
  })) as QuoteAnswer;
  if (!(answer.attest instanceof Uint8Array) || !(answer.signature instanceof Uint8Array) || !(answer.activatedSecret instanceof Uint8Array) || !answer.bound) {
    throw new ProvisionError('PROVISION_ATTESTATION_FAILED', 'quote-signature: keyd sent an incomplete quote');
  }
  return appraiseQuote(challenge, answer, ctx);
}
