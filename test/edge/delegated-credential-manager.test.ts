/**
 * The edge's delegated credential manager (src/edge/delegated-credentials.ts) with an
 * injected clock and randomness, against a stand-in keyd that certifies what it is asked
 * (built here from RFC 9345 §4 with node:crypto) and can hold or fail its answers:
 * obtaining, jittered renewal that keeps the current credential until the new one is in
 * place, expiry, keyd's change notice, the fallback while keyd is unreachable, a changed
 * leaf, and answers the edge must refuse.
 */
import assert from 'node:assert/strict';
import { createHash, createPublicKey } from 'node:crypto';
import { before, test } from 'node:test';
import { DelegatedCredentials } from '../../src/edge/delegated-credentials.js';
import type { EdgeIdentity } from '../../src/edge/identity-cache.js';
import type { DelegationReply } from '../../src/keyd/protocol.js';
import { LocalSigner } from '../../src/tls/index.js';
import { StandInKeyd } from './stand-in-keyd.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';

const LIFETIME_S = 3600;
const MARGIN_S = 60;

let pkiA: TestPki;
let pkiB: TestPki;
let plain: TestPki;

before(async () => {
  [pkiA, pkiB, plain] = await Promise.all([
    makeTestPki({ commonName: 'a.test', extraNames: ['a.test'], delegationUsage: 'non-critical' }),
    makeTestPki({ commonName: 'b.test', extraNames: ['b.test'], delegationUsage: 'non-critical' }),
    makeTestPki({ commonName: 'plain.test', extraNames: ['plain.test'] }),
  ]);
});

function identityOf(keyRef: string, pki: TestPki, names: string[]): EdgeIdentity {
  return { certificateChain: pki.chainDer, signer: new LocalSigner(pki.leafKey), keyRef, keyType: 'ecdsa-p256', version: 1, names };
}

function setup(random = () => 0) {
  let clock = Date.now();
  const keyd = new StandInKeyd(
    new Map([
      ['A', pkiA],
      ['B', pkiB],
      ['P', plain],
    ]),
    () => clock,
  );
  const events: [string, number | undefined][] = [];
  const failures: string[] = [];
  const credentials = new DelegatedCredentials(keyd, {
    lifetimeSeconds: LIFETIME_S,
    expiryMarginSeconds: MARGIN_S,
    checkIntervalMs: 0,
    retryMs: 10_000,
    now: () => clock,
    random,
    onCredential: (keyRef, notAfter) => events.push([keyRef, notAfter]),
    onIssue: (outcome, _keyRef, err) => outcome === 'failed' && failures.push(err!.message),
  });
  const idA = identityOf('A', pkiA, ['a.test']);
  const idB = identityOf('B', pkiB, ['b.test']);
  return {
    keyd,
    credentials,
    events,
    failures,
    idA,
    idB,
    advance: (ms: number) => (clock += ms),
    now: () => clock,
  };
}

const spkiHash = (credential: Uint8Array) => createHash('sha256').update(credential).digest('hex');
const settle = () => new Promise((resolve) => setImmediate(resolve));

test('obtains a credential for an identity whose leaf allows delegation, not for one whose leaf does not', async () => {
  const s = setup();
  assert.equal(s.credentials.offerFor('a.test', s.idA), undefined, 'none yet: being obtained');
  assert.equal(s.keyd.requests.length, 1);
  assert.equal(s.credentials.offerFor('a.test', s.idA), undefined);
  assert.equal(s.keyd.requests.length, 1, 'one request in flight, not one per handshake');
  await s.credentials.whenHeld('A');
  const offer = s.credentials.offerFor('a.test', s.idA)!;
  assert.ok(offer);
  const request = s.keyd.requests[0]!;
  assert.equal(request.serverName, 'a.test');
  assert.equal(request.dcCertVerifyAlgorithm, 0x0403);
  assert.equal(request.lifetimeSeconds, LIFETIME_S);
  assert.equal(createPublicKey({ key: Buffer.from(request.subjectPublicKeyInfo), format: 'der', type: 'spki' }).asymmetricKeyDetails?.namedCurve, 'prime256v1');
  const expiry = s.events[0]![1]!;
  assert.ok(Math.abs(expiry - (s.now() + LIFETIME_S * 1000)) < 1000, 'expiry = now + lifetime');
  assert.equal(offer.notAfter, expiry - MARGIN_S * 1000, 'served until the margin before expiry');

  assert.equal(s.credentials.offerFor('plain.test', identityOf('P', plain, ['plain.test'])), undefined);
  assert.equal(s.keyd.requests.length, 1, 'no request for a leaf without DelegationUsage');
  s.credentials.close();
});

