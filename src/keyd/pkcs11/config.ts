import { open } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { KeydError } from '../errors.js';

/**
 * The "pkcs11" section of keyd's config (docs/KEYD.md, "Keys in a token"):
 *
 *   "pkcs11": { "tokens": [ { "token": "keyd" | "pkcs11:token=keyd",
 *                             "module": "/usr/lib/softhsm/libsofthsm2.so",
 *                             "pinFile": "/etc/keyd/token.pin" | "pinEnv": "KEYD_TOKEN_PIN",
 *                             "sessions": 4, "signTimeoutMs": 10000,
 *                             "generateTimeoutMs": 120000 } ] }
 *
 * The PIN comes from a file or an environment variable, never from argv or the config
 * itself, and is never logged.
 */
export interface TokenConfig {
  /** CKA token label (CK_TOKEN_INFO.label, trailing blanks removed). */
  label: string;
  /** Path of the PKCS#11 module (shared library). */
  module: string;
  pinFile?: string;
  pinEnv?: string;
  /** Sessions opened on the token; default 4. */
  sessions: number;
  /**
   * How long a signature may take in the token (waiting for a C_Sign slot included) before
   * the request fails with KEYD_TOKEN_ABSENT; default 10 s (src/keyd/pkcs11/token.ts).
   */
  signTimeoutMs?: number;
  /**
   * How long a key generation may take in the token (C_GenerateKeyPair, slot wait included)
   * before the request fails with KEYD_TOKEN_ABSENT; default 120 s (src/keyd/pkcs11/token.ts).
   */
  generateTimeoutMs?: number;
}

export const DEFAULT_TOKEN_SESSIONS = 4;
const MAX_TOKEN_SESSIONS = 64;
export const DEFAULT_SIGN_TIMEOUT_MS = 10_000;
const MIN_SIGN_TIMEOUT_MS = 100;
const MAX_SIGN_TIMEOUT_MS = 600_000;
/**
 * Generating a key pair is admin work, rare and far slower than a signature: an RSA key is
 * a search for primes, which takes seconds on a network HSM and can take a minute or more
 * on a smart-card HSM or a TPM chip. Its own timeout, two minutes by default, lets that
 * finish, and still frees the request (never the token's thread: see token.ts) when the
 * token has stopped answering. Same range as signTimeoutMs.
 */
export const DEFAULT_GENERATE_TIMEOUT_MS = 120_000;
/** The longest generateTimeoutMs a token may have (the admin CLI waits longer by default: admin-client.ts). */
export const MAX_GENERATE_TIMEOUT_MS = MAX_SIGN_TIMEOUT_MS;

/** A parsed RFC 7512 PKCS#11 URI (only the path attributes keyd uses). */
export interface TokenUri {
  token: string;
  object?: string;
  id?: Buffer;
}

/**
 * Parses `pkcs11:token=NAME;object=LABEL;id=%01%02` (RFC 7512 §2.3: path attributes
 * separated by ";", values percent-encoded), or a bare token label.
 */
