import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfigFile, parseHostPort, validateConfig } from '../../src/edge/config.js';

const minimal = {
  keyd: '/run/keyd.sock',
  routes: [{ names: ['example.com', '*.example.com'], upstream: '127.0.0.1:8080' }],
};

test('a minimal config gets the documented defaults', () => {
  const c = validateConfig(minimal, '/etc/edge');
  assert.deepEqual(c.listen, [{ host: '127.0.0.1', port: 8443 }]);
  assert.deepEqual(c.keyd, [{ socketPath: '/run/keyd.sock' }]);
  assert.equal(c.routes[0].proxyProtocol, false);
  assert.equal(c.routes[0].tls12, undefined, 'TLS 1.2 on unless a route turns it off');
  assert.deepEqual(c.routes[0].upstream, { host: '127.0.0.1', port: 8080 });
  assert.equal(c.limits.maxConnections, 10_000);
  assert.equal(c.limits.upstreamConnectTimeoutMs, 10_000);
  assert.equal(c.limits.lingerMs, 120_000);
  assert.equal(c.limits.lingerIdleMs, 2000);
  assert.equal(c.limits.lingerMaxBytes, 2 ** 24 + 2 ** 20);
  assert.equal(c.limits.maxLingering, 1024);
  assert.equal(c.limits.maxKeyUpdates, 64);
  assert.equal(c.limits.keyUpdateWindowMs, 60_000);
  assert.equal(c.limits.identityCacheSize, 1024);
  assert.equal(c.limits.identityCacheNames, 16_384);
  assert.equal(c.defaultServerName, undefined);
  assert.ok(c.workers >= 1);
  assert.equal(c.metrics, undefined);
});

test('relative keyd socket paths resolve against the config directory', () => {
  const c = validateConfig({ ...minimal, keyd: [{ socket: 'run/keyd.sock' }] }, '/etc/edge');
  assert.deepEqual(c.keyd, [{ socketPath: '/etc/edge/run/keyd.sock' }]);
});

test('every mistake is named precisely with code EDGE_CONFIG', () => {
  const cases: [unknown, RegExp][] = [
    [[], /JSON object/],
    [{ ...minimal, lisen: [] }, /unknown key 'lisen'/],
    [{ ...minimal, keyd: [] }, /keyd must name at least one endpoint/],
    [{ ...minimal, routes: [] }, /routes must be a non-empty list/],
    [{ ...minimal, routes: [{ names: ['a.example'], upstream: 'nope' }] }, /routes\[0\]\.upstream: 'nope' is not HOST:PORT/],
    [{ ...minimal, routes: [{ names: ['*.com'], upstream: '1.2.3.4:5' }] }, /routes\[0\]\.names\[0\]: wildcard/],
    [{ ...minimal, routes: [...minimal.routes, { names: ['EXAMPLE.com'], upstream: ':1' }] }, /not HOST:PORT|configured twice/],
    [{ ...minimal, routes: [...minimal.routes, { names: ['EXAMPLE.com'], upstream: '1.2.3.4:1' }] }, /^routes\[1\]\.names\[0\]: 'example\.com' is already routes\[0\]\.names\[0\]/],
    [{ ...minimal, defaultServerName: 'other.org' }, /not covered by any route/],
    [{ ...minimal, limits: { idleTimeoutMs: -1 } }, /limits\.idleTimeoutMs must be an integer/],
    [{ ...minimal, limits: { maxConns: 1 } }, /limits: unknown key 'maxConns'/],
    [{ ...minimal, routes: [{ names: ['a.example'], upstream: '1.2.3.4:5', tls12: 'no' }] }, /routes\[0\]\.tls12/],
    [{ ...minimal, limits: { identityCacheSize: 0 } }, /limits\.identityCacheSize must be an integer/],
    [{ ...minimal, limits: { lingerMs: 0 } }, /limits\.lingerMs must be an integer/],
    [{ ...minimal, limits: { upstreamConnectTimeoutMs: 99 } }, /^limits\.upstreamConnectTimeoutMs must be an integer from 100 to 600000, got 99$/],
    [{ ...minimal, limits: { upstreamConnectTimeoutMs: 600_001 } }, /^limits\.upstreamConnectTimeoutMs must be an integer from 100 to 600000, got 600001$/],
    [{ ...minimal, limits: { upstreamConnectTimeoutMs: '300' } }, /^limits\.upstreamConnectTimeoutMs must be an integer from 100 to 600000, got "300"$/],
    [{ ...minimal, workers: 0 }, /workers must be an integer from 1/],
    [{ ...minimal, logLevel: 'loud' }, /logLevel must be one of/],
    [{ ...minimal, keyd: [{ host: 'k', port: 1, cert: '/nonexistent/c.pem', key: 'k', ca: 'c' }] }, /keyd\[0\]\.cert: cannot read '\/nonexistent\/c.pem': ENOENT/],
    [{ ...minimal, listen: ['1.2.3.4:70000'] }, /port 70000 is out of range/],
  ];
  for (const [doc, message] of cases) {
    assert.throws(() => validateConfig(doc, '/'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'EDGE_CONFIG');
      assert.match(err.message, message);
      return true;
    });
  }
});

