import { createHash, randomBytes } from 'node:crypto';
import { Aes256Gcm, CipherSuite, HkdfSha256 } from '@hpke/core';
import { DhkemX25519HkdfSha256 } from '@hpke/dhkem-x25519';
import { ProvisionError } from './errors.js';
import { fingerprintOf } from './fingerprint.js';

/**
 * End-to-end sealing of a private key from the operator's CLI to one keyd.
 *
 * RFC 9180 base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (the
 * maintained @hpke implementation; no hand-rolled crypto). The key is sealed inside the
 * TLS channel, so neither a TLS-terminating relay nor keyd's own TLS stack sees it in
 * plaintext; only the holder of keyd's provisioning private key can open it.
 *
 * Binding: `info` carries the protocol label and the recipient's public key (§5.1:
 * info binds the key schedule to the application context); the AAD carries everything
 * the request asserts — keyd's fingerprint, operator subject, names, the chain's hash,
 * a fresh nonce and the sealing time — so a payload cannot be re-attached to other
 * names, another chain, another operator, another keyd, or replayed later.
 */

export const HPKE_SUITE_NAME = 'DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM';
const INFO_LABEL = Buffer.from('tls-sign-delegator provisioning v1\0', 'latin1');
const NONCE_BYTES = 16;
const MAX_TIME_MS = 8.64e15;

let cachedSuite: CipherSuite | undefined;
function suite(): CipherSuite {
  cachedSuite ??= new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
  return cachedSuite;
}

/** What travels in the `put` request: everything but `enc`/`ciphertext` is public and bound in the AAD. */
export interface SealedKey {
  v: 1;
  suite: string;
  /** Fingerprint of the keyd provisioning key the payload is sealed to. */
  sealedTo: string;
  /** Subject of the operator certificate that sealed it (normalised, see roles.ts). */
  operator: string;
  /** base64, 16 random bytes. */
  nonce: string;
  /** Milliseconds since the epoch, sealing time. */
  issuedAt: number;
  /** base64 HPKE encapsulated key. */
  enc: string;
  /** base64 AES-256-GCM ciphertext of the PKCS#8 DER private key. */
  ciphertext: string;
}

export interface SealBinding {
  names: readonly string[];
  chainDer: readonly Uint8Array[];
}

function chainDigest(chainDer: readonly Uint8Array[]): string {
  const hash = createHash('sha256');
  for (const cert of chainDer) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(cert.length);
    hash.update(length).update(cert);
  }
  return hash.digest('hex');
}

/** The AAD: canonical JSON with a fixed key order, rebuilt by keyd from the request it received. */
export function sealAad(sealed: Omit<SealedKey, 'enc' | 'ciphertext' | 'suite' | 'v'>, binding: SealBinding): Buffer {
  return Buffer.from(
    JSON.stringify({
      v: 1,
      op: 'put',
      sealedTo: sealed.sealedTo,
      operator: sealed.operator,
      names: binding.names,
      chainSha256: chainDigest(binding.chainDer),
      nonce: sealed.nonce,
      issuedAt: sealed.issuedAt,
    }),
    'utf8',
  );
}

function sealInfo(keydPublicKey: Uint8Array): Buffer {
  return Buffer.concat([INFO_LABEL, keydPublicKey]);
}

/** Operator side: seals a PKCS#8 DER private key to keyd's pinned provisioning public key. */
export async function sealPrivateKey(params: {
  keydPublicKey: Uint8Array;
  operator: string;
  binding: SealBinding;
  privateKeyPkcs8: Uint8Array;
  now?: number;
  nonce?: Uint8Array;
}): Promise<SealedKey> {
  const header = {
    sealedTo: fingerprintOf(params.keydPublicKey),
    operator: params.operator,
    nonce: Buffer.from(params.nonce ?? randomBytes(NONCE_BYTES)).toString('base64'),
    issuedAt: Math.floor(params.now ?? Date.now()),
  };
  const hpke = suite();
  const recipientPublicKey = await hpke.kem.deserializePublicKey(params.keydPublicKey);
  const { ct, enc } = await hpke.seal(
    { recipientPublicKey, info: sealInfo(params.keydPublicKey) },
    params.privateKeyPkcs8,
    sealAad(header, params.binding),
  );
  return {
    v: 1,
    suite: HPKE_SUITE_NAME,
    ...header,
    enc: Buffer.from(enc).toString('base64'),
    ciphertext: Buffer.from(ct).toString('base64'),
  };
}

