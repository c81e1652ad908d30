import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FrameDecoder,
  FrameError,
  HEADER_LENGTH,
  MAX_PAYLOAD,
  Opcode,
  decodeAdmin,
  decodeChanged,
  decodeError,
  decodeIdentityReply,
  decodeIdentityRequest,
  decodePing,
  decodeHandshakeContentRequest,
  decodeServerKeyExchangeRequest,
  decodeSignRequest,
  decodeSignature,
  encodeAdmin,
  encodeChanged,
  encodeError,
  encodeFrame,
  encodeIdentityReply,
  encodeIdentityRequest,
  encodePing,
  encodeHandshakeContentRequest,
  encodeServerKeyExchangeRequest,
  encodeSignRequest,
  encodeSignature,
} from '../../src/keyd/protocol.js';
import { KeydError } from '../../src/keyd/errors.js';

const identity = {
  names: ['a.example', '*.example.org'],
  keyRef: 'k0123456789abcdef',
  keyType: 'ecdsa-p256',
  schemes: [0x0403],
  certificateChain: [Uint8Array.from([1, 2, 3]), Uint8Array.from([4, 5])],
  version: 7,
};

/** Every valid payload paired with its decoder. */
const payloads: Array<[string, Uint8Array, (p: Uint8Array) => unknown]> = [
  ['ping', encodePing(Buffer.from('hi')), decodePing],
  ['identity request', encodeIdentityRequest('a.example'), decodeIdentityRequest],
  ['sign request', encodeSignRequest('k1', 'a.test', 0x0403, new Uint8Array(32)), decodeSignRequest],
  ['handshake content request', encodeHandshakeContentRequest('k1', 'a.test', 0x0403, new Uint8Array(130).fill(0x20)), decodeHandshakeContentRequest],
  ['signature', encodeSignature(new Uint8Array(70).fill(9)), decodeSignature],
  ['identity reply', encodeIdentityReply(identity), decodeIdentityReply],
  ['changed', encodeChanged(['a.example', 'b.example']), decodeChanged],
  ['error', encodeError('KEYD_UNKNOWN_KEY', 'no such key'), decodeError],
  ['admin', encodeAdmin({ names: ['x'] }, [Uint8Array.of(1), Uint8Array.of(2, 3)]), decodeAdmin],
];

test('payload codecs round-trip', () => {
  assert.deepEqual(decodeIdentityReply(encodeIdentityReply(identity)), identity);
  assert.equal(decodeIdentityReply(encodeIdentityReply(undefined)), undefined);
  const sign = decodeSignRequest(encodeSignRequest('k1', 'a.test', 0x0804, new Uint8Array(48).fill(1)));
  assert.equal(sign.keyRef, 'k1');
  assert.equal(sign.scheme, 0x0804);
  assert.deepEqual(Uint8Array.from(sign.transcriptHash), new Uint8Array(48).fill(1));
  assert.deepEqual(decodeChanged(encodeChanged(['a', 'b'])), ['a', 'b']);
  const err = decodeError(encodeError('KEYD_X', 'msg'));
  assert.equal(err.code, 'KEYD_X');
  assert.equal(err.message, 'msg');
  const admin = decodeAdmin(encodeAdmin({ a: 1 }, [Uint8Array.of(5)]));
  assert.deepEqual(admin.json, { a: 1 });
  assert.deepEqual([...admin.attachments[0]!], [5]);
});

