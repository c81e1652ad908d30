import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { KeydError } from '../errors.js';
import { isInside, loadOrCreateFileRootKey } from './file-root-key.js';
import { DEFAULT_NV_INDEX, TpmNvCounter } from '../tpm/nv-counter.js';
import { formatPcrSelection, parsePcrSelection, type PcrSelection } from '../tpm/pcr.js';
import { loadOrSealRootKey } from '../tpm/sealed-root.js';
import type { TpmConnection } from '../tpm/tools.js';

/**
 * Where keyd's root key comes from (`--root-key`, or "rootKey" in keyd's config):
 *
 *   FILE | file:FILE      32 random bytes in a file (0600) outside the data directory
 *   tpm[:OPTIONS]         sealed by the TPM; OPTIONS, comma-separated:
 *                           sealed=DIR     where the sealed object lives
 *                                          (default: DATA.tpm-root, beside the data directory)
 *                           pcrs=BANK:N+M  seal to a PCR policy (e.g. sha256:0+7)
 *                           counter=0xIDX  NV index of the rollback counter (default 0x01504b44),
 *                                          or counter=none
 *
 * The TPM is reached through tpm2-tools' TCTI: "tpmTcti" in the config, else the
 * TPM2TOOLS_TCTI environment variable, else tpm2-tools' default (/dev/tpmrm0 …).
 */

export type RootKeySpec =
  | { kind: 'file'; path: string }
  | { kind: 'tpm'; sealedDir: string | undefined; pcrs: PcrSelection | undefined; counterIndex: number | null; tcti: string | undefined };

export interface RootCounter {
  readonly description: string;
  read(): Promise<bigint>;
  readOptional(): Promise<bigint | undefined>;
  increment(): Promise<bigint>;
  create(): Promise<bigint>;
}

/** The root key, unsealed, and what it is bound to. */
export interface LoadedRoot {
  rootKey: Buffer;
  kind: 'file' | 'tpm';
  /** One line for keyd's start-up log and the demo: what a thief needs. */
  binding: string;
  /** Path of the root key file, or the directory of the sealed object. */
  location: string;
  /** The rollback counter, when the root is in a TPM and one is configured. */
  counter: RootCounter | undefined;
  created: boolean;
  /** How to reach the TPM (attestation uses it too), when the root is in one. */
  tpm: TpmConnection | undefined;
}

export function parseRootKeySpec(text: string, tcti?: string): RootKeySpec {
  if (text === 'tpm' || text.startsWith('tpm:')) {
    const spec: RootKeySpec = { kind: 'tpm', sealedDir: undefined, pcrs: undefined, counterIndex: DEFAULT_NV_INDEX, tcti };
    const options = text === 'tpm' ? '' : text.slice(4);
    for (const option of options.split(',').filter((o) => o !== '')) {
      const eq = option.indexOf('=');
      const name = eq < 0 ? option : option.slice(0, eq);
      const value = eq < 0 ? '' : option.slice(eq + 1);
      if (value === '') throw new KeydError('KEYD_CONFIG', `--root-key tpm option ${JSON.stringify(option)} needs a value (NAME=VALUE)`);
      switch (name) {
        case 'sealed':
          spec.sealedDir = value;
          break;
        case 'pcrs':
          spec.pcrs = parsePcrSelection(value);
          break;
        case 'counter':
          if (value === 'none') spec.counterIndex = null;
          else if (/^0x[0-9a-fA-F]{1,8}$/.test(value)) spec.counterIndex = Number.parseInt(value.slice(2), 16);
          else throw new KeydError('KEYD_CONFIG', `--root-key tpm counter= must be an NV index like 0x01504b44, or none; got ${JSON.stringify(value)}`);
          break;
        default:
          throw new KeydError('KEYD_CONFIG', `unknown --root-key tpm option ${JSON.stringify(name)} (sealed, pcrs, counter)`);
      }
    }
    if (spec.counterIndex !== null && (spec.counterIndex < 0x01000000 || spec.counterIndex > 0x01bfffff)) {
      throw new KeydError('KEYD_CONFIG', `--root-key tpm counter=0x${spec.counterIndex.toString(16)} is not an NV index (0x01000000–0x01bfffff)`);
    }
    return spec;
  }
  const path = text.startsWith('file:') ? text.slice(5) : text;
  if (path === '') throw new KeydError('KEYD_CONFIG', '--root-key needs a file path or tpm[:OPTIONS]');
  return { kind: 'file', path };
}

/** Default place of the sealed object: beside the data directory, never inside it. */
export function defaultSealedDir(dataDir: string): string {
  return `${resolve(dataDir).replace(/\/+$/, '')}.tpm-root`;
}

export async function loadRoot(spec: RootKeySpec, dataDir: string): Promise<LoadedRoot> {
  await mkdir(resolve(dataDir), { recursive: true, mode: 0o700 });
  if (spec.kind === 'file') {
    const path = resolve(spec.path);
    const { rootKey, created } = await loadOrCreateFileRootKey(path, resolve(dataDir));
    return {
      rootKey,
      kind: 'file',
      binding: `root key in the file ${path} (a copy of that file and the data directory opens every key; use --root-key tpm to bind the store to this machine's TPM)`,
      location: path,
      counter: undefined,
      created,
      tpm: undefined,
    };
  }
  const sealedDir = resolve(spec.sealedDir ?? defaultSealedDir(dataDir));
  await checkOutside(sealedDir, resolve(dataDir));
  const conn = spec.tcti !== undefined ? { tcti: spec.tcti } : {};
  const { rootKey, created, pcrs } = await loadOrSealRootKey({ ...conn, sealedDir, ...(spec.pcrs ? { pcrs: spec.pcrs } : {}) });
  const counter = spec.counterIndex === null ? undefined : new TpmNvCounter(conn, spec.counterIndex);
  return {
    rootKey,
    kind: 'tpm',
    binding:
      `root key sealed by the TPM (${sealedDir})` +
      (pcrs ? `, to PCR policy ${formatPcrSelection(pcrs)}` : ', no PCR policy') +
      (counter ? `; rollback counter: ${counter.description}` : '; no rollback counter (counter=none): a whole-store rollback is not detected'),
    location: sealedDir,
    counter,
    created,
    tpm: conn,
  };
}

async function checkOutside(path: string, dataDir: string): Promise<void> {
  if (await isInside(path, dataDir)) {
    throw new KeydError('KEYD_ROOT_KEY', `the sealed root key directory ${path} must live outside the data directory ${dataDir}`);
  }
}