test('limits.upstreamConnectTimeoutMs: both bounds are accepted as given', () => {
  assert.equal(validateConfig({ ...minimal, limits: { upstreamConnectTimeoutMs: 100 } }).limits.upstreamConnectTimeoutMs, 100);
  assert.equal(validateConfig({ ...minimal, limits: { upstreamConnectTimeoutMs: 600_000 } }).limits.upstreamConnectTimeoutMs, 600_000);
});

test('ticketLifetimeSeconds: an integer from 1 to 604800 (RFC 8446 §4.6.1), refused otherwise with the exact message; both bounds and the 7200 default as the control', () => {
  for (const [value, shown] of [[0, '0'], [604_801, '604801'], [7200.5, '7200.5'], ['7200', '"7200"'], [-1, '-1'], [null, 'null']] as const) {
    assert.throws(() => validateConfig({ ...minimal, ticketLifetimeSeconds: value }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'EDGE_CONFIG');
      assert.equal(err.message, `ticketLifetimeSeconds must be an integer from 1 to 604800, got ${shown}`);
      return true;
    });
  }
  assert.equal(validateConfig(minimal).ticketLifetimeSeconds, 7200);
  assert.equal(validateConfig({ ...minimal, ticketLifetimeSeconds: 1 }).ticketLifetimeSeconds, 1);
  assert.equal(validateConfig({ ...minimal, ticketLifetimeSeconds: 604_800 }).ticketLifetimeSeconds, 604_800);
});

test('wildcard default name is refused; a covered default is accepted', () => {
  assert.throws(() => validateConfig({ ...minimal, defaultServerName: '*.example.com' }), /concrete name/);
  assert.equal(validateConfig({ ...minimal, defaultServerName: 'WWW.example.com' }).defaultServerName, 'www.example.com');
});

test('parseHostPort handles IPv6 and bare ports', () => {
  assert.deepEqual(parseHostPort('[::1]:443', 'x'), { host: '::1', port: 443 });
  assert.deepEqual(parseHostPort('8443', 'x'), { host: '127.0.0.1', port: 8443 });
  assert.deepEqual(parseHostPort('0.0.0.0:0', 'x'), { host: '0.0.0.0', port: 0 });
});

