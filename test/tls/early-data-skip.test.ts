/**
 * RFC 8446 §4.2.10: a server that does not accept 0-RTT skips the client's early data
 * (records that do not authenticate under the client's handshake key) up to a limit, and
 * ends the connection with unexpected_message past it. The limit is 64 KiB of record bodies;
 * an empty record counts as one byte, or a client could send empty records for as long as
 * the handshake deadline lets it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { TlsServerConnection } from '../../src/tls/connection.js';
import { encodeClientHello, extensions as E, handshakeRecords, typicalExtensions } from './client-hello-builder.js';
import { ed25519Identity, makeOptions, settle } from './connection-harness.js';
import { TlsAlert } from '../../src/tls/alert.js';
import { memoryTransport, RecordType, Tls13Client } from '../helpers/tls13-client.js';

const options = makeOptions(ed25519Identity());
const SKIP_LIMIT = 2 ** 16;

/** application_data records (what 0-RTT data looks like on the wire) with bodies of these sizes. */
function earlyDataRecords(sizes: number[]): Buffer {
  return Buffer.concat(sizes.map((n) => Buffer.concat([Buffer.from([23, 3, 3, n >> 8, n & 0xff]), randomBytes(n)])));
}

/**
 * A ClientHello offering early_data (with `extensions` besides); once our answer is out,
 * `early` arrives. Returns whether the answer went out without error, and the alert codes reported.
 */
async function offerEarlyData(early: Buffer, extensions = typicalExtensions(), withEarlyData = true): Promise<{ flightSent: boolean; errors: string[] }> {
  const conn = new TlsServerConnection(options);
  const errors: string[] = [];
  let sent = 0;
  conn.onSend = () => void sent++;
  conn.onSendParts = () => void sent++;
  conn.onError = (err) => errors.push((err as Error & { code: string }).code);
  conn.receive(handshakeRecords(encodeClientHello({ extensions: withEarlyData ? [...extensions, E.earlyData()] : extensions })));
  await settle();
  const flightSent = sent > 0 && errors.length === 0;
  conn.receive(early);
  await settle();
  return { flightSent, errors };
}

test('rejected 0-RTT data is skipped up to 64 KiB; one byte more → unexpected_message', async () => {
  const atLimit = await offerEarlyData(earlyDataRecords(Array(16).fill(SKIP_LIMIT / 16)));
  assert.equal(atLimit.flightSent, true);
  assert.deepEqual(atLimit.errors, [], '64 KiB of early data is skipped');
  const over = await offerEarlyData(earlyDataRecords([...Array(16).fill(SKIP_LIMIT / 16), 1]));
  assert.deepEqual(over.errors, ['TLS_ALERT_UNEXPECTED_MESSAGE']);
});

test('empty rejected 0-RTT records count too: a flood of them → unexpected_message; a few are skipped', async () => {
  const flood = await offerEarlyData(earlyDataRecords(Array(SKIP_LIMIT + 1).fill(0)));
  assert.equal(flood.flightSent, true);
  assert.deepEqual(flood.errors, ['TLS_ALERT_UNEXPECTED_MESSAGE'], 'an empty record is not free');
  // Positive control: a handful of empty records is skipped like any early data.
  const few = await offerEarlyData(earlyDataRecords(Array(100).fill(0)));
  assert.deepEqual(few.errors, []);
});

// §4.2.10: after a HelloRetryRequest the server has no keys yet, and skips the client's
// early data as records of outer type application_data. Those are TLSCiphertext records
// (up to 2^14 + 256 bytes, §5.2), not plaintext ones: a full-size 0-RTT record must be
// skipped like any other, not refused with record_overflow (docs/ARCHITECTURE.md).
const CIPHERTEXT_FULL = 2 ** 14 + 17; // 2^14 bytes of data, the content type, a 16-byte tag

