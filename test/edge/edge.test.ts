/**
 * The edge in-process, on the real TLS engine, with an in-process keyd stand-in and node:tls
 * as the client: routing by SNI, the default identity, refusals, keyd outages, pushed
 * changes, PROXY v2, upstream failures, drain, idle timeout, metrics.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { validateConfig } from '../../src/edge/config.js';
import { startEdge, type RunningEdge } from '../../src/edge/edge.js';
import { loadEngine } from '../../src/edge/engine.js';
import { PROXY_V2_SIGNATURE, Pp2Type, decodeHandshakeDetails, decodeProxyV2 } from '../../src/edge/proxy-protocol.js';
import { blackholedPort } from '../helpers/blackhole.js';
import { peerClosed } from '../helpers/peer-closed.js';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { FakeKeydService } from './fake-keyd.js';
import { AlertDescription } from '../../src/tls/alert.js';
import { socketTransport, Tls13Client } from '../helpers/tls13-client.js';

interface Upstream {
  port: number;
  received: Buffer[];
  server: Server;
}

/**
 * Answers each connection with `<tag>:` + whatever it receives (echo), recording the raw
 * bytes; a leading PROXY v2 header is recorded but not echoed.
 */
async function startUpstream(t: TestContext, tag: string): Promise<Upstream> {
  const received: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let head: Buffer | undefined = Buffer.alloc(0); // until the PROXY header (if any) is past
    socket.write(`${tag}:`);
    socket.on('data', (data: Buffer) => {
      received.push(data);
      let chunk: Buffer = data;
      if (head) {
        head = Buffer.concat([head, chunk]);
        if (head.subarray(0, PROXY_V2_SIGNATURE.length).equals(PROXY_V2_SIGNATURE.subarray(0, head.length))) {
          const header = decodeProxyV2(head);
          if (!header) return;
          chunk = head.subarray(header.length);
        } else {
          chunk = head;
        }
        head = undefined;
      }
      if (chunk.length) socket.write(chunk);
    });
    socket.on('end', () => socket.end());
    socket.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { port: (server.address() as { port: number }).port, received, server };
}

interface Fixture {
  edge: RunningEdge;
  keyd: FakeKeydService;
  port: number;
  pkiA: TestPki;
  pkiB: TestPki;
  upA: Upstream;
  upB: Upstream;
  /** What the config was validated from (a reload test changes one key of it). */
  raw: Record<string, unknown>;
}

const quiet = pino({ level: 'silent' });

async function fixture(t: TestContext, extra: Record<string, unknown> = {}, logger = quiet): Promise<Fixture> {
  const [pkiA, pkiB] = await Promise.all([
    makeTestPki({ commonName: 'a.test', extraNames: ['a.test'] }),
    makeTestPki({ keyType: 'rsa2048', commonName: 'b.test', extraNames: ['*.b.test'] }),
  ]);
  const keyd = new FakeKeydService();
  keyd.put(['a.test'], pkiA.leafKey, pkiA.chainDer);
  keyd.put(['*.b.test'], pkiB.leafKey, pkiB.chainDer);
  const upA = await startUpstream(t, 'A');
  const upB = await startUpstream(t, 'B');
  const raw = {
    listen: ['127.0.0.1:0'],
    keyd: '/fake/keyd.sock',
    routes: [
      { names: ['a.test', 'nokey.test'], upstream: `127.0.0.1:${upA.port}` },
      { names: ['*.b.test'], upstream: `127.0.0.1:${upB.port}`, proxyProtocol: true },
    ],
    defaultServerName: 'a.test',
    workers: 1,
    ...extra,
  };
  const config = validateConfig(raw);
  // Looked up at each connect, so a test can replace keyd.connect (a slow endpoint).
  const edge = await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: (e, o) => keyd.connect(e, o), logger });
  t.after(() => edge.close());
  return { edge, keyd, port: edge.addresses[0].port, pkiA, pkiB, upA, upB, raw };
}

interface ClientResult {
  socket: TLSSocket;
  cert: X509Certificate;
}

function connectClient(port: number, ca: string[], servername?: string): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port,
      ca,
      minVersion: 'TLSv1.3',
      ...(servername === undefined ? { checkServerIdentity: () => undefined } : { servername }),
    });
    socket.once('secureConnect', () => {
      const raw = socket.getPeerX509Certificate();
      if (!raw) return reject(new Error('no peer certificate'));
      resolve({ socket, cert: raw });
    });
    socket.once('error', reject);
  });
}

/** Writes `text`, reads until the upstream's echo of it has come back, then closes. */
async function exchange(socket: TLSSocket, text: string): Promise<string> {
  let out = '';
  socket.setEncoding('utf8');
  const echoed = new Promise<void>((resolve, reject) => {
    socket.on('data', (d: string) => {
      out += d;
      if (out.endsWith(text)) resolve();
    });
    socket.once('end', () => resolve());
    socket.once('error', reject);
  });
  socket.write(text);
  await echoed;
  socket.end();
  return out;
}


