import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES } from '../../src/provision/frames.js';
import { fingerprintOf, isFingerprint } from '../../src/provision/fingerprint.js';
import { lookupPin, pin } from '../../src/provision/known-keyd.js';
import { ReplayGuard } from '../../src/provision/replay-guard.js';
import { normalizeSubject, OperatorRoles, parseProvisioningConfig, roleAllows } from '../../src/provision/roles.js';
import { loadOrCreateProvisioningKey } from '../../src/provision/provisioning-key.js';

function code(fn: () => unknown, expected: string): void {
  assert.throws(fn, (err: Error & { code?: string }) => {
    assert.equal(err.code, expected, err.message);
    return true;
  });
}

describe('replay guard', () => {
  it('refuses stale, future and replayed payloads; forgets nonces after the window', () => {
    let now = 1_000_000_000_000;
    const guard = new ReplayGuard(60_000, () => now);
    guard.check('n1', now - 59_000);
    // The window is inclusive (docs/PROVISIONING.md: accepted for ±window), both ways.
    guard.check('n1', now - 60_000);
    guard.check('n1', now + 60_000);
    code(() => guard.check('n1', now - 60_001), 'PROVISION_STALE');
    code(() => guard.check('n1', now + 60_001), 'PROVISION_STALE');
    code(() => guard.check('n1', now - 61_000), 'PROVISION_STALE');
    code(() => guard.check('n1', now + 61_000), 'PROVISION_STALE');
    guard.accept('n1', now);
    code(() => guard.check('n1', now), 'PROVISION_REPLAY');
    guard.check('n2', now);
    // Persisted and restored (a keyd restart must not reopen the window).
    const restored = new ReplayGuard(60_000, () => now);
    restored.restore(guard.snapshot());
    code(() => restored.check('n1', now), 'PROVISION_REPLAY');
    now += 61_000;
    code(() => restored.check('n1', now - 61_000), 'PROVISION_STALE');
    assert.deepEqual(restored.snapshot(), {});
  });
});

describe('replay guard across a restart with a wider window', () => {
  it('still refuses a payload accepted before the restart while the wider window would take its time', () => {
    let now = 1_000_000_000_000;
    const issuedAt = now;
    const before = new ReplayGuard(60_000, () => now);
    before.check('n1', issuedAt);
    before.accept('n1', issuedAt);
    const stored = JSON.parse(JSON.stringify(before.snapshot())) as Record<string, number>;
    // keyd restarted with replayWindowSeconds raised from 60 to 600; two minutes later the
    // payload's time is inside the new window, so only its remembered nonce refuses it.
    const after = new ReplayGuard(600_000, () => now);
    after.restore(stored);
    now += 120_000;
    code(() => after.check('n1', issuedAt), 'PROVISION_REPLAY');
    // Control: another payload of the same time is inside the wider window, and accepted.
    after.check('n2', issuedAt);
    // A record written as expiry times (before this change) is kept at least as long.
    const legacy = new ReplayGuard(600_000, () => now);
    legacy.restore({ n1: issuedAt + 60_000 });
    code(() => legacy.check('n1', issuedAt), 'PROVISION_REPLAY');
    // Past the wider window the nonce is forgotten, and the time check refuses the payload.
    now = issuedAt + 600_001;
    code(() => after.check('n1', issuedAt), 'PROVISION_STALE');
    assert.deepEqual(after.snapshot(), {});
  });
});

