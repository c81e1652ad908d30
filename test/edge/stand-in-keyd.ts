/** A stand-in keyd for delegated credentials (tests of the edge's manager), built from RFC 9345 §4 with node:crypto. */
import { sign, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { DelegationReply, DelegationRequest } from '../../src/keyd/protocol.js';
import type { TestPki } from '../helpers/pki.js';

/** Certifies requests per RFC 9345 §4 with the test certificate's key; answers can be held or failed. */
export class StandInKeyd extends EventEmitter {
  readonly requests: DelegationRequest[] = [];
  hold = false;
  failWith: Error | undefined;
  tamper: ((reply: DelegationReply) => DelegationReply) | undefined;
  /** Certify this dcCertVerifyAlgorithm instead of the one asked for (a correctly signed answer the edge must refuse). */
  certifyScheme: number | undefined;
  private held: (() => void)[] = [];

  constructor(
    private readonly pkis: Map<string, TestPki>,
    private readonly now: () => number,
  ) {
    super();
  }

  issueDelegatedCredential(request: DelegationRequest): Promise<DelegationReply> {
    this.requests.push(request);
    const answer = (): DelegationReply => {
      if (this.failWith) throw this.failWith;
      const pki = this.pkis.get(request.keyRef)!;
      const leaf = Buffer.from(pki.leafCertDer);
      const notBefore = Date.parse(new X509Certificate(leaf).validFrom);
      const validTime = Math.floor((this.now() + request.lifetimeSeconds * 1000 - notBefore) / 1000); // as keyd: never past now + lifetime
      const spki = Buffer.from(request.subjectPublicKeyInfo);
      const cred = Buffer.alloc(9 + spki.length);
      cred.writeUInt32BE(validTime, 0);
      cred.writeUInt16BE(this.certifyScheme ?? request.dcCertVerifyAlgorithm, 4);
      cred.writeUIntBE(spki.length, 6, 3);
      spki.copy(cred, 9);
      const content = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS, server delegated credentials'), Buffer.of(0), leaf, cred, Buffer.of(4, 3)]);
      const signature = sign('sha256', content, pki.leafKey);
      const tail = Buffer.alloc(4);
      tail.writeUInt16BE(0x0403, 0);
      tail.writeUInt16BE(signature.length, 2);
      const reply = { certificate: leaf, delegatedCredential: Buffer.concat([cred, tail, signature]) };
      return this.tamper ? this.tamper(reply) : reply;
    };
    if (!this.hold) return Promise.resolve().then(answer);
    return new Promise((resolve, reject) =>
      this.held.push(() => {
        try {
          resolve(answer());
        } catch (err) {
          reject(err as Error);
        }
      }),
    );
  }

  release(): void {
    this.hold = false;
    for (const r of this.held.splice(0)) r();
  }
}