test('loadConfigFile: unreadable and non-JSON files are named', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-config-'));
  try {
    assert.throws(() => loadConfigFile(join(dir, 'missing.json')), /cannot read config .*missing.json': ENOENT/);
    writeFileSync(join(dir, 'bad.json'), '{ "keyd": ');
    assert.throws(() => loadConfigFile(join(dir, 'bad.json')), /bad.json' is not valid JSON/);
    writeFileSync(join(dir, 'ok.json'), JSON.stringify({ ...minimal, keyd: 'keyd.sock' }));
    assert.deepEqual(loadConfigFile(join(dir, 'ok.json')).keyd, [{ socketPath: join(dir, 'keyd.sock') }]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('route clientAuth: mode, CA file relative to the config, CRL; errors name the key', async () => {
  const { makeClientCa, issue, makeCrl } = await import('../helpers/client-pki.js');
  const ca = await makeClientCa();
  const leaf = await issue(ca);
  const dir = mkdtempSync(join(tmpdir(), 'edge-client-auth-'));
  try {
    writeFileSync(join(dir, 'ca.pem'), ca.pem);
    writeFileSync(join(dir, 'leaf.pem'), leaf.pem);
    writeFileSync(join(dir, 'crl.pem'), await makeCrl(ca, [leaf]));
    const route = (clientAuth: unknown) => ({ keyd: '/run/keyd.sock', routes: [{ names: ['a.test'], upstream: '127.0.0.1:1', clientAuth }] });
    const c = validateConfig(route({ mode: 'required', ca: 'ca.pem', crl: 'crl.pem' }), dir).routes[0]!.clientAuth;
    assert.equal(c?.mode, 'required');
    assert.equal(c?.caPem?.toString(), ca.pem);
    assert.match(c?.crlPem?.toString() ?? '', /BEGIN X509 CRL|BEGIN CRL/);
    assert.equal(c?.advertiseCaNames, true);
    assert.equal(validateConfig(route({ mode: 'off' }), dir).routes[0]!.clientAuth, undefined);
    assert.equal(validateConfig(route({ mode: 'optional', ca: 'ca.pem', advertiseCaNames: false }), dir).routes[0]!.clientAuth?.advertiseCaNames, false);
    assert.throws(() => validateConfig(route({ mode: 'always', ca: 'ca.pem' }), dir), /routes\[0\]\.clientAuth\.mode must be off, optional or required/);
    assert.throws(() => validateConfig(route({ mode: 'required' }), dir), /routes\[0\]\.clientAuth\.ca .* is required/);
    assert.throws(() => validateConfig(route({ mode: 'required', ca: 'missing.pem' }), dir), /routes\[0\]\.clientAuth\.ca: cannot read/);
    assert.throws(() => validateConfig(route({ mode: 'required', ca: 'leaf.pem' }), dir), /not a CA/);
    // A CA file without any certificate (a key, a CRL, an empty file) would refuse every client at run time.
    writeFileSync(join(dir, 'empty.pem'), '');
    assert.throws(() => validateConfig(route({ mode: 'required', ca: 'empty.pem' }), dir), {
      code: 'EDGE_CONFIG',
      message: `routes[0].clientAuth.ca: '${join(dir, 'empty.pem')}' holds no PEM certificate`,
    });
    assert.throws(() => validateConfig(route({ mode: 'required', ca: 'crl.pem' }), dir), /routes\[0\]\.clientAuth\.ca: '.*crl\.pem' holds no PEM certificate/);
    assert.throws(() => validateConfig(route({ mode: 'required', ca: 'ca.pem', crl: 'ca.pem' }), dir), /clientAuth\.crl: .* no PEM "X509 CRL"/);
    assert.throws(() => validateConfig(route({ mode: 'required', ca: 'ca.pem', verify: 'none' }), dir), /unknown key 'verify'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('routes[].tls12: false is kept per route', () => {
  const c = validateConfig({ ...minimal, routes: [...minimal.routes, { names: ['legacy-off.example'], upstream: '127.0.0.1:1', tls12: false }] }, '/etc/edge');
  assert.equal(c.routes[1].tls12, false);
  assert.equal(c.routes[0].tls12, undefined);
});

test('mistakes found by mutation probing: each refused with its exact message, the nearest legal value accepted as the control', () => {
  const refused = (doc: unknown, message: string) =>
    assert.throws(() => validateConfig(doc, '/etc/edge'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'EDGE_CONFIG');
      assert.equal(err.message, message);
      return true;
    });
  const route = (extra: Record<string, unknown>) => ({ ...minimal, routes: [{ names: ['a.example'], upstream: '1.2.3.4:5', ...extra }] });
  // A misspelt route key must not leave the route running without what was asked for.
  refused(route({ proxyprotocol: true }), "routes[0]: unknown key 'proxyprotocol' (allowed: names, upstream, proxyProtocol, alpn, clientAuth, tls12)");
  assert.equal(validateConfig(route({ proxyProtocol: true })).routes[0]!.proxyProtocol, true);
  // A socket endpoint with TLS keys is a mistake, not a socket.
  refused({ ...minimal, keyd: [{ socket: 'k.sock', cert: 'c.pem' }] }, "keyd[0]: unknown key 'cert' (allowed: socket)");
  // Port 0 means "any" when listening; keyd cannot be reached there.
  refused({ ...minimal, keyd: [{ host: 'k', port: 0, cert: 'c', key: 'k', ca: 'a' }] }, 'keyd[0].port must be an integer from 1 to 65535, got 0');
  refused({ ...minimal, listen: [] }, 'listen must name at least one address');
  refused(route({ names: [] }), 'routes[0].names must be a non-empty list');
  assert.deepEqual(validateConfig(route({ names: 'b.example' })).routes[0]!.names, ['b.example']);
  // RFC 7301 §3.1: a protocol name is 1 to 255 bytes (its length is one byte on the wire).
  refused(route({ alpn: ['p'.repeat(256)] }), 'routes[0].alpn[0] is longer than 255 bytes (RFC 7301 §3.1)');
  assert.deepEqual(validateConfig(route({ alpn: ['p'.repeat(255)] })).routes[0]!.alpn, ['p'.repeat(255)]);
  // docs/EDGE.md: the margin is less than half the lifetime (else the credential is renewed before it is served).
  refused({ ...minimal, delegatedCredentials: { lifetimeSeconds: 120, expiryMarginSeconds: 60 } }, 'delegatedCredentials.expiryMarginSeconds must be less than half of lifetimeSeconds');
  assert.equal(validateConfig({ ...minimal, delegatedCredentials: { lifetimeSeconds: 120, expiryMarginSeconds: 59 } }).delegatedCredentials.expiryMarginSeconds, 59);
  // DNS: a name is at most 253 characters, a label at most 63, never ending in '-'.
  const name253 = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
  assert.equal(name253.length, 253);
  assert.deepEqual(validateConfig(route({ names: [name253] })).routes[0]!.names, [name253]);
  refused(route({ names: [`x${name253}`] }), `routes[0].names[0]: route name 'x${name253}' must be 1 to 253 characters`);
});

test('keyd TLS files (cert, key, ca) are read relative to the config file, not the working directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'edge-keyd-tls-'));
  try {
    for (const f of ['edge.pem', 'edge-key.pem', 'keyd-ca.pem']) writeFileSync(join(dir, f), `contents of ${f}`);
    writeFileSync(join(dir, 'edge.json'), JSON.stringify({ ...minimal, keyd: [{ host: 'k', port: 7443, cert: 'edge.pem', key: 'edge-key.pem', ca: 'keyd-ca.pem' }] }));
    const [endpoint] = loadConfigFile(join(dir, 'edge.json')).keyd as [{ host: string; port: number; tls: { cert: Buffer; key: Buffer; ca: Buffer } }];
    assert.equal(endpoint.tls.cert.toString(), 'contents of edge.pem');
    assert.equal(endpoint.tls.key.toString(), 'contents of edge-key.pem');
    assert.equal(endpoint.tls.ca.toString(), 'contents of keyd-ca.pem');
    // The same relative name where the file is not: named with the resolved path.
    assert.throws(() => validateConfig({ ...minimal, keyd: [{ host: 'k', port: 7443, cert: 'edge.pem', key: 'edge-key.pem', ca: 'keyd-ca.pem' }] }, '/nonexistent'), {
      code: 'EDGE_CONFIG',
      message: "keyd[0].cert: cannot read '/nonexistent/edge.pem': ENOENT",
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('routes[].upstream port 0 is refused (every client would meet a refused connect after its handshake); port 1 and 65535 are accepted', () => {
  const withUpstream = (upstream: unknown) => ({ ...minimal, routes: [{ names: ['a.example'], upstream }] });
  for (const upstream of ['127.0.0.1:0', '0', '[::1]:0', { host: '10.0.0.1', port: 0 }]) {
    assert.throws(() => validateConfig(withUpstream(upstream)), {
      code: 'EDGE_CONFIG',
      message: "routes[0].upstream: port 0 cannot be connected to; an upstream's port is 1 to 65535",
    }, JSON.stringify(upstream));
  }
  assert.deepEqual(validateConfig(withUpstream('127.0.0.1:1')).routes[0]!.upstream, { host: '127.0.0.1', port: 1 });
  assert.deepEqual(validateConfig(withUpstream({ host: '10.0.0.1', port: 65535 })).routes[0]!.upstream, { host: '10.0.0.1', port: 65535 });
  assert.deepEqual(validateConfig(withUpstream('8080')).routes[0]!.upstream, { host: '127.0.0.1', port: 8080 });
});

test('keyd as an empty string is refused (it resolved to the config directory as a socket path); { "socket": "" } is refused alike', () => {
  for (const [keyd, where] of [['', 'keyd[0]'], [['/run/keyd.sock', ''], 'keyd[1]'], [[{ socket: '' }], 'keyd[0].socket']] as const) {
    assert.throws(() => validateConfig({ ...minimal, keyd }, '/etc/edge'), { code: 'EDGE_CONFIG', message: `${where} must be a non-empty string` }, JSON.stringify(keyd));
  }
  // Control: a relative path still resolves against the config directory.
  assert.deepEqual(validateConfig({ ...minimal, keyd: 'run/keyd.sock' }, '/etc/edge').keyd, [{ socketPath: '/etc/edge/run/keyd.sock' }]);
});

test('the same listening address twice (also after normalisation, or as metrics) is refused naming both keys; port 0 twice and distinct addresses are accepted', () => {
  const refused = (doc: unknown, message: string) =>
    assert.throws(() => validateConfig(doc, '/etc/edge'), { code: 'EDGE_CONFIG', message }, JSON.stringify(doc));
  const same = (second: string, first = 'listen[0]', where = 'listen[1]') => `${where}: ${second} is the same address as ${first}; each address is listened on once`;
  // Each of these binds the same socket twice: EADDRINUSE only once the edge starts.
  refused({ ...minimal, listen: ['127.0.0.1:8443', '127.0.0.1:8443'] }, same('127.0.0.1:8443'));
  refused({ ...minimal, listen: ['8443', { host: '127.0.0.1', port: 8443 }] }, same('127.0.0.1:8443'));
  refused({ ...minimal, listen: ['[::1]:443', '0.0.0.0:443', '[0:0:0:0:0:0:0:1]:443'] }, same('[0:0:0:0:0:0:0:1]:443', 'listen[0]', 'listen[2]'));
  refused({ ...minimal, listen: ['Edge.Example:443', 'edge.example.:443'] }, same('edge.example.:443'));
  refused({ ...minimal, listen: ['127.0.0.1:8443'], metrics: { host: '127.0.0.1', port: 8443 } }, same('127.0.0.1:8443', 'listen[0]', 'metrics'));
  // Controls: another port, another host, each port 0 (its own ephemeral port), metrics elsewhere.
  assert.deepEqual(validateConfig({ ...minimal, listen: ['127.0.0.1:8443', '127.0.0.1:8444', '[::1]:8443'] }).listen, [
    { host: '127.0.0.1', port: 8443 },
    { host: '127.0.0.1', port: 8444 },
    { host: '::1', port: 8443 },
  ]);
  assert.equal(validateConfig({ ...minimal, listen: ['127.0.0.1:0', '127.0.0.1:0'], metrics: '127.0.0.1:0' }).listen.length, 2);
  assert.deepEqual(validateConfig({ ...minimal, listen: ['127.0.0.1:8443'], metrics: '127.0.0.1:9464' }).metrics, { host: '127.0.0.1', port: 9464 });
});

test('a wildcard listen address beside a specific one of its family on the same port is refused; 0.0.0.0 beside [::] binds [::] IPv6-only', () => {
  const refused = (doc: unknown, message: string) =>
    assert.throws(() => validateConfig(doc, '/etc/edge'), { code: 'EDGE_CONFIG', message }, JSON.stringify(doc));
  // Whichever is bound second fails with EADDRINUSE: the wildcard already takes the address.
  refused(
    { ...minimal, listen: ['0.0.0.0:443', '127.0.0.1:443'] },
    'listen[1]: 127.0.0.1:443 is already listened on by listen[0] (0.0.0.0:443 takes every IPv4 address of port 443); list one or the other',
  );
  refused(
    { ...minimal, listen: ['[::1]:443', '[0::0]:443'] },
    'listen[0]: [::1]:443 is already listened on by listen[1] ([0::0]:443 takes every IPv6 address of port 443); list one or the other',
  );
  refused(
    { ...minimal, listen: ['0.0.0.0:9464'], metrics: '127.0.0.1:9464' },
    'metrics: 127.0.0.1:9464 is already listened on by listen[0] (0.0.0.0:9464 takes every IPv4 address of port 9464); list one or the other',
  );
  // The documented pair (docs/EDGE.md): both accepted, [::] marked IPv6-only so that it does not
  // also take the IPv4 addresses 0.0.0.0 binds (Linux's default net.ipv6.bindv6only = 0).
  assert.deepEqual(validateConfig({ ...minimal, listen: ['0.0.0.0:443', '[::]:443'] }).listen, [
    { host: '0.0.0.0', port: 443 },
    { host: '::', port: 443, ipv6Only: true },
  ]);
  assert.deepEqual(validateConfig({ ...minimal, listen: ['[::]:443', '127.0.0.1:443'] }).listen, [
    { host: '::', port: 443, ipv6Only: true },
    { host: '127.0.0.1', port: 443 },
  ]);
  // Controls: [::] alone keeps the system's dual-stack default; wildcards on other ports, host names and port 0 are left alone.
  assert.deepEqual(validateConfig({ ...minimal, listen: ['[::]:443', '0.0.0.0:8443', 'localhost:443'] }).listen, [
    { host: '::', port: 443 },
    { host: '0.0.0.0', port: 8443 },
    { host: 'localhost', port: 443 },
  ]);
  assert.equal(validateConfig({ ...minimal, listen: ['0.0.0.0:0', '127.0.0.1:0'] }).listen.length, 2);
});

test('routes[].alpn: an empty name, a name listed twice and a lone surrogate are refused (RFC 7301 §3.1); non-ASCII names are bounded by their UTF-8 bytes', () => {
  const route = (alpn: unknown) => ({ ...minimal, routes: [{ names: ['a.example'], upstream: '1.2.3.4:5', alpn }] });
  const refused = (alpn: unknown, message: string) => assert.throws(() => validateConfig(route(alpn)), { code: 'EDGE_CONFIG', message }, JSON.stringify(alpn));
  refused(['h2', ''], 'routes[0].alpn[1] must be a non-empty string');
  refused(['h2', 'http/1.1', 'h2'], "routes[0].alpn[2]: 'h2' is already routes[0].alpn[0]; each protocol is listed once");
  refused(['x\ud800'], 'routes[0].alpn[0] holds a lone UTF-16 surrogate, which has no UTF-8 encoding');
  refused(['é'.repeat(128)], 'routes[0].alpn[0] is longer than 255 bytes (RFC 7301 §3.1)'); // 256 bytes, 128 characters
  // Controls: distinct names (case matters: the names are bytes), 255 UTF-8 bytes, a surrogate pair.
  assert.deepEqual(validateConfig(route(['h2', 'H2', 'http/1.1'])).routes[0]!.alpn, ['h2', 'H2', 'http/1.1']);
  assert.deepEqual(validateConfig(route([`${'é'.repeat(127)}x`, '\u{1F600}'])).routes[0]!.alpn, [`${'é'.repeat(127)}x`, '\u{1F600}']);
});

// An empty list read as "the union of all routes' lists" (what omitting the key means), while
// a user writing [] most likely means "no ALPN", which a route cannot have: refused, not guessed.
test('routes[].alpn: [] is refused, telling the user to omit the key; an omitted key is the union default', () => {
  const routes = (alpn: unknown) => ({
    ...minimal,
    routes: [
      { names: ['h2.example'], upstream: '1.2.3.4:5', alpn: ['h2'] },
      { names: ['a.example'], upstream: '1.2.3.4:6', ...(alpn === undefined ? {} : { alpn }) },
    ],
  });
  assert.throws(() => validateConfig(routes([])), {
    code: 'EDGE_CONFIG',
    message: "routes[1].alpn is an empty list: omit the key to negotiate from the union of all routes' lists (a route cannot turn ALPN off, RFC 7301 §3.1)",
  });
  // Controls: the key omitted (the union default, an empty list inside), and a one-name list.
  assert.deepEqual(validateConfig(routes(undefined)).routes.map((r) => r.alpn), [['h2'], []]);
  assert.deepEqual(validateConfig(routes(['http/1.1'])).routes.map((r) => r.alpn), [['h2'], ['http/1.1']]);
});

test('the same route name twice is refused naming both keys (after normalisation), within a route and across routes', () => {
  const refused = (routes: unknown, message: string) => assert.throws(() => validateConfig({ ...minimal, routes }), { code: 'EDGE_CONFIG', message });
  refused([{ names: ['a.example', 'A.Example.'], upstream: '1.2.3.4:5' }], "routes[0].names[1]: 'a.example' is already routes[0].names[0]; a name may appear once");
  refused(
    [{ names: ['a.example', '*.b.example'], upstream: '1.2.3.4:5' }, { names: ['c.example', '*.B.example'], upstream: '1.2.3.4:6' }],
    "routes[1].names[1]: '*.b.example' is already routes[0].names[1]; a name may appear once",
  );
  // Control: an exact name under a wildcard of the same parent is not a duplicate (exact wins).
  assert.equal(validateConfig({ ...minimal, routes: [{ names: ['*.b.example'], upstream: '1.2.3.4:5' }, { names: ['x.b.example', 'b.example'], upstream: '1.2.3.4:6' }] }).routes.length, 2);
});

test('clientAuth with mode off: the files named are read and checked as with a mode that uses them; nothing named → no client auth', async () => {
  const { makeClientCa, issue, makeCrl } = await import('../helpers/client-pki.js');
  const ca = await makeClientCa();
  const leaf = await issue(ca);
  const dir = mkdtempSync(join(tmpdir(), 'edge-client-auth-off-'));
  try {
    writeFileSync(join(dir, 'ca.pem'), ca.pem);
    writeFileSync(join(dir, 'leaf.pem'), leaf.pem);
    writeFileSync(join(dir, 'crl.pem'), await makeCrl(ca, [leaf]));
    writeFileSync(join(dir, 'garbage.crl'), 'not a CRL');
    const route = (clientAuth: unknown) => ({ keyd: '/run/keyd.sock', routes: [{ names: ['a.test'], upstream: '127.0.0.1:1', clientAuth }] });
    const refused = (clientAuth: unknown, message: string) => assert.throws(() => validateConfig(route(clientAuth), dir), { code: 'EDGE_CONFIG', message }, JSON.stringify(clientAuth));
    refused({ mode: 'off', ca: 'missing.pem' }, `routes[0].clientAuth.ca: cannot read '${join(dir, 'missing.pem')}': ENOENT`);
    refused({ mode: 'off', ca: 'leaf.pem' }, `routes[0].clientAuth.ca: '${join(dir, 'leaf.pem')}' holds a certificate that is not a CA (basicConstraints cA)`);
    refused({ mode: 'off', ca: 'ca.pem', crl: 'missing.crl' }, `routes[0].clientAuth.crl: cannot read '${join(dir, 'missing.crl')}': ENOENT`);
    refused({ mode: 'off', ca: 'ca.pem', crl: 'garbage.crl' }, `routes[0].clientAuth.crl: '${join(dir, 'garbage.crl')}' holds no PEM "X509 CRL" block`);
    refused({ mode: 'off', crl: 'crl.pem' }, 'routes[0].clientAuth.crl: a CRL is checked against the CAs of routes[0].clientAuth.ca, which is not set');
    refused({ mode: 'off', advertiseCaNames: 'no' }, 'routes[0].clientAuth.advertiseCaNames must be true or false');
    // Controls: valid files with mode off are kept with mode off (the edge checks the CRL's
    // signature at start, and serves the route without client auth); mode off alone is no client auth.
    const off = validateConfig(route({ mode: 'off', ca: 'ca.pem', crl: 'crl.pem', advertiseCaNames: false }), dir).routes[0]!.clientAuth;
    assert.equal(off?.mode, 'off');
    assert.equal(off?.caPem?.toString(), ca.pem);
    assert.equal(off?.crlPem?.toString(), readFileSync(join(dir, 'crl.pem'), 'utf8'));
    assert.equal(off?.advertiseCaNames, false);
    assert.equal(validateConfig(route({ mode: 'off' }), dir).routes[0]!.clientAuth, undefined);
    assert.equal(validateConfig(route({ mode: 'off', advertiseCaNames: true }), dir).routes[0]!.clientAuth, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