describe('known-keyd pins', () => {
  it('adds, keeps, refuses a change loudly, replaces on request', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'known-keyd-'));
    try {
      const file = join(dir, 'sub', 'known_keyd');
      const a = fingerprintOf(new Uint8Array(32).fill(1));
      const b = fingerprintOf(new Uint8Array(32).fill(2));
      assert.ok(isFingerprint(a));
      assert.equal(await lookupPin(file, 'keyd:8444'), undefined);
      assert.equal(await pin(file, 'keyd:8444', a, false), 'added');
      assert.equal(await pin(file, 'other:8444', b, false), 'added');
      assert.equal(await pin(file, 'keyd:8444', a, false), 'unchanged');
      await assert.rejects(pin(file, 'keyd:8444', b, false), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'PROVISION_KEYD_FINGERPRINT_MISMATCH');
        assert.match(err.message, new RegExp(`pins ${a.replace(/[+/]/g, '.')}`));
        assert.match(err.message, /trust --replace/);
        return true;
      });
      assert.equal(await lookupPin(file, 'keyd:8444'), a);
      assert.equal(await pin(file, 'keyd:8444', b, true), 'replaced');
      assert.equal(await lookupPin(file, 'keyd:8444'), b);
      assert.equal(await lookupPin(file, 'other:8444'), b);
      const text = await readFile(file, 'utf8');
      assert.equal(text.split('\n').filter((l) => l.startsWith('keyd:8444 ')).length, 1);
      await writeFile(file, '# comment\nkeyd:8444 not-a-fingerprint\n');
      await assert.rejects(lookupPin(file, 'keyd:8444'), /known_keyd:2: expected/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('a line with a third field is refused; a lookup matches the whole HOST:PORT, not a prefix', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'known-keyd-'));
    try {
      const file = join(dir, 'known_keyd');
      const a = fingerprintOf(new Uint8Array(32).fill(1));
      await writeFile(file, `keyd:8444 ${a}\n`);
      assert.equal(await lookupPin(file, 'keyd:8444'), a, 'control: two fields');
      for (const probe of ['keyd:84', 'keyd', 'keyd:844']) assert.equal(await lookupPin(file, probe), undefined, probe);
      assert.equal(await pin(file, 'keyd:84', a, false), 'added', 'another server: its own pin');
      await writeFile(file, `# comment\nkeyd:8444 ${a} ${a}\n`);
      await assert.rejects(lookupPin(file, 'keyd:8444'), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'PROVISION_USAGE');
        assert.match(err.message, /known_keyd:2: expected "HOST:PORT SHA256:…"/);
        return true;
      });
      await assert.rejects(pin(file, 'other:8444', a, false), /known_keyd:2: expected/, 'nothing is pinned into a file that does not parse');
      assert.equal(await readFile(file, 'utf8'), `# comment\nkeyd:8444 ${a} ${a}\n`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a known_keyd that exists but cannot be read is an error, never "no pins": nothing is trusted or written over it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'known-keyd-'));
    try {
      const file = join(dir, 'known_keyd');
      await mkdir(file);
      const a = fingerprintOf(new Uint8Array(32).fill(1));
      await assert.rejects(lookupPin(file, 'keyd:8444'), { code: 'EISDIR' });
      await assert.rejects(pin(file, 'keyd:8444', a, false), { code: 'EISDIR' });
      assert.ok((await stat(file)).isDirectory(), 'left as it was');
      // Control: absent is "no pins".
      assert.equal(await lookupPin(join(dir, 'absent'), 'keyd:8444'), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the directories it creates for known_keyd are 0700 (the operator\'s pins are nobody else\'s business)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'known-keyd-'));
    try {
      const file = join(dir, 'config', 'delegator', 'known_keyd');
      await pin(file, 'keyd:8444', fingerprintOf(new Uint8Array(32).fill(1)), false);
      assert.equal((await stat(join(dir, 'config', 'delegator'))).mode & 0o777, 0o700);
      assert.equal((await stat(join(dir, 'config'))).mode & 0o777, 0o700);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('roles', () => {
  it('normalises subject spellings of node, OpenSSL and slash form alike', () => {
    const expected = 'CN=alice, O=Example Ops';
    assert.equal(normalizeSubject('CN=alice, O=Example Ops'), expected);
    assert.equal(normalizeSubject('O=Example Ops\nCN=alice'), expected);
    assert.equal(normalizeSubject('subject=O = Example Ops, CN = alice'), expected);
    assert.equal(normalizeSubject('/O=Example Ops/CN=alice'), expected);
    assert.equal(normalizeSubject('o=Example Ops,cn=alice'), expected);
  });

  it('admin may do everything, auditor only reads, unknown subjects have no role', () => {
    const roles = new OperatorRoles({ 'O = Ops, CN = alice': 'admin', 'CN=bob': 'auditor' });
    assert.equal(roles.roleOf('O=Ops\nCN=alice'), 'admin');
    assert.equal(roles.roleOf('CN=bob'), 'auditor');
    assert.equal(roles.roleOf('CN=carol'), undefined);
    for (const op of ['put', 'generate', 'setChain', 'delete', 'list', 'show', 'audit', 'stats'] as const) assert.ok(roleAllows('admin', op));
    for (const op of ['put', 'generate', 'setChain', 'delete'] as const) assert.ok(!roleAllows('auditor', op));
    for (const op of ['list', 'show', 'audit', 'stats'] as const) assert.ok(roleAllows('auditor', op));
  });

  it('validates the provisioning config with messages naming the field', () => {
    code(() => parseProvisioningConfig({}), 'PROVISION_USAGE');
    assert.throws(() => parseProvisioningConfig({ provisioning: { operators: { 'CN=a': 'root' } } }), /role of "CN=a" must be "admin" or "auditor"/);
    assert.throws(() => parseProvisioningConfig({ provisioning: { operators: {}, replayWindowSeconds: -1 } }), /replayWindowSeconds/);
    const parsed = parseProvisioningConfig({ provisioning: { operators: { 'CN=a': 'admin' }, tlsCert: 'c.pem', tlsKey: 'k.pem' } });
    assert.equal(parsed.replayWindowSeconds, 300);
    assert.equal(parsed.tlsCert, 'c.pem');
  });

  it('refuses an operator key that is not a certificate subject, naming it; subjects in every documented spelling load', () => {
    // "alice" (no attribute type), "" and "__proto__" match no certificate: the operator meant
    // would be refused at every connection. Before, they loaded silently ("__proto__" was even
    // dropped: assigned through Object.prototype's setter).
    for (const subject of ['alice', '', '   ', '__proto__', 'CN=alice, Ops', '=alice', '/CN=alice/ops']) {
      assert.throws(() => parseProvisioningConfig(JSON.parse(`{"provisioning": {"operators": {${JSON.stringify(subject)}: "admin"}}}`)), {
        code: 'PROVISION_USAGE',
        message: `config "provisioning.operators": ${JSON.stringify(subject)} is not a certificate subject: write it as TYPE=value attributes, e.g. "CN=alice, O=Example Ops"`,
      });
    }
    // Control: the spellings docs/PROVISIONING.md names, an escaped comma inside a value, a
    // multi-valued RDN, and an empty value, each one operator.
    const spellings = ['CN=alice, O=Example Ops', 'subject=O = Ops, CN = bob', '/O=Ops/CN=carol', 'CN=dave, O=Example\\, Inc', 'CN=erin+UID=7', 'CN=frank, OU='];
    const parsed = parseProvisioningConfig({ provisioning: { operators: Object.fromEntries(spellings.map((s) => [s, 'auditor'])) } });
    assert.deepEqual(Object.keys(parsed.operators), spellings);
    assert.equal(new OperatorRoles(parsed.operators).roleOf('O=Example\\, Inc\nCN=dave'), 'auditor');
  });

  it('refuses a misspelt key of the provisioning section, and one operator listed twice in two spellings', () => {
    // "limts": the listener would run with its default limits; "replayWindowSecond": with 300 s.
    for (const key of ['limts', 'replayWindowSecond', 'operator']) {
      assert.throws(() => parseProvisioningConfig({ provisioning: { operators: { 'CN=a': 'admin' }, [key]: 1 } }), {
        code: 'PROVISION_USAGE',
        message: `config "provisioning": unknown key "${key}" (allowed: operators, tlsCert, tlsKey, replayWindowSeconds, limits)`,
      });
    }
    // "auditor" first, "admin" after in another RDN order: before, the later role silently won.
    assert.throws(() => parseProvisioningConfig({ provisioning: { operators: { 'CN=alice, O=Ops': 'auditor', 'O = Ops, CN = alice': 'admin' } } }), {
      code: 'PROVISION_USAGE',
      message: 'config "provisioning.operators": "O = Ops, CN = alice" is the same operator as "CN=alice, O=Ops" (CN=alice, O=Ops): list it once',
    });
    // Control: every documented key, distinct operators each with their role.
    const parsed = parseProvisioningConfig({
      provisioning: { operators: { 'CN=alice, O=Ops': 'admin', 'CN=bob, O=Ops': 'auditor' }, tlsCert: 'c.pem', tlsKey: 'k.pem', replayWindowSeconds: 60, limits: { maxConnections: 8 } },
    });
    assert.deepEqual({ ...parsed.operators }, { 'CN=alice, O=Ops': 'admin', 'CN=bob, O=Ops': 'auditor' });
    assert.equal(parsed.replayWindowSeconds, 60);
  });
});

describe('frames', () => {
  it('decodes frames split at every byte boundary', () => {
    const bytes = Buffer.concat([encodeFrame({ id: 1, op: 'list', args: {} }), encodeFrame({ id: 2, op: 'show', args: { name: 'é.example' } })]);
    for (let split = 0; split <= bytes.length; split++) {
      const decoder = new FrameDecoder();
      const got = [...decoder.push(bytes.subarray(0, split)), ...decoder.push(bytes.subarray(split))];
      assert.deepEqual(got, [{ id: 1, op: 'list', args: {} }, { id: 2, op: 'show', args: { name: 'é.example' } }]);
    }
  });

  it('takes a frame of exactly MAX_FRAME_BYTES, which encodeFrame makes; one byte more is refused on both sides', () => {
    const largest = { p: 'x'.repeat(MAX_FRAME_BYTES - '{"p":""}'.length) };
    const frame = encodeFrame(largest);
    assert.equal(frame.length, 4 + MAX_FRAME_BYTES);
    assert.deepEqual(new FrameDecoder().push(frame), [largest]);
    code(() => encodeFrame({ p: largest.p + 'x' }), 'PROVISION_FRAME_TOO_LARGE');
  });

  it('refuses oversize lengths at once, bad JSON and non-objects', () => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_BYTES + 1);
    code(() => new FrameDecoder().push(header), 'PROVISION_FRAME_TOO_LARGE');
    const bad = Buffer.from('xxnot json');
    bad.writeUInt32BE(6);
    code(() => new FrameDecoder().push(bad), 'PROVISION_BAD_REQUEST');
    code(() => new FrameDecoder().push(encodeFrame([1, 2])), 'PROVISION_BAD_REQUEST');
  });
});

describe('provisioning key', () => {
  it('is created once, stored sealed, and reloaded with the same fingerprint', async () => {
    const secrets = new Map<string, Buffer>();
    const store = {
      getSecret: async (name: string) => secrets.get(name),
      putSecret: async (name: string, bytes: Uint8Array) => void secrets.set(name, Buffer.from(bytes)),
    };
    const first = await loadOrCreateProvisioningKey(store);
    assert.equal(first.created, true);
    assert.equal(secrets.size, 1);
    const second = await loadOrCreateProvisioningKey(store);
    assert.equal(second.created, false);
    assert.equal(second.key.fingerprint, first.key.fingerprint);
    assert.equal(second.key.publicKey.length, 32);
    assert.equal(second.key.rawPrivateKey().length, 32);
  });
  it('its raw private scalar is the private half of its public key', async () => {
    const secrets = new Map<string, Buffer>();
    const store = { getSecret: async (name: string) => secrets.get(name), putSecret: async (name: string, bytes: Uint8Array) => void secrets.set(name, Buffer.from(bytes)) };
    for (const created of [true, false]) {
      const { key } = await loadOrCreateProvisioningKey(store);
      // PKCS#8 for X25519 (RFC 8410 §7): a fixed 16-byte prefix, then the 32-byte scalar.
      const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), key.rawPrivateKey()]);
      const x = createPublicKey(createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' }).x!;
      assert.deepEqual(Buffer.from(x, 'base64url'), Buffer.from(key.publicKey), created ? 'created' : 'reloaded');
    }
  });

  it('a sealed secret that is not an X25519 key is refused, not used as the provisioning key', async () => {
    const ed = generateKeyPairSync('ed25519', { privateKeyEncoding: { type: 'pkcs8', format: 'der' } }).privateKey as unknown as Buffer;
    const x = generateKeyPairSync('x25519', { privateKeyEncoding: { type: 'pkcs8', format: 'der' } }).privateKey as unknown as Buffer;
    const store = (stored: Buffer) => ({ getSecret: async () => stored, putSecret: async () => assert.fail('nothing is written') });
    await assert.rejects(loadOrCreateProvisioningKey(store(ed)), /^Error: sealed secret provisioning-x25519 is not an X25519 key$/);
    const loaded = await loadOrCreateProvisioningKey(store(x));
    assert.equal(loaded.created, false, 'control: an X25519 key is loaded');
  });

  it('a new key\'s PKCS#8 bytes are wiped once the store has them', async () => {
    let handed: Uint8Array | undefined;
    let copy: Buffer | undefined;
    const store = {
      getSecret: async () => (copy ? Buffer.from(copy) : undefined),
      putSecret: async (_name: string, bytes: Uint8Array) => {
        handed = bytes;
        copy = Buffer.from(bytes);
      },
    };
    const first = await loadOrCreateProvisioningKey(store);
    assert.ok(handed && handed.length > 32);
    assert.ok(handed.every((b) => b === 0), 'the buffer handed to the store is zeroed after');
    assert.ok(!copy!.every((b) => b === 0), 'control: the store\'s copy holds the key');
    assert.equal((await loadOrCreateProvisioningKey(store)).key.fingerprint, first.key.fingerprint);
  });
});

