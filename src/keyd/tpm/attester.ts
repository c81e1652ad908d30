import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeydError } from '../errors.js';
import { parsePcrSelection, pcrSelectionArg } from './pcr.js';
import { tpmFailure } from './sealed-root.js';
import { exclusive, flush, tpm, type TpmConnection } from './tools.js';

/**
 * keyd's side of attested provisioning (the background-check model: keyd produces
 * evidence, the operator's admin CLI appraises it; docs/PROVISIONING.md):
 *
 *   begin()   the EK certificate from the TPM's NV (TCG EK Credential Profile §2.2.1.5,
 *             RSA 2048 EK certificate at NV index 0x01c00002), and a fresh attestation
 *             key (AK: restricted ECDSA P-256 signing key) created under the EK;
 *   quote()   TPM2_ActivateCredential — the TPM releases the admin's secret only when the
 *             AK named in the credential is loaded in the same TPM as that EK — then
 *             TPM2_Quote over the requested PCRs with the admin's qualifying data.
 *
 * tpm2-tools as child processes, once per provisioning connection, never per handshake.
 * The AK's context lives in a per-session temporary directory removed by close().
 */

const EK_CERT_NV_INDEX = '0x01c00002';

export interface AttestationStart {
  /** DER EK certificate. */
  ekCertificate: Buffer;
  /** TPM2B_PUBLIC of the AK. */
  akPublic: Buffer;
}

export interface QuoteEvidence {
  /** The secret released by TPM2_ActivateCredential. */
  activatedSecret: Buffer;
  /** TPMS_ATTEST and its ECDSA signature (DER) by the AK. */
  attest: Buffer;
  signature: Buffer;
  /** Selected PCR values (hex) as the TPM reported them alongside the quote. */
  pcrValues: Record<number, string>;
}

export interface AttesterSession {
  readonly start: AttestationStart;
  quote(credentialBlob: Uint8Array, qualifyingData: Uint8Array, pcrs: string): Promise<QuoteEvidence>;
  close(): Promise<void>;
}

export interface Attester {
  begin(): Promise<AttesterSession>;
}

export class TpmAttester implements Attester {
  constructor(private readonly conn: TpmConnection) {}

  begin(): Promise<AttesterSession> {
    return exclusive(this.conn, () => this.beginNow());
  }

  private async beginNow(): Promise<AttesterSession> {
    const work = await mkdtemp(join(tmpdir(), 'keyd-attest-'));
    const conn = this.conn;
    try {
      let ekCertificate: Buffer;
      try {
        ekCertificate = await tpm(conn, 'tpm2_nvread', [EK_CERT_NV_INDEX, '-C', 'o']);
      } catch (err) {
        throw new KeydError('KEYD_TPM', `this TPM has no RSA EK certificate at NV ${EK_CERT_NV_INDEX}: ${(err as Error).message}`);
      }
      ekCertificate = trimDer(ekCertificate);
      const ek = join(work, 'ek.ctx');
      await tpm(conn, 'tpm2_createek', ['-Q', '-c', ek, '-G', 'rsa', '-u', join(work, 'ek.pub')], { flush: true });
      await tpm(conn, 'tpm2_createak', ['-Q', '-C', ek, '-c', join(work, 'ak.ctx'), '-G', 'ecc', '-g', 'sha256', '-s', 'ecdsa', '-u', join(work, 'ak.pub'), '-n', join(work, 'ak.name')], { flush: true });
      const akPublic = await readFile(join(work, 'ak.pub'));
      return new Session(conn, work, { ekCertificate, akPublic });
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      throw tpmFailure(err, 'preparing attestation evidence');
    }
  }
}

class Session implements AttesterSession {
  private used = false;

  constructor(
    private readonly conn: TpmConnection,
    private readonly work: string,
    readonly start: AttestationStart,
  ) {}

  quote(credentialBlob: Uint8Array, qualifyingData: Uint8Array, pcrs: string): Promise<QuoteEvidence> {
    return exclusive(this.conn, () => this.quoteNow(credentialBlob, qualifyingData, pcrs));
  }

  private async quoteNow(credentialBlob: Uint8Array, qualifyingData: Uint8Array, pcrs: string): Promise<QuoteEvidence> {
    if (this.used) throw new KeydError('KEYD_BAD_REQUEST', 'one quote per attestation session: start a new one');
    this.used = true;
    const selection = parsePcrSelection(pcrs);
    const w = (name: string) => join(this.work, name);
    await writeFile(w('credential'), credentialBlob);
    try {
      // The EK's policy is PolicySecret(TPM_RH_ENDORSEMENT): satisfy it in a policy session.
      await tpm(this.conn, 'tpm2_startauthsession', ['--policy-session', '-S', w('session.ctx')]);
      await tpm(this.conn, 'tpm2_policysecret', ['-S', w('session.ctx'), '-c', 'e']);
      await tpm(this.conn, 'tpm2_activatecredential', ['-c', w('ak.ctx'), '-C', w('ek.ctx'), '-i', w('credential'), '-o', w('secret'), '-P', `session:${w('session.ctx')}`]);
    } catch (err) {
      throw new KeydError('KEYD_TPM', `TPM2_ActivateCredential refused the admin's credential: ${(err as Error).message}`);
    } finally {
      await flush(this.conn);
    }
    try {
      const out = await tpm(
        this.conn,
        'tpm2_quote',
        ['-c', w('ak.ctx'), '-l', pcrSelectionArg(selection), '-q', Buffer.from(qualifyingData).toString('hex'), '-m', w('quote.msg'), '-s', w('quote.sig'), '-o', w('quote.pcrs'), '-g', 'sha256', '-f', 'plain'],
        { flush: true },
      );
      // With -o, tpm2_quote also prints the quoted PCR values (YAML "pcrs:" section) on stdout.
      const pcrValues: Record<number, string> = {};
      let inBank = false;
      for (const line of out.toString('utf8').split('\n')) {
        if (/^\s{2}\w+:\s*$/.test(line)) inBank = line.trim() === `${selection.bank}:`;
        const m = /^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*$/.exec(line);
        if (inBank && m) pcrValues[Number(m[1])] = m[2]!.toLowerCase();
      }
      return {
        activatedSecret: await readFile(w('secret')),
        attest: await readFile(w('quote.msg')),
        signature: await readFile(w('quote.sig')),
        pcrValues,
      };
    } catch (err) {
      throw tpmFailure(err, 'quoting PCRs');
    }
  }

  async close(): Promise<void> {
    await rm(this.work, { recursive: true, force: true });
  }
}

/** NV reads return the whole index; a DER certificate may be followed by padding. */
function trimDer(bytes: Buffer): Buffer {
  if (bytes.length < 4 || bytes[0] !== 0x30) return bytes;
  if (bytes[1] === 0x82) return bytes.subarray(0, 4 + bytes.readUInt16BE(2));
  if (bytes[1] === 0x81) return bytes.subarray(0, 3 + bytes[2]!);
  return bytes;
}