/** The names the edge asks the stand-in keyd about, in order. */
function recordLookups(keyd: { lookup: (name: string) => unknown }): string[] {
  const asked: string[] = [];
  const lookup = keyd.lookup.bind(keyd);
  keyd.lookup = (name: string) => {
    asked.push(name);
    return lookup(name);
  };
  return asked;
}

test('routes by SNI to the right certificate and upstream; no SNI gets the default', async (t) => {
  const f = await fixture(t);
  const cas = [f.pkiA.caCertPem, f.pkiB.caCertPem];

  const a = await connectClient(f.port, cas, 'a.test');
  assert.equal(a.cert.fingerprint256, new X509Certificate(f.pkiA.leafCertPem).fingerprint256);
  assert.equal(await exchange(a.socket, 'hello a'), 'A:hello a');

  const b = await connectClient(f.port, cas, 'www.b.test');
  assert.equal(b.cert.fingerprint256, new X509Certificate(f.pkiB.leafCertPem).fingerprint256);
  assert.equal(await exchange(b.socket, 'hello b'), 'B:hello b');

  const none = await connectClient(f.port, cas);
  assert.equal(none.cert.fingerprint256, new X509Certificate(f.pkiA.leafCertPem).fingerprint256);
  assert.equal(await exchange(none.socket, 'no sni'), 'A:no sni');
  assert.ok(f.keyd.signCount >= 3, 'every full handshake was signed by keyd');
});

/** A TCP port free on both 0.0.0.0 and [::] (bound dual-stack once, then released); undefined without IPv6. */
async function dualStackFreePort(): Promise<number | undefined> {
  const probe = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen({ port: 0, host: '::' }, resolve);
    });
  } catch {
    return undefined;
  }
  const { port } = probe.address() as { port: number };
  await new Promise((r) => probe.close(r));
  return port;
}

test('listen ["0.0.0.0:P", "[::]:P"] (the documented pair) binds both and serves over IPv4 and IPv6', async (t) => {
  const port = await dualStackFreePort();
  if (port === undefined) return t.skip('no IPv6 on this machine');
  // Before [::] was bound IPv6-only beside an IPv4 address, the second bind failed: EADDRINUSE.
  const f = await fixture(t, { listen: [`0.0.0.0:${port}`, `[::]:${port}`] });
  assert.deepEqual(
    f.edge.addresses.map((a) => a.host),
    ['0.0.0.0', '::'],
  );
  for (const host of ['127.0.0.1', '::1']) {
    const socket: TLSSocket = tlsConnect({ host, port, servername: 'a.test', ca: [f.pkiA.caCertPem, f.pkiB.caCertPem], minVersion: 'TLSv1.3' });
    await once(socket, 'secureConnect');
    assert.equal(await exchange(socket, `over ${host}`), `A:over ${host}`, host);
  }
});

test('half-close: a client that sends its request and close_notify at once still gets the whole answer', async (t) => {
  const f = await fixture(t);
  const a = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  let out = '';
  a.socket.setEncoding('utf8');
  a.socket.on('data', (d: string) => (out += d));
  const ended = new Promise<void>((resolve, reject) => {
    a.socket.once('end', () => resolve());
    a.socket.once('error', reject);
  });
  a.socket.end('request then close_notify'); // RFC 8446 §6.1: closes only the client's side
  await ended;
  assert.equal(out, 'A:request then close_notify');
});

test('ALPN per route: each name negotiates from its own list; no overlap → no_application_protocol', async (t) => {
  const pki = await makeTestPki({ commonName: 'h1.test', extraNames: ['h1.test', 'h2.test'] });
  const keyd = new FakeKeydService();
  keyd.put(['h1.test', 'h2.test'], pki.leafKey, pki.chainDer);
  const up = await startUpstream(t, 'U');
  const config = validateConfig({
    listen: ['127.0.0.1:0'],
    keyd: '/fake/keyd.sock',
    routes: [
      { names: ['h1.test'], upstream: `127.0.0.1:${up.port}`, alpn: ['http/1.1'] },
      { names: ['h2.test'], upstream: `127.0.0.1:${up.port}`, alpn: ['h2'] },
    ],
    workers: 1,
  });
  const edge = await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: keyd.connect, logger: quiet });
  t.after(() => edge.close());
  const negotiate = (servername: string, ALPNProtocols: string[]) =>
    new Promise<string | false | null>((resolve, reject) => {
      const s = tlsConnect({ host: '127.0.0.1', port: edge.addresses[0].port, servername, ALPNProtocols, ca: pki.caCertPem });
      s.once('secureConnect', () => {
        resolve(s.alpnProtocol);
        s.destroy();
      });
      s.once('error', reject);
    });
  assert.equal(await negotiate('h1.test', ['h2', 'http/1.1']), 'http/1.1');
  assert.equal(await negotiate('h2.test', ['h2', 'http/1.1']), 'h2');
  await assert.rejects(negotiate('h1.test', ['h2']), /no application protocol|NO_APPLICATION_PROTOCOL/i);
});

