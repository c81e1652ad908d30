import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { KeydError } from './errors.js';

/**
 * Reading what an operator hands the admin CLI: a private key (PEM PKCS#8, SEC1
 * "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY", encrypted PKCS#8 or legacy encrypted PEM)
 * and a certificate chain (PEM, leaf first). Every failure is one precise line.
 */

export interface KeyFileOptions {
  /** Passphrase for an encrypted key (from --passphrase-file or a prompt). */
  passphrase?: () => Promise<string | undefined>;
}

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new KeydError('KEYD_BAD_REQUEST', `cannot read ${what} ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (code ?? (err as Error).message)}`);
  }
}

export async function readPrivateKeyFile(path: string, opts: KeyFileOptions = {}): Promise<KeyObject> {
  const bytes = await readInput(path, 'key file');
  try {
    const text = bytes.toString('latin1');
    if (!text.includes('-----BEGIN')) {
      if (bytes[0] === 0x30 && /\.(p12|pfx)$/i.test(path)) {
        throw new KeydError('KEYD_BAD_KEY', `${path} looks like PKCS#12, which keyd does not read; extract the key with: openssl pkcs12 -in ${path} -nocerts -nodes -out key.pem`);
      }
      throw new KeydError('KEYD_BAD_KEY', `${path} is not a PEM file (no "-----BEGIN" line)`);
    }
    if (/-----BEGIN (CERTIFICATE|PUBLIC KEY)-----/.test(text) && !/PRIVATE KEY-----/.test(text)) {
      throw new KeydError('KEYD_BAD_KEY', `${path} holds a certificate or public key, not a private key`);
    }
    const encrypted = text.includes('ENCRYPTED PRIVATE KEY') || text.includes('Proc-Type: 4,ENCRYPTED');
    let passphrase: string | undefined;
    if (encrypted) {
      passphrase = await opts.passphrase?.();
      if (passphrase === undefined) throw new KeydError('KEYD_BAD_KEY', `${path} is encrypted: give --passphrase-file FILE (or run on a terminal to be asked)`);
    }
    try {
      return createPrivateKey(passphrase !== undefined ? { key: bytes, format: 'pem', passphrase } : { key: bytes, format: 'pem' });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (encrypted && /bad decrypt|decrypt/i.test(e.message)) throw new KeydError('KEYD_BAD_KEY', `wrong passphrase for ${path}`);
      throw new KeydError('KEYD_BAD_KEY', `${path} is not a usable PEM private key (${e.code ?? e.message})`);
    }
  } finally {
    bytes.fill(0);
  }
}

/** A PEM chain file (leaf first) as DER certificates; each must parse. */
export async function readChainFile(path: string): Promise<Uint8Array[]> {
  const text = (await readInput(path, 'chain file')).toString('latin1');
  const blocks = [...text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)];
  if (blocks.length === 0) throw new KeydError('KEYD_BAD_CHAIN', `${path} holds no PEM certificate ("-----BEGIN CERTIFICATE-----")`);
  return blocks.map((m, i) => {
    const der = Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
    try {
      new X509Certificate(der);
    } catch (err) {
      throw new KeydError('KEYD_BAD_CHAIN', `certificate ${i + 1} in ${path} does not parse (${(err as Error).message})`);
    }
    return new Uint8Array(der);
  });
}