test('renewal: after 50 % + jitter of the lifetime a new key is certified; the current one serves until it is in place', async () => {
  const s = setup(() => 0.999); // renew near 75 % of the lifetime
  s.credentials.offerFor('a.test', s.idA);
  await s.credentials.whenHeld('A');
  const first = s.credentials.offerFor('a.test', s.idA)!;
  s.advance(LIFETIME_S * 1000 * 0.6);
  s.credentials.check();
  assert.equal(s.credentials.offerFor('a.test', s.idA), first, 'not due yet at 60 % (jitter put it near 75 %)');
  assert.equal(s.keyd.requests.length, 1);
  s.keyd.hold = true;
  s.advance(LIFETIME_S * 1000 * 0.16);
  s.credentials.check();
  assert.equal(s.keyd.requests.length, 2, 'renewal asked at 76 %');
  assert.notDeepEqual(s.keyd.requests[1]!.subjectPublicKeyInfo, s.keyd.requests[0]!.subjectPublicKeyInfo, 'a fresh key pair');
  assert.equal(s.credentials.offerFor('a.test', s.idA), first, 'the current credential serves while the new one is obtained');
  assert.equal(s.keyd.requests.length, 2, 'and no second renewal starts meanwhile');
  s.keyd.release();
  await settle();
  const second = s.credentials.offerFor('a.test', s.idA)!;
  assert.notEqual(second, first);
  assert.notEqual(spkiHash(second.credential), spkiHash(first.credential));
  s.credentials.close();
});

test('expiry: keyd unreachable at renewal → the credential is served until its margin, then dropped', async () => {
  const s = setup();
  s.credentials.offerFor('a.test', s.idA);
  await s.credentials.whenHeld('A');
  const offer = s.credentials.offerFor('a.test', s.idA)!;
  s.keyd.failWith = new Error('keyd is unavailable');
  s.advance(LIFETIME_S * 1000 * 0.55);
  s.credentials.check();
  await settle();
  assert.deepEqual(s.failures, ['keyd is unavailable']);
  assert.equal(s.credentials.offerFor('a.test', s.idA), offer, 'still valid: still served');
  assert.equal(s.keyd.requests.length, 2, 'retries wait retryMs, not every handshake');
  s.advance(offer.notAfter - s.now() - 1);
  assert.equal(s.credentials.fallback('a.test')?.delegatedCredential, offer, 'fallback while valid');
  s.advance(1);
  s.credentials.check();
  assert.equal(s.credentials.fallback('a.test'), undefined, 'no fallback once expired');
  assert.equal(s.credentials.offerFor('a.test', s.idA), undefined, 'an expired credential is never offered');
  assert.deepEqual(s.events.at(-1), ['A', undefined], 'the expiry metric is removed');
  s.credentials.close();
});

test("keyd's change notice drops the credentials of the identities serving the name, and only those", async () => {
  const s = setup();
  s.credentials.offerFor('a.test', s.idA);
  s.credentials.offerFor('b.test', s.idB);
  await Promise.all([s.credentials.whenHeld('A'), s.credentials.whenHeld('B')]);
  s.keyd.emit('change', { names: ['a.test'] });
  assert.equal(s.credentials.fallback('a.test'), undefined);
  assert.ok(s.credentials.fallback('b.test'));
  assert.equal(s.credentials.size, 1);
  s.keyd.emit('change', { names: [] }); // "anything may have changed"
  assert.equal(s.credentials.size, 0);
  s.credentials.close();
});

test('a changed leaf for the key drops the credential bound to the old one', async () => {
  const s = setup();
  s.credentials.offerFor('a.test', s.idA);
  await s.credentials.whenHeld('A');
  const reissued = { ...s.idA, certificateChain: pkiB.chainDer };
  assert.equal(s.credentials.offerFor('a.test', reissued), undefined, 'not served with another leaf');
  assert.equal(s.keyd.requests.length, 2, 'a new one is asked for');
  s.credentials.close();
});

test("answers the edge refuses: another certificate, another key, a signature that does not verify", async () => {
  for (const [what, tamper, message] of [
    ['another certificate', (r: DelegationReply) => ({ ...r, certificate: pkiB.leafCertDer }), /another certificate/],
    ['another key', (r: DelegationReply) => ({ ...r, delegatedCredential: Buffer.concat([r.delegatedCredential.subarray(0, 40), Buffer.of(r.delegatedCredential[40]! ^ 1), r.delegatedCredential.subarray(41)]) }), /another key/],
    ['a bad signature', (r: DelegationReply) => ({ ...r, delegatedCredential: Buffer.concat([r.delegatedCredential.subarray(0, -1), Buffer.of(r.delegatedCredential.at(-1)! ^ 1)]) }), /does not verify/],
  ] as const) {
    const s = setup();
    s.keyd.tamper = tamper;
    s.credentials.offerFor('a.test', s.idA);
    await settle();
    assert.equal(s.credentials.size, 0, what);
    assert.match(s.failures[0] ?? '', message, what);
    s.credentials.close();
  }
});

test('an identity no handshake used since its credential was issued is not renewed', async () => {
  const s = setup();
  s.credentials.offerFor('a.test', s.idA);
  await s.credentials.whenHeld('A');
  // Nothing was served with the credential since it was issued.
  s.advance(LIFETIME_S * 1000 * 0.8);
  s.credentials.check();
  assert.equal(s.keyd.requests.length, 1);
  s.credentials.close();
});