test('PROXY v2 header carries the client address and the server name', async (t) => {
  const f = await fixture(t);
  const b = await connectClient(f.port, [f.pkiB.caCertPem], 'x.b.test');
  const localPort = b.socket.localPort;
  assert.equal(await exchange(b.socket, 'payload'), 'B:payload');
  const raw = Buffer.concat(f.upB.received);
  const header = decodeProxyV2(raw);
  assert.ok(header);
  assert.equal(header.command, 'PROXY');
  assert.equal(header.sourceAddress, '127.0.0.1');
  assert.equal(header.sourcePort, localPort);
  assert.equal(header.destinationPort, f.port);
  assert.equal(header.tlvs.get(Pp2Type.AUTHORITY)?.toString(), 'x.b.test');
  assert.equal(raw.subarray(header.length).toString(), 'payload');
});

// RFC 6066 §3: HostName goes "without a trailing dot"; the engine reads one trailing dot as the
// same name and lower-cases it (RFC 4343), so routing, keyd, the PROXY header and the ticket's
// name all see `x.b.test` (docs/EDGE.md, SNI routing).
test('SNI "X.B.Test." and "A.TEST." route as x.b.test and a.test (certificate, upstream, PROXY authority); "a.test.." is illegal_parameter', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t);
  const asked = recordLookups(f.keyd);
  const session = async (serverName: string) => {
    const transport = await socketTransport(f.port);
    t.after(() => transport.close());
    const client = new Tls13Client(transport, { serverName });
    await client.handshake();
    client.sendApplicationData(Buffer.from('dotted'));
    return { client, echoed: (await client.readApplicationData(8)).toString() };
  };
  const b = await session('X.B.Test.');
  assert.equal(b.echoed, 'B:dotted');
  assert.ok(b.client.authentication!.certificate.includes(Buffer.from(f.pkiB.chainDer[0]!)), "*.b.test's certificate");
  const header = decodeProxyV2(Buffer.concat(f.upB.received));
  assert.equal(header?.tlvs.get(Pp2Type.AUTHORITY)?.toString(), 'x.b.test');
  const a = await session('A.TEST.');
  assert.equal(a.echoed, 'A:dotted');
  assert.ok(a.client.authentication!.certificate.includes(Buffer.from(f.pkiA.chainDer[0]!)), "a.test's certificate");
  // keyd is asked for the names without the dot (a.test, the default name, may already be cached).
  assert.ok(asked.includes('x.b.test'));
  assert.deepEqual(asked.filter((n) => n !== n.toLowerCase() || n.endsWith('.')), []);
  const askedBefore = asked.length;
  // Two dots are not one name: refused at the ClientHello, not routed, keyd not asked.
  const transport = await socketTransport(f.port);
  t.after(() => transport.close());
  const bad = new Tls13Client(transport, { serverName: 'a.test..' });
  bad.sendClientHello();
  assert.equal(await bad.readAlert(), AlertDescription.illegal_parameter);
  assert.equal(asked.length, askedBefore);
});

test('a ticket issued under a.test resumes under "A.Test." (one name); another name does not resume it', { timeout: 20_000 }, async (t) => {
  const f = await fixture(t, { tickets: 1, delegatedCredentials: false });
  const ticket = await ticketFrom(t, f.port);
  assert.equal(await resumes(t, f.port, ticket, 1000, 'A.Test.'), true);
  // Control: the same ticket under a name of the other route is a full handshake (RFC 6066 §3).
  assert.equal(await resumes(t, f.port, ticket, 1000, 'x.b.test'), false);
  assert.equal(await resumes(t, f.port, ticket, 1000), true);
});

test('handshake details: the PROXY v2 header and the debug log say version, group, HRR, resumption and how it was signed', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const capture = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const f = await fixture(t, {}, capture);
  const sessions: Buffer[] = [];
  const first = await connectClient(f.port, [f.pkiB.caCertPem], 'x.b.test');
  first.socket.on('session', (session: Buffer) => sessions.push(session));
  assert.equal(await exchange(first.socket, 'one'), 'B:one');
  const full = decodeProxyV2(Buffer.concat(f.upB.received));
  assert.ok(full);
  const fullDetails = decodeHandshakeDetails(full.tlvs.get(Pp2Type.HANDSHAKE_DETAILS));
  assert.deepEqual(Object.fromEntries(fullDetails), {
    version: 'TLSv1.3',
    group: 'x25519',
    hrr: 'no',
    resumed: 'no',
    signature: 'rsa_pss_rsae_sha256 by keyd',
  });
  const done = lines.filter((l) => l.msg === 'handshake done');
  assert.equal(done.length, 1);
  assert.equal(done[0]!.version, 'TLSv1.3');
  assert.equal(done[0]!.group, 'x25519');
  assert.equal(done[0]!.hrr, 'no');
  assert.equal(done[0]!.signature, 'rsa_pss_rsae_sha256 by keyd');

  // Resumed with the ticket: nothing was signed, and the header and log say so.
  assert.ok(sessions.length > 0, 'no session ticket received');
  f.upB.received.length = 0;
  const resumed = await new Promise<TLSSocket>((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: f.port, ca: [f.pkiB.caCertPem], servername: 'x.b.test', session: sessions[0], minVersion: 'TLSv1.3' });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
  assert.equal(resumed.isSessionReused(), true);
  assert.equal(await exchange(resumed, 'two'), 'B:two');
  const second = decodeProxyV2(Buffer.concat(f.upB.received));
  assert.ok(second);
  const resumedDetails = decodeHandshakeDetails(second.tlvs.get(Pp2Type.HANDSHAKE_DETAILS));
  assert.equal(resumedDetails.get('resumed'), 'yes');
  assert.equal(resumedDetails.get('signature'), 'none (resumed from a session ticket)');
  assert.equal(lines.filter((l) => l.msg === 'handshake done').at(-1)!.resumed, 'yes');
});

