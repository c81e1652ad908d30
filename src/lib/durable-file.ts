import { open, rename, readdir, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/**
 * Durable, atomic file replacement: write a temporary file in the same directory,
 * fsync it, rename it over the target, then fsync the directory so the rename itself
 * survives a crash. A crash at any point leaves either the old or the new file,
 * never a mix (POSIX rename is atomic within one file system).
 */
export async function writeFileDurably(path: string, data: Uint8Array, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
  await syncDirectory(dir);
}

/** Removes a file durably (the directory entry removal is fsynced). Missing files are fine. */
export async function unlinkDurably(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await syncDirectory(dirname(path));
}

export async function syncDirectory(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Deletes temporary files a crash left behind in `dir` (they were never acknowledged). */
export async function removeLeftoverTemporaries(dir: string): Promise<number> {
  let removed = 0;
  for (const name of await readdir(dir)) {
    if (name.startsWith('.') && name.includes('.tmp-')) {
      await unlink(join(dir, name)).catch(() => {});
      removed++;
    }
  }
  if (removed > 0) await syncDirectory(dir);
  return removed;
}
