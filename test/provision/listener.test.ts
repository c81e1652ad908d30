import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sealPrivateKey, type SealedKey } from '../../src/provision/hpke-seal.js';
import { main as runRemoteAdmin } from '../../src/cli/admin.js';
import { parsePemChain, type RemoteAdminClient } from '../../src/provision/remote-client.js';
import { makePki, operatorFlags, startKeydForTest, SUBJECTS, type Keyd, type Pki } from './harness.js';
import { issue, makeCa, signCsr, type Issued } from './pki.js';
import { montgomeryKeyPair } from '../helpers/montgomery-keys.js';
import { normalizeSubject } from '../../src/provision/roles.js';

/** Integration: the provisioning listener on a real keyd admin core, driven by the CLI and by crafted clients. */

let pki: Pki;
let keyd: Keyd;
let siteCa: Awaited<ReturnType<typeof makeCa>>;
let site: Issued; // a server certificate + key to install
let siteChain: Uint8Array[];

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runRemoteAdmin(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

/** Connection flags for one operator, files in keyd's temp dir. */
function as(who: keyof Pki & string, extra: string[] = []): Promise<string[]> {
  return operatorFlags(keyd, pki, who, extra);
}

async function sealFor(client: RemoteAdminClient, names: string[], overrides: { now?: number } = {}): Promise<SealedKey> {
  const pkcs8 = createPrivateKey(site.keyPem).export({ format: 'der', type: 'pkcs8' });
  return sealPrivateKey({
    keydPublicKey: client.keydPublicKey,
    operator: client.welcome.operator,
    binding: { names, chainDer: siteChain },
    privateKeyPkcs8: pkcs8,
    ...(overrides.now !== undefined ? { now: overrides.now } : {}),
  });
}

function putArgs(names: string[], sealed: SealedKey): Record<string, unknown> {
  return { names, chain: siteChain.map((c) => Buffer.from(c).toString('base64')), sealed };
}

async function assertRefused(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: Error & { code?: string }) => {
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** The newest audit entry: a refusal with this code, written by keyd. */
async function assertAudited(code: string, op: string, callerId?: string): Promise<void> {
  // The audit append after a greeting refusal races the client's read of the greeting.
  for (let i = 0; i < 50; i++) {
    const last = (await keyd.audit()).at(-1);
    if (last?.code === code) {
      assert.equal(last.ok, false);
      assert.equal(last.op, op);
      if (callerId !== undefined) assert.equal(last.caller.id, callerId);
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`no audit entry with code ${code}; last: ${JSON.stringify((await keyd.audit()).at(-1))}`);
}

before(async () => {
  pki = await makePki();
  keyd = await startKeydForTest(pki);
  siteCa = await makeCa('CN=Site CA');
  site = await issue(siteCa, 'CN=www.example.com', { usage: 'server', dnsNames: ['www.example.com'] });
  siteChain = parsePemChain(site.certPem + siteCa.certPem, 'site');
});

after(async () => {
  await keyd.close();
});

describe('provisioning over mutually authenticated TLS', () => {
  it('trust shows keyd\'s provisioning fingerprint and pins it; a second trust keeps it', async () => {
    const first = await cli(await as('alice', ['trust']));
    assert.equal(first.code, 0, first.err);
    assert.match(first.out, new RegExp(`provisioning key ${keyd.listener.fingerprint.replace(/[+/]/g, '.')}`));
    assert.match(first.out, /role admin/);
    assert.match(first.out, /pinned in .*known_keyd \(added\)/);
    const pins = await readFile(join(keyd.dir, 'known_keyd'), 'utf8');
    assert.equal(pins, `127.0.0.1:${keyd.listener.port} ${keyd.listener.fingerprint}\n`);
    const second = await cli(await as('alice', ['trust']));
    assert.equal(second.code, 0, second.err);
    assert.match(second.out, /already pinned/);
  });

  it('put seals the key to keyd, keyd installs it, list/show read it back', async () => {
    const keyFile = join(keyd.dir, 'site.key');
    const chainFile = join(keyd.dir, 'site-chain.pem');
    await writeFile(keyFile, site.keyPem, { mode: 0o600 });
    await writeFile(chainFile, site.certPem + siteCa.certPem);
    const put = await cli(await as('alice', ['put', 'www.example.com,example.com', '--key', keyFile, '--chain', chainFile]));
    assert.equal(put.code, 0, put.err);
    assert.match(put.out, /installed ecdsa-p256 .* for www\.example\.com, example\.com/);
    assert.match(put.out, /can now be deleted/);
    const entry = keyd.keyring.owner('www.example.com');
    assert.ok(entry, 'keyd serves the name');
    // keyd holds exactly the operator's key.
    assert.deepEqual(
      entry.key.publicKey.export({ format: 'der', type: 'spki' }),
      createPublicKey(site.keyPem).export({ format: 'der', type: 'spki' }),
    );
    const list = await cli(await as('bob', ['list']));
    assert.equal(list.code, 0, list.err);
    assert.match(list.out, /NAMES\s+TYPE\s+SKI\s+NOT AFTER\s+ADDED/);
    assert.match(list.out, /example\.com,www\.example\.com|www\.example\.com,example\.com/);
    const show = await cli(await as('bob', ['show', 'example.com', '--json']));
    assert.equal(show.code, 0, show.err);
    assert.equal(JSON.parse(show.out).keyType, 'ecdsa-p256');
    const audit = (await keyd.audit()).find((e) => e.op === 'put' && e.ok);
    assert.equal(audit?.caller.kind, 'operator');
    assert.equal(audit?.caller.id, SUBJECTS.alice);
  });

  it('gen creates the key inside keyd and returns a CSR; chain and delete complete the cycle', async () => {
    const csrFile = join(keyd.dir, 'api.csr');
    const gen = await cli(await as('alice', ['gen', 'api.example.com', '--type', 'ecdsa-p384', '--subject', 'CN=api.example.com', '--csr', csrFile]));
    assert.equal(gen.code, 0, gen.err);
    const csrPem = await readFile(csrFile, 'utf8');
    assert.match(csrPem, /BEGIN CERTIFICATE REQUEST/);
    const chainFile = join(keyd.dir, 'api-chain.pem');
    await writeFile(chainFile, (await signCsr(siteCa, csrPem, ['api.example.com'])) + siteCa.certPem);
    const chain = await cli(await as('alice', ['chain', 'api.example.com', chainFile]));
    assert.equal(chain.code, 0, chain.err);
    assert.equal(keyd.keyring.owner('api.example.com')?.chain.length, 2);
    const del = await cli(await as('alice', ['delete', 'api.example.com']));
    assert.equal(del.code, 0, del.err);
    assert.equal(keyd.keyring.owner('api.example.com'), undefined);
    const stats = await cli(await as('bob', ['stats', '--json']));
    assert.equal(stats.code, 0, stats.err);
    assert.equal(typeof JSON.parse(stats.out), 'object');
    const audit = await cli(await as('bob', ['audit', '--limit', '5']));
    assert.equal(audit.code, 0, audit.err);
    assert.match(audit.out, /delete\s+operator:CN=alice, O=Example Ops\s+api\.example\.com\s+ok/);
  });
});

describe('refusals: precise on both sides, nothing stored, audited', () => {
  it('no client certificate', async () => {
    const before = keyd.keyring.size;
    await assertRefused(keyd.connect(undefined), 'PROVISION_NO_CLIENT_CERT', /keyd refused: no client certificate/);
    await assertAudited('PROVISION_NO_CLIENT_CERT', 'connect', '(no certificate)');
    assert.equal(keyd.keyring.size, before);
  });

  it('a certificate from another CA (even with an admin\'s subject)', async () => {
    // The refusal names the peer's issuer, never the operator CA (an unauthenticated peer learns nothing).
    await assertRefused(keyd.connect(pki.mallory), 'PROVISION_UNTRUSTED_CLIENT_CERT', /issued by "CN=Foreign CA" is not from keyd's operator CA \(/);
    await assert.rejects(keyd.connect(pki.mallory), (err: Error) => !err.message.includes('Example Operator CA'));
    await assertAudited('PROVISION_UNTRUSTED_CLIENT_CERT', 'connect', SUBJECTS.alice);
    const cli1 = await cli(await as('mallory', ['list']));
    assert.equal(cli1.code, 1);
    assert.match(cli1.err, /\[PROVISION_UNTRUSTED_CLIENT_CERT\]/);
  });

  it('an operator CA certificate without clientAuth in its extendedKeyUsage: refused as such, not as another CA\'s', async () => {
    const serverOnly = await issue(pki.operatorCa, SUBJECTS.alice, { usage: 'server' });
    await assert.rejects(keyd.connect(serverOnly), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'PROVISION_UNTRUSTED_CLIENT_CERT');
      assert.match(err.message, /operator certificate "CN=alice, O=Example Ops" issued by "CN=Example Operator CA" is not valid for TLS client authentication \(INVALID_PURPOSE/);
      assert.doesNotMatch(err.message, /is not from keyd's operator CA/);
      return true;
    });
    await assertAudited('PROVISION_UNTRUSTED_CLIENT_CERT', 'connect', SUBJECTS.alice);
    // Control: the same subject with a clientAuth certificate from the operator CA connects.
    (await keyd.connect(pki.alice)).close();
  });

  it('an expired operator certificate', async () => {
    await assertRefused(keyd.connect(pki.old), 'PROVISION_CLIENT_CERT_EXPIRED', /operator certificate "CN=old, O=Example Ops" expired on /);
    await assertAudited('PROVISION_CLIENT_CERT_EXPIRED', 'connect', SUBJECTS.old);
  });

  it('an operator with a valid certificate but no role', async () => {
    await assertRefused(keyd.connect(pki.carol), 'PROVISION_UNKNOWN_OPERATOR', /"CN=carol, O=Example Ops" has a valid certificate but no role/);
    await assertAudited('PROVISION_UNKNOWN_OPERATOR', 'connect', SUBJECTS.carol);
  });

  it('an auditor trying put, gen, chain and delete', async () => {
    const before = keyd.keyring.size;
    const keyFile = join(keyd.dir, 'site.key');
    const chainFile = join(keyd.dir, 'site-chain.pem');
    const put = await cli(await as('bob', ['put', 'evil.example.com', '--key', keyFile, '--chain', chainFile]));
    assert.equal(put.code, 1);
    assert.match(put.err, /operator "CN=bob, O=Example Ops" has role auditor, which may not put \[PROVISION_FORBIDDEN\]/);
    await assertAudited('PROVISION_FORBIDDEN', 'put', SUBJECTS.bob);
    const client = await keyd.connect(pki.bob);
    try {
      await assertRefused(client.delete('www.example.com'), 'PROVISION_FORBIDDEN');
      await assertRefused(client.generate('x.example.com', 'ed25519', 'CN=x'), 'PROVISION_FORBIDDEN');
      await assertRefused(client.setChain('www.example.com', siteChain), 'PROVISION_FORBIDDEN');
    } finally {
      client.close();
    }
    assert.equal(keyd.keyring.size, before);
    assert.ok(keyd.keyring.owner('www.example.com'));
    assert.equal(keyd.keyring.owner('evil.example.com'), undefined);
  });

  it('an audit filter whose limit is not a positive integer is refused, not read in full', async () => {
    const client = await keyd.connect(pki.bob);
    try {
      // Positive control: a numeric limit bounds the answer.
      const two = (await client.audit({ limit: 2 })) as unknown[];
      assert.equal(two.length, 2);
      // The attack: a string limit used to slip past the reader's cap (Math.min('x', …) is
      // NaN), so keyd held every entry of every audit file for one request.
      for (const limit of ['x', {}, 0, -1, 1.5] as unknown[]) {
        await assertRefused(client.audit({ limit } as unknown as { limit: number }), 'KEYD_BAD_REQUEST', /"limit" must be a positive integer/);
      }
      await assertRefused(client.audit({ since: 5 } as unknown as { since: string }), 'KEYD_BAD_REQUEST', /"since"/);
    } finally {
      client.close();
    }
    await assertAudited('KEYD_BAD_REQUEST', 'audit', SUBJECTS.bob);
  });

  it('a wrong keyd fingerprint (given, or pinned) is refused by the CLI and audited by keyd', async () => {
    const other = 'SHA256:' + 'A'.repeat(43);
    const given = await cli(await as('alice', ['--keyd-fingerprint', other, 'list']));
    assert.equal(given.code, 1);
    assert.match(given.err, /keyd's provisioning key is SHA256:\S+ but --keyd-fingerprint expects SHA256:A{43}: refusing/);
    assert.match(given.err, /\[PROVISION_KEYD_FINGERPRINT_MISMATCH\]/);
    await assertAudited('PROVISION_KEYD_FINGERPRINT_MISMATCH', 'connect', SUBJECTS.alice);
    // A changed key against the pin file: refused loudly, put never sends the key.
    const pins = join(keyd.dir, 'known_keyd');
    const saved = await readFile(pins, 'utf8');
    await writeFile(pins, `127.0.0.1:${keyd.listener.port} ${other}\n`);
    const before = keyd.keyring.size;
    const put = await cli(await as('alice', ['put', 'pinned.example.com', '--key', join(keyd.dir, 'site.key'), '--chain', join(keyd.dir, 'site-chain.pem')]));
    assert.equal(put.code, 1);
    assert.match(put.err, /known_keyd expects SHA256:A{43}/);
    assert.equal(keyd.keyring.size, before);
    const trust = await cli(await as('alice', ['trust']));
    assert.equal(trust.code, 1);
    assert.match(trust.err, /PROVISION_KEYD_FINGERPRINT_MISMATCH/);
    const replace = await cli(await as('alice', ['trust', '--replace']));
    assert.equal(replace.code, 0, replace.err);
    assert.match(replace.out, /\(replaced\)/);
    assert.equal(await readFile(pins, 'utf8'), saved);
  });

  it('trust --keyd-fingerprint pins keyd only when its key is the one given', async () => {
    // A fresh pin file: nothing pinned yet, so only --keyd-fingerprint stands between keyd's key and the pin.
    const known = join(keyd.dir, 'fresh_known_keyd');
    const args = async (extra: string[]) => (await as('alice', extra)).map((a) => (a.endsWith('known_keyd') ? known : a));
    const refused = await cli(await args(['--keyd-fingerprint', 'SHA256:' + 'B'.repeat(43), 'trust']));
    assert.equal(refused.code, 1);
    assert.match(refused.err, /keyd's provisioning key is SHA256:\S+ but --keyd-fingerprint expects SHA256:B{43}: refusing .*\[PROVISION_KEYD_FINGERPRINT_MISMATCH\]/);
    await assert.rejects(readFile(known, 'utf8'), { code: 'ENOENT' }, 'nothing pinned');
    // Control: keyd's own fingerprint, given out of band, is pinned.
    const pinned = await cli(await args(['--keyd-fingerprint', keyd.listener.fingerprint, 'trust']));
    assert.equal(pinned.code, 0, pinned.err);
    assert.equal(await readFile(known, 'utf8'), `127.0.0.1:${keyd.listener.port} ${keyd.listener.fingerprint}\n`);
  });

  it('the client seals nothing to a keyd whose provisioning key it has not checked against a pin', async () => {
    const client = await keyd.connect(pki.alice);
    try {
      const auditBefore = (await keyd.audit()).length;
      await assertRefused(client.put(['unchecked.example.com'], createPrivateKey(site.keyPem), siteChain), 'PROVISION_KEYD_NOT_TRUSTED', /was not checked against a pin/);
      assert.deepEqual((await keyd.audit()).slice(auditBefore).filter((e) => e.op === 'put'), [], 'no put reached keyd');
      assert.equal(keyd.keyring.owner('unchecked.example.com'), undefined);
      // Control: once the key is checked, the same put installs.
      await client.verifyFingerprint(keyd.listener.fingerprint, 'test');
      await client.put(['unchecked.example.com'], createPrivateKey(site.keyPem), siteChain);
      assert.ok(keyd.keyring.owner('unchecked.example.com'));
    } finally {
      client.close();
    }
  });

  it('the listener speaks TLS 1.3 only: a client limited to TLS 1.2 fails the handshake', async () => {
    const { connect } = await import('node:tls');
    const handshake = (maxVersion: 'TLSv1.2' | 'TLSv1.3') =>
      new Promise<string>((resolve) => {
        const socket = connect({ host: '127.0.0.1', port: keyd.listener.port, ca: pki.keydCa.certPem, cert: pki.alice.certPem, key: pki.alice.keyPem, maxVersion });
        socket.once('secureConnect', () => {
          resolve(socket.getProtocol() ?? '(none)');
          socket.destroy();
        });
        socket.once('error', (err: Error & { code?: string }) => resolve(`error ${err.code ?? err.message}`));
      });
    assert.equal(await handshake('TLSv1.3'), 'TLSv1.3', 'control');
    assert.equal(await handshake('TLSv1.2'), 'error ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION');
  });

  it('keyd\'s TLS certificate not trusted by --ca: the CLI refuses before authenticating', async () => {
    const { RemoteAdminClient } = await import('../../src/provision/remote-client.js');
    await assertRefused(
      RemoteAdminClient.connect({ host: '127.0.0.1', port: keyd.listener.port, ca: pki.foreignCa.certPem, cert: pki.alice.certPem, key: pki.alice.keyPem }),
      'PROVISION_SERVER_NOT_TRUSTED',
      /keyd's TLS certificate at 127\.0\.0\.1:\d+ is not trusted by --ca/,
    );
  });

  it('no pin and no --keyd-fingerprint: refused before anything is sent', async () => {
    const args = (await as('alice', ['list'])).map((a) => (a.endsWith('known_keyd') ? join(keyd.dir, 'empty_known_keyd') : a));
    const result = await cli(args);
    assert.equal(result.code, 1);
    assert.match(result.err, /is not pinned in .*empty_known_keyd: run "delegator admin --server .* trust" first, or give --keyd-fingerprint \[PROVISION_KEYD_NOT_TRUSTED\]/);
  });

  it('a tampered payload (names changed after sealing, ciphertext altered)', async () => {
    const client = await keyd.connect(pki.alice);
    try {
      const sealed = await sealFor(client, ['tamper.example.com']);
      await assertRefused(client.request('put', putArgs(['bank.example.com'], sealed)), 'PROVISION_PAYLOAD_TAMPERED', /failed authentication/);
      await assertAudited('PROVISION_PAYLOAD_TAMPERED', 'put', SUBJECTS.alice);
      const ct = Buffer.from(sealed.ciphertext, 'base64');
      ct[5]! ^= 0x80;
      await assertRefused(client.request('put', putArgs(['tamper.example.com'], { ...sealed, ciphertext: ct.toString('base64') })), 'PROVISION_PAYLOAD_TAMPERED');
      assert.equal(keyd.keyring.owner('bank.example.com'), undefined);
      assert.equal(keyd.keyring.owner('tamper.example.com'), undefined);
      // The untouched payload still works: the refusals did not burn its nonce.
      await client.request('put', putArgs(['tamper.example.com'], sealed));
      assert.ok(keyd.keyring.owner('tamper.example.com'));
    } finally {
      client.close();
    }
  });

  it('a replayed payload, also after a keyd restart; a stale one', async () => {
    let client = await keyd.connect(pki.alice);
    const sealed = await sealFor(client, ['replay.example.com']);
    await client.request('put', putArgs(['replay.example.com'], sealed));
    await client.delete('replay.example.com');
    await assertRefused(client.request('put', putArgs(['replay.example.com'], sealed)), 'PROVISION_REPLAY', /already used: refusing a replay/);
    await assertAudited('PROVISION_REPLAY', 'put', SUBJECTS.alice);
    assert.equal(keyd.keyring.owner('replay.example.com'), undefined);
    const stale = await sealFor(client, ['stale.example.com'], { now: Date.now() - 10 * 60_000 });
    await assertRefused(client.request('put', putArgs(['stale.example.com'], stale)), 'PROVISION_STALE', /accepted for ±300 s/);
    await assertAudited('PROVISION_STALE', 'put', SUBJECTS.alice);
    client.close();

    const fingerprint = keyd.listener.fingerprint;
    await keyd.restart();
    assert.equal(keyd.listener.fingerprint, fingerprint, 'the provisioning key survives a restart (sealed store)');
    client = await keyd.connect(pki.alice);
    try {
      await assertRefused(client.request('put', putArgs(['replay.example.com'], sealed)), 'PROVISION_REPLAY');
      assert.equal(keyd.keyring.owner('replay.example.com'), undefined);
    } finally {
      client.close();
    }
  });

  it('one sealed payload sent on two connections at once is installed once, the other refused as a replay', async () => {
    const first = await keyd.connect(pki.alice);
    const second = await keyd.connect(pki.alice);
    try {
      // Positive control: a fresh payload on one connection is installed.
      const fresh = await sealFor(first, ['race-control.example.com']);
      await first.request('put', putArgs(['race-control.example.com'], fresh));
      assert.ok(keyd.keyring.owner('race-control.example.com'));
      // The attack: both checks used to run before either connection's payload was opened
      // (the nonce was remembered only after the asynchronous HPKE open), so both passed.
      const sealed = await sealFor(first, ['race.example.com']);
      const outcomes = await Promise.allSettled([
        first.request('put', putArgs(['race.example.com'], sealed)),
        second.request('put', putArgs(['race.example.com'], sealed)),
      ]);
      assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 1, JSON.stringify(outcomes.map((o) => o.status)));
      const refused = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected')!;
      assert.equal((refused.reason as { code?: string }).code, 'PROVISION_REPLAY');
      // The other put's own audit line may follow the refusal's: look for it, not at the end.
      const audited = (await keyd.audit()).filter((e) => e.op === 'put' && e.names?.includes('race.example.com'));
      assert.deepEqual(audited.map((e) => e.code ?? 'ok').sort(), ['PROVISION_REPLAY', 'ok']);
    } finally {
      first.close();
      second.close();
    }
  });

  it('keyd failing to save its replay record is PROVISION_INTERNAL (not a bad payload), and nothing is installed', async () => {
    const client = await keyd.connect(pki.alice);
    const store = keyd.running.store;
    const putSecret = store.putSecret.bind(store);
    try {
      const sealed = await sealFor(client, ['disk-full.example.com']);
      store.putSecret = () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
      await assertRefused(client.request('put', putArgs(['disk-full.example.com'], sealed)), 'PROVISION_INTERNAL', /could not save its replay record/);
      assert.equal(keyd.keyring.owner('disk-full.example.com'), undefined, 'nothing installed');
      // Positive control: with the store working again, a freshly sealed payload installs.
      store.putSecret = putSecret;
      await client.request('put', putArgs(['disk-full.example.com'], await sealFor(client, ['disk-full.example.com'])));
      assert.ok(keyd.keyring.owner('disk-full.example.com'));
    } finally {
      store.putSecret = putSecret;
      client.close();
    }
  });

  it('a payload whose time is past what a Date holds: a precise refusal, audited (not an internal error)', async () => {
    const client = await keyd.connect(pki.alice);
    try {
      const sealed = await sealFor(client, ['far-future.example.com']);
      // Before, the stale check's message threw RangeError 'Invalid time value': PROVISION_INTERNAL, unaudited.
      await assertRefused(client.request('put', putArgs(['far-future.example.com'], { ...sealed, issuedAt: Number.MAX_SAFE_INTEGER })), 'PROVISION_BAD_REQUEST', /"issuedAt" 9007199254740991 is not a time/);
      await assertAudited('PROVISION_BAD_REQUEST', 'put', SUBJECTS.alice);
      // Control: a time within the Date range but outside the window is the stale refusal.
      await assertRefused(client.request('put', putArgs(['far-future.example.com'], { ...sealed, issuedAt: 8.64e15 })), 'PROVISION_STALE', /payload was sealed at \+275760-09-13T00:00:00\.000Z/);
      assert.equal(keyd.keyring.owner('far-future.example.com'), undefined);
    } finally {
      client.close();
    }
  });

  it('a payload sealed to another keyd, or by another operator', async () => {
    const client = await keyd.connect(pki.alice);
    const dave = await keyd.connect(pki.dave);
    try {
      const otherKeyd = new Uint8Array(montgomeryKeyPair('x25519').publicRaw);
      const pkcs8 = createPrivateKey(site.keyPem).export({ format: 'der', type: 'pkcs8' });
      const toOther = await sealPrivateKey({ keydPublicKey: otherKeyd, operator: SUBJECTS.alice, binding: { names: ['other.example.com'], chainDer: siteChain }, privateKeyPkcs8: pkcs8 });
      await assertRefused(client.request('put', putArgs(['other.example.com'], toOther)), 'PROVISION_SEALED_TO_OTHER_KEYD', /this keyd's key is SHA256:/);
      await assertAudited('PROVISION_SEALED_TO_OTHER_KEYD', 'put', SUBJECTS.alice);
      // Alice's payload presented on dave's connection (e.g. captured and re-sent by another admin).
      const alices = await sealFor(client, ['stolen.example.com']);
      await assertRefused(dave.request('put', putArgs(['stolen.example.com'], alices)), 'PROVISION_OPERATOR_MISMATCH', /sealed by operator "CN=alice, O=Example Ops" but the connection is authenticated as "CN=dave, O=Example Ops"/);
      await assertAudited('PROVISION_OPERATOR_MISMATCH', 'put', SUBJECTS.dave);
      assert.equal(keyd.keyring.owner('other.example.com'), undefined);
      assert.equal(keyd.keyring.owner('stolen.example.com'), undefined);
    } finally {
      client.close();
      dave.close();
    }
  });

  it('keyd\'s own errors pass through with their code (key does not match the leaf)', async () => {
    const client = await keyd.connect(pki.alice);
    try {
      await client.verifyFingerprint(keyd.listener.fingerprint, 'test');
      const wrongKey = createPrivateKey((await issue(siteCa, 'CN=x', { usage: 'server' })).keyPem);
      await assertRefused(client.put(['mismatch.example.com'], wrongKey, siteChain), 'KEYD_KEY_MISMATCH');
      assert.equal(keyd.keyring.owner('mismatch.example.com'), undefined);
    } finally {
      client.close();
    }
  });
});

describe('an operator whose certificate subject is longer than 256 characters', () => {
  // Several OUs: each RDN within X.520's upper bounds, the whole subject well over 256.
  const units = ['on-call', 'platform', 'provisioning', 'security'].map((u) => `OU=${u}-${'x'.repeat(50)}`);
  const longSubject = `CN=alice-long, O=Example Ops, ${units.join(', ')}`;
  // Same first 256 characters (normalised), another last OU.
  const twinSubject = longSubject.slice(0, -1) + 'y';

  it('is recognised by its whole subject (and can put); one differing only after 256 characters is not', async () => {
    assert.ok(normalizeSubject(longSubject).length > 260 && normalizeSubject(twinSubject).startsWith(normalizeSubject(longSubject).slice(0, 256)));
    const other = await startKeydForTest(pki, { operators: { [longSubject]: 'admin' } });
    try {
      const long = await issue(pki.operatorCa, longSubject, { usage: 'client' });
      const twin = await issue(pki.operatorCa, twinSubject, { usage: 'client' });
      const client = await other.connect(long);
      try {
        assert.equal(client.welcome.operator, normalizeSubject(longSubject));
        assert.equal(client.welcome.role, 'admin');
        // The sealed payload binds the whole subject the CLI knows (hpke-seal.ts).
        await client.request('put', putArgs(['www.example.com'], await sealFor(client, ['www.example.com'])));
        assert.ok(other.keyring.owner('www.example.com'));
      } finally {
        client.close();
      }
      await assertRefused(other.connect(twin), 'PROVISION_UNKNOWN_OPERATOR', /has a valid certificate but no role/);
      // Control: a short subject on the same keyd.
      (await other.connect(pki.alice)).close();
    } finally {
      await other.close();
    }
  });
});

describe('robustness', () => {
  /** Sends `bytes` after keyd's greeting; the frames received until keyd closes (or `expected` of them arrived). */
  async function rawExchange(bytes: Buffer, expected = Infinity): Promise<unknown[]> {
    const { connect } = await import('node:tls');
    const { FrameDecoder } = await import('../../src/provision/frames.js');
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port: keyd.listener.port, ca: pki.keydCa.certPem, cert: pki.alice.certPem, key: pki.alice.keyPem });
      const decoder = new FrameDecoder();
      const frames: unknown[] = [];
      socket.on('data', (chunk: Buffer) => {
        const before = frames.length;
        frames.push(...decoder.push(chunk));
        if (before === 0 && frames.length > 0) socket.write(bytes);
        if (frames.length >= expected) socket.destroy();
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(frames));
      setTimeout(() => socket.destroy(), 3000);
    });
  }

  it('an operator that sends requests but never reads the replies stops being read; reading again resumes it', async () => {
    const { connect } = await import('node:tls');
    const { encodeFrame, FrameDecoder } = await import('../../src/provision/frames.js');
    // Every refused request is audited once: the spy counts the requests keyd has taken.
    const service = keyd.running.adminService;
    const original = service.recordAudit.bind(service);
    let served = 0;
    service.recordAudit = (entry) => {
      served++;
      return original(entry);
    };
    const socket = connect({ host: '127.0.0.1', port: keyd.listener.port, ca: pki.keydCa.certPem, cert: pki.bob.certPem, key: pki.bob.keyPem });
    const decoder = new FrameDecoder();
    const replies: unknown[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.once('data', (chunk: Buffer) => {
          replies.push(...decoder.push(chunk)); // the welcome
          socket.pause(); // from here on the operator reads nothing
          resolve();
        });
      });
      // Each reply names the unknown operation (~300 KiB). Batches stay under the 16 requests
      // a connection may have waiting; the next batch goes once keyd has taken this one.
      const request = (id: number) => encodeFrame({ id, op: 'x'.repeat(300_000), args: {} });
      let sent = 0;
      for (let batch = 0; batch < 40 && keyd.listener.pausedForReplies === 0; batch++) {
        for (let i = 0; i < 15; i++) socket.write(request(++sent));
        for (let wait = 0; wait < 500 && served < sent && keyd.listener.pausedForReplies === 0; wait++) await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(keyd.listener.pausedForReplies, 1, `keyd still reads after ${sent} requests whose replies were not read`);
      // Positive control: the operator reads again; keyd drains, resumes, and answers everything.
      socket.on('data', (chunk: Buffer) => replies.push(...decoder.push(chunk)));
      socket.resume();
      await new Promise<void>((resolve, reject) => {
        socket.on('error', reject);
        const check = () => (replies.length === sent + 1 ? resolve() : setTimeout(check, 10));
        check();
      });
      assert.equal(keyd.listener.pausedForReplies, 0);
      assert.ok(replies.slice(1).every((r) => (r as { error?: { code?: string } }).error?.code === 'PROVISION_BAD_REQUEST'));
    } finally {
      service.recordAudit = original;
      socket.destroy();
    }
  });

  it('at most 16 requests wait on one connection: a 17th in the same burst is refused and the connection closed', async () => {
    const { encodeFrame } = await import('../../src/provision/frames.js');
    const burst = (n: number) => Buffer.concat(Array.from({ length: n }, (_, i) => encodeFrame({ id: i + 1, op: 'stats', args: {} })));
    // Control: 16 at once are all answered, in order.
    const sixteen = (await rawExchange(burst(16), 17)) as Array<{ id?: number; ok?: boolean }>;
    assert.deepEqual(sixteen.slice(1).map((r) => [r.id, r.ok]), Array.from({ length: 16 }, (_, i) => [i + 1, true]));
    const seventeen = (await rawExchange(burst(17))) as Array<{ id?: number; ok?: boolean; error?: { code: string; message: string } }>;
    assert.equal(seventeen.length, 2, `keyd answered ${seventeen.length - 1} frame(s) before closing, not only the refusal`);
    assert.equal(seventeen[1]!.id, 0);
    assert.equal(seventeen[1]!.error?.code, 'PROVISION_BAD_REQUEST');
    assert.match(seventeen[1]!.error?.message ?? '', /more than 16 requests waiting on one connection/);
  });

  it('garbage, oversize frames and unknown operations get precise errors; keyd keeps serving', async () => {
    const oversize = Buffer.alloc(4);
    oversize.writeUInt32BE(0x7fffffff);
    const [, tooLarge] = await rawExchange(oversize);
    assert.deepEqual((tooLarge as { error: { code: string } }).error.code, 'PROVISION_FRAME_TOO_LARGE');
    const notJson = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')]);
    const [, bad] = await rawExchange(notJson);
    assert.equal((bad as { error: { code: string } }).error.code, 'PROVISION_BAD_REQUEST');

    const client = await keyd.connect(pki.alice);
    try {
      await assertRefused(client.request('format' as never, {}), 'PROVISION_BAD_REQUEST', /unknown operation "format"/);
      await assertRefused(client.request('put', { names: 'x' }), 'PROVISION_BAD_REQUEST', /"names" must be a non-empty list/);
      await assertRefused(client.request('put', { names: ['x.example'], chain: ['AA=='], sealed: { v: 2 } }), 'PROVISION_BAD_REQUEST', /not a version 1 sealed key/);
      await assertRefused(client.request('show', {}), 'PROVISION_BAD_REQUEST', /"name" must be a non-empty string/);
      await assertRefused(client.show('nothing.example'), 'KEYD_UNKNOWN_NAME');
      assert.ok(Array.isArray(await client.list()));
    } finally {
      client.close();
    }
  });
});