export function parseTokenUri(text: string): TokenUri {
  if (!text.startsWith('pkcs11:')) {
    if (text.length === 0 || text.length > 32) throw new KeydError('KEYD_BAD_REQUEST', `token label ${JSON.stringify(text)} must be 1 to 32 characters (CK_TOKEN_INFO.label)`);
    return { token: text };
  }
  if (text.includes('?')) {
    // RFC 7512 §2.3 query attributes: pin-value carries a PIN, which keyd takes only from its
    // config; echoing the URI would put that PIN into the refusal's log line and audit entry.
    throw new KeydError('KEYD_BAD_REQUEST', 'PKCS#11 URI with query attributes (after "?", e.g. pin-value): keyd takes none, the PIN comes from its config ("pinFile" or "pinEnv"); the URI is not repeated here');
  }
  const path = text.slice('pkcs11:'.length);
  const attrs = new Map<string, string>();
  for (const part of path.split(';')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new KeydError('KEYD_BAD_REQUEST', `PKCS#11 URI ${JSON.stringify(text)}: "${part}" is not name=value (RFC 7512 §2.3)`);
    const name = part.slice(0, eq);
    if (name === 'id') continue; // binary: decoded to bytes below
    let value: string;
    try {
      value = decodeURIComponent(part.slice(eq + 1));
    } catch {
      throw new KeydError('KEYD_BAD_REQUEST', `PKCS#11 URI ${JSON.stringify(text)}: bad percent-encoding in ${name}`);
    }
    if (attrs.has(name)) throw new KeydError('KEYD_BAD_REQUEST', `PKCS#11 URI ${JSON.stringify(text)}: ${name} given twice (RFC 7512 §2.3)`);
    attrs.set(name, value);
  }
  const token = attrs.get('token');
  if (!token) throw new KeydError('KEYD_BAD_REQUEST', `PKCS#11 URI ${JSON.stringify(text)} names no token (token=LABEL)`);
  const uri: TokenUri = { token };
  const object = attrs.get('object');
  if (object !== undefined) uri.object = object;
  const idText = path.split(';').find((p) => p.startsWith('id='));
  if (idText) uri.id = percentBytes(idText.slice(3));
  return uri;
}

