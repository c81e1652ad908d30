import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KeydClient } from '../../src/keyd/client.js';
import { loadConfig, parseConfig } from '../../src/keyd/config.js';
import { LIMIT_RANGE, MAX_TIMER_MS, parseLimits, type KeydLimits } from '../../src/keyd/limits.js';
import { LOCAL, makeIdentity, scratch, startTestKeyd } from './fixtures.js';

test('config "allowTls12OnlyServers": off by default, a boolean, anything else refused at start', () => {
  assert.equal(parseConfig({}).allowTls12OnlyServers, false);
  assert.equal(parseConfig({ allowTls12OnlyServers: true }).allowTls12OnlyServers, true);
  assert.equal(parseConfig({ allowTls12OnlyServers: false }).allowTls12OnlyServers, false);
  for (const bad of ['true', 1, null, {}]) {
    assert.throws(() => parseConfig({ allowTls12OnlyServers: bad }), { code: 'KEYD_CONFIG', message: /allowTls12OnlyServers/ }, JSON.stringify(bad));
  }
});

test('config "principals": a relative "socket" is from the config file\'s directory, not keyd\'s working directory; reload resolves it the same way', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const etc = join(s.dir, 'etc');
  await mkdir(etc);
  const configPath = join(etc, 'keyd.json');
  const absolute = join(s.dir, 'edge-b.sock');
  const writeConfig = (names: string[]) =>
    writeFile(configPath, JSON.stringify({ principals: { 'edge-a': { socket: 'edge-a.sock', mode: '0600', names }, 'edge-b': { socket: absolute, mode: '0600', names: ['*'] } } }));
  await writeConfig(['a.test']);
  // keyd's working directory is elsewhere (under systemd it is "/"): the socket must not follow it.
  const cwd = process.cwd();
  process.chdir(s.dir);
  try {
    const parsed = await loadConfig(configPath);
    assert.equal(parsed.principals.find((p) => p.name === 'edge-a')!.socket, join(etc, 'edge-a.sock'));
    // Control: an absolute path is kept as written.
    assert.equal(parsed.principals.find((p) => p.name === 'edge-b')!.socket, absolute);
    const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: configPath });
    try {
      assert.equal(keyd.principalSockets['edge-a'], join(etc, 'edge-a.sock'));
      const id = await makeIdentity('ecdsa-p256', ['a.test']);
      await keyd.adminService.put(LOCAL, ['a.test'], id.privateKey, id.chain);
      const edge = await KeydClient.connect({ socketPath: join(etc, 'edge-a.sock') });
      assert.ok(await edge.identity('a.test'));
      // Reload reads the same file: the socket is where it was, so the new names apply.
      await writeConfig(['b.test']);
      assert.deepEqual(await keyd.reloadGrants(), { ok: true });
      await assert.rejects(edge.identity('a.test'), { code: 'KEYD_NOT_AUTHORISED' });
      edge.close();
    } finally {
      await keyd.close();
    }
  } finally {
    process.chdir(cwd);
    await s.cleanup();
  }
});

