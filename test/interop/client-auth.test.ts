/**
 * Interop: client certificates at the edge (RFC 8446 §4.3.2, §4.4.2) with real clients —
 * openssl s_client (ECDSA and RSA keys), curl, gnutls-cli, node:tls and NSS tstclnt — against
 * the edge in-process (real engine, keyd stand-in), with two routes: `required.test`
 * (clientAuth required) and `optional.test` (optional), both behind PROXY v2. The upstream
 * parses the PP2_TYPE_SSL TLV by hand (haproxy proxy-protocol.txt §2.2.5) and answers with
 * the CN and the `client` bits it received; the edge's edge_client_auth_total counter says
 * what the server decided, independently of each client's wording.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { validateConfig } from '../../src/edge/config.js';
import { startEdge, type RunningEdge } from '../../src/edge/edge.js';
import { loadEngine } from '../../src/edge/engine.js';
import { PROXY_V2_SIGNATURE, decodeProxyV2 } from '../../src/edge/proxy-protocol.js';
import { FakeKeydService } from '../edge/fake-keyd.js';
import { issue, makeClientCa, writeFiles, type Issued } from '../helpers/client-pki.js';
import { makeTestPki, writePkiFiles, type PkiFiles, type TestPki } from '../helpers/pki.js';
import { describeResult, hasTool, runTool, type ToolResult } from '../helpers/tools.js';

const HOUR = 3_600_000;
const REQUEST = 'GET / HTTP/1.0\r\nHost: x\r\n\r\n';

/** What the upstream saw in one PROXY v2 header's PP2_TYPE_SSL (0x20) TLV. */
interface SeenSsl {
  client: number;
  verify: number;
  cn: string | undefined;
  sigAlg: string | undefined;
  keyAlg: string | undefined;
}

let serverPki: TestPki;
let serverFiles: PkiFiles;
let ca: Issued;
let alice: Issued;
let bob: Issued;
let eve: Issued;
let expired: Issued;
let files: ReturnType<typeof writeFiles>;
let edge: RunningEdge;
let upstream: Server;
const seen: SeenSsl[] = [];
const upstreamSockets = new Set<Socket>();

/** PP2_TYPE_SSL value: client u8, verify u32, then sub-TLVs (type u8, length u16, value). */
function parseSsl(value: Buffer): SeenSsl {
  const out: SeenSsl = { client: value[0]!, verify: value.readUInt32BE(1), cn: undefined, sigAlg: undefined, keyAlg: undefined };
  for (let o = 5; o < value.length; ) {
    const type = value[o]!;
    const length = value.readUInt16BE(o + 1);
    const text = value.subarray(o + 3, o + 3 + length).toString('utf8');
    if (type === 0x22) out.cn = text;
    if (type === 0x24) out.sigAlg = text;
    if (type === 0x25) out.keyAlg = text;
    o += 3 + length;
  }
  return out;
}

