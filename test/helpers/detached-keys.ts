import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';

/**
 * The same private key, re-imported from its PKCS#8 DER, so that a JWK export of it cannot
 * deadlock Node 20. A key made by generateKeyPairSync or subtle.generateKey shares a mutex with
 * the job that generated it; the JWK export holds that mutex while it allocates, and a GC that
 * then collects the job (whose destructor takes the same mutex) never returns
 * (docs/BENCHMARKS.md, "A Node 20 deadlock, found under load"). A DER export of a generated key
 * did not hang in the stress run recorded there; an imported key has no job at all.
 */
export function detachedPrivateKey(key: KeyObject): KeyObject {
  const der = key.export({ format: 'der', type: 'pkcs8' });
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

/** The public half of `key` (a generated private key), safe to export as JWK. */
export function detachedPublicKey(key: KeyObject): KeyObject {
  return createPublicKey(detachedPrivateKey(key));
}