test('keyd\'s clock far behind or ahead of the edge\'s: an answer unusable on the edge\'s clock is refused and retried after retryMs, not every handshake', async () => {
  let clock = Date.now();
  let keydBehindMs = 2 * LIFETIME_S * 1000;
  const keyd = new StandInKeyd(new Map([['A', pkiA]]), () => clock - keydBehindMs);
  const failures: string[] = [];
  const credentials = new DelegatedCredentials(keyd, {
    lifetimeSeconds: LIFETIME_S,
    expiryMarginSeconds: MARGIN_S,
    checkIntervalMs: 0,
    retryMs: 10_000,
    now: () => clock,
    random: () => 0,
    onIssue: (outcome, _keyRef, err) => outcome === 'failed' && failures.push(err!.message),
  });
  const idA = identityOf('A', pkiA, ['a.test']);
  for (let i = 0; i < 5; i++) {
    assert.equal(credentials.offerFor('a.test', idA), undefined, 'nothing served: what keyd issued is expired on the edge\'s clock');
    await settle();
  }
  assert.equal(keyd.requests.length, 1, 'one issuance, then the retry delay: not one per handshake');
  assert.equal(failures.length, 1);
  assert.match(failures[0]!, /already past .* keyd's clock is behind/);
  // Control: keyd's clock corrected; after the retry delay the next handshake obtains a usable credential.
  keydBehindMs = 0;
  clock += 10_000 * 1.5;
  credentials.offerFor('a.test', idA);
  await credentials.whenHeld('A');
  assert.ok(credentials.offerFor('a.test', idA));
  assert.equal(keyd.requests.length, 2);
  credentials.close();

  // keyd 7 days ahead: the credential would expire more than 7 days from the edge's (and its
  // clients') now, and every client offering delegated credentials would abort (§4.1.3).
  const ahead = new StandInKeyd(new Map([['A', pkiA]]), () => clock + 7 * 86400_000);
  const aheadFailures: string[] = [];
  const aheadCredentials = new DelegatedCredentials(ahead, {
    lifetimeSeconds: LIFETIME_S,
    checkIntervalMs: 0,
    now: () => clock,
    onIssue: (outcome, _keyRef, err) => outcome === 'failed' && aheadFailures.push(err!.message),
  });
  aheadCredentials.offerFor('a.test', idA);
  await settle();
  assert.equal(aheadCredentials.offerFor('a.test', idA), undefined);
  assert.match(aheadFailures[0] ?? '', /more than 7 days.*ahead/);
  aheadCredentials.close();
});

test('keyd certifies our key for another dcCertVerifyAlgorithm than asked (signed correctly): refused, nothing served', async () => {
  const s = setup();
  s.keyd.certifyScheme = 0x0804; // rsa_pss_rsae_sha256: our P-256 key cannot sign with it
  s.credentials.offerFor('a.test', s.idA);
  await settle();
  assert.equal(s.credentials.size, 0);
  assert.deepEqual(s.failures, ['keyd certified another key or scheme than the one asked for']);
  assert.equal(s.credentials.offerFor('a.test', s.idA), undefined);
  // Control: keyd certifies what was asked; after the retry delay it is held and served.
  s.keyd.certifyScheme = undefined;
  s.advance(10_000 * 1.5);
  s.credentials.offerFor('a.test', s.idA);
  await s.credentials.whenHeld('A');
  assert.ok(s.credentials.offerFor('a.test', s.idA));
  s.credentials.close();
});

test('maxIdentities bounds the identities holding credentials: one more gets none (no key pair, no keyd request) until a slot is free', async () => {
  const s = setup();
  s.credentials.close();
  const credentials = new DelegatedCredentials(s.keyd, { lifetimeSeconds: LIFETIME_S, expiryMarginSeconds: MARGIN_S, checkIntervalMs: 0, maxIdentities: 1, now: s.now, random: () => 0 });
  credentials.offerFor('a.test', s.idA);
  await credentials.whenHeld('A');
  assert.equal(credentials.offerFor('b.test', s.idB), undefined);
  assert.equal(s.keyd.requests.length, 1, 'no issuance for the identity past the bound');
  assert.equal(credentials.size, 1);
  // Control: once A's credential is dropped (keyd's change notice), B gets one.
  s.keyd.emit('change', { names: ['a.test'] });
  credentials.offerFor('b.test', s.idB);
  await credentials.whenHeld('B');
  assert.equal(s.keyd.requests.at(-1)!.keyRef, 'B');
  credentials.close();
});

test('fallback (keyd unreachable) never hands out a credential past its serving time, even before the periodic check drops it', async () => {
  const s = setup();
  s.credentials.offerFor('a.test', s.idA);
  await s.credentials.whenHeld('A');
  const offer = s.credentials.offerFor('a.test', s.idA)!;
  s.advance(offer.notAfter - s.now() - 1);
  assert.equal(s.credentials.fallback('a.test')?.delegatedCredential, offer, 'control: 1 ms before, still served');
  s.advance(1);
  assert.equal(s.credentials.fallback('a.test'), undefined, 'at notAfter (expiry less the margin): none');
  s.credentials.close();
});