test('expiry warning: the edge warns when it serves a certificate within certificateExpiryWarningDays of notAfter (injected clock)', async (t) => {
  const pki = await makeTestPki({ commonName: 'a.test', extraNames: ['a.test'] });
  const notAfter = Date.parse(new X509Certificate(pki.chainDer[0]!).validTo);
  const keyd = new FakeKeydService();
  keyd.put(['a.test'], pki.leafKey, pki.chainDer);
  const up = await startUpstream(t, 'A');
  const lines: { level: number; msg: string; names?: string[]; daysLeft?: number }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const start = async (days: number | undefined, now: number) => {
    const config = validateConfig({
      listen: ['127.0.0.1:0'],
      keyd: '/fake/keyd.sock',
      routes: [{ names: ['a.test'], upstream: `127.0.0.1:${up.port}` }],
      workers: 1,
      ...(days === undefined ? {} : { certificateExpiryWarningDays: days }),
    });
    const edge = await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: keyd.connect, logger, now: () => now });
    t.after(() => edge.close());
    const c = await connectClient(edge.addresses[0].port, [pki.caCertPem], 'a.test');
    c.socket.destroy();
    await edge.close();
  };
  const warned = () => lines.filter((l) => l.level === 40 && /certificate for a\.test expires in/.test(l.msg));
  await start(undefined, notAfter - 31 * 86_400_000);
  assert.equal(warned().length, 0, '31 days before notAfter: quiet');
  await start(undefined, notAfter - 12 * 86_400_000 - 1000);
  assert.equal(warned().length, 1);
  assert.equal(warned()[0]!.daysLeft, 12);
  await start(7, notAfter - 12 * 86_400_000 - 1000);
  assert.equal(warned().length, 1, 'a 7-day window: 12 days left is not due');
  assert.throws(() => validateConfig({ keyd: '/k.sock', routes: [{ names: ['a.test'], upstream: '127.0.0.1:1' }], certificateExpiryWarningDays: -3 }), /certificateExpiryWarningDays must be an integer from 0 to 3650/);
});

test('expiry warning: once per certificate, not once per name a client sends under a wildcard', async (t) => {
  const pki = await makeTestPki({ commonName: 'w.test', extraNames: ['*.w.test'] });
  const notAfter = Date.parse(new X509Certificate(pki.chainDer[0]!).validTo);
  const keyd = new FakeKeydService();
  keyd.put(['*.w.test'], pki.leafKey, pki.chainDer);
  const other = await makeTestPki({ commonName: 'o.test', extraNames: ['o.test'] });
  keyd.put(['o.test'], other.leafKey, other.chainDer);
  const up = await startUpstream(t, 'W');
  const lines: { level: number; msg: string; names?: string[] }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const config = validateConfig({
    listen: ['127.0.0.1:0'],
    keyd: '/fake/keyd.sock',
    routes: [{ names: ['*.w.test', 'o.test'], upstream: `127.0.0.1:${up.port}` }],
    workers: 1,
  });
  const now = notAfter - 12 * 86_400_000;
  const edge = await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: keyd.connect, logger, now: () => now });
  t.after(() => edge.close());
  // The attack: every new name under the wildcard is a keyd fetch, and was a warning line.
  for (const name of ['n1.w.test', 'n2.w.test', 'n3.w.test']) {
    (await connectClient(edge.addresses[0].port, [pki.caCertPem], name)).socket.destroy();
  }
  const warned = (re: RegExp) => lines.filter((l) => l.level === 40 && re.test(l.msg));
  const wildcard = warned(/w\.test expires in/);
  assert.equal(wildcard.length, 1, 'one line for the wildcard certificate');
  assert.deepEqual(wildcard[0]!.names, ['*.w.test'], "named by keyd's names for the key");
  // The control: another certificate still gets its own warning.
  (await connectClient(edge.addresses[0].port, [other.caCertPem], 'o.test')).socket.destroy();
  assert.equal(warned(/certificate for o\.test expires in/).length, 1);

  // A reload (same file, as `systemctl reload` after an unrelated edit) and a keyd change
  // notice (the identity fetched again): the certificate was logged today, not again.
  await edge.reload(config);
  keyd.put(['o.test'], other.leafKey, other.chainDer);
  (await connectClient(edge.addresses[0].port, [other.caCertPem], 'o.test')).socket.destroy();
  assert.equal(warned(/certificate for o\.test expires in/).length, 1, 'not logged again after a reload');
  // Control: a new certificate for the name (another notAfter, still due) is its own line.
  const renewed = await makeTestPki({ commonName: 'o.test', extraNames: ['o.test'], validityMs: 20 * 86_400_000 });
  keyd.put(['o.test'], renewed.leafKey, renewed.chainDer);
  (await connectClient(edge.addresses[0].port, [renewed.caCertPem], 'o.test')).socket.destroy();
  assert.equal(warned(/certificate for o\.test expires in/).length, 2, 'the renewed certificate is logged');
});

