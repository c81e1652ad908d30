import { KeydError } from '../errors.js';
import { tpm, type TpmConnection } from './tools.js';

/** A PCR selection in one bank, e.g. sha256 PCRs 0 and 7. */
export interface PcrSelection {
  bank: 'sha1' | 'sha256' | 'sha384' | 'sha512';
  pcrs: number[];
}

const BANKS = ['sha1', 'sha256', 'sha384', 'sha512'] as const;

/**
 * Parses "sha256:0+7" (or "sha256:0,7"). PCR numbers 0–23, the TCG PC Client's
 * implemented set.
 */
export function parsePcrSelection(text: string): PcrSelection {
  const m = /^(sha1|sha256|sha384|sha512):(\d{1,2}(?:[+,]\d{1,2})*)$/.exec(text.trim());
  if (!m) throw new KeydError('KEYD_CONFIG', `PCR selection must look like sha256:0+7, got ${JSON.stringify(text)}`);
  const pcrs = [...new Set(m[2]!.split(/[+,]/).map(Number))].sort((a, b) => a - b);
  if (pcrs.some((p) => p > 23)) throw new KeydError('KEYD_CONFIG', `PCR numbers go from 0 to 23, got ${JSON.stringify(text)}`);
  if (!BANKS.includes(m[1] as PcrSelection['bank'])) throw new KeydError('KEYD_CONFIG', `unknown PCR bank ${m[1]}`);
  return { bank: m[1] as PcrSelection['bank'], pcrs };
}

/** tpm2-tools' form: "sha256:0,7". */
export function pcrSelectionArg(sel: PcrSelection): string {
  return `${sel.bank}:${sel.pcrs.join(',')}`;
}

/** Human form: "sha256:0+7". */
export function formatPcrSelection(sel: PcrSelection): string {
  return `${sel.bank}:${sel.pcrs.join('+')}`;
}

/** Current PCR values (lower-case hex) of the selection. */
export async function readPcrs(conn: TpmConnection, sel: PcrSelection): Promise<Record<number, string>> {
  const out = (await tpm(conn, 'tpm2_pcrread', [pcrSelectionArg(sel)])).toString('utf8');
  const values: Record<number, string> = {};
  for (const line of out.split('\n')) {
    const m = /^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*$/.exec(line);
    if (m) values[Number(m[1])] = m[2]!.toLowerCase();
  }
  for (const p of sel.pcrs) {
    if (values[p] === undefined) throw new KeydError('KEYD_TPM', `tpm2_pcrread did not report PCR ${p} of bank ${sel.bank} (is the bank active?)`);
  }
  return values;
}
