import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readRegularFileBounded } from '../../lib/bounded-file.js';
import { KeydError } from '../errors.js';
import { writeFileDurably } from '../../lib/durable-file.js';
import { formatPcrSelection, parsePcrSelection, pcrSelectionArg, readPcrs, type PcrSelection } from './pcr.js';
import { TPM_RC, TpmCommandError, exclusive, tpm, type TpmConnection } from './tools.js';

/**
 * keyd's root key sealed by the TPM (TPM 2.0 Library Part 1, §25 "Sealed data"): 32
 * random bytes become the sensitive part of a keyedHash object created under the owner
 * (storage) hierarchy's primary key, with fixedTPM|fixedParent so the TPM will not
 * duplicate it. On disk there is only the object's public and *encrypted* private part
 * (root.pub, root.priv): the TPM wraps the private part with a key derived from its own
 * storage primary seed, so another TPM cannot load it (TPM_RC_INTEGRITY).
 *
 * With a PCR policy the object has no userWithAuth: only a policy session satisfying
 * PolicyPCR over the chosen PCRs unseals it, so a changed boot chain (PCR 0–7) or an
 * extended PCR refuses it (TPM_RC_POLICY_FAIL).
 *
 * The primary key is recreated at every start from the owner hierarchy's fixed seed and
 * the default ECC P-256 template (the same seed + template give the same key), so nothing
 * needs a persistent handle. The root key crosses to tpm2_create on stdin and comes back
 * from tpm2_unseal on stdout: it is never written to a file.
 */

export interface TpmRootOptions extends TpmConnection {
  /** Directory for root.pub, root.priv and root.json (created 0700); outside the data directory. */
  sealedDir: string;
  /** PCR policy to seal to (e.g. sha256:0+7); none by default. */
  pcrs?: PcrSelection;
}

/** What root.json records (public information about the sealed object). */
interface SealedRootInfo {
  format: 1;
  pcrs: string | null;
  /** PCR values at sealing time, to name what changed when the policy later fails. */
  pcrValues: Record<number, string> | null;
  sealedAt: string;
}

export interface UnsealedRoot {
  rootKey: Buffer;
  created: boolean;
  pcrs: PcrSelection | undefined;
}

const ROOT_KEY_LENGTH = 32;
/** root.json is a few hundred bytes (24 PCR values at most). */
const MAX_INFO_BYTES = 64 * 1024;

/** Unseals the root key from `sealedDir`, or creates and seals one there on first start. */
export async function loadOrSealRootKey(opts: TpmRootOptions): Promise<UnsealedRoot> {
  const pubPath = join(opts.sealedDir, 'root.pub');
  // stat, not read: root.pub is only tested for presence here (tpm2_load reads it), and
  // reading a FIFO put in its place would block keyd's start forever.
  const existing = await stat(pubPath).then(
    (st) => {
      if (!st.isFile()) throw new KeydError('KEYD_ROOT_KEY', `the sealed root key ${pubPath} is not a regular file`);
      return true;
    },
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw new KeydError('KEYD_ROOT_KEY', `cannot read the sealed root key ${pubPath}: ${err.code ?? err.message}`);
    },
  );
  const work = await mkdtemp(join(tmpdir(), 'keyd-tpm-'));
  try {
    if (existing) return { ...(await exclusive(opts, () => unseal(opts, work))), created: false };
    return { ...(await exclusive(opts, () => seal(opts, work))), created: true };
  } catch (err) {
    // The steps that explain themselves (another TPM, a PCR policy, a damaged root.json) are
    // KeydErrors already and pass through; any other command failing on the way (the owner
    // primary key, the policy digest, a PCR read: a TPM not there or not answering) is KEYD_TPM.
    throw tpmFailure(err, existing ? `unsealing the root key in ${opts.sealedDir}` : `sealing a root key in ${opts.sealedDir}`);
  } finally {
    // Only TPM context blobs (encrypted by the TPM's context key) and the policy digest live here.
    await rm(work, { recursive: true, force: true });
  }
}

async function createPrimary(opts: TpmConnection, work: string): Promise<string> {
  const ctx = join(work, 'primary.ctx');
  await tpm(opts, 'tpm2_createprimary', ['-Q', '-C', 'o', '-g', 'sha256', '-G', 'ecc', '-c', ctx], { flush: true });
  return ctx;
}