test('config: a misspelt key is refused naming it (top level, a principal, "auditLog"), not silently ignored', () => {
  // "limts" would leave keyd without the rate limit the operator wrote; "clinets" without its grants.
  for (const [raw, key] of [
    [{ limts: { signaturesPerSecond: 10 } }, 'limts'],
    [{ maxPendng: 16 }, 'maxPendng'],
    [{ clinets: { 'CN=edge-1': ['a.test'] } }, 'clinets'],
  ] as const) {
    assert.throws(() => parseConfig(raw), { code: 'KEYD_CONFIG', message: new RegExp(`^config: unknown key "${key}" \\(allowed: clients, principals, maxPending, limits`) }, key);
  }
  // "mdoe": the socket would be left at the default 0660 rather than the 0600 intended.
  assert.throws(() => parseConfig({ principals: { 'edge-a': { socket: '/run/keyd/a.sock', mdoe: '0600', names: ['a.test'] } } }), {
    code: 'KEYD_CONFIG',
    message: 'config "principals"."edge-a": unknown key "mdoe" (allowed: socket, mode, uid, gid, names)',
  });
  assert.throws(() => parseConfig({ auditLog: { maxbytes: 1 << 20 } }), { code: 'KEYD_CONFIG', message: /^config "auditLog": unknown key "maxbytes"/ });
  // Control: every documented key (docs/KEYD.md "Config"), and the other owners' sections, are accepted.
  const full = parseConfig({
    clients: { 'CN=edge-1, O=Example': ['*.example.com'] },
    principals: { local: { mode: '0660', names: ['*'] }, 'edge-a': { socket: '/run/keyd/a.sock', mode: '0600', uid: 1001, gid: 1001, names: ['a.example.com'] } },
    maxPending: 16,
    limits: { signaturesPerSecond: 10 },
    auditLog: { maxBytes: 1 << 20, keep: 4 },
    metricsListen: '127.0.0.1:9464',
    expiryWarningDays: 7,
    allowTls12OnlyServers: false,
    rootKey: 'tpm',
    tpmTcti: 'device:/dev/tpmrm0',
    pkcs11: { tokens: [] },
    provisioning: { operators: {} },
  });
  assert.equal(full.limits.signaturesPerSecond, 10);
  assert.equal(full.maxPending, 16);
  assert.equal(full.principals.find((p) => p.name === 'edge-a')!.mode, 0o600);
  assert.deepEqual(full.auditLog, { maxBytes: 1 << 20, keep: 4 });
});

test('config "clients": two spellings of one subject are refused (the later would replace the earlier\'s grants); a subject without TYPE=value and a bad name are refused naming the entry', () => {
  // The same subject in another RDN order and spacing: before, the '*' entry silently won.
  assert.throws(() => parseConfig({ clients: { 'CN=edge-1, O=Example': ['a.test'], 'O=Example,CN=edge-1': ['*'] } }), {
    code: 'KEYD_CONFIG',
    message: 'config "clients"."O=Example,CN=edge-1" is the same subject as "CN=edge-1, O=Example" (CN=edge-1, O=Example): list it once',
  });
  assert.throws(() => parseConfig({ clients: { 'CN=edge-1': ['a.test'], 'cn = edge-1': ['b.test'] } }), { code: 'KEYD_CONFIG', message: /"cn = edge-1" is the same subject as "CN=edge-1"/ });
  // "edge-1" alone: no certificate has such a subject (it normalised to "EDGE-=edge-1").
  for (const subject of ['edge-1', '', '=edge-1']) {
    assert.throws(() => parseConfig({ clients: { [subject]: ['a.test'] } }), { code: 'KEYD_CONFIG', message: `config "clients"."${subject}" is not a certificate subject (TYPE=value, ..., e.g. "CN=edge-1, O=Example")` }, subject);
  }
  assert.throws(() => parseConfig({ clients: { 'CN=edge-1': ['a..test'] } }), { code: 'KEYD_CONFIG', message: 'config "clients"."CN=edge-1": "a..test" is not a DNS name or a *.domain wildcard' });
  assert.throws(() => parseConfig({ principals: { 'edge-a': { socket: '/run/keyd/a.sock', names: ['*.*'] } } }), { code: 'KEYD_CONFIG', message: 'config "principals"."edge-a": "names": "*.*" is not a DNS name or a *.domain wildcard' });
  // Control: distinct subjects are each kept; spelling differences normalise; a value with an escaped comma stays one RDN.
  assert.deepEqual(parseConfig({ clients: { 'O=Example,  cn=edge-1': ['A.Test.', '*.b.test'], 'CN=edge-2, O=Example': ['*'], 'CN=x, O=Foo\\, Inc': ['c.test'] } }).clients, {
    'CN=edge-1, O=Example': ['a.test', '*.b.test'],
    'CN=edge-2, O=Example': ['*'],
    'CN=x, O=Foo\\, Inc': ['c.test'],
  });
});