/** A ClientHello offering early_data but no key share (so we answer with a HelloRetryRequest), then `early`. */
async function earlyDataAfterRetry(early: Buffer): Promise<{ retried: boolean; errors: string[] }> {
  const noShare = typicalExtensions().map((e) => (e.type === E.keyShare([]).type ? E.keyShare([]) : e));
  const { flightSent, errors } = await offerEarlyData(early, noShare);
  return { retried: flightSent, errors };
}

test('after a HelloRetryRequest, full-size 0-RTT records (2^14 + 17 bytes) are skipped, not record_overflow', async () => {
  const full = await earlyDataAfterRetry(earlyDataRecords([CIPHERTEXT_FULL, CIPHERTEXT_FULL, 2 ** 14 + 256]));
  assert.equal(full.retried, true);
  assert.deepEqual(full.errors, []);
});

test('after a HelloRetryRequest, the 64 KiB limit holds: one byte more → unexpected_message', async () => {
  const atLimit = await earlyDataAfterRetry(earlyDataRecords(Array(16).fill(SKIP_LIMIT / 16)));
  assert.deepEqual(atLimit.errors, []);
  const over = await earlyDataAfterRetry(earlyDataRecords([...Array(16).fill(SKIP_LIMIT / 16), 1]));
  assert.deepEqual(over.errors, ['TLS_ALERT_UNEXPECTED_MESSAGE']);
});

test('after a HelloRetryRequest to a ClientHello without early_data, an application_data record is unexpected_message, not skipped; with early_data it is skipped', async () => {
  const noShare = typicalExtensions().map((e) => (e.type === E.keyShare([]).type ? E.keyShare([]) : e));
  const without = await offerEarlyData(earlyDataRecords([100]), noShare, false);
  assert.equal(without.flightSent, true, 'the HelloRetryRequest went out');
  assert.deepEqual(without.errors, ['TLS_ALERT_UNEXPECTED_MESSAGE']);
  const offered = await offerEarlyData(earlyDataRecords([100]), noShare, true);
  assert.deepEqual(offered.errors, []);
});

test('positive control (negative case kept): a plaintext handshake record over 2^14 bytes is still record_overflow', async () => {
  const conn = new TlsServerConnection(options);
  const errors: string[] = [];
  conn.onError = (err) => errors.push((err as Error & { code: string }).code);
  const n = 2 ** 14 + 1;
  conn.receive(Buffer.concat([Buffer.from([22, 3, 3, n >> 8, n & 0xff]), randomBytes(n)]));
  await settle();
  assert.deepEqual(errors, ['TLS_ALERT_RECORD_OVERFLOW']);
});

// ---- the whole handshake, with the scripted client (test/helpers/tls13-client.ts) ----------
//
// RFC 8446 §4.2.10, for a server that ignores early_data: it "skips past early data by attempting
// to deprotect received records using the handshake traffic key, discarding records which fail
// deprotection (up to the configured max_early_data_size). Once a record is deprotected
// successfully, it is treated as the start of the client's second flight and the server proceeds
// as with an ordinary 1-RTT handshake." Past the limit: §4.6.1, "A server receiving more than
// max_early_data_size bytes of 0-RTT data SHOULD terminate the connection with an
// "unexpected_message" alert" (§4.2.10 names no other alert for skipped data). After the skip
// has stopped, a record that does not deprotect is §5.2's case: "If the decryption fails, the
// receiver MUST terminate the connection with a "bad_record_mac" alert".

/** RFC 8446 §6 AlertDescription values. */
const UNEXPECTED_MESSAGE = 10;
const BAD_RECORD_MAC = 20;
const EXT_EARLY_DATA = 42;

/**
 * A client that offers early_data and sends `early` (0-RTT records, as a client would, right
 * behind its ClientHello), then reads our flight; the server rejects 0-RTT (it accepts none).
 */