test('unknown name → unrecognized_name; routed name without a key in keyd → refused too', async (t) => {
  const f = await fixture(t);
  await assert.rejects(connectClient(f.port, [f.pkiA.caCertPem], 'other.test'), /unrecognized name/i);
  await assert.rejects(connectClient(f.port, [f.pkiA.caCertPem], 'nokey.test'), /unrecognized name/i);
  await assert.rejects(connectClient(f.port, [f.pkiB.caCertPem], 'deep.www.b.test'), /unrecognized name/i);
  const text = await f.edge.metrics.registry.getSingleMetricAsString('edge_handshakes_total');
  assert.match(text, /edge_handshakes_total\{outcome="failed",alert="unrecognized_name"\} 3/);
});

test('keyd down → handshakes fail at once with internal_error; the edge recovers by itself', async (t) => {
  const f = await fixture(t);
  const cas = [f.pkiA.caCertPem];
  (await connectClient(f.port, cas, 'a.test')).socket.destroy(); // identity now cached
  f.keyd.kill();
  for (const name of ['a.test', 'www.b.test']) {
    const t0 = Date.now();
    await assert.rejects(connectClient(f.port, [...cas, f.pkiB.caCertPem], name), /internal error/i);
    assert.ok(Date.now() - t0 < 1000, `failed fast (${Date.now() - t0} ms)`);
  }
  f.keyd.start();
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      const ok = await connectClient(f.port, cas, 'a.test');
      assert.equal(await exchange(ok.socket, 'back'), 'A:back');
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
  const text = await f.edge.metrics.registry.getSingleMetricAsString('edge_handshakes_total');
  const failed = Number(/outcome="failed",alert="internal_error"\} (\d+)/.exec(text)?.[1]);
  assert.ok(failed >= 2, text); // the two above, plus any retry before the edge reconnected
});

test('a key and chain changed in keyd are served on the next handshake, no restart', async (t) => {
  const f = await fixture(t);
  const cas = [f.pkiA.caCertPem];
  const first = await connectClient(f.port, cas, 'a.test');
  first.socket.destroy();
  const fresh = await makeTestPki({ keyType: 'ecdsa-p384', commonName: 'a.test', extraNames: ['a.test'] });
  f.keyd.put(['a.test'], fresh.leafKey, fresh.chainDer);
  const second = await connectClient(f.port, [fresh.caCertPem], 'a.test');
  assert.equal(second.cert.fingerprint256, new X509Certificate(fresh.leafCertPem).fingerprint256);
  second.socket.destroy();
});

test('upstream down → the TLS connection is closed cleanly (close_notify) after the handshake', async (t) => {
  const f = await fixture(t);
  f.upA.server.close();
  await sleep(10);
  const a = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  let errored: Error | undefined;
  a.socket.on('error', (err) => (errored = err));
  a.socket.resume();
  await once(a.socket, 'end'); // 'end' = close_notify received, not a reset
  assert.equal(errored, undefined);
  a.socket.destroy();
  const text = await f.edge.metrics.registry.getSingleMetricAsString('edge_upstream_errors_total');
  assert.match(text, /reason="connect"\} 1/);
});