async function seal(opts: TpmRootOptions, work: string): Promise<{ rootKey: Buffer; pcrs: PcrSelection | undefined }> {
  await mkdir(opts.sealedDir, { recursive: true, mode: 0o700 });
  const primary = await createPrimary(opts, work);
  const args = ['-Q', '-C', primary, '-g', 'sha256', '-u', join(work, 'root.pub'), '-r', join(work, 'root.priv'), '-i', '-'];
  let pcrValues: Record<number, string> | null = null;
  if (opts.pcrs) {
    const policy = join(work, 'policy.digest');
    await tpm(opts, 'tpm2_createpolicy', ['-Q', '--policy-pcr', '-l', pcrSelectionArg(opts.pcrs), '-L', policy], { flush: true });
    args.push('-L', policy, '-a', 'fixedtpm|fixedparent');
    pcrValues = await readPcrs(opts, opts.pcrs);
  } else {
    args.push('-a', 'fixedtpm|fixedparent|userwithauth');
  }
  const rootKey = randomBytes(ROOT_KEY_LENGTH);
  try {
    await tpm(opts, 'tpm2_create', args, { stdin: rootKey, flush: true });
  } catch (err) {
    rootKey.fill(0);
    throw tpmFailure(err, 'sealing the root key');
  }
  const info: SealedRootInfo = {
    format: 1,
    pcrs: opts.pcrs ? formatPcrSelection(opts.pcrs) : null,
    pcrValues,
    sealedAt: new Date().toISOString(),
  };
  // root.json and root.priv first, root.pub last: root.pub's presence means "sealed".
  await writeFileDurably(join(opts.sealedDir, 'root.json'), Buffer.from(JSON.stringify(info, null, 2) + '\n'));
  await writeFileDurably(join(opts.sealedDir, 'root.priv'), await readFile(join(work, 'root.priv')));
  await writeFileDurably(join(opts.sealedDir, 'root.pub'), await readFile(join(work, 'root.pub')));
  return { rootKey, pcrs: opts.pcrs };
}

async function unseal(opts: TpmRootOptions, work: string): Promise<{ rootKey: Buffer; pcrs: PcrSelection | undefined }> {
  const dir = opts.sealedDir;
  let info: SealedRootInfo;
  try {
    // Sized and typed before it is read (a FIFO in its place would block the open for ever).
    info = JSON.parse((await readRegularFileBounded(join(dir, 'root.json'), MAX_INFO_BYTES, (why) => new Error(why))).toString('utf8')) as SealedRootInfo;
    if (info.format !== 1) throw new Error(`format ${String(info.format)}`);
  } catch (err) {
    throw new KeydError('KEYD_ROOT_KEY', `${join(dir, 'root.json')} does not describe a sealed root key (${(err as Error).message})`);
  }
  const sealedPcrs = info.pcrs ? parsePcrSelection(info.pcrs) : undefined;
  const wanted = opts.pcrs ? formatPcrSelection(opts.pcrs) : null;
  if (opts.pcrs && wanted !== info.pcrs) {
    throw new KeydError(
      'KEYD_ROOT_KEY',
      `the root key in ${dir} is sealed to PCR policy ${info.pcrs ?? '(none)'}, not ${wanted}: keep the option it was sealed with (resealing needs the old policy to hold)`,
    );
  }
  const primary = await createPrimary(opts, work);
  const objectCtx = join(work, 'root.ctx');
  try {
    await tpm(opts, 'tpm2_load', ['-Q', '-C', primary, '-u', join(dir, 'root.pub'), '-r', join(dir, 'root.priv'), '-c', objectCtx], { flush: true });
  } catch (err) {
    if (err instanceof TpmCommandError && err.responseCode === TPM_RC.INTEGRITY_PARAM1) {
      throw new KeydError(
        'KEYD_ROOT_KEY_OTHER_TPM',
        `the root key in ${dir} was sealed by another TPM: this TPM cannot load it (TPM_RC_INTEGRITY); the store it protects cannot be opened here`,
      );
    }
    throw tpmFailure(err, `loading the sealed root key ${dir}`);
  }
  const unsealArgs = ['-c', objectCtx];
  if (sealedPcrs) unsealArgs.push('-p', `pcr:${pcrSelectionArg(sealedPcrs)}`);
  let rootKey: Buffer;
  try {
    rootKey = await tpm(opts, 'tpm2_unseal', unsealArgs, { flush: true });
  } catch (err) {
    if (sealedPcrs && err instanceof TpmCommandError && err.responseCode === TPM_RC.POLICY_FAIL_SESSION1) {
      const now = await readPcrs(opts, sealedPcrs).catch(() => undefined);
      const changed = now && info.pcrValues ? sealedPcrs.pcrs.filter((p) => now[p] !== info.pcrValues![p]) : [];
      throw new KeydError(
        'KEYD_ROOT_KEY_PCR_MISMATCH',
        `the TPM refused to unseal the root key in ${dir}: the PCR policy ${info.pcrs} no longer holds` +
          (changed.length > 0 ? ` (${sealedPcrs.bank} PCR ${changed.join(', ')} changed since sealing)` : '') +
          ' (TPM_RC_POLICY_FAIL): the machine booted or measured something else',
      );
    }
    throw tpmFailure(err, `unsealing the root key ${dir}`);
  }
  if (rootKey.length !== ROOT_KEY_LENGTH) {
    rootKey.fill(0);
    throw new KeydError('KEYD_ROOT_KEY', `the sealed root key in ${dir} holds ${rootKey.length} bytes, expected ${ROOT_KEY_LENGTH}`);
  }
  return { rootKey, pcrs: sealedPcrs };
}

/** A failed tpm2-tools call as a KeydError naming the step. */
export function tpmFailure(err: unknown, step: string): Error {
  if (err instanceof KeydError) return err;
  if (err instanceof TpmCommandError) return new KeydError('KEYD_TPM', `TPM failure while ${step}: ${err.message}`);
  return new KeydError('KEYD_TPM', `TPM failure while ${step}: ${(err as Error).message}`);
}