test('config "limits": a time beyond node\'s timer range is refused naming the key (setTimeout would run it after 1 ms); bad values refused; the largest time is kept', () => {
  for (const key of ['frameTimeoutMs', 'auditIntervalMs', 'idleTimeoutMs', 'tlsHandshakeTimeoutMs']) {
    const min = key === 'auditIntervalMs' ? 10 : 1;
    assert.throws(() => parseLimits({ [key]: MAX_TIMER_MS + 1 }), { code: 'KEYD_CONFIG', message: `config "limits"."${key}" must be an integer from ${min} to 2147483647 (ms; at most about 24.8 days: node's timers run a longer delay after 1 ms), not 2147483648` }, key);
    // Control: the largest delay node keeps is accepted as written.
    assert.equal(parseLimits({ [key]: MAX_TIMER_MS })[key as keyof KeydLimits], MAX_TIMER_MS);
  }
  // Every limit refuses what is not an integer within its bounds, and says which.
  for (const [bad, shown] of [[0, '0'], [-1, '-1'], [1.5, '1.5'], [Number.NaN, 'NaN'], [Number.POSITIVE_INFINITY, 'Infinity'], ['10', '"10"'], [null, 'null']] as const) {
    assert.throws(() => parseLimits({ maxConnectionsPerClient: bad }), {
      code: 'KEYD_CONFIG',
      message: `config "limits"."maxConnectionsPerClient" must be an integer from 1 to 1048576 (connections are file descriptors; 1048576 is Linux's default ceiling per process, fs.nr_open), not ${shown}`,
    }, String(bad));
  }
  assert.throws(() => parseConfig({ limits: { frameTimeoutMs: 2 ** 31 } }), { code: 'KEYD_CONFIG', message: /"frameTimeoutMs" must be an integer from 1 to 2147483647 .*, not 2147483648$/ });
  assert.equal(parseConfig({}).limits.frameTimeoutMs, 10_000);
});

test('config "rootKey": a relative file is from the config file\'s directory; the --root-key flag stays relative to the working directory', { timeout: 30_000 }, async () => {
  const s = await scratch();
  const etc = join(s.dir, 'etc');
  await mkdir(etc);
  const configPath = join(etc, 'keyd.json');
  await writeFile(configPath, JSON.stringify({ rootKey: 'keyd-root.key' }));
  const cwd = process.cwd();
  process.chdir(s.dir);
  try {
    const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: configPath, rootKey: undefined });
    await keyd.close();
    assert.equal((await stat(join(etc, 'keyd-root.key'))).size, 32);
    await assert.rejects(stat(join(s.dir, 'keyd-root.key')), { code: 'ENOENT' });
    // Control: the flag wins and is relative to the working directory, as any flag path is.
    const second = await startTestKeyd(s.dir, s.machineIdPath, { config: configPath, rootKey: 'flag-root.key', data: join(s.dir, 'data2') });
    await second.close();
    assert.equal((await stat(join(s.dir, 'flag-root.key'))).size, 32);
  } finally {
    process.chdir(cwd);
    await s.cleanup();
  }
});

test('config "limits": a signatureBurst without signaturesPerSecond is refused (no bucket would exist, so it would limit nothing); with a rate it is kept', () => {
  assert.throws(() => parseLimits({ signatureBurst: 50 }), {
    code: 'KEYD_CONFIG',
    message: 'config "limits"."signatureBurst" needs "signaturesPerSecond" (the bucket\'s rate); alone it limits nothing',
  });
  assert.throws(() => parseLimits({ signatureBurst: 50, signaturesPerSecond: 0 }), { code: 'KEYD_CONFIG', message: /signatureBurst" needs "signaturesPerSecond"/ });
  // Control: with a rate the burst is kept; a rate alone gets one second's worth; neither is no bucket.
  assert.deepEqual([parseLimits({ signatureBurst: 50, signaturesPerSecond: 10 }).signatureBurst, parseLimits({ signaturesPerSecond: 10 }).signatureBurst], [50, 10]);
  const none = parseLimits({});
  assert.deepEqual([none.signaturesPerSecond, none.signatureBurst], [0, 0]);
});

test('config "principals": a socket that is --socket or --admin-socket is refused at start naming the principal and the flag (was a bare EADDRINUSE)', { timeout: 30_000 }, async () => {
  const s = await scratch();
  try {
    for (const [file, flag] of [['admin.sock', '--admin-socket'], ['sign.sock', '--socket']] as const) {
      const config = { principals: { 'edge-a': { socket: join(s.dir, file), mode: '0600', names: ['*'] } } };
      await assert.rejects(startTestKeyd(s.dir, s.machineIdPath, { config }), {
        code: 'KEYD_CONFIG',
        message: new RegExp(`^config "principals"\\."edge-a": socket ${join(s.dir, file).replace(/[.]/g, '\\.')} is ${flag}`),
      });
    }
    // Control: a path of its own starts and is served.
    const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: { principals: { 'edge-a': { socket: join(s.dir, 'edge-a.sock'), mode: '0600', names: ['*'] } } } });
    assert.equal(keyd.principalSockets['edge-a'], join(s.dir, 'edge-a.sock'));
    await keyd.close();
  } finally {
    await s.cleanup();
  }
});