async function startUpstream(): Promise<Server> {
  const server = createServer((socket) => {
    upstreamSockets.add(socket);
    socket.on('close', () => upstreamSockets.delete(socket));
    socket.on('error', () => undefined);
    let buffered = Buffer.alloc(0);
    let ssl: SeenSsl | undefined;
    socket.on('data', (data: Buffer) => {
      buffered = Buffer.concat([buffered, data]);
      if (!ssl) {
        assert.ok(buffered.subarray(0, 12).equals(PROXY_V2_SIGNATURE.subarray(0, Math.min(12, buffered.length))));
        const header = decodeProxyV2(buffered);
        if (!header) return;
        const value = header.tlvs.get(0x20);
        ssl = value ? parseSsl(value) : { client: -1, verify: -1, cn: undefined, sigAlg: undefined, keyAlg: undefined };
        seen.push(ssl);
        buffered = buffered.subarray(header.length);
      }
      if (buffered.includes('\r\n\r\n')) {
        socket.end(`HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\ncn=${ssl.cn ?? 'none'} client=${ssl.client}\n`);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

before(async () => {
  serverPki = await makeTestPki({ keyType: 'ecdsa-p256', extraNames: ['required.test', 'optional.test'] });
  serverFiles = writePkiFiles(serverPki);
  ca = await makeClientCa({ commonName: 'Interop client CA' });
  const otherCa = await makeClientCa({ commonName: 'Unknown CA' });
  alice = await issue(ca, { commonName: 'alice', keyType: 'ecdsa-p256' });
  bob = await issue(ca, { commonName: 'bob', keyType: 'rsa2048' });
  eve = await issue(otherCa, { commonName: 'eve' });
  expired = await issue(ca, { commonName: 'old', notBefore: new Date(Date.now() - 48 * HOUR), notAfter: new Date(Date.now() - HOUR) });
  files = writeFiles({
    'client-ca.pem': ca.pem,
    'alice.pem': alice.pem,
    'alice.key': alice.keyPem,
    'bob.pem': bob.pem,
    'bob.key': bob.keyPem,
    'eve.pem': eve.pem,
    'eve.key': eve.keyPem,
    'old.pem': expired.pem,
    'old.key': expired.keyPem,
    'request.txt': REQUEST,
  });
  upstream = await startUpstream();
  const upstreamAddress = `127.0.0.1:${(upstream.address() as { port: number }).port}`;
  const keyd = new FakeKeydService();
  keyd.put(['required.test', 'optional.test'], serverPki.leafKey, serverPki.chainDer);
  const config = validateConfig(
    {
      listen: ['127.0.0.1:0'],
      keyd: '/fake/keyd.sock',
      routes: [
        { names: ['required.test'], upstream: upstreamAddress, proxyProtocol: true, clientAuth: { mode: 'required', ca: 'client-ca.pem' } },
        { names: ['optional.test'], upstream: upstreamAddress, proxyProtocol: true, clientAuth: { mode: 'optional', ca: 'client-ca.pem' } },
      ],
      workers: 1,
    },
    files.dir,
  );
  edge = await startEdge(config, { createTlsServer: await loadEngine(), connectKeyd: keyd.connect, logger: pino({ level: 'silent' }) });
});

after(async () => {
  await edge?.close();
  for (const s of upstreamSockets) s.destroy();
  upstream?.close();
  serverFiles?.remove();
  files?.remove();
});

function port(): number {
  return edge.addresses[0]!.port;
}

/** edge_client_auth_total for one label set. */
async function clientAuthCount(result: string, alert = 'none'): Promise<number> {
  const metric = await edge.metrics.clientAuth.get();
  return metric.values.find((v) => v.labels.result === result && v.labels.alert === alert)?.value ?? 0;
}

/** Runs `attempt` and checks edge_client_auth_total{result, alert} went up by exactly one. */
async function counted<T>(result: string, alert: string, attempt: () => Promise<T>): Promise<T> {
  const before = await clientAuthCount(result, alert);
  const value = await attempt();
  // The server counts when the handshake ends, which may be a moment after the client gave up.
  for (let i = 0; i < 100 && (await clientAuthCount(result, alert)) === before; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await clientAuthCount(result, alert), before + 1, `edge_client_auth_total{result="${result}",alert="${alert}"}`);
  return value;
}

// ---- openssl s_client --------------------------------------------------------------

function sClient(name: string, cert?: string): Promise<ToolResult> {
  const args = ['s_client', '-connect', `127.0.0.1:${port()}`, '-servername', name, '-CAfile', serverFiles.caFile, '-verify_return_error', '-tls1_3', '-quiet'];
  if (cert) args.push('-cert', files.path(`${cert}.pem`), '-key', files.path(`${cert}.key`));
  return runTool('openssl', args, REQUEST, { timeoutMs: 15_000 });
}

describe('openssl s_client', { skip: !hasTool('openssl') && 'openssl not installed (apt-get install openssl)' }, () => {
  test('required route, ECDSA client certificate: the upstream receives CN alice with CERT_CONN|CERT_SESS', async () => {
    const r = await counted('verified', 'none', () => sClient('required.test', 'alice'));
    assert.match(r.stdout, /cn=alice client=7\n/, describeResult(r));
    const last = seen.at(-1)!;
    assert.equal(last.verify, 0);
    assert.equal(last.sigAlg, 'ecdsa-with-SHA256'); // the edge's own certificate (§2.2.5)
    assert.equal(last.keyAlg, 'EC256');
  });

  test('required route, RSA client certificate: CN bob', async () => {
    const r = await counted('verified', 'none', () => sClient('required.test', 'bob'));
    assert.match(r.stdout, /cn=bob client=7\n/, describeResult(r));
  });

  test('required route without a certificate: certificate_required', async () => {
    const r = await counted('failed', 'certificate_required', () => sClient('required.test'));
    assert.match(r.stderr, /alert certificate required|SSL alert number 116/, describeResult(r));
    assert.doesNotMatch(r.stdout, /cn=/);
  });

  test('a certificate from another CA: unknown_ca', async () => {
    const r = await counted('failed', 'unknown_ca', () => sClient('required.test', 'eve'));
    assert.match(r.stderr, /alert unknown ca|SSL alert number 48/, describeResult(r));
  });

  test('an expired certificate: certificate_expired', async () => {
    const r = await counted('failed', 'certificate_expired', () => sClient('required.test', 'old'));
    assert.match(r.stderr, /alert certificate expired|SSL alert number 45/, describeResult(r));
  });

  test('optional route without a certificate: the upstream gets no client TLVs (client=1, no CN)', async () => {
    const r = await counted('none', 'none', () => sClient('optional.test'));
    assert.match(r.stdout, /cn=none client=1\n/, describeResult(r));
    assert.equal(seen.at(-1)!.cn, undefined);
  });

  test('TLS 1.2: a certificate reaches the upstream as CN; none on the required route gets handshake_failure', async () => {
    const tls12 = (cert?: string) => {
      const args = ['s_client', '-connect', `127.0.0.1:${port()}`, '-servername', 'required.test', '-CAfile', serverFiles.caFile, '-verify_return_error', '-tls1_2', '-quiet'];
      if (cert) args.push('-cert', files.path(`${cert}.pem`), '-key', files.path(`${cert}.key`));
      return runTool('openssl', args, REQUEST, { timeoutMs: 15_000 });
    };
    const ok = await counted('verified', 'none', () => tls12('bob'));
    assert.match(ok.stdout, /cn=bob client=7\n/, describeResult(ok));
    const refused = await counted('failed', 'handshake_failure', () => tls12());
    assert.match(refused.stderr, /alert handshake failure|SSL alert number 40/, describeResult(refused));
  });

  test('optional route with a certificate: CN alice', async () => {
    const r = await sClient('optional.test', 'alice');
    assert.match(r.stdout, /cn=alice client=7\n/, describeResult(r));
  });
});

// ---- curl ----------------------------------------------------------------------------

function curl(name: string, cert?: string): Promise<ToolResult> {
  const args = ['--silent', '--show-error', '--tlsv1.3', '--max-time', '10', '--cacert', serverFiles.caFile, '--resolve', `${name}:${port()}:127.0.0.1`];
  if (cert) args.push('--cert', files.path(`${cert}.pem`), '--key', files.path(`${cert}.key`));
  return runTool('curl', [...args, `https://${name}:${port()}/`]);
}

describe('curl', { skip: !hasTool('curl') && 'curl not installed (apt-get install curl)' }, () => {
  test('--cert: the upstream receives the CN', async () => {
    const r = await curl('required.test', 'alice');
    assert.equal(r.code, 0, describeResult(r));
    assert.equal(r.stdout, 'cn=alice client=7\n');
  });

  test('no --cert on the required route: certificate_required', async () => {
    const r = await counted('failed', 'certificate_required', () => curl('required.test'));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /certificate required/, describeResult(r));
  });

  test('no --cert on the optional route: reaches the upstream without client TLVs', async () => {
    const r = await curl('optional.test');
    assert.equal(r.stdout, 'cn=none client=1\n', describeResult(r));
  });
});

// ---- gnutls-cli ------------------------------------------------------------------------

function gnutls(name: string, cert?: string): Promise<ToolResult> {
  const args = [
    '127.0.0.1', '--port', String(port()), '--sni-hostname', name, '--verify-hostname', name,
    '--x509cafile', serverFiles.caFile, '--priority', 'NORMAL:-VERS-ALL:+VERS-TLS1.3',
  ];
  if (cert) args.push('--x509certfile', files.path(`${cert}.pem`), '--x509keyfile', files.path(`${cert}.key`));
  return runTool('gnutls-cli', args, REQUEST, { timeoutMs: 15_000 });
}

describe('gnutls-cli', { skip: !hasTool('gnutls-cli') && 'gnutls-cli not installed (apt-get install gnutls-bin)' }, () => {
  test('--x509certfile: the upstream receives the CN', async () => {
    const r = await counted('verified', 'none', () => gnutls('required.test', 'bob'));
    assert.match(r.stdout, /cn=bob client=7/, describeResult(r));
  });

  test('no certificate on the required route: certificate_required', async () => {
    const r = await counted('failed', 'certificate_required', () => gnutls('required.test'));
    assert.match(r.stdout + r.stderr, /Certificate is required|certificate.required/i, describeResult(r));
  });
});

// ---- node:tls -----------------------------------------------------------------------------

function nodeTls(name: string, cert?: Issued): Promise<{ body: string; error: (Error & { code?: string }) | undefined }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: port(),
      servername: name,
      ca: serverPki.caCertPem,
      minVersion: 'TLSv1.3',
      ...(cert ? { cert: cert.pem, key: cert.keyPem } : {}),
    });
    let body = '';
    let error: (Error & { code?: string }) | undefined;
    socket.setEncoding('utf8');
    socket.on('secureConnect', () => socket.write(REQUEST));
    socket.on('data', (d: string) => (body += d));
    socket.on('error', (e) => (error = e));
    socket.on('close', () => resolve({ body, error }));
  });
}

