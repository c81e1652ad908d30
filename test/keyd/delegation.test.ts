/**
 * keyd's issueDelegatedCredential (opcode 0x06, RFC 9345): every refusal the operation
 * promises (docs/KEYD.md "Delegated credentials"), each next to the positive control, and
 * the issued credential checked by the independent verifier in test/helpers/dc-verifier.ts.
 * A refusal signs nothing and writes no issuance line.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AuditLog, type AuditEntry } from '../../src/keyd/audit.js';
import { KeydClient, type KeydError } from '../../src/keyd/client.js';
import type { RunningKeyd } from '../../src/keyd/daemon.js';
import { issueDelegatedCredential } from '../../src/keyd/delegation.js';
import type { KeyEntry } from '../../src/keyd/keyring.js';
import { signWithScheme } from '../../src/tls/signer.js';
import { validateDelegatedCredential } from '../helpers/dc-verifier.js';
import { makeTestPki, type TestPki, type TestPkiOptions } from '../helpers/pki.js';
import { LOCAL, scratch, startTestKeyd } from './fixtures.js';

const ECDSA_P256 = 0x0403;
const POLICY_SECONDS = 7200;

let s: Awaited<ReturnType<typeof scratch>>;
let keyd: RunningKeyd;
let local: KeydClient;
let edgeA: KeydClient;
const pkis: Record<string, TestPki> = {};
const keyRefs: Record<string, string> = {};

const p256Spki = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey.export({ format: 'der', type: 'spki' });

async function readAudit(): Promise<AuditEntry[]> {
  const log = await AuditLog.open(join(s.dir, 'data', 'audit.log'));
  try {
    return await log.read({ limit: 10_000 });
  } finally {
    await log.close();
  }
}

before(async () => {
  s = await scratch('keyd-dc-');
  keyd = await startTestKeyd(s.dir, s.machineIdPath, {
    config: {
      principals: { 'edge-a': { socket: join(s.dir, 'edge-a.sock'), mode: '0600', names: ['dc.test'] } },
      limits: { delegatedCredentialMaxSeconds: POLICY_SECONDS },
    },
  });
  const variants: Record<string, TestPkiOptions> = {
    'dc.test': { delegationUsage: 'non-critical' },
    'rsa.test': { keyType: 'rsa2048', delegationUsage: 'non-critical' },
    'nodu.test': {},
    'crit.test': { delegationUsage: 'critical' },
    'dunull.test': { delegationUsage: 'not-null' },
    'nods.test': { delegationUsage: 'non-critical', keyUsage: x509.KeyUsageFlags.keyAgreement },
    'short.test': { delegationUsage: 'non-critical', validityMs: 30 * 60_000 },
  };
  for (const [name, options] of Object.entries(variants)) {
    const pki = await makeTestPki({ commonName: name, extraNames: [name], ...options });
    pkis[name] = pki;
    await keyd.adminService.put(LOCAL, [name], pki.leafKey, pki.chainDer);
  }
  local = await KeydClient.connect({ socketPath: keyd.socketPath });
  for (const name of Object.keys(variants)) keyRefs[name] = (await local.identity(name))!.keyRef;
  edgeA = await KeydClient.connect({ socketPath: keyd.principalSockets['edge-a']! });
});

after(async () => {
  local?.close();
  edgeA?.close();
  await keyd?.close();
  await s?.cleanup();
});

function issue(name: string, overrides: { keyRef?: string; scheme?: number; lifetime?: number; spki?: Uint8Array; client?: KeydClient } = {}) {
  return (overrides.client ?? local).issueDelegatedCredential({
    keyRef: overrides.keyRef ?? keyRefs[name]!,
    serverName: name,
    dcCertVerifyAlgorithm: overrides.scheme ?? ECDSA_P256,
    lifetimeSeconds: overrides.lifetime ?? 3600,
    subjectPublicKeyInfo: overrides.spki ?? p256Spki(),
  });
}

const refusal = (p: Promise<unknown>) => p.then(() => 'issued', (e: KeydError) => `${e.code}: ${e.message}`);

test('issues a credential an independent RFC 9345 verifier accepts (ECDSA and RSA certificates), one audit line each', async () => {
  for (const [name, algorithm] of [
    ['dc.test', 0x0403],
    ['rsa.test', 0x0804],
  ] as const) {
    const spki = p256Spki();
    const before = Date.now();
    const reply = await issue(name, { spki, lifetime: 3600 });
    assert.deepEqual(Buffer.from(reply.certificate), Buffer.from(pkis[name]!.leafCertDer), 'bound to the leaf keyd holds');
    const { dc, expiry } = validateDelegatedCredential(Buffer.from(reply.delegatedCredential), Buffer.from(reply.certificate), Date.now(), ECDSA_P256);
    assert.deepEqual(dc.spki, spki);
    assert.equal(dc.algorithm, algorithm);
    assert.ok(expiry > before + 3600_000 - 1000 && expiry <= Date.now() + 3600_000, `expiry ${new Date(expiry).toISOString()} is an hour from now, never later`);
  }
  // The edge's principal may delegate for its granted name.
  await issue('dc.test', { client: edgeA });
  const lines = (await readAudit()).filter((e) => e.op === 'delegate');
  assert.equal(lines.length, 3);
  assert.ok(lines.every((e) => e.ok && e.caller.kind === 'client'));
  assert.deepEqual(lines.map((e) => e.names), [['dc.test'], ['rsa.test'], ['dc.test']]);
  assert.match(lines[0]!.message!, /key sha256:[0-9a-f]{32} signs ecdsa_secp256r1_sha256, certified with ecdsa_secp256r1_sha256, expires /);
});

test('refuses a certificate without DelegationUsage, with it critical or not NULL, or without digitalSignature', async () => {
  assert.match(await refusal(issue('nodu.test')), /^KEYD_DC_NOT_ALLOWED: .*no DelegationUsage extension/);
  assert.match(await refusal(issue('crit.test')), /^KEYD_DC_NOT_ALLOWED: .*critical/);
  assert.match(await refusal(issue('dunull.test')), /^KEYD_DC_NOT_ALLOWED: .*DelegationUsage is not NULL/);
  assert.match(await refusal(issue('nods.test')), /^KEYD_DC_NOT_ALLOWED: .*digitalSignature/);
});

test('refuses a lifetime of 0, beyond 7 days, beyond the operator policy, or outliving the certificate', async () => {
  assert.match(await refusal(issue('dc.test', { lifetime: 0 })), /^KEYD_DC_LIFETIME: .*at least 1 second/);
  assert.match(await refusal(issue('dc.test', { lifetime: 7 * 86400 + 1 })), /^KEYD_DC_LIFETIME: .*7 days/);
  assert.match(await refusal(issue('dc.test', { lifetime: POLICY_SECONDS + 1 })), /^KEYD_DC_LIFETIME: .*policy of 7200 s/);
  assert.equal(await refusal(issue('dc.test', { lifetime: POLICY_SECONDS })), 'issued', 'control: the policy maximum itself');
  assert.match(await refusal(issue('short.test', { lifetime: 3600 })), /^KEYD_DC_LIFETIME: .*outlive/);
  assert.equal(await refusal(issue('short.test', { lifetime: 600 })), 'issued', 'control: within the certificate');
});

/** dc.test's key as a keyd key entry signing in this process, and its leaf's notBefore: issueDelegatedCredential called directly. */
function dcUnitEntry(): { pki: TestPki; notBefore: number; entry: KeyEntry } {
  const pki = pkis['dc.test']!;
  const notBefore = new x509.X509Certificate(pki.leafCertDer).notBefore.getTime();
  const entry = {
    id: 'dc-unit',
    chain: pki.chainDer,
    schemes: [ECDSA_P256],
    key: { signNow: (scheme: number, content: Uint8Array) => signWithScheme(pki.leafKey, scheme, content) },
  } as unknown as KeyEntry;
  return { pki, notBefore, entry };
}

