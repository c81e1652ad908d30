/**
 * Property tests of the sans-I/O server connection (issue 3 §3 "Proof"):
 * whatever bytes arrive, split however, the connection only ever reports TLS alerts
 * (never a throw out of receive(), never another error type, never a wrapped bug),
 * and the outcome does not depend on how the bytes were split.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { connect } from 'node:tls';
import fc from 'fast-check';
import { encodeClientHello, handshakeRecords, typicalExtensions } from './client-hello-builder.js';
import { ed25519Identity, makeOptions, onlyPlaintextAlerts, run, splitAt, type Outcome } from './connection-harness.js';

const identity = ed25519Identity();
const options = makeOptions(identity);

function assertOnlyAlerts(o: Outcome, what: string): void {
  assert.deepEqual(o.foreignErrors, [], `${what}: a non-alert error escaped`);
  for (const e of o.events) {
    if (e.kind !== 'error') continue;
    assert.ok(e.name === 'TlsAlert' || e.name === 'TlsPeerAlert', `${what}: ${e.name}`);
    assert.equal(e.internalBug, false, `${what}: an internal error (not a TlsAlert) was thrown inside the engine: ${e.code}`);
  }
  assert.ok(o.events.filter((e) => e.kind === 'error').length <= 1, `${what}: more than one error event`);
}

function assertSameOutcome(whole: Outcome, split: Outcome, what: string): void {
  assert.deepEqual(split.events, whole.events, `${what}: events differ`);
  const wholeBytes = Buffer.concat(whole.sent);
  const splitBytes = Buffer.concat(split.sent);
  if (onlyPlaintextAlerts(whole.sent)) assert.deepEqual(splitBytes, wholeBytes, `${what}: bytes sent differ`);
  else assert.equal(splitBytes.length, wholeBytes.length, `${what}: length of bytes sent differs`);
}

/** Record with a correct header around an arbitrary body, so fuzzing gets past the deframer. */
const recordArb = fc
  .record({
    type: fc.oneof(fc.constantFrom(20, 21, 22, 23), fc.integer({ min: 0, max: 255 })),
    version: fc.constantFrom(0x0301, 0x0303, 0x0304, 0x0000),
    body: fc.uint8Array({ maxLength: 80 }),
  })
  .map(({ type, version, body }) => {
    const h = Buffer.alloc(5);
    h[0] = type;
    h.writeUInt16BE(version, 1);
    h.writeUInt16BE(body.length, 3);
    return Buffer.concat([h, body]);
  });

const validClientHelloRecord = handshakeRecords(encodeClientHello({ extensions: typicalExtensions() }));

/** A valid ClientHello record with a few bytes changed, optionally followed by more records. */
const mutatedHelloArb = fc
  .record({
    edits: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 4 }),
    tail: fc.array(recordArb, { maxLength: 3 }),
  })
  .map(({ edits, tail }) => {
    const b = Buffer.from(validClientHelloRecord);
    for (const e of edits) b[e.at % b.length] = e.value;
    return Buffer.concat([b, ...tail]);
  });

const inputArb = fc.oneof(
  fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a)),
  fc.array(recordArb, { minLength: 1, maxLength: 6 }).map((rs) => Buffer.concat(rs)),
  mutatedHelloArb,
);

const cutsArb = fc.array(fc.nat(), { maxLength: 12 });

test('arbitrary bytes, split arbitrarily: only TLS alerts, same outcome as unsplit', async () => {
  await fc.assert(
    fc.asyncProperty(inputArb, cutsArb, async (input, cuts) => {
      const whole = await run(options, [input]);
      assertOnlyAlerts(whole, 'whole');
      const split = await run(options, splitAt(input, cuts));
      assertOnlyAlerts(split, 'split');
      assertSameOutcome(whole, split, 'split vs whole');
    }),
    { numRuns: 400 },
  );
});

test('arbitrary bytes fed one byte at a time: same outcome as unsplit', async () => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(mutatedHelloArb, fc.array(recordArb, { minLength: 1, maxLength: 4 }).map((rs) => Buffer.concat(rs))), async (input) => {
      const whole = await run(options, [input]);
      const bytes = await run(options, [...input].map((b) => Buffer.of(b)));
      assertOnlyAlerts(bytes, 'byte by byte');
      assertSameOutcome(whole, bytes, 'byte by byte vs whole');
    }),
    { numRuns: 60 },
  );
});

