/**
 * Child process for test/edge/dc-key-memory.test.ts: the edge's delegated credential manager
 * (src/edge/delegated-credentials.ts) with an injected clock and a stand-in keyd. It writes
 * the credential key's private scalar to a file for the parent (wiping its own copy), signs a
 * few handshakes with the credential, says "held", and on "expire" moves its clock past the
 * credential's expiry plus the grace, lets the manager drop it, collects garbage and says
 * "expired". Run with --expose-gc. The key is made here at test time.
 */
import { createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { DelegatedCredentials } from '../../src/edge/delegated-credentials.js';
import { LocalSigner } from '../../src/tls/index.js';
import { detachedPrivateKey } from '../helpers/detached-keys.js';
import { makeTestPki } from '../helpers/pki.js';
import { StandInKeyd } from './stand-in-keyd.js';

const [scalarFile, graceMsText] = process.argv.slice(2);
const graceMs = Number(graceMsText);
let clock = Date.now();
const pki = await makeTestPki({ commonName: 'a.test', extraNames: ['a.test'], delegationUsage: 'non-critical' });
const keyd = new StandInKeyd(new Map([['A', pki]]), () => clock);
const credentials = new DelegatedCredentials(keyd, {
  lifetimeSeconds: 3600,
  expiryMarginSeconds: 60,
  checkIntervalMs: 0,
  now: () => clock,
  generateKeyPair: () => {
    // Detached from its generation job before the JWK export (test/helpers/detached-keys.ts).
    const privateKey = detachedPrivateKey(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey);
    const pair = { privateKey, publicKey: createPublicKey(privateKey) };
    const scalar = Buffer.from(pair.privateKey.export({ format: 'jwk' }).d!, 'base64url');
    const fd = openSync(scalarFile!, 'w', 0o600);
    writeSync(fd, scalar);
    closeSync(fd);
    scalar.fill(0);
    return pair;
  },
});
const identity = { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey), keyRef: 'A', keyType: 'ecdsa-p256', version: 1, names: ['a.test'] };
credentials.offerFor('a.test', identity);
await credentials.whenHeld('A');
let offer = credentials.offerFor('a.test', identity);
for (let i = 0; i < 20; i++) await offer!.signer.sign({ kind: 'tls13-certificate-verify', scheme: 0x0403, transcriptHash: randomBytes(32) });
offer = undefined;
process.stdout.write('held\n');

const gc = (globalThis as { gc?: () => void }).gc!;
for await (const line of createInterface({ input: process.stdin })) {
  if (line !== 'expire') continue;
  clock += 3600_000 + graceMs;
  credentials.check();
  if (credentials.offerFor('a.test', identity) !== undefined) throw new Error('an expired credential was offered');
  // The manager asked for a new credential at that offerFor; the stand-in answers, and the
  // new key (a different scalar) is not the one searched for. Collect until the old is freed.
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  process.stdout.write('expired\n');
}