describe('node:tls', () => {
  test('cert/key: the upstream receives the CN', async () => {
    const { body, error } = await nodeTls('required.test', alice);
    assert.equal(error, undefined);
    assert.match(body, /cn=alice client=7\n$/);
  });

  test('no certificate on the required route: the alert certificate_required reaches the client', async () => {
    const { body, error } = await counted('failed', 'certificate_required', () => nodeTls('required.test'));
    assert.equal(error?.code, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', String(error));
    assert.doesNotMatch(body, /cn=/);
  });

  test('a resumed session keeps the identity: CERT_SESS without CERT_CONN', async () => {
    const session = await new Promise<Buffer>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: port(), servername: 'required.test', ca: serverPki.caCertPem, minVersion: 'TLSv1.3', cert: alice.pem, key: alice.keyPem });
      socket.once('session', (s: Buffer) => resolve(s));
      socket.on('secureConnect', () => socket.write(REQUEST));
      socket.on('error', reject);
      socket.resume();
    });
    const resumed = await counted('resumed', 'none', () =>
      new Promise<string>((resolve, reject) => {
        const socket = tlsConnect({ host: '127.0.0.1', port: port(), servername: 'required.test', ca: serverPki.caCertPem, minVersion: 'TLSv1.3', session });
        let body = '';
        socket.setEncoding('utf8');
        socket.on('secureConnect', () => {
          assert.equal(socket.isSessionReused(), true);
          socket.write(REQUEST);
        });
        socket.on('data', (d: string) => (body += d));
        socket.on('error', reject);
        socket.on('close', () => resolve(body));
      }),
    );
    assert.match(resumed, /cn=alice client=5\n$/);
  });
});

