/**
 * The demo upstream (src/edge/demo-upstream.ts): plain HTTP on loopback that reads the edge's
 * PROXY v2 header (when one is sent) and shows what it carries. It must take a header split
 * across reads, close a connection whose header does not decode, never throw in its request
 * handler on what a header holds, and escape every value it writes into HTML.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { PROXY_HEADER_TIMEOUT_MS, startDemoUpstream } from '../../src/edge/demo-upstream.js';
import { PROXY_V2_SIGNATURE, Pp2Client, Pp2Type, encodeProxyV2 } from '../../src/edge/proxy-protocol.js';

const GET = (userAgent: string) => Buffer.from(`GET /page HTTP/1.1\r\nHost: upstream.test\r\nUser-Agent: ${userAgent}\r\nConnection: close\r\n\r\n`, 'latin1');

/** Writes `chunks` (pausing between them) and resolves with every byte received until the upstream closes. */
async function exchange(port: number, chunks: Buffer[], pauseMs = 0): Promise<Buffer> {
  const socket = connect(port, '127.0.0.1');
  const received: Buffer[] = [];
  socket.on('data', (d: Buffer) => received.push(d));
  const closed = new Promise<void>((resolve, reject) => {
    socket.on('close', () => resolve());
    socket.on('error', reject);
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  for (const chunk of chunks) {
    socket.write(chunk);
    if (pauseMs) await sleep(pauseMs);
  }
  await closed;
  return Buffer.concat(received);
}

/** Status, headers (lower-cased) and body of one HTTP/1.1 response. */
function parseResponse(raw: Buffer): { status: number; headers: Map<string, string>; body: Buffer } {
  const end = raw.indexOf('\r\n\r\n');
  assert.ok(end > 0, `a response head: ${JSON.stringify(raw.toString('latin1').slice(0, 200))}`);
  const [statusLine, ...lines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const headers = new Map(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(statusLine!.split(' ')[1]), headers, body: raw.subarray(end + 4) };
}

/** A PROXY v2 header (UNSPEC addresses) whose only TLV is PP2_TYPE_SSL with `sslValue`. */
function headerWithSsl(sslValue: Buffer): Buffer {
  const tlv = Buffer.concat([Buffer.from([Pp2Type.SSL, sslValue.length >> 8, sslValue.length & 0xff]), sslValue]);
  const fixed = Buffer.from([0x21, 0x00, tlv.length >> 8, tlv.length & 0xff]);
  return Buffer.concat([PROXY_V2_SIGNATURE, fixed, tlv]);
}

const HEADER = encodeProxyV2({
  sourceAddress: '192.0.2.7',
  sourcePort: 40001,
  destinationAddress: '127.0.0.1',
  destinationPort: 8443,
  serverName: 'a.test',
  alpnProtocol: 'http/1.1',
  tlsVersion: 'TLSv1.3',
  cipherSuite: 'TLS_AES_128_GCM_SHA256',
  clientCertificate: { commonName: '<b>Zoë</b>', fromSession: false },
});

test('a PROXY v2 header is shown on the page, every value HTML-escaped, the CN as UTF-8, Content-Length in bytes; plain HTTP without one is served too (control)', { timeout: 20_000 }, async () => {
  const upstream = await startDemoUpstream();
  try {
    const { status, headers, body } = parseResponse(await exchange(upstream.port, [Buffer.concat([HEADER, GET('Mozilla/5.0')])]));
    assert.equal(status, 200);
    assert.equal(headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(Number(headers.get('content-length')), body.length, 'Content-Length counts the bytes sent (the CN is not ASCII)');
    const html = body.toString('utf8');
    assert.ok(html.includes('<td>&#60;b&#62;Zoë&#60;/b&#62;</td>'), 'the CN escaped and decoded as UTF-8');
    assert.ok(!html.includes('<b>Zo'), 'no markup from the PROXY header reaches the page');
    assert.ok(html.includes('<td>192.0.2.7:40001</td>'));
    assert.ok(html.includes('<td>a.test</td>'));

    // Control: no PROXY header at all, plain HTTP.
    const plain = parseResponse(await exchange(upstream.port, [GET('curl/8.0')]));
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get('content-type'), 'text/plain; charset=utf-8');
    assert.match(plain.body.toString('utf8'), /^client address \(PROXY v2\): -$/m);
    assert.match(plain.body.toString('utf8'), /^request: GET \/page HTTP\/1\.1$/m);
  } finally {
    await upstream.close();
  }
});

test('a PROXY v2 header split across reads (inside its signature, then inside its body) is still read as one', { timeout: 20_000 }, async () => {
  const upstream = await startDemoUpstream();
  try {
    const whole = Buffer.concat([HEADER, GET('curl/8.0')]);
    const raw = await exchange(upstream.port, [whole.subarray(0, 5), whole.subarray(5, 20), whole.subarray(20)], 50);
    const { status, body } = parseResponse(raw);
    assert.equal(status, 200);
    assert.match(body.toString('utf8'), /^client address \(PROXY v2\): 192\.0\.2\.7:40001$/m);
  } finally {
    await upstream.close();
  }
});

test('a connection whose PROXY v2 header does not decode is closed unanswered; the next, well-formed one is served (control)', { timeout: 20_000 }, async () => {
  const upstream = await startDemoUpstream();
  try {
    const badVersion = Buffer.from(HEADER);
    badVersion[12] = 0x11; // version 1 in a binary header
    assert.equal((await exchange(upstream.port, [Buffer.concat([badVersion, GET('curl/8.0')])])).length, 0, 'nothing answered');
    const badFamily = Buffer.from(HEADER);
    badFamily[13] = 0x31; // AF_UNIX, not supported
    assert.equal((await exchange(upstream.port, [Buffer.concat([badFamily, GET('curl/8.0')])])).length, 0, 'nothing answered');

    assert.equal(parseResponse(await exchange(upstream.port, [Buffer.concat([HEADER, GET('curl/8.0')])])).status, 200);
  } finally {
    await upstream.close();
  }
});

test('PP2_TYPE_SSL: trailing bytes too short for a sub-TLV are ignored (no exception in the request handler); the client bits say whether a certificate was sent', { timeout: 20_000 }, async () => {
  const upstream = await startDemoUpstream();
  try {
    // client = SSL only, verify = 0, then one stray byte: not a sub-TLV (it needs 3).
    for (const stray of [Buffer.from([0x99]), Buffer.from([0x22, 0x00])]) {
      const ssl = Buffer.concat([Buffer.from([Pp2Client.SSL, 0, 0, 0, 0]), stray]);
      const { status, body } = parseResponse(await exchange(upstream.port, [Buffer.concat([headerWithSsl(ssl), GET('curl/8.0')])]));
      assert.equal(status, 200);
      assert.match(body.toString('utf8'), /^client certificate CN: none$/m, 'TLS without a client certificate');
    }
    // A certificate sent on this connection, without a CN.
    const withCert = Buffer.from([Pp2Client.SSL | Pp2Client.CERT_CONN | Pp2Client.CERT_SESS, 0, 0, 0, 0]);
    const cert = parseResponse(await exchange(upstream.port, [Buffer.concat([headerWithSsl(withCert), GET('curl/8.0')])]));
    assert.match(cert.body.toString('utf8'), /^client certificate CN: \(certificate without CN\)$/m);
    // A resumed session whose certificate was sent in the full handshake (CERT_SESS only).
    const fromSession = Buffer.from([Pp2Client.SSL | Pp2Client.CERT_SESS, 0, 0, 0, 0]);
    const resumed = parseResponse(await exchange(upstream.port, [Buffer.concat([headerWithSsl(fromSession), GET('curl/8.0')])]));
    assert.match(resumed.body.toString('utf8'), /^client certificate CN: \(certificate without CN\)$/m);
  } finally {
    await upstream.close();
  }
});

/** Connects, writes `bytes`, and resolves with how long after connecting the upstream closed (undefined: still open at `waitMs`). */
async function closedAfter(port: number, bytes: Buffer, waitMs: number): Promise<number | undefined> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const start = performance.now();
  if (bytes.length) socket.write(bytes);
  const closed = new Promise<number>((resolve) => socket.once('close', () => resolve(performance.now() - start)));
  try {
    return await Promise.race([closed, sleep(waitMs).then(() => undefined)]);
  } finally {
    socket.destroy();
  }
}

test('a client that sends part of a PROXY v2 header (or nothing) and stops is closed after PROXY_HEADER_TIMEOUT_MS; a whole header then a request after that long is served (control)', { timeout: 30_000 }, async () => {
  const upstream = await startDemoUpstream();
  try {
    const bound = PROXY_HEADER_TIMEOUT_MS + 2_000;
    const [partialSignature, partialBody, nothing] = await Promise.all([
      closedAfter(upstream.port, HEADER.subarray(0, 6), bound),
      closedAfter(upstream.port, HEADER.subarray(0, HEADER.length - 1), bound),
      closedAfter(upstream.port, Buffer.alloc(0), bound),
    ]);
    for (const [what, ms] of [['inside the signature', partialSignature], ['one byte short of the header', partialBody], ['nothing sent', nothing]] as const) {
      assert.ok(ms !== undefined, `${what}: still open ${bound} ms after connecting`);
      assert.ok(ms >= PROXY_HEADER_TIMEOUT_MS - 100, `${what}: closed at ${ms} ms, by the header timeout, not before`);
    }

    // Control: the header handed over, the timer is gone: a request sent after it still gets its page.
    const late = connect(upstream.port, '127.0.0.1');
    const received: Buffer[] = [];
    late.on('data', (d: Buffer) => received.push(d));
    const lateClosed = new Promise<void>((resolve, reject) => {
      late.on('close', () => resolve());
      late.on('error', reject);
    });
    late.write(HEADER);
    await sleep(PROXY_HEADER_TIMEOUT_MS + 500);
    late.write(GET('curl/8.0'));
    await lateClosed;
    const { status, body } = parseResponse(Buffer.concat(received));
    assert.equal(status, 200);
    assert.match(body.toString('utf8'), /^client address \(PROXY v2\): 192\.0\.2\.7:40001$/m);
  } finally {
    await upstream.close();
  }
});
