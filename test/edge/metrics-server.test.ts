/**
 * The /metrics endpoint (src/edge/metrics-server.ts; the edge's and keyd's): connections held
 * at once are capped (more are closed at accept, and a scrape gets through again once one
 * goes), and a request for anything else is answered 404 with the connection closed, so an
 * endless request body is not read. Controls: scrapes on a keep-alive connection.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import type { Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { METRICS_MAX_CONNECTIONS, startMetricsServer } from '../../src/edge/metrics-server.js';

const BODY = 'edge_test_metric 1\n';

async function start(): Promise<{ server: Server; port: number }> {
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, async () => ({ contentType: 'text/plain; version=0.0.4', body: BODY }));
  return { server, port: (server.address() as { port: number }).port };
}

function stop(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

async function open(port: number): Promise<Socket & { received: () => string }> {
  const socket = connect(port, '127.0.0.1');
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => (text += d));
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  return Object.assign(socket, { received: () => text });
}

function connections(server: Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

async function until(what: () => Promise<boolean> | boolean): Promise<void> {
  while (!(await what())) await sleep(10);
}

/** A 200 whose (chunked) body is complete. */
const scraped = (text: string) => text.includes(BODY) && text.endsWith('\r\n0\r\n\r\n');

/** One GET /metrics on `socket` (keep-alive); resolves with the whole answer once its body is in. */
async function scrape(socket: Socket & { received: () => string }): Promise<string> {
  const before = socket.received().length;
  socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => scraped(socket.received().slice(before)) || socket.destroyed);
  return socket.received().slice(before);
}

test(`at most ${METRICS_MAX_CONNECTIONS} connections are held; one more is closed at accept, and a slot freed serves a scrape again`, async (t) => {
  const { server, port } = await start();
  t.after(() => stop(server));
  const held: Awaited<ReturnType<typeof open>>[] = [];
  for (let i = 0; i < METRICS_MAX_CONNECTIONS; i++) held.push(await open(port));
  t.after(() => held.forEach((s) => s.destroy()));
  await until(async () => (await connections(server)) === METRICS_MAX_CONNECTIONS);
  // Control: a held connection is served (they are scrapers like any other).
  assert.match(await scrape(held[0]), /^HTTP\/1\.1 200 /);

  const extra = await open(port);
  await once(extra, 'close');
  assert.equal(extra.received(), '', 'the connection over the cap is closed without an answer');
  assert.equal(await connections(server), METRICS_MAX_CONNECTIONS);

  held.pop()!.destroy();
  await until(async () => (await connections(server)) < METRICS_MAX_CONNECTIONS);
  const next = await open(port);
  t.after(() => next.destroy());
  const answer = await scrape(next);
  assert.match(answer, /^HTTP\/1\.1 200 /);
  assert.ok(answer.includes(BODY));
});

/**
 * Sends `head` (and `body`), waits for the 404, then ends the body and asks for /metrics on
 * the same connection: a server that kept the connection would read (and discard) the body
 * up to its end and answer the scrape; one that closed it answers nothing more.
 */
async function afterRefusal(port: number, head: string, body = ''): Promise<string> {
  const socket = await open(port);
  try {
    socket.write(head + body);
    await until(() => socket.received().includes('not found') || socket.destroyed);
    if (!socket.destroyed) socket.write(`${head.includes('chunked') ? '0\r\n\r\n' : ''}GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n`);
    await until(() => socket.destroyed || scraped(socket.received()));
    return socket.received();
  } finally {
    socket.destroy();
  }
}

test('anything but GET /metrics: 404 and the connection closed, a request body left unread; a scrape keeps its connection', async (t) => {
  const { server, port } = await start();
  t.after(() => stop(server));

  const chunk = `1000\r\n${'a'.repeat(0x1000)}\r\n`;
  const posted = await afterRefusal(port, 'POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', chunk.repeat(4));
  assert.match(posted, /^HTTP\/1\.1 404 /);
  assert.match(posted, /\r\nconnection: close\r\n/i);
  assert.doesNotMatch(posted, /200 OK/, 'the connection was kept and read on after the 404');

  for (const request of ['GET / HTTP/1.1', 'GET /metricsx HTTP/1.1', 'DELETE /metrics HTTP/1.1']) {
    const answer = await afterRefusal(port, `${request}\r\nHost: x\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 404 /, request);
    assert.doesNotMatch(answer, /200 OK/, request);
  }

  // Control: two scrapes on one keep-alive connection, which stays open.
  const scraper = await open(port);
  t.after(() => scraper.destroy());
  assert.match(await scrape(scraper), /^HTTP\/1\.1 200 /);
  assert.match(await scrape(scraper), /^HTTP\/1\.1 200 /);
  assert.equal(scraper.destroyed, false);
});

test('a request whose headers trickle in is closed at requestTimeoutMs (not node:http\'s 60 s / 300 s); a scrape within it is answered', { timeout: 20_000 }, async (t) => {
  const server = await startMetricsServer({ host: '127.0.0.1', port: 0 }, async () => ({ contentType: 'text/plain; version=0.0.4', body: BODY }), { requestTimeoutMs: 300 });
  const port = (server.address() as { port: number }).port;
  t.after(() => stop(server));
  // The attack: headers that never end (slow loris), holding one of the endpoint's few slots.
  const slow = await open(port);
  t.after(() => slow.destroy());
  slow.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
  // Control: a whole scrape on another connection is answered meanwhile.
  const scraper = await open(port);
  t.after(() => scraper.destroy());
  assert.match(await scrape(scraper), /^HTTP\/1\.1 200 /);
  await once(slow, 'close');
  assert.match(slow.received(), /^HTTP\/1\.1 408 /);
});

test('an address marked ipv6Only (config: [::]:P beside an IPv4 address on P) is bound IPv6-only, leaving P free for IPv4', async (t) => {
  const v4 = await startMetricsServer({ host: '0.0.0.0', port: 0 }, async () => ({ contentType: 'text/plain; version=0.0.4', body: BODY }));
  t.after(() => stop(v4));
  const port = (v4.address() as { port: number }).port;
  let v6: Server;
  try {
    v6 = await startMetricsServer({ host: '::', port, ipv6Only: true }, async () => ({ contentType: 'text/plain; version=0.0.4', body: BODY }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EAFNOSUPPORT' || (err as NodeJS.ErrnoException).code === 'EADDRNOTAVAIL') return t.skip('no IPv6 on this machine');
    throw err; // EADDRINUSE: bound dual-stack, over the IPv4 listener
  }
  t.after(() => stop(v6));
  assert.equal((v6.address() as { address: string }).address, '::');
  // Control: without the mark, [::]:P is dual-stack on Linux's default (bindv6only 0) and collides.
  if (readFileSync('/proc/sys/net/ipv6/bindv6only', 'utf8').trim() !== '0') return;
  await assert.rejects(
    startMetricsServer({ host: '::', port }, async () => ({ contentType: 'text/plain; version=0.0.4', body: BODY })),
    { code: 'EADDRINUSE' },
  );
});