test('an upstream that drops SYNs: at limits.upstreamConnectTimeoutMs the client gets close_notify, counted and logged once as connect_timeout, not held until the idle timeout; a live upstream\'s connection outlasts that timeout', { timeout: 30_000 }, async (t) => {
  const hole = await blackholedPort();
  t.after(() => hole.close());
  const live = await startUpstream(t, 'C');
  const lines: Record<string, unknown>[] = [];
  const capture = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const f = await fixture(
    t,
    {
      routes: [
        { names: ['a.test'], upstream: `127.0.0.1:${hole.port}` },
        { names: ['*.b.test'], upstream: `127.0.0.1:${live.port}` },
      ],
      // The idle timeout is far off: had it ended the connection, the idle counter would say so.
      limits: { upstreamConnectTimeoutMs: 300, idleTimeoutMs: 5000 },
    },
    capture,
  );
  // The control connects first, so it is older than the connect timeout when the other ends.
  const control = await connectClient(f.port, [f.pkiB.caCertPem], 'x.b.test');
  const held = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  let errored: Error | undefined;
  held.socket.on('error', (err) => (errored = err));
  held.socket.resume();
  await once(held.socket, 'end'); // close_notify
  assert.equal(errored, undefined, 'an orderly end, not a reset');
  held.socket.destroy();
  const errors = await f.edge.metrics.registry.getSingleMetricAsString('edge_upstream_errors_total');
  assert.match(errors, /reason="connect_timeout"\} 1$/m);
  assert.doesNotMatch(errors, /reason="connect"\}/);
  assert.doesNotMatch(await f.edge.metrics.registry.getSingleMetricAsString('edge_connections_closed_by_limit_total'), /reason="idle"/);
  const failed = lines.filter((l) => l.msg === 'upstream failed; closing the client connection');
  assert.equal(failed.length, 1);
  assert.equal(failed[0]!.reason, 'connect_timeout');
  assert.equal(failed[0]!.upstream, `127.0.0.1:${hole.port}`);
  assert.equal(failed[0]!.serverName, 'a.test');
  assert.equal(failed[0]!.err, 'connect did not complete within 300 ms');
  // The control: its upstream connected at once, and the connect timer did not end it later.
  assert.equal(await exchange(control.socket, 'still here'), 'C:still here');
  assert.match(await f.edge.metrics.registry.getSingleMetricAsString('edge_upstream_errors_total'), /reason="connect_timeout"\} 1$/m);
});

test('drain: open connections finish, new ones are refused, then it resolves', async (t) => {
  const f = await fixture(t);
  const open = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  open.socket.write('before ');
  const drained = f.edge.drain(5000);
  let done = false;
  void drained.then(() => (done = true));
  await sleep(50);
  await assert.rejects(connectClient(f.port, [f.pkiA.caCertPem], 'a.test'), /ECONNREFUSED/);
  assert.equal(done, false, 'still draining while a connection is open');
  assert.equal(await exchange(open.socket, 'after'), 'A:before after');
  await drained;
  assert.equal(f.edge.connections, 0);
});

test('idle timeout closes a silent connection', async (t) => {
  const f = await fixture(t, { limits: { idleTimeoutMs: 200 } });
  const a = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  a.socket.on('error', () => undefined);
  a.socket.resume(); // take the upstream's greeting, then stay silent
  const t0 = Date.now();
  await once(a.socket, 'close');
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 150 && elapsed < 2000, `closed after ${elapsed} ms`);
});

test('metrics: handshakes, latency histograms, keyd state, active connections', async (t) => {
  const f = await fixture(t);
  const a = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  await sleep(20);
  const text = await f.edge.metrics.registry.metrics();
  assert.match(text, /edge_handshakes_total\{outcome="ok",alert="none"\} 1/);
  assert.match(text, /edge_handshake_duration_seconds_count\{outcome="ok"\} 1/);
  assert.match(text, /edge_keyd_sign_duration_seconds_count\{outcome="ok"\} 1/);
  assert.match(text, /edge_keyd_connected\{endpoint="unix:\/fake\/keyd.sock"\} 1/);
  assert.match(text, /edge_active_connections 1/);
  a.socket.destroy();
});

/** The edge_keyd_connected series, endpoint → value. */
async function keydConnectedSeries(edge: RunningEdge): Promise<Record<string, number>> {
  const series: Record<string, number> = {};
  for (const value of (await edge.metrics.keydConnected.get()).values) series[String(value.labels.endpoint)] = value.value;
  return series;
}

test('edge_keyd_connected follows a reload that moves keyd: the endpoint left is not still 1, the one in use is', async (t) => {
  const f = await fixture(t);
  const reloadTo = (keyd: string) => validateConfig({ ...f.raw, keyd });
  assert.deepEqual(await keydConnectedSeries(f.edge), { 'unix:/fake/keyd.sock': 1 });

  assert.equal((await f.edge.reload(reloadTo('/fake/moved.sock'))).keyd, 'moved');
  assert.deepEqual(await keydConnectedSeries(f.edge), { 'unix:/fake/moved.sock': 1 });

  // New endpoints that do not answer: the connection in use is kept, and so is its 1 …
  f.keyd.up = false;
  assert.equal((await f.edge.reload(reloadTo('/fake/third.sock'))).keyd, 'unreachable');
  assert.deepEqual(await keydConnectedSeries(f.edge), { 'unix:/fake/moved.sock': 1, 'unix:/fake/third.sock': 0 });
  // … until it drops; then only the listed endpoint is shown, and it is 1 once connected.
  f.keyd.kill();
  assert.deepEqual(await keydConnectedSeries(f.edge), { 'unix:/fake/third.sock': 0 });
  f.keyd.start();
  while (f.edge.keyd.state !== 'connected') await sleep(20);
  assert.deepEqual(await keydConnectedSeries(f.edge), { 'unix:/fake/third.sock': 1 });
  // Control: a handshake is signed through the endpoint now in use.
  const a = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  assert.match(await exchange(a.socket, 'hello'), /^A:hello$/);
});

