import { deriveSecret, emptyHash, hkdfExpandLabel, hkdfExtract, hmac, type HashName } from '../crypto/hkdf.js';

/**
 * The TLS 1.3 key schedule (RFC 8446 §7.1), as a chain of stages so that code can
 * only derive a secret once the inputs of its stage exist:
 *
 *   EarlySecrets (PSK or zeros) → HandshakeSecrets (+ (EC)DHE) → MasterSecrets
 */

export function zeros(hash: HashName): Buffer {
  return Buffer.alloc(hash === 'sha256' ? 32 : 48);
}

/** Without a PSK the early secret and its "derived" salt are constants of the hash (§7.1). */
const noPskEarlySecrets = new Map<HashName, { earlySecret: Buffer; derived: Buffer }>();

export class EarlySecrets {
  readonly earlySecret: Buffer;
  private readonly derivedSalt: Buffer | undefined;

  constructor(readonly hash: HashName, psk?: Uint8Array) {
    if (psk) {
      this.earlySecret = hkdfExtract(hash, zeros(hash), psk);
      return;
    }
    let cached = noPskEarlySecrets.get(hash);
    if (!cached) {
      const earlySecret = hkdfExtract(hash, zeros(hash), zeros(hash));
      cached = { earlySecret, derived: deriveSecret(hash, earlySecret, 'derived', emptyHash(hash)) };
      noPskEarlySecrets.set(hash, cached);
    }
    this.earlySecret = cached.earlySecret;
    this.derivedSalt = cached.derived;
  }

  /** binder_key for resumption PSKs (§4.2.11.2). */
  resumptionBinderKey(): Buffer {
    return deriveSecret(this.hash, this.earlySecret, 'res binder', emptyHash(this.hash));
  }

  withSharedSecret(sharedSecret: Uint8Array | undefined): HandshakeSecrets {
    const salt = this.derivedSalt ?? deriveSecret(this.hash, this.earlySecret, 'derived', emptyHash(this.hash));
    return new HandshakeSecrets(this.hash, hkdfExtract(this.hash, salt, sharedSecret ?? zeros(this.hash)));
  }
}

export class HandshakeSecrets {
  constructor(readonly hash: HashName, private readonly handshakeSecret: Buffer) {}

  /** Transcript-Hash(ClientHello...ServerHello). */
  clientHandshakeTrafficSecret(helloHash: Uint8Array): Buffer {
    return deriveSecret(this.hash, this.handshakeSecret, 'c hs traffic', helloHash);
  }

  serverHandshakeTrafficSecret(helloHash: Uint8Array): Buffer {
    return deriveSecret(this.hash, this.handshakeSecret, 's hs traffic', helloHash);
  }

  master(): MasterSecrets {
    const salt = deriveSecret(this.hash, this.handshakeSecret, 'derived', emptyHash(this.hash));
    return new MasterSecrets(this.hash, hkdfExtract(this.hash, salt, zeros(this.hash)));
  }
}

export class MasterSecrets {
  constructor(readonly hash: HashName, private readonly masterSecret: Buffer) {}

  /** Transcript-Hash(ClientHello...server Finished). */
  clientApplicationTrafficSecret(serverFinishedHash: Uint8Array): Buffer {
    return deriveSecret(this.hash, this.masterSecret, 'c ap traffic', serverFinishedHash);
  }

  serverApplicationTrafficSecret(serverFinishedHash: Uint8Array): Buffer {
    return deriveSecret(this.hash, this.masterSecret, 's ap traffic', serverFinishedHash);
  }

  exporterMasterSecret(serverFinishedHash: Uint8Array): Buffer {
    return deriveSecret(this.hash, this.masterSecret, 'exp master', serverFinishedHash);
  }

  /** Transcript-Hash(ClientHello...client Finished). */
  resumptionMasterSecret(clientFinishedHash: Uint8Array): Buffer {
    return deriveSecret(this.hash, this.masterSecret, 'res master', clientFinishedHash);
  }
}

/** §4.6.1: the PSK a ticket stands for. */
export function resumptionPsk(hash: HashName, resumptionMasterSecret: Uint8Array, ticketNonce: Uint8Array): Buffer {
  return hkdfExpandLabel(hash, resumptionMasterSecret, 'resumption', ticketNonce, hash === 'sha256' ? 32 : 48);
}

/** §4.4.4: verify_data = HMAC(finished_key, Transcript-Hash(...)). */
export function finishedVerifyData(hash: HashName, baseKey: Uint8Array, transcriptHash: Uint8Array): Buffer {
  const finishedKey = hkdfExpandLabel(hash, baseKey, 'finished', Buffer.alloc(0), transcriptHash.length);
  return hmac(hash, finishedKey, transcriptHash);
}

/** §7.2: application_traffic_secret_N+1. */
export function nextTrafficSecret(hash: HashName, secret: Uint8Array): Buffer {
  return hkdfExpandLabel(hash, secret, 'traffic upd', Buffer.alloc(0), secret.length);
}

/** §7.3: write key and IV of a traffic secret. */
export function trafficKeys(hash: HashName, secret: Uint8Array, keyLength: number): { key: Buffer; iv: Buffer } {
  return {
    key: hkdfExpandLabel(hash, secret, 'key', Buffer.alloc(0), keyLength),
    iv: hkdfExpandLabel(hash, secret, 'iv', Buffer.alloc(0), 12),
  };
}