test('config numbers have maxima: a typo such as 1e12 is refused naming the key, its range and the value; each maximum itself is accepted', () => {
  const refused = (config: object, message: string) => assert.throws(() => parseConfig(config), { code: 'KEYD_CONFIG', message }, JSON.stringify(config));
  refused({ limits: { schedulerBatch: 1e12 } }, 'config "limits"."schedulerBatch" must be an integer from 1 to 4096 (requests served in one event-loop turn, with no timer or accept in between), not 1000000000000');
  refused({ limits: { maxConnectionsPerListener: 1_048_577 } }, 'config "limits"."maxConnectionsPerListener" must be an integer from 1 to 1048576 (connections are file descriptors; 1048576 is Linux\'s default ceiling per process, fs.nr_open), not 1048577');
  refused({ limits: { signaturesPerSecond: 1e7 } }, 'config "limits"."signaturesPerSecond" must be an integer from 0 to 1000000 (far above what keyd can sign per second), not 10000000');
  refused({ limits: { signaturesPerSecond: 1, signatureBurst: 1_000_001 } }, 'config "limits"."signatureBurst" must be an integer from 0 to 1000000 (far above what keyd can sign per second), not 1000001');
  refused({ limits: { delegatedCredentialsPerMinute: 60_001 } }, 'config "limits"."delegatedCredentialsPerMinute" must be an integer from 0 to 60000 (each is an audit line synced to disk), not 60001');
  refused({ limits: { delegatedCredentialMaxSeconds: 604_801 } }, 'config "limits"."delegatedCredentialMaxSeconds" must be an integer from 60 to 604800 (7 days, RFC 9345 §4), not 604801');
  refused({ maxPending: 1e12 }, 'config "maxPending" must be an integer from 1 to 65536 (unanswered requests per connection, each holding its frame), not 1000000000000');
  refused({ maxPending: '4096' }, 'config "maxPending" must be an integer from 1 to 65536 (unanswered requests per connection, each holding its frame), not "4096"');
  refused({ auditLog: { maxBytes: 2 ** 28 + 1 } }, 'config "auditLog"."maxBytes" must be an integer from 4096 to 268435456 (256 MiB: keyd reads audit.log whole at start to check its hash chain), not 268435457');
  refused({ auditLog: { keep: 1001 } }, 'config "auditLog"."keep" must be an integer from 1 to 1000, not 1001');
  refused({ principals: { p1: { socket: '/run/p1.sock', uid: 4_294_967_295, names: [] } } }, 'config "principals"."p1": "uid" must be an integer from 0 to 4294967294 (4294967295 is chown\'s "unchanged"), not 4294967295');
  refused({ principals: { p1: { socket: '/run/p1.sock', gid: -1, names: [] } } }, 'config "principals"."p1": "gid" must be an integer from 0 to 4294967294 (4294967295 is chown\'s "unchanged"), not -1');
  // Control: every maximum is accepted as written.
  const atMax = Object.fromEntries(Object.entries(LIMIT_RANGE).map(([key, { max }]) => [key, max]));
  const parsed = parseConfig({ limits: atMax, maxPending: 65_536, auditLog: { maxBytes: 2 ** 28, keep: 1000 }, principals: { p1: { socket: '/run/p1.sock', uid: 4_294_967_294, gid: 0, names: [] } } });
  assert.deepEqual(parsed.limits, atMax);
  assert.equal(parsed.limits.schedulerBatch, 4096);
  assert.equal(parsed.maxPending, 65_536);
  assert.deepEqual(parsed.auditLog, { maxBytes: 268_435_456, keep: 1000 });
  assert.equal(parsed.principals.find((p) => p.name === 'p1')?.uid, 4_294_967_294);
});