/** Checks the shape of an untrusted `sealed` object from the wire. */
export function parseSealedKey(value: unknown): SealedKey {
  const v = value as Partial<SealedKey> | null;
  const ok =
    typeof v === 'object' &&
    v !== null &&
    v.v === 1 &&
    typeof v.suite === 'string' &&
    typeof v.sealedTo === 'string' &&
    typeof v.operator === 'string' &&
    typeof v.nonce === 'string' &&
    typeof v.issuedAt === 'number' &&
    Number.isSafeInteger(v.issuedAt) &&
    typeof v.enc === 'string' &&
    typeof v.ciphertext === 'string';
  if (!ok) throw new ProvisionError('PROVISION_BAD_REQUEST', 'put: "sealed" is not a version 1 sealed key object');
  const sealed = v as SealedKey;
  if (sealed.suite !== HPKE_SUITE_NAME) {
    throw new ProvisionError('PROVISION_BAD_REQUEST', `put: unsupported HPKE suite "${sealed.suite}", expected ${HPKE_SUITE_NAME}`);
  }
  // ECMAScript's time range (±8.64e15 ms, §21.4.1.1): outside it the replay window's refusal
  // could not even format the time (new Date(t).toISOString() throws).
  if (Math.abs(sealed.issuedAt) > MAX_TIME_MS) {
    throw new ProvisionError('PROVISION_BAD_REQUEST', `put: "issuedAt" ${sealed.issuedAt} is not a time (milliseconds since the epoch)`);
  }
  if (Buffer.from(sealed.nonce, 'base64').length !== NONCE_BYTES) {
    throw new ProvisionError('PROVISION_BAD_REQUEST', `put: nonce must be ${NONCE_BYTES} bytes`);
  }
  return sealed;
}

/**
 * keyd side, before opening: the clear header must name this keyd and the authenticated
 * operator (both are also in the AAD, so lying here only makes opening fail).
 */
export function checkSealedHeader(sealed: SealedKey, keydFingerprint: string, operator: string): void {
  if (sealed.sealedTo !== keydFingerprint) {
    throw new ProvisionError(
      'PROVISION_SEALED_TO_OTHER_KEYD',
      `payload is sealed to provisioning key ${sealed.sealedTo}, but this keyd's key is ${keydFingerprint}`,
    );
  }
  if (sealed.operator !== operator) {
    throw new ProvisionError(
      'PROVISION_OPERATOR_MISMATCH',
      `payload was sealed by operator "${sealed.operator}" but the connection is authenticated as "${operator}"`,
    );
  }
}

/**
 * keyd side: opens a sealed key after checking that it was sealed to this keyd and by the
 * operator on the other end of the TLS connection. Returns the PKCS#8 DER; the caller
 * zeroes it after importing it.
 */
export async function openSealedKey(params: {
  sealed: SealedKey;
  keydPublicKey: Uint8Array;
  keydPrivateKey: Uint8Array;
  operator: string;
  binding: SealBinding;
}): Promise<Buffer> {
  const { sealed } = params;
  try {
    checkSealedHeader(sealed, fingerprintOf(params.keydPublicKey), params.operator);
    const hpke = suite();
    let plaintext: ArrayBuffer;
    try {
      const recipientKey = await hpke.kem.deserializePrivateKey(params.keydPrivateKey);
      plaintext = await hpke.open(
        { recipientKey, enc: Buffer.from(sealed.enc, 'base64'), info: sealInfo(params.keydPublicKey) },
        Buffer.from(sealed.ciphertext, 'base64'),
        sealAad(sealed, params.binding),
      );
    } catch {
      throw new ProvisionError(
        'PROVISION_PAYLOAD_TAMPERED',
        'sealed key failed authentication: the payload, its names, chain, nonce or time were altered after sealing',
      );
    }
    // A view, not a copy: the caller zeroes the one and only plaintext buffer.
    return Buffer.from(plaintext);
  } finally {
    params.keydPrivateKey.fill(0);
  }
}
