/**
 * Limits on what a peer can make the engine do: what it sends while our answer to its
 * ClientHello waits for the signature is bounded; after the handshake a KeyUpdate flood is
 * cut off at the configured count per window with unexpected_message, and a peer that
 * never reads stops being read once our output passes the socket's high-water mark
 * (asserted on buffered bytes, not on time).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { AlertDescription } from '../../src/tls/alert.js';
import { TlsServerConnection } from '../../src/tls/connection.js';
import { TlsSocket } from '../../src/tls/socket.js';
import { MiniTlsClient } from '../helpers/mini-tls-client.js';
import { ed25519Identity, handshakeThroughPeer, makeOptions, settle, until } from './connection-harness.js';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { LocalSigner, type Identity } from '../../src/tls/signer.js';
import { MAX_BUFFERED_BEFORE_ANSWER } from '../../src/tls/record/record-layer.js';
import { Tls12TestClient } from '../helpers/tls12-client.js';

const identity = ed25519Identity();

/** A handshaken in-memory connection with a clock the test moves. */
async function established(extra: Parameters<typeof makeOptions>[1]) {
  let now = 1_700_000_000_000;
  const conn = new TlsServerConnection(makeOptions(identity, { ticketCount: 0, ...extra }), () => now);
  const toClient: Buffer[] = [];
  const errors: (Error & { code?: string })[] = [];
  conn.onSend = (b) => toClient.push(b);
  conn.onError = (e) => errors.push(e);
  const client = new MiniTlsClient();
  conn.receive(client.clientHello());
  await settle();
  conn.receive(client.receive(Buffer.concat(toClient.splice(0))));
  assert.equal(conn.handshakeComplete, true);
  return {
    conn,
    client,
    errors,
    /** Delivers what the server sent so far to the client. */
    flush: () => client.receive(Buffer.concat(toClient.splice(0))),
    advance: (ms: number) => (now += ms),
  };
}

test('KeyUpdate flood: the cap per window holds, the window resets, one past the cap → unexpected_message', async () => {
  const c = await established({ maxKeyUpdates: 4, keyUpdateWindowMs: 1000 });
  for (let i = 0; i < 4; i++) c.conn.receive(c.client.keyUpdate(true));
  c.flush();
  assert.equal(c.client.events.keyUpdates, 4, 'each update_requested answered (§4.6.3)');
  c.advance(1000); // a new window
  for (let i = 0; i < 4; i++) c.conn.receive(c.client.keyUpdate(true));
  assert.deepEqual(c.errors, [], 'four more in the next window are fine');
  c.conn.receive(c.client.keyUpdate(true));
  assert.equal(c.errors.length, 1);
  assert.equal((c.errors[0] as Error & { code?: string }).code, 'TLS_ALERT_UNEXPECTED_MESSAGE');
  c.flush();
  assert.equal(c.client.events.keyUpdates, 8, 'the fifth in the window is not answered');
  assert.deepEqual(c.client.events.alerts, [AlertDescription.unexpected_message]);
  assert.equal(c.conn.closed, true);
});

test('KeyUpdate: the default cap lets a conformance-style burst of 32 through', async () => {
  const c = await established({});
  for (let i = 0; i < 32; i++) c.conn.receive(c.client.keyUpdate(true));
  c.flush();
  assert.deepEqual(c.errors, []);
  assert.equal(c.client.events.keyUpdates, 32);
});

/** The TCP socket under a TlsSocket, with a peer that can stop reading (writes never complete). */
class StalledPeer extends Duplex {
  readonly out: Buffer[] = [];
  stalled = false;
  private held: (() => void)[] = [];
  readonly remoteAddress = '127.0.0.1';
  readonly remotePort = 1;
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.out.push(chunk);
    if (this.stalled) this.held.push(done);
    else done();
  }
  override _read(): void {}
  setTimeout(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  release(): void {
    this.stalled = false;
    for (const done of this.held.splice(0)) done();
  }
}