test('config "principals": any world bit in "mode" is refused (read or execute too, not only write), naming the mode', () => {
  const withMode = (mode: string) => ({ principals: { 'edge-a': { socket: '/run/keyd/a.sock', mode, names: ['*'] } } });
  for (const mode of ['0664', '0661', '0604', '0667']) {
    assert.throws(() => parseConfig(withMode(mode)), {
      code: 'KEYD_CONFIG',
      message: `config "principals"."edge-a": mode ${mode} lets every local user connect; a principal's socket must not be world-accessible`,
    }, mode);
  }
  // Positive control: group access is the point of a principal socket.
  assert.equal(parseConfig(withMode('0660')).principals.find((p) => p.name === 'edge-a')!.mode, 0o660);
});

test('config "principals": two principals on one socket are refused (callers of one would get the other\'s grants), also when one path is relative', () => {
  assert.throws(() => parseConfig({ principals: { a: { socket: '/run/keyd/e.sock', names: ['a.test'] }, b: { socket: '/run/keyd/e.sock', names: ['*'] } } }), {
    code: 'KEYD_CONFIG',
    message: 'config "principals"."b": socket /run/keyd/e.sock is already another principal\'s',
  });
  assert.throws(() => parseConfig({ principals: { a: { socket: '/etc/keyd/e.sock', names: ['a.test'] }, b: { socket: 'e.sock', names: ['*'] } } }, '/etc/keyd'), {
    code: 'KEYD_CONFIG',
    message: 'config "principals"."b": socket /etc/keyd/e.sock is already another principal\'s',
  });
  // Positive control: two sockets, two principals.
  const parsed = parseConfig({ principals: { a: { socket: '/run/keyd/a.sock', names: ['a.test'] }, b: { socket: '/run/keyd/b.sock', names: ['*'] } } });
  assert.deepEqual(parsed.principals.filter((p) => p.name !== 'local').map((p) => [p.name, p.socket]), [['a', '/run/keyd/a.sock'], ['b', '/run/keyd/b.sock']]);
});

test('config "principals": a principal named "admin" is refused (audit entries name the admin socket\'s callers so)', () => {
  assert.throws(() => parseConfig({ principals: { admin: { socket: '/run/keyd/x.sock', names: ['*'] } } }), {
    code: 'KEYD_CONFIG',
    message: 'config "principals"."admin": a principal name is 1–64 letters, digits, ".", "_" or "-", and not "admin"',
  });
  assert.equal(parseConfig({ principals: { admins: { socket: '/run/keyd/x.sock', names: ['*'] } } }).principals.some((p) => p.name === 'admins'), true); // positive control
});

test('config "limits": a misspelt limit is refused naming it and the known ones (it would stay at its default, unsaid)', () => {
  assert.throws(() => parseLimits({ signaturesPerSecnd: 5 }), {
    code: 'KEYD_CONFIG',
    message: `config "limits"."signaturesPerSecnd" is not a known limit (${Object.keys(LIMIT_RANGE).join(', ')})`,
  });
  assert.throws(() => parseConfig({ limits: { maxConnections: 10 } }), { code: 'KEYD_CONFIG', message: /^config "limits"\."maxConnections" is not a known limit/ });
  assert.equal(parseLimits({ signaturesPerSecond: 5 }).signaturesPerSecond, 5); // positive control
});

test('config "limits": a key named like an Object.prototype member (constructor, toString, __proto__) is an unknown limit, not one without a range', () => {
  for (const name of ['constructor', 'toString', 'hasOwnProperty', 'valueOf', '__proto__']) {
    // JSON.parse, as loadConfig reads the file: "__proto__" is an own key there.
    const limits = JSON.parse(`{"${name}": 5}`) as unknown;
    assert.throws(() => parseLimits(limits), { code: 'KEYD_CONFIG', message: `config "limits"."${name}" is not a known limit (${Object.keys(LIMIT_RANGE).join(', ')})` }, name);
    assert.throws(() => parseConfig(JSON.parse(`{"limits": {"${name}": 5}}`)), { code: 'KEYD_CONFIG', message: new RegExp(`^config "limits"\\."${name}" is not a known limit`) }, name);
  }
  assert.equal(parseLimits(JSON.parse('{"signatureBurst": 7, "signaturesPerSecond": 5}')).signatureBurst, 7); // positive control
});