// ---- NSS tstclnt ---------------------------------------------------------------------------

describe('NSS tstclnt', { skip: (!hasTool('tstclnt') || !hasTool('pk12util')) && 'tstclnt/pk12util not installed (apt-get install libnss3-tools)' }, () => {
  let db: string;
  let noCertDb: string;
  before(async () => {
    db = `sql:${files.dir}`;
    mkdirSync(join(files.dir, 'nocert'));
    noCertDb = `sql:${join(files.dir, 'nocert')}`;
    const p12 = join(files.dir, 'alice.p12');
    const steps: [string, string[]][] = [
      ['certutil', ['-N', '-d', db, '--empty-password']],
      ['certutil', ['-A', '-d', db, '-n', 'server-ca', '-t', 'C,,', '-i', serverFiles.caFile]],
      ['certutil', ['-N', '-d', noCertDb, '--empty-password']],
      ['certutil', ['-A', '-d', noCertDb, '-n', 'server-ca', '-t', 'C,,', '-i', serverFiles.caFile]],
      ['openssl', ['pkcs12', '-export', '-in', files.path('alice.pem'), '-inkey', files.path('alice.key'), '-out', p12, '-passout', 'pass:', '-name', 'alice']],
      ['pk12util', ['-i', p12, '-d', db, '-W', '']],
    ];
    for (const [tool, args] of steps) {
      const r = await runTool(tool, args);
      assert.equal(r.code, 0, `${tool}: ${describeResult(r)}`);
    }
    writeFileSync(files.path('request.txt'), REQUEST);
  });

  function tstclnt(name: string, nickname?: string, database = db): Promise<ToolResult> {
    const args = ['-h', '127.0.0.1', '-p', String(port()), '-a', name, '-d', database, '-V', 'tls1.3:tls1.3', '-A', files.path('request.txt')];
    if (nickname) args.push('-n', nickname);
    return runTool('tstclnt', args, '', { timeoutMs: 15_000 });
  }

  test('-n: the upstream receives the CN', async () => {
    const r = await counted('verified', 'none', () => tstclnt('required.test', 'alice'));
    assert.match(r.stdout, /cn=alice client=7/, describeResult(r));
  });

  test('without -n on the required route: certificate_required', async () => {
    // tstclnt answers a CertificateRequest with any certificate its database holds: use one without.
    const r = await counted('failed', 'certificate_required', () => tstclnt('required.test', undefined, noCertDb));
    assert.doesNotMatch(r.stdout, /cn=/, describeResult(r));
    assert.match(r.stderr, /CERTIFICATE_REQUIRED|certificate required/i, describeResult(r));
  });
});
