import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { ProvisionError } from '../errors.js';

/**
 * TPM2_MakeCredential done off-TPM by the admin (tpm2_makecredential -T none, tpm2-tools):
 * the secret is wrapped to the EK's public key (from the verified EK certificate) and
 * bound to the AK's Name, so only the TPM holding that EK, with that AK loaded, can
 * release it (TPM 2.0 Library Part 1 §24 "Credential Protection").
 */
export async function makeCredential(ekPublicKey: KeyObject, akName: Uint8Array, secret: Uint8Array): Promise<Buffer> {
  const type = ekPublicKey.asymmetricKeyType;
  if (type !== 'rsa' && type !== 'ec') throw new ProvisionError('PROVISION_ATTESTATION_FAILED', `ak-binding: EK key type ${type} is not RSA or ECC`);
  const work = await mkdtemp(join(tmpdir(), 'delegator-mkcred-'));
  try {
    await writeFile(join(work, 'ek.pem'), ekPublicKey.export({ format: 'pem', type: 'spki' }));
    await writeFile(join(work, 'secret'), secret, { mode: 0o600 });
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        'tpm2_makecredential',
        ['-T', 'none', '-u', join(work, 'ek.pem'), '-G', type === 'rsa' ? 'rsa' : 'ecc', '-s', join(work, 'secret'), '-n', Buffer.from(akName).toString('hex'), '-o', join(work, 'credential')],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', (e: NodeJS.ErrnoException) =>
        reject(
          e.code === 'ENOENT'
            ? new ProvisionError('PROVISION_USAGE', 'attestation needs tpm2_makecredential on the admin machine (Debian package tpm2-tools)')
            : e,
        ),
      );
      child.on('close', (code) => (code === 0 ? resolve() : reject(new ProvisionError('PROVISION_ATTESTATION_FAILED', `ak-binding: tpm2_makecredential failed: ${err.trim().split('\n').pop()}`))));
    });
    return await readFile(join(work, 'credential'));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
