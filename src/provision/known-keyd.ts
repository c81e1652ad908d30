import { mkdir, readFile } from 'node:fs/promises';
import { writeFileDurably } from '../lib/durable-file.js';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { ProvisionError } from './errors.js';
import { isFingerprint } from './fingerprint.js';

/**
 * The operator's pins of keyd provisioning keys, like OpenSSH's known_hosts: one line per
 * server, `HOST:PORT SHA256:…`, `#` starts a comment. A server whose key changed is refused
 * until the operator re-pins it on purpose (`trust --replace`).
 */

/** `--known-keyd`, else $DELEGATOR_KNOWN_KEYD, else $XDG_CONFIG_HOME/delegator/known_keyd (~/.config/…). */
export function defaultKnownKeydPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DELEGATOR_KNOWN_KEYD) return env.DELEGATOR_KNOWN_KEYD;
  const configHome = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(configHome, 'delegator', 'known_keyd');
}

interface Entry {
  server: string;
  fingerprint: string;
}

function parse(text: string, path: string): Entry[] {
  const entries: Entry[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const [server, fingerprint, ...rest] = line.split(/\s+/);
    if (!server || !fingerprint || rest.length > 0 || !isFingerprint(fingerprint)) {
      throw new ProvisionError('PROVISION_USAGE', `${path}:${index + 1}: expected "HOST:PORT SHA256:…", got "${line}"`);
    }
    entries.push({ server, fingerprint });
  });
  return entries;
}

async function readEntries(path: string): Promise<{ text: string; entries: Entry[] }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { text: '', entries: [] };
    throw err;
  }
  return { text, entries: parse(text, path) };
}

/** The pinned fingerprint for `server` (HOST:PORT as given to --server), or undefined. */
export async function lookupPin(path: string, server: string): Promise<string | undefined> {
  const { entries } = await readEntries(path);
  return entries.find((e) => e.server === server)?.fingerprint;
}

export type PinOutcome = 'added' | 'unchanged' | 'replaced';

/**
 * Pins `fingerprint` for `server`. A different existing pin is refused unless `replace`:
 * a changed key is exactly what a man in the middle would present.
 */
export async function pin(path: string, server: string, fingerprint: string, replace: boolean): Promise<PinOutcome> {
  const { text, entries } = await readEntries(path);
  const existing = entries.find((e) => e.server === server);
  if (existing?.fingerprint === fingerprint) return 'unchanged';
  if (existing && !replace) {
    throw new ProvisionError(
      'PROVISION_KEYD_FINGERPRINT_MISMATCH',
      `keyd at ${server} presents provisioning key ${fingerprint}, but ${path} pins ${existing.fingerprint}; ` +
        `if keyd's key was replaced on purpose, run "trust --replace"`,
    );
  }
  const kept = existing
    ? text
        .split('\n')
        .filter((line) => line.trim().split(/\s+/)[0] !== server)
        .join('\n')
    : text;
  const body = (kept === '' || kept.endsWith('\n') ? kept : kept + '\n') + `${server} ${fingerprint}\n`;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  // temp file, fsync, rename, fsync of the directory: a crash leaves the old or the new file.
  await writeFileDurably(path, Buffer.from(body));
  return existing ? 'replaced' : 'added';
}