describe('remote admin CLI usage errors (before connecting)', () => {
  async function run(argv: string[]): Promise<{ code: number; err: string; out: string }> {
    const { main: runRemoteAdmin } = await import('../../src/cli/admin.js');
    let err = '';
    let out = '';
    const code = await runRemoteAdmin(argv, { out: (s) => void (out += s), err: (s) => void (err += s) });
    return { code, err, out };
  }
  const conn = ['--server', '127.0.0.1:1', '--cert', 'op.pem', '--key', 'op.key', '--ca', 'ca.pem'];

  it('exit 2 with a precise message', async () => {
    assert.match((await run(['--server', 'nohost', 'list'])).err, /--server: 'nohost' is not HOST:PORT \[PROVISION_USAGE\]/);
    assert.match((await run(['--server', '127.0.0.1:1', 'list'])).err, /--cert is required to authenticate/);
    assert.match((await run([...conn, 'frobnicate'])).err, /unknown operation "frobnicate"/);
    assert.match((await run([...conn, 'put', 'a.example'])).err, /put needs --key KEY\.pem and --chain CHAIN\.pem/);
    assert.match((await run([...conn, 'gen', 'a.example', '--type', 'dsa', '--subject', 'CN=a', '--csr', 'x'])).err, /gen: --type must be one of ecdsa-p256/);
    assert.match((await run([...conn, '--keyd-fingerprint', 'abc', 'list'])).err, /--keyd-fingerprint must look like SHA256:/);
    assert.match((await run([...conn, 'delete'])).err, /expected exactly one NAME, got 0/);
    assert.match((await run(['--bogus', 'x'])).err, /unknown option --bogus/);
    for (const argv of [['--server', 'nohost', 'list'], [...conn, 'delete']]) assert.equal((await run(argv)).code, 2);
    const help = await run(['--server', '127.0.0.1:1', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.out, /delegator admin --server HOST:PORT --cert OP\.pem/);
  });

  it('an unreachable keyd is PROVISION_UNAVAILABLE, exit 1', async () => {
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const { makeCa, issue } = await import('./pki.js');
    const dir = await mkdtemp(join(tmpdir(), 'remote-admin-'));
    try {
      const ca = await makeCa('CN=x');
      const op = await issue(ca, 'CN=op', { usage: 'client' });
      await writeFile(join(dir, 'op.pem'), op.certPem);
      await writeFile(join(dir, 'op.key'), op.keyPem);
      await writeFile(join(dir, 'ca.pem'), ca.certPem);
      const result = await run(['--server', '127.0.0.1:1', '--cert', join(dir, 'op.pem'), '--key', join(dir, 'op.key'), '--ca', join(dir, 'ca.pem'), 'list']);
      assert.equal(result.code, 1);
      assert.match(result.err, /cannot reach keyd's provisioning listener at 127\.0\.0\.1:1 \(ECONNREFUSED\) \[PROVISION_UNAVAILABLE\]/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