test('two reloads close together apply in the order asked: the later keyd endpoint is in force, though the earlier one connects last', async (t) => {
  const f = await fixture(t);
  const connect = f.keyd.connect;
  let release!: () => void;
  const slow = new Promise<void>((resolve) => (release = resolve));
  f.keyd.connect = async (endpoint, opts) => {
    if ('socketPath' in endpoint && endpoint.socketPath === '/fake/slow.sock') await slow;
    return connect(endpoint, opts);
  };
  const first = f.edge.reload(validateConfig({ ...f.raw, keyd: '/fake/slow.sock' }));
  const second = f.edge.reload(validateConfig({ ...f.raw, keyd: '/fake/fast.sock' }));
  await sleep(50); // (side by side, the second reload would have moved to fast.sock by now)
  release();
  assert.equal((await first).keyd, 'moved');
  assert.equal((await second).keyd, 'moved');
  assert.equal(f.edge.keyd.endpoint, 'unix:/fake/fast.sock');
  assert.deepEqual(await keydConnectedSeries(f.edge), { 'unix:/fake/fast.sock': 1 });
  // Control: a handshake is signed through it.
  const a = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  assert.match(await exchange(a.socket, 'hello'), /^A:hello$/);
});

test('a client that sends close_notify + FIN and then resets, to an upstream that never answers: the idle timeout frees the client slot and the upstream connection (gauge back to 0)', async (t) => {
  // The edge does not see a reset that follows the client's FIN (it no longer reads that
  // socket); the idle timeout closes the TLS side, and with it the upstream connection
  // (docs/EDGE.md, "Upstream connections"). Without that, the upstream socket stayed open
  // for as long as the upstream kept it.
  const pki = await makeTestPki({ commonName: 'a.test', extraNames: ['a.test'] });
  const keyd = new FakeKeydService();
  keyd.put(['a.test'], pki.leafKey, pki.chainDer);
  const accepted: Socket[] = [];
  const received: Buffer[] = [];
  const silent = createServer({ allowHalfOpen: true }, (s) => {
    accepted.push(s);
    s.on('data', (d: Buffer) => received.push(d)); // reads, never answers, never closes
  });
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.after(() => {
    for (const s of accepted) s.destroy();
    silent.close();
  });
  const config = validateConfig({
    listen: ['127.0.0.1:0'],
    keyd: '/fake/keyd.sock',
    routes: [{ names: ['a.test'], upstream: `127.0.0.1:${(silent.address() as { port: number }).port}` }],
    workers: 1,
    limits: { idleTimeoutMs: 300 },
  });
  const edge = await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: keyd.connect, logger: quiet });
  t.after(() => edge.close());
  const firstAccepted = new Promise<Socket>((resolve) => silent.once('connection', resolve));
  const tcp = netConnect({ host: '127.0.0.1', port: edge.addresses[0]!.port });
  const client = tlsConnect({ socket: tcp, servername: 'a.test', ca: [pki.caCertPem], minVersion: 'TLSv1.3' });
  client.on('error', () => undefined);
  await once(client, 'secureConnect');
  const app = await firstAccepted;
  const appEnded = new Promise<void>((resolve) => (app.readableEnded ? resolve() : app.once('end', () => resolve())));
  client.end('request');
  await appEnded; // the close_notify reached the upstream as FIN
  assert.equal(Buffer.concat(received).toString(), 'request');
  tcp.resetAndDestroy();
  // The idle timeout fires on its own clock; poll the count as the slow-loris test does (no
  // assertion on how long it takes).
  while (edge.connections > 0) await sleep(20);
  await peerClosed(app);
  assert.match(await edge.metrics.registry.getSingleMetricAsString('edge_active_connections'), /edge_active_connections 0/);
  assert.match(await edge.metrics.registry.getSingleMetricAsString('edge_connections_closed_by_limit_total'), /reason="idle"\} 1/);
});

test('a server name that is not a DNS host name is unrecognized_name under a wildcard route, and nothing of it is kept', async (t) => {
  const f = await fixture(t);
  const asked = recordLookups(f.keyd);
  const attempt = async (serverName: string): Promise<number | undefined> => {
    const transport = await socketTransport(f.port);
    t.after(() => transport.close());
    const client = new Tls13Client(transport, { serverName });
    client.sendClientHello();
    return client.readAlert();
  };
  // The attack: a 64 KiB label under *.b.test (the engine accepts any ASCII host_name up to
  // 65535 bytes), which would be cached, logged and sent to keyd as a name, and a literal '*'.
  assert.equal(await attempt(`${'x'.repeat(65_000)}.b.test`), AlertDescription.unrecognized_name);
  assert.equal(await attempt('*.b.test'), AlertDescription.unrecognized_name);
  assert.deepEqual(asked, [], 'keyd was not asked about them (so nothing of them was cached)');
  // The control: a 63-character label is a host name and is served.
  const transport = await socketTransport(f.port);
  t.after(() => transport.close());
  const name = `${'x'.repeat(63)}.b.test`;
  await new Tls13Client(transport, { serverName: name }).handshake();
  assert.deepEqual(asked, [name]);
});