test('signServerKeyExchange and signHandshakeContent requests: key_ref, server_name, scheme, then the content (docs/PROTOCOL.md)', () => {
  const content = Uint8Array.from({ length: 133 }, (_, i) => i);
  const ske = encodeServerKeyExchangeRequest('k1', 'a.test', 0x0401, content);
  // Byte layout: 02 'k1' 06 'a.test' 04 01, then the content unprefixed, to the end.
  assert.deepEqual([...ske.subarray(0, 13)], [2, 0x6b, 0x31, 6, 0x61, 0x2e, 0x74, 0x65, 0x73, 0x74, 0x04, 0x01, 0]);
  assert.equal(ske.length, 12 + content.length);
  assert.deepEqual({ ...decodeServerKeyExchangeRequest(ske), content: [...decodeServerKeyExchangeRequest(ske).content] }, { keyRef: 'k1', serverName: 'a.test', scheme: 0x0401, content: [...content] });
  const raw = encodeHandshakeContentRequest('k1', 'a.test', 0x0807, content);
  // The same header, then a u16 length.
  assert.deepEqual([...raw.subarray(10, 14)], [0x08, 0x07, 0, 133]);
  assert.equal(raw.length, 14 + content.length);
  assert.deepEqual([...decodeHandshakeContentRequest(raw).content], [...content]);
  assert.throws(() => decodeHandshakeContentRequest(Buffer.concat([raw, Buffer.of(0)])), { code: 'KEYD_BAD_REQUEST' });
  // A header cut short is a decode error; content checks are signed-content.ts's.
  for (let n = 0; n < 12; n++) assert.throws(() => decodeServerKeyExchangeRequest(ske.subarray(0, n)), { code: 'KEYD_BAD_REQUEST' }, `prefix ${n}`);
});

test('every strict prefix of a valid payload is a KEYD_BAD_REQUEST, never a crash', () => {
  for (const [what, bytes, decode] of payloads) {
    for (let n = 0; n < bytes.length; n++) {
      let threw: unknown;
      try {
        decode(bytes.subarray(0, n));
      } catch (err) {
        threw = err;
      }
      // An admin payload cut exactly between two attachments is itself a valid (shorter) payload.
      if (what === 'admin' && threw === undefined && (n === 3 + 15 || n === 3 + 15 + 4)) continue;
      assert.ok(threw instanceof KeydError, `${what} prefix ${n}: ${String(threw)}`);
      assert.equal((threw as KeydError).code, 'KEYD_BAD_REQUEST', `${what} prefix ${n}`);
    }
  }
});

test('trailing bytes after a valid payload are refused', () => {
  for (const [what, bytes, decode] of payloads) {
    if (what === 'admin') continue; // trailing bytes are another attachment vector there
    assert.throws(() => decode(Buffer.concat([bytes, Buffer.of(0)])), { code: 'KEYD_BAD_REQUEST' }, what);
  }
});

test('payload fields outside their bounds are KEYD_BAD_REQUEST naming the field (docs/PROTOCOL.md)', () => {
  const refused = (decode: () => unknown, field: RegExp) =>
    assert.throws(decode, (err: unknown) => err instanceof KeydError && err.code === 'KEYD_BAD_REQUEST' && field.test(err.message));
  // ping: data<0..64>.
  refused(() => decodePing(Buffer.concat([Buffer.of(65), Buffer.alloc(65)])), /ping: data length 65 outside \[0, 64\]/);
  assert.equal(decodePing(Buffer.concat([Buffer.of(64), Buffer.alloc(64)])).length, 64);
  // Every signing request: key_ref<1..255> and server_name<1..255>, never empty.
  const hash = new Uint8Array(32);
  refused(() => decodeSignRequest(encodeSignRequest('', 'a.test', 0x0403, hash)), /key_ref length 0 outside \[1, 255\]/);
  refused(() => decodeSignRequest(encodeSignRequest('k1', '', 0x0403, hash)), /server_name length 0 outside \[1, 255\]/);
  refused(() => decodeHandshakeContentRequest(encodeHandshakeContentRequest('', 'a.test', 0x0403, Buffer.alloc(4, 0x20))), /key_ref length 0/);
  refused(() => decodeServerKeyExchangeRequest(encodeServerKeyExchangeRequest('k1', '', 0x0403, Buffer.alloc(4))), /server_name length 0/);
  refused(() => decodeIdentityRequest(encodeIdentityRequest('')), /server_name length 0/);
  assert.equal(decodeSignRequest(encodeSignRequest('k', 'a', 0x0403, hash)).keyRef, 'k'); // control: one byte each
  // identity reply: found is 0 or 1 (a flag keyd's client must not read as "found").
  const found = Buffer.from(encodeIdentityReply(identity));
  found[0] = 2;
  refused(() => decodeIdentityReply(found), /identity reply: found flag 2/);
  found[0] = 1;
  assert.equal(decodeIdentityReply(found)?.keyRef, identity.keyRef);
  // admin: the JSON header is an object, not an array, string or null.
  for (const json of ['[]', '"put"', 'null', '7']) {
    const w = Buffer.from(json);
    const payload = Buffer.concat([Buffer.of(0, 0, w.length), w]);
    refused(() => decodeAdmin(payload), /admin: JSON header must be an object/);
  }
  assert.deepEqual(decodeAdmin(encodeAdmin({})).json, {});
});