test('a 7-day credential never expires more than 7 days from the moment keyd issued it (RFC 9345 §4, §4.1.3)', async () => {
  // issueDelegatedCredential itself, with keyd's clock injected: 1 ms past a whole second
  // since the leaf's notBefore, where rounding valid_time up would add 999 ms.
  const { pki, notBefore, entry } = dcUnitEntry();
  const week = 7 * 86400;
  for (const offsetMs of [1, 500, 999, 1000]) {
    const now = notBefore + 60_000 + offsetMs;
    const issued = await issueDelegatedCredential(
      entry,
      { keyRef: 'dc-unit', serverName: 'dc.test', dcCertVerifyAlgorithm: ECDSA_P256, lifetimeSeconds: week, subjectPublicKeyInfo: p256Spki() },
      week,
      now,
    );
    const { expiry } = validateDelegatedCredential(issued.delegatedCredential, Buffer.from(pki.leafCertDer), now, ECDSA_P256);
    assert.ok(expiry <= now + week * 1000, `offset ${offsetMs} ms: expires ${expiry - now - week * 1000} ms past 7 days`);
    assert.ok(expiry > now + week * 1000 - 1000, 'control: at most a second short of the lifetime asked');
    assert.equal(issued.notAfter.getTime(), expiry);
  }
});