test('a peer that sends KeyUpdate(update_requested) and never reads stops being read once our output is over the high-water mark', async () => {
  const peer = new StalledPeer();
  const options = makeOptions(identity, { ticketCount: 0, maxKeyUpdates: 1_000_000 });
  const tls = new TlsSocket(peer as unknown as Socket, options);
  tls.on('error', () => undefined);
  const client = await handshakeThroughPeer(peer, tls);

  peer.stalled = true;
  const perBatch = 100;
  let sent = 0;
  let batches = 0;
  // Send until the engine stops reading (bounded, so the test ends on a broken build too).
  while (!peer.isPaused() && batches < 200) {
    const batch: Buffer[] = [];
    for (let i = 0; i < perBatch; i++) batch.push(client.keyUpdate(true));
    peer.push(Buffer.concat(batch));
    sent += perBatch;
    batches++;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  const answerBytes = 5 + 5 + 1 + 16; // one protected KeyUpdate record
  const bound = peer.writableHighWaterMark + perBatch * answerBytes;
  assert.ok(peer.isPaused(), `still reading after ${sent} KeyUpdates; ${peer.writableLength} bytes queued toward the peer`);
  assert.ok(peer.writableLength <= bound, `${peer.writableLength} bytes queued toward a peer that does not read (bound ${bound})`);

  // The attacker keeps sending: nothing more is read, nothing more is queued.
  const queued = peer.writableLength;
  for (let b = 0; b < 10; b++) {
    const batch: Buffer[] = [];
    for (let i = 0; i < perBatch; i++) batch.push(client.keyUpdate(true));
    peer.push(Buffer.concat(batch));
    sent += perBatch;
  }
  await settle();
  assert.equal(peer.writableLength, queued, 'no new output while the peer does not read');
  assert.ok(peer.readableLength >= 10 * perBatch * answerBytes, 'the rest waits unread in the socket');

  // Positive control: the peer reads again → reading resumes and every KeyUpdate is answered in order.
  peer.release();
  await until(() => peer.readableLength === 0);
  await settle();
  client.receive(Buffer.concat(peer.out.splice(0)));
  assert.equal(client.events.keyUpdates, sent);
  assert.deepEqual(client.events.alerts, []);
  tls.destroy();
});

/** An ECDSA P-256 identity whose signatures wait until `open()` (a keyd that is slow to answer). */
function gatedIdentity(): { identity: Identity; open: () => void } {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const local = new LocalSigner(privateKey);
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const signer = { schemes: local.schemes, tls12Schemes: local.tls12Schemes, sign: async (r: Parameters<LocalSigner['sign']>[0]) => (await gate, local.sign(r)) };
  return { identity: { certificateChain: [randomBytes(300)], signer }, open };
}

/** `count` full plaintext application data records of 16 KiB. */
function bigRecords(count: number): Buffer {
  const record = Buffer.alloc(5 + 2 ** 14, 0x61);
  record.set([23, 3, 3, 0x40, 0x00]);
  return Buffer.concat(Array.from({ length: count }, () => record));
}

test('bytes sent while the signature is made are bounded: past the bound unexpected_message at once (TLS 1.2 and 1.3)', async () => {
  const records = Math.ceil(MAX_BUFFERED_BEFORE_ANSWER / (5 + 2 ** 14)) + 1;
  for (const version of ['TLS 1.2', 'TLS 1.3'] as const) {
    const { identity: slow, open } = gatedIdentity();
    const c = new Tls12TestClient(makeOptions(slow));
    if (version === 'TLS 1.2') c.hello();
    else c.conn.receive(new MiniTlsClient().clientHello());
    await settle();
    c.conn.receive(bigRecords(records));
    c.receive();
    assert.deepEqual(c.alerts, [{ level: 2, description: AlertDescription.unexpected_message }], `${version}: cut off before the signature`);
    assert.equal(c.conn.closed, true);
    open();
    await settle();
    c.receive();
    assert.equal(c.alerts.length, 1, `${version}: nothing sent once the signature arrives`);
    assert.equal(c.errors.length, 1);
  }
});

test('positive control: under the bound nothing is cut off while signing; the records are then read by the usual rules, and a client that waits completes', async () => {
  const { identity: slow, open } = gatedIdentity();
  const c = new Tls12TestClient(makeOptions(slow));
  c.hello();
  await settle();
  c.conn.receive(bigRecords(Math.floor(MAX_BUFFERED_BEFORE_ANSWER / (5 + 2 ** 14)) - 1));
  assert.deepEqual(c.errors, [], 'nothing refused while signing');
  open();
  await settle();
  c.receive();
  // Our flight went out, then the first record was read: application data before the handshake.
  assert.ok(c.serverKeyExchange, 'the flight was sent');
  assert.deepEqual(c.alerts, [{ level: 2, description: AlertDescription.unexpected_message }]);

  const waiting = gatedIdentity();
  const w = new Tls12TestClient(makeOptions(waiting.identity));
  w.hello();
  await settle();
  waiting.open();
  await settle();
  w.receive();
  w.keyExchange();
  w.changeCipherSpec();
  w.finished();
  w.receive();
  assert.equal(w.completed, true);
  assert.deepEqual(w.errors, []);
});