test('random garbage into every payload decoder: a value or a KeydError, nothing else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      for (const [, , decode] of payloads) {
        try {
          decode(bytes);
        } catch (err) {
          if (!(err instanceof KeydError)) throw err;
        }
      }
    }),
    { numRuns: 2000 },
  );
});

test('frame decoder: every prefix of a frame yields nothing; the whole yields it', () => {
  const frame = encodeFrame(Opcode.signCertificateVerify, 42, encodeSignRequest('k1', 'a.test', 0x0403, new Uint8Array(32)));
  for (let n = 0; n < frame.length; n++) {
    assert.deepEqual(new FrameDecoder().push(frame.subarray(0, n)), [], `prefix ${n}`);
  }
  const [f] = new FrameDecoder().push(frame);
  assert.equal(f!.opcode, Opcode.signCertificateVerify);
  assert.equal(f!.requestId, 42);
  assert.deepEqual(decodeSignRequest(f!.payload).keyRef, 'k1');
});

test('frame decoder: frames split at arbitrary points come out whole and in order', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.nat(), fc.uint8Array({ maxLength: 100 })), { maxLength: 20 }),
      fc.array(fc.nat({ max: 2000 }), { maxLength: 10 }),
      (frames, cuts) => {
        const stream = Buffer.concat(frames.map(([op, id, p]) => encodeFrame(op, id, p)));
        const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
        const decoder = new FrameDecoder();
        const out = [];
        let last = 0;
        for (const p of [...points, stream.length]) {
          out.push(...decoder.push(stream.subarray(last, p)));
          last = p;
        }
        assert.equal(out.length, frames.length);
        out.forEach((f, i) => {
          assert.equal(f.opcode, frames[i]![0]);
          assert.equal(f.requestId, frames[i]![1] >>> 0);
          assert.deepEqual(Uint8Array.from(f.payload), frames[i]![2]);
        });
        assert.equal(decoder.pending, 0);
      },
    ),
    { numRuns: 500 },
  );
});

test('frame decoder: bad version, reserved bits or oversized length is a FrameError with the request id', () => {
  const good = encodeFrame(Opcode.ping, 9, encodePing(Buffer.alloc(0)));
  const badVersion = Buffer.from(good);
  badVersion[0] = 9;
  const badReserved = Buffer.from(good);
  badReserved[3] = 1;
  const tooLong = Buffer.from(good);
  tooLong.writeUInt32BE(MAX_PAYLOAD + 1, 8);
  for (const bad of [badVersion, badReserved, tooLong]) {
    assert.throws(
      () => new FrameDecoder().push(bad.subarray(0, HEADER_LENGTH)),
      (err: unknown) => err instanceof FrameError && err.code === 'KEYD_BAD_FRAME' && err.requestId === 9,
    );
  }
});

test('frame decoder: random garbage gives frames or a FrameError, never anything else', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 10 }), (chunks) => {
      const decoder = new FrameDecoder();
      try {
        for (const c of chunks) decoder.push(c);
      } catch (err) {
        if (!(err instanceof FrameError)) throw err;
      }
    }),
    { numRuns: 2000 },
  );
});