test('refuses to delegate from a certificate that is not valid yet (its notBefore is in keyd\'s future)', async () => {
  // valid_time counts from the leaf's notBefore (RFC 9345 §4): before it, a credential would
  // be issued for a certificate no client accepts yet. keyd's clock is injected.
  const { pki, notBefore, entry } = dcUnitEntry();
  const at = (now: number) =>
    issueDelegatedCredential(entry, { keyRef: 'dc-unit', serverName: 'dc.test', dcCertVerifyAlgorithm: ECDSA_P256, lifetimeSeconds: 3600, subjectPublicKeyInfo: p256Spki() }, 3600, now);
  assert.match(await refusal(at(notBefore - 1000)), /^KEYD_DC_LIFETIME: .*not valid yet/);
  assert.equal(await refusal(at(notBefore + 1000)), 'issued', 'control: once the certificate is valid');
});

test('refuses RSA-PKCS1 and rsa_pss_rsae schemes, and an SPKI that does not parse, is not canonical or is not the scheme\'s key', async () => {
  assert.match(await refusal(issue('dc.test', { scheme: 0x0401 })), /^KEYD_SCHEME_UNSUPPORTED: rsa_pkcs1_sha256 is RSA-PKCS1/);
  assert.match(await refusal(issue('dc.test', { scheme: 0x0201 })), /^KEYD_SCHEME_UNSUPPORTED: .*RSA-PKCS1/);
  const rsaSpki = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'der', type: 'spki' });
  assert.match(await refusal(issue('dc.test', { scheme: 0x0804, spki: rsaSpki })), /^KEYD_SCHEME_UNSUPPORTED: .*rsa_pss_rsae/);
  assert.match(await refusal(issue('dc.test', { spki: Buffer.from('not a key') })), /^KEYD_BAD_SPKI: .*does not parse/);
  assert.match(await refusal(issue('dc.test', { spki: Buffer.concat([p256Spki(), Buffer.of(0)]) })), /^KEYD_BAD_SPKI/);
  const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ format: 'der', type: 'spki' });
  assert.match(await refusal(issue('dc.test', { spki: p384 })), /^KEYD_BAD_SPKI: .*secp384r1.*cannot sign with ecdsa_secp256r1_sha256/);
  assert.equal(await refusal(issue('dc.test', { scheme: 0x0503, spki: p384 })), 'issued', 'control: the P-384 key with its own scheme');
  const ed = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' });
  assert.equal(await refusal(issue('dc.test', { scheme: 0x0807, spki: ed })), 'issued', 'control: Ed25519');
});

test('refuses a client not granted the name, and a key that does not serve it; refusals sign nothing and write no issuance line', async () => {
  const before = (await readAudit()).filter((e) => e.op === 'delegate').length;
  const signaturesBefore = (await keyd.adminService.stats(LOCAL))['edge-a']?.signatures ?? 0;
  assert.match(await refusal(issue('rsa.test', { client: edgeA })), /^KEYD_NOT_AUTHORISED: client edge-a may not use rsa\.test/);
  assert.match(await refusal(issue('dc.test', { client: edgeA, keyRef: keyRefs['rsa.test'] })), /^KEYD_NOT_AUTHORISED: key .* does not serve dc\.test/);
  assert.match(await refusal(issue('dc.test', { keyRef: 'no-such-key' })), /^KEYD_UNKNOWN_KEY/);
  assert.equal((await readAudit()).filter((e) => e.op === 'delegate').length, before);
  const stats = (await keyd.adminService.stats(LOCAL))['edge-a']!;
  assert.equal(stats.signatures, signaturesBefore);
  assert.ok(stats.refusals >= 2, 'refusals are counted');
});

test('limits.delegatedCredentialsPerMinute: issuances beyond it are KEYD_THROTTLED (limit delegation-rate); 0 issues none', async () => {
  const t = await scratch('keyd-dc-rate-');
  const pki = await makeTestPki({ commonName: 'rate.test', extraNames: ['rate.test'], delegationUsage: 'non-critical' });
  for (const perMinute of [2, 0]) {
    const k = await startTestKeyd(t.dir, t.machineIdPath, { config: { limits: { delegatedCredentialsPerMinute: perMinute } } });
    const c = await KeydClient.connect({ socketPath: k.socketPath });
    try {
      await k.adminService.put(LOCAL, ['rate.test'], pki.leafKey, pki.chainDer);
      const keyRef = (await c.identity('rate.test'))!.keyRef;
      const outcomes: string[] = [];
      for (let i = 0; i < 3; i++) {
        outcomes.push(await refusal(issue('rate.test', { client: c, keyRef })));
      }
      const expected = perMinute === 2 ? ['issued', 'issued'] : [];
      // Positive control (2 per minute): the burst is issued; then the bucket is empty.
      assert.deepEqual(outcomes.slice(0, expected.length), expected, `${perMinute}/min`);
      for (const o of outcomes.slice(expected.length)) assert.match(o, /^KEYD_THROTTLED: .*delegated credentials per minute/, `${perMinute}/min`);
    } finally {
      c.close();
      await k.close();
    }
  }
  await t.cleanup();
});