/** The bytes of a percent-encoded value (CKA_ID is binary). */
function percentBytes(encoded: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < encoded.length; i++) {
    if (encoded[i] === '%' && /^[0-9a-fA-F]{2}$/.test(encoded.slice(i + 1, i + 3))) {
      bytes.push(parseInt(encoded.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(encoded.charCodeAt(i) & 0xff);
  }
  return Buffer.from(bytes);
}

function pct(value: string | Buffer): string {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  return [...bytes].map((b) => (/[A-Za-z0-9\-._~]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0')}`)).join('');
}

/** The RFC 7512 URI of a key object. */
export function formatTokenUri(uri: TokenUri): string {
  // CKA_ID is binary: every byte percent-encoded, as RFC 7512 §2.3 recommends for id.
  const id = uri.id ? [...uri.id].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('') : '';
  return `pkcs11:token=${pct(uri.token)}${uri.object !== undefined ? `;object=${pct(uri.object)}` : ''}${id ? `;id=${id}` : ''}`;
}

/**
 * Parses the config section; undefined when keyd has no token (the native binding is then
 * never loaded). A relative "pinFile" is from `baseDir`, the config file's directory.
 */
export function parseTokenConfigs(section: unknown, baseDir?: string): TokenConfig[] | undefined {
  if (section === undefined) return undefined;
  const bad = (why: string) => new KeydError('KEYD_CONFIG', `config "pkcs11": ${why}`);
  if (typeof section !== 'object' || section === null || !Array.isArray((section as { tokens?: unknown }).tokens)) {
    throw bad('must be { "tokens": [ { "token", "module", "pinFile" or "pinEnv" } ] }');
  }
  // Only "tokens": a misspelt or misplaced key ("pin" beside "tokens") would be ignored unsaid.
  for (const key of Object.keys(section)) {
    if (key !== 'tokens') throw bad(`unknown key "${key}" (allowed: tokens)${key.toLowerCase().includes('pin') ? ' (a PIN is read from a token\'s "pinFile" or "pinEnv", never written in the config)' : ''}`);
  }
  const configs: TokenConfig[] = [];
  for (const [i, raw] of ((section as { tokens: unknown[] }).tokens).entries()) {
    const where = `tokens[${i}]`;
    if (typeof raw !== 'object' || raw === null) throw bad(`${where} must be an object`);
    const t = raw as Record<string, unknown>;
    for (const key of Object.keys(t)) {
      if (!['token', 'module', 'pinFile', 'pinEnv', 'sessions', 'signTimeoutMs', 'generateTimeoutMs'].includes(key)) {
        throw bad(`${where}: unknown field "${key}"${key.toLowerCase().includes('pin') ? ' (a PIN is read from "pinFile" or "pinEnv", never written in the config)' : ''}`);
      }
    }
    if (typeof t.token !== 'string') throw bad(`${where}.token must be a token label or a pkcs11: URI`);
    const label = parseTokenUri(t.token).token;
    if (typeof t.module !== 'string' || !isAbsolute(t.module)) throw bad(`${where}.module must be the absolute path of the PKCS#11 module`);
    const pinFile = t.pinFile;
    const pinEnv = t.pinEnv;
    if ((pinFile === undefined) === (pinEnv === undefined)) throw bad(`${where} needs exactly one of "pinFile" and "pinEnv"`);
    if (pinFile !== undefined && typeof pinFile !== 'string') throw bad(`${where}.pinFile must be a path`);
    if (pinEnv !== undefined && (typeof pinEnv !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(pinEnv))) throw bad(`${where}.pinEnv must be an environment variable name`);
    const sessions = t.sessions ?? DEFAULT_TOKEN_SESSIONS;
    if (typeof sessions !== 'number' || !Number.isInteger(sessions) || sessions < 1 || sessions > MAX_TOKEN_SESSIONS) {
      throw bad(`${where}.sessions must be an integer from 1 to ${MAX_TOKEN_SESSIONS}`);
    }
    const timeouts: { signTimeoutMs?: number; generateTimeoutMs?: number } = {};
    for (const field of ['signTimeoutMs', 'generateTimeoutMs'] as const) {
      const value = t[field];
      if (value === undefined) continue;
      if (typeof value !== 'number' || !Number.isInteger(value) || value < MIN_SIGN_TIMEOUT_MS || value > MAX_SIGN_TIMEOUT_MS) {
        throw bad(`${where}.${field} must be an integer from ${MIN_SIGN_TIMEOUT_MS} to ${MAX_SIGN_TIMEOUT_MS} (milliseconds)`);
      }
      timeouts[field] = value;
    }
    if (configs.some((c) => c.label === label)) throw bad(`token ${JSON.stringify(label)} is configured twice`);
    if (configs.some((c) => c.module === t.module)) {
      // A module is initialised once per process, and keyd reconnects by finalising it.
      throw bad(`module ${t.module} is configured for two tokens; keyd serves one token per module`);
    }
    configs.push({ label, module: t.module, sessions, ...timeouts, ...(pinFile !== undefined ? { pinFile: baseDir === undefined ? pinFile : resolve(baseDir, pinFile) } : {}), ...(pinEnv !== undefined ? { pinEnv } : {}) });
  }
  return configs;
}

/** PINs keyd took out of its environment, by variable name. */
const environmentPins = new Map<string, string>();

/**
 * The PIN in environment variable `name`, taken out of process.env: the children keyd
 * starts (tpm2-tools, src/keyd/tpm/tools.ts) inherit process.env, and must not receive
 * the PIN. keyd takes it when it reads its config (TokenKeys), before it starts any; a
 * value set again later replaces the one taken.
 */
export function takeEnvironmentPin(name: string): string | undefined {
  // Own variables only: process.env inherits Object.prototype's members, so an unset
  // "pinEnv": "constructor" (a valid variable name) read the Object function as the PIN, and
  // C_Login was tried with it (a wrong-PIN attempt, counted by the token) instead of "not set".
  const value = Object.hasOwn(process.env, name) ? process.env[name] : undefined;
  if (value !== undefined) {
    environmentPins.set(name, value);
    delete process.env[name];
  }
  return environmentPins.get(name);
}

/**
 * A PIN file must be readable by keyd's user alone (mode 0600, like the root key file):
 * one that group or others can read hands the token's keys to them. Checked on the open
 * descriptor, so the file checked is the file read.
 */
export async function readPinFile(label: string, path: string): Promise<string> {
  const fail = (why: string) => new KeydError('KEYD_TOKEN_PIN', `token ${JSON.stringify(label)}: ${why}`);
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw fail(`cannot read pin file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw fail(`pin file ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw fail(`pin file ${path} is accessible by group or others (mode ${(st.mode & 0o777).toString(8)}); run chmod 600 ${path}`);
    }
    return (await fh.readFile('utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    throw err instanceof KeydError ? err : fail(`cannot read pin file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  } finally {
    await fh.close();
  }
}
