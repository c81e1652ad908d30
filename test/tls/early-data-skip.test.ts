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
