import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative } from 'node:path';
import { KeydError } from '../errors.js';
import { syncDirectory } from '../../lib/durable-file.js';

const ROOT_KEY_LENGTH = 32;

/**
 * True when `path` (which may not exist yet) is `dir` or lies under it, symlinks resolved:
 * the path itself when it exists (a root key file outside by name may be a symlink to one
 * inside), else its parent.
 */
export async function isInside(path: string, dir: string): Promise<boolean> {
  const realDir = await realpath(dir);
  const parent = dirname(path);
  const realParent = await realpath(parent).catch(() => parent);
  const real = await realpath(path).catch(() => join(realParent, basename(path)));
  const rel = relative(realDir, real);
  return !rel.startsWith('..') && !isAbsolute(rel);
}

/**
 * Reads the 32-byte root key file, or creates it (mode 0600, exclusive create) on first
 * run. It must live outside the data directory, so that a copy of the data directory
 * alone opens nothing.
 */
export async function loadOrCreateFileRootKey(path: string, dataDir: string): Promise<{ rootKey: Buffer; created: boolean }> {
  if (await isInside(path, dataDir)) {
    throw new KeydError('KEYD_ROOT_KEY', `root key file ${path} must live outside the data directory ${dataDir}`);
  }
  let existing: Buffer | undefined;
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new KeydError('KEYD_ROOT_KEY', `root key ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new KeydError('KEYD_ROOT_KEY', `root key file ${path} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${path}`);
    }
    // Another user's file (planted, or a symlink to it, where that user can write) holds a
    // key that user knows, and can replace: only keyd's own user's, or root's, is taken.
    const uid = process.geteuid?.();
    if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
      throw new KeydError('KEYD_ROOT_KEY', `root key file ${path} belongs to uid ${st.uid}, not to keyd's user (uid ${uid}) or root; another user could know or replace it`);
    }
    // Before reading: a file of any other size is not a root key, and need not be read whole.
    if (st.size !== ROOT_KEY_LENGTH) throw new KeydError('KEYD_ROOT_KEY', `root key file ${path} holds ${st.size} bytes, expected ${ROOT_KEY_LENGTH}`);
    existing = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existing) {
    if (existing.length !== ROOT_KEY_LENGTH) {
      throw new KeydError('KEYD_ROOT_KEY', `root key file ${path} holds ${existing.length} bytes, expected ${ROOT_KEY_LENGTH}`);
    }
    return { rootKey: existing, created: false };
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const rootKey = randomBytes(ROOT_KEY_LENGTH);
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.writeFile(rootKey);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await chmod(path, 0o600);
  await syncDirectory(dirname(path));
  return { rootKey, created: true };
}