async function rejectedZeroRtt(early: Buffer) {
  const t = memoryTransport(makeOptions(ed25519Identity(), { ticketCount: 0 }));
  const client = new Tls13Client(t, { earlyData: true });
  client.sendClientHello();
  t.send(early);
  await client.readServerFlight();
  assert.ok(!client.encryptedExtensionTypes.includes(EXT_EARLY_DATA), 'early data is not accepted');
  return { t, client };
}

function assertEngineAlert(server: { error: unknown }, alertName: string, code: number): void {
  assert.ok(server.error instanceof TlsAlert, `the server should have failed with ${alertName}, got ${String(server.error)}`);
  assert.equal(server.error.alertName, alertName, server.error.message);
  assert.equal(server.error.alert, code);
}

test('skipped 0-RTT data within the limit: the client Finished is the start of its second flight, the handshake completes, the early data is not delivered', { timeout: 20_000 }, async () => {
  const { t, client } = await rejectedZeroRtt(earlyDataRecords([1000, 0, 17, 5000]));
  client.sendFinished({ thenData: Buffer.from('after the handshake') });
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.error, undefined);
  assert.equal(t.server.handshakeComplete, true);
  assert.equal(Buffer.concat(t.server.delivered).toString(), 'after the handshake');
});

test('skipped 0-RTT data: exactly 64 KiB completes; one byte more is unexpected_message (10) on the wire and no handshake', { timeout: 20_000 }, async () => {
  const atLimit = await rejectedZeroRtt(earlyDataRecords(Array(16).fill(SKIP_LIMIT / 16)));
  atLimit.client.sendFinished();
  assert.equal(await atLimit.client.readAlert(), undefined);
  assert.equal(atLimit.t.server.handshakeComplete, true);

  const over = await rejectedZeroRtt(earlyDataRecords([...Array(16).fill(SKIP_LIMIT / 16), 1]));
  assert.equal(await over.client.readAlert(), UNEXPECTED_MESSAGE);
  assertEngineAlert(over.t.server, 'unexpected_message', UNEXPECTED_MESSAGE);
  over.client.sendFinished();
  assert.equal(over.t.server.handshakeComplete, false);
});

test('the skip stops at the first record that deprotects: a record failing after it is bad_record_mac (20), not skipped', { timeout: 20_000 }, async () => {
  const { t, client } = await rejectedZeroRtt(earlyDataRecords([1000]));
  // The client Finished in two records; the first deprotects under the handshake key, so what
  // follows is the client's second flight, where a record that does not deprotect is fatal.
  const finished = client.finishedMessage();
  t.send(Buffer.concat([client.sealRecord(RecordType.handshake, finished.subarray(0, 2)), earlyDataRecords([100]), client.sealRecord(RecordType.handshake, finished.subarray(2))]));
  assert.equal(await client.readAlert(), BAD_RECORD_MAC);
  assertEngineAlert(t.server, 'bad_record_mac', BAD_RECORD_MAC);
  assert.equal(t.server.handshakeComplete, false);
});

test('positive control: the same split Finished without a record between its halves completes the handshake', { timeout: 20_000 }, async () => {
  const { t, client } = await rejectedZeroRtt(earlyDataRecords([1000]));
  const finished = client.finishedMessage();
  t.send(Buffer.concat([client.sealRecord(RecordType.handshake, finished.subarray(0, 2)), client.sealRecord(RecordType.handshake, finished.subarray(2))]));
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.error, undefined);
  assert.equal(t.server.handshakeComplete, true);
});

test('after the handshake, a record that does not deprotect is bad_record_mac (20): nothing is skipped any more', { timeout: 20_000 }, async () => {
  const { t, client } = await rejectedZeroRtt(earlyDataRecords([1000]));
  client.sendFinished();
  assert.equal(await client.readAlert(), undefined);
  assert.equal(t.server.handshakeComplete, true);
  t.send(earlyDataRecords([100]));
  assert.equal(await client.readAlert(), BAD_RECORD_MAC);
  assertEngineAlert(t.server, 'bad_record_mac', BAD_RECORD_MAC);
});