test('a reload removes the route while its handshake waits for keyd: the client gets close_notify, and its reset afterwards does not end the process', async (t) => {
  const f = await fixture(t);
  const sign = f.keyd.sign.bind(f.keyd);
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let signing!: () => void;
  const signStarted = new Promise<void>((resolve) => (signing = resolve));
  f.keyd.sign = async (keyRef, request) => {
    signing();
    await held;
    return sign(keyRef, request);
  };
  const tcp = netConnect({ host: '127.0.0.1', port: f.port });
  await once(tcp, 'connect');
  const client = tlsConnect({ socket: tcp, ca: [f.pkiB.caCertPem], servername: 'x.b.test', minVersion: 'TLSv1.3' });
  client.on('error', () => undefined);
  await signStarted;
  // The *.b.test route goes while its handshake waits for the signature.
  await f.edge.reload(validateConfig({ ...f.raw, routes: [(f.raw.routes as unknown[])[0]] }));
  release();
  await once(client, 'secureConnect');
  // The attack: the client resets right after the edge's close_notify (no route after the
  // handshake), so the TLS socket fails after the handshake; that path had no 'error' listener.
  await new Promise<void>((resolve) => client.once('end', () => (tcp.resetAndDestroy(), resolve())));
  while (f.edge.connections > 0) await sleep(10);
  await sleep(50); // the engine destroys a failed socket with its error a turn later
  // The control: the edge still serves the route that stayed.
  const a = await connectClient(f.port, [f.pkiA.caCertPem], 'a.test');
  assert.equal(await exchange(a.socket, 'still'), 'A:still');
});

const HOUR = 3_600_000;

/** A full handshake for a.test: the first NewSessionTicket the edge sends. */
async function ticketFrom(t: TestContext, port: number) {
  const transport = await socketTransport(port);
  t.after(() => transport.close());
  const client = new Tls13Client(transport, { serverName: 'a.test' });
  await client.handshake();
  return (await client.readTickets(1))[0]!;
}

/** Offers `ticket` `elapsedMs` after it was issued (the clock mocked to match): whether the edge resumed with it. */
async function resumes(t: TestContext, port: number, ticket: Awaited<ReturnType<typeof ticketFrom>>, elapsedMs: number, serverName = 'a.test'): Promise<boolean> {
  const transport = await socketTransport(port);
  t.after(() => transport.close());
  const client = new Tls13Client(transport, {
    serverName,
    psk: { ticket: ticket.ticket, psk: ticket.psk, obfuscatedAge: (elapsedMs + ticket.ageAdd) >>> 0 },
  });
  client.sendClientHello();
  return (await client.readServerFlight()).selectedIdentity === 0;
}

// The edge had no ticketLifetimeSeconds: its tickets were always 2 h, and its key ring kept
// keys 8 h whatever the engine was told. Date is mocked (the ring's and the ticket age's clock).
test('ticketLifetimeSeconds: the NewSessionTicket advertises it, and the ticket resumes for all of it (the ring keeps its keys past the 8 h default); the 7200 default as the control', async (t) => {
  const issuedAt = Date.now();
  t.mock.timers.enable({ apis: ['Date'], now: issuedAt });
  const usual = await fixture(t, { tickets: 1, delegatedCredentials: false });
  assert.equal((await ticketFrom(t, usual.port)).lifetime, 7200, 'the default');
  const f = await fixture(t, { tickets: 1, delegatedCredentials: false, ticketLifetimeSeconds: 86_400 });
  const day = await ticketFrom(t, f.port);
  assert.equal(day.lifetime, 86_400);
  assert.equal(await resumes(t, f.port, day, 1000), true, 'control: at once');
  t.mock.timers.setTime(issuedAt + 23 * HOUR);
  assert.equal(await resumes(t, f.port, day, 23 * HOUR), true, 'after 23 h: its key is still kept');
  t.mock.timers.setTime(issuedAt + 86_401_000);
  assert.equal(await resumes(t, f.port, day, 86_401_000), false, 'past its lifetime: a full handshake');
});

test('ticketLifetimeSeconds is reloaded: tickets issued after the reload advertise the new lifetime and resume for all of it', async (t) => {
  const issuedAt = Date.now();
  t.mock.timers.enable({ apis: ['Date'], now: issuedAt });
  const f = await fixture(t, { tickets: 1, delegatedCredentials: false });
  assert.equal((await ticketFrom(t, f.port)).lifetime, 7200, 'control: the start config');
  await f.edge.reload(validateConfig({ ...f.raw, ticketLifetimeSeconds: 86_400 }));
  const day = await ticketFrom(t, f.port);
  assert.equal(day.lifetime, 86_400);
  t.mock.timers.setTime(issuedAt + 23 * HOUR);
  assert.equal(await resumes(t, f.port, day, 23 * HOUR), true, 'after 23 h: the ring kept its key');
});