test('after a valid ClientHello, arbitrary records only ever produce TLS alerts', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(recordArb, { minLength: 1, maxLength: 5 }), cutsArb, async (records, cuts) => {
      const input = Buffer.concat([validClientHelloRecord, ...records]);
      const whole = await run(options, [input]);
      assertOnlyAlerts(whole, 'whole');
      assert.ok(whole.sent.length >= 1, 'the server answered the ClientHello');
      const split = await run(options, splitAt(input, cuts));
      assertSameOutcome(whole, split, 'split vs whole');
    }),
    { numRuns: 150 },
  );
});

// ---- a real client's ClientHello ---------------------------------------------------------

let nodeClientHello: Buffer;

/** Records the first flight node:tls sends, through a plain TCP server that never answers. */
async function captureNodeTlsClientHello(): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      server.once('connection', (socket) => {
        let got = Buffer.alloc(0);
        socket.on('data', (chunk: Buffer) => {
          got = Buffer.concat([got, chunk]);
          if (got.length >= 5 && got.length >= 5 + got.readUInt16BE(3)) {
            resolve(got.subarray(0, 5 + got.readUInt16BE(3)));
            socket.destroy();
          }
        });
        socket.on('error', () => {});
      });
      const client = connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, minVersion: 'TLSv1.3' });
      client.on('error', () => {}); // the server hangs up on it
      client.on('close', () => client.destroy());
      setTimeout(() => reject(new Error('no ClientHello captured')), 5000).unref();
    });
  } finally {
    server.close();
  }
}

before(async () => {
  nodeClientHello = await captureNodeTlsClientHello();
});

test('a node:tls ClientHello split at every point gives the same first response and outcome', async () => {
  assert.equal(nodeClientHello[0], 22, 'a handshake record');
  assert.equal(nodeClientHello[5], 1, 'a ClientHello');
  const whole = await run(options, [nodeClientHello]);
  assertOnlyAlerts(whole, 'whole');
  assert.deepEqual(whole.events, [], 'the handshake is waiting for the client Finished, no error');
  const wholeLength = Buffer.concat(whole.sent).length;
  assert.ok(wholeLength > 0, 'the server answered');
  assert.equal(Buffer.concat(whole.sent)[0], 22, 'first response is a ServerHello record');
  for (let at = 1; at < nodeClientHello.length; at++) {
    const split = await run(options, [nodeClientHello.subarray(0, at), nodeClientHello.subarray(at)]);
    assert.deepEqual(split.events, [], `split at ${at}`);
    assert.deepEqual(split.foreignErrors, [], `split at ${at}`);
    assert.equal(Buffer.concat(split.sent).length, wholeLength, `split at ${at}: first response length`);
  }
  const bytes = await run(options, [...nodeClientHello].map((b) => Buffer.of(b)));
  assert.deepEqual(bytes.events, []);
  assert.equal(Buffer.concat(bytes.sent).length, wholeLength, 'byte by byte');
});

test('a node:tls ClientHello re-fragmented into small records gives the same first response', async () => {
  const message = nodeClientHello.subarray(5);
  const whole = await run(options, [nodeClientHello]);
  const wholeLength = Buffer.concat(whole.sent).length;
  for (const fragment of [1, 2, 3, 7, 64, 100]) {
    const o = await run(options, [handshakeRecords(message, fragment)]);
    assert.deepEqual(o.events, [], `fragment ${fragment}`);
    assert.equal(Buffer.concat(o.sent).length, wholeLength, `fragment ${fragment}`);
  }
});

test('every strict prefix of a node:tls ClientHello leaves the server silent and waiting', async () => {
  for (let at = 0; at < nodeClientHello.length; at++) {
    const o = await run(options, [nodeClientHello.subarray(0, at)]);
    assert.deepEqual(o.events, [], `prefix ${at}`);
    assert.deepEqual(o.sent, [], `prefix ${at}`);
  }
});
