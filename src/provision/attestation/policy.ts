import { readFile, writeFile } from 'node:fs/promises';
import { ProvisionError } from '../errors.js';

/**
 * The expected state of a keyd's TPM, recorded by the operator from a known-good keyd
 * (`delegator admin … attestation-policy record`): a PCR selection and the value of each
 * PCR. The operator keeps this file; every attested put/gen/trust compares a fresh quote
 * against it.
 */
export interface AttestationPolicy {
  format: 1;
  /** e.g. "sha256:0+7". */
  pcrs: string;
  /** PCR number → lower-case hex value. */
  values: Record<string, string>;
  /** Where and when it was recorded, and the EK certificate's subject/serial (information only). */
  recordedFrom: string;
  recordedAt: string;
  ekCertificate: { issuer: string; serialNumber: string };
}

export async function readPolicy(path: string): Promise<AttestationPolicy> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ProvisionError('PROVISION_USAGE', `cannot read attestation policy ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let policy: AttestationPolicy;
  try {
    policy = JSON.parse(text) as AttestationPolicy;
  } catch (err) {
    throw new ProvisionError('PROVISION_USAGE', `attestation policy ${path} is not JSON: ${(err as Error).message}`);
  }
  if (policy.format !== 1 || typeof policy.pcrs !== 'string' || typeof policy.values !== 'object' || policy.values === null) {
    throw new ProvisionError('PROVISION_USAGE', `${path} is not an attestation policy (record one with "attestation-policy record")`);
  }
  for (const [pcr, value] of Object.entries(policy.values)) {
    if (!/^\d{1,2}$/.test(pcr) || typeof value !== 'string' || !/^[0-9a-f]{40,128}$/.test(value)) {
      throw new ProvisionError('PROVISION_USAGE', `attestation policy ${path}: PCR ${pcr} has no hex value`);
    }
  }
  return policy;
}

export async function writePolicy(path: string, policy: AttestationPolicy): Promise<void> {
  await writeFile(path, JSON.stringify(policy, null, 2) + '\n', { mode: 0o644 });
}

export function formatPolicy(policy: AttestationPolicy, path: string): string {
  const lines = [`attestation policy ${path}`, `  PCRs ${policy.pcrs} (recorded from ${policy.recordedFrom} at ${policy.recordedAt})`];
  for (const [pcr, value] of Object.entries(policy.values).sort((a, b) => Number(a[0]) - Number(b[0]))) lines.push(`  PCR ${pcr.padStart(2)}: ${value}`);
  lines.push(`  EK certificate issued by ${policy.ekCertificate.issuer}, serial ${policy.ekCertificate.serialNumber}`);
  return lines.join('\n') + '\n';
}
