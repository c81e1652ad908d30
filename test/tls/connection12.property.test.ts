/**
 * Property tests of the TLS 1.2 server path (src/tls/handshake/server12.ts, the TLS 1.2
 * record rules of src/tls/record/, the client-certificate path): at each point of a real
 * handshake driven by the scripted TLS 1.2 client (pipelined while we sign, after our
 * flight, before the client's Certificate or CertificateVerify, after its
 * ClientKeyExchange and ChangeCipherSpec, once established), arbitrary or mutated input only ever ends in one
 * TlsAlert of a type RFC 5246 §7.2.2 names for a peer's error: never a throw out of
 * receive(), never an internal_error, never two errors, and the fatal alert on the wire
 * is the one reported.
 */
import 'reflect-metadata';
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createECDH, generateKeyPairSync, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { AlertDescription as A, TlsAlert, TlsPeerAlert } from '../../src/tls/alert.js';
import { LocalSigner, type Identity } from '../../src/tls/signer.js';
import { NamedGroup } from '../../src/tls/wire/codepoints.js';
import { montgomeryKeyPair } from '../helpers/montgomery-keys.js';
import { loadClientAuth } from '../../src/tls/client-auth/chain-verifier.js';
import type { ClientAuthOptions } from '../../src/tls/options.js';
import { issue, makeClientCa, type Issued } from '../helpers/client-pki.js';
import { makeOptions, settle } from './connection-harness.js';
import { Tls12TestClient } from '../helpers/tls12-client.js';

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const identity: Identity = { certificateChain: [randomBytes(300)], signer: new LocalSigner(privateKey) };
const options = makeOptions(identity);

let alice: Issued;
let clientAuthOptions: ReturnType<typeof makeOptions>;
before(async () => {
  const ca = await makeClientCa({ commonName: 'property CA' });
  alice = await issue(ca, { commonName: 'alice' });
  const required: ClientAuthOptions = await loadClientAuth({ mode: 'required', caPem: ca.pem });
  clientAuthOptions = makeOptions(identity, { clientAuth: required });
});

/** What a client's mistake may earn (RFC 5246 §7.2.2); internal_error never. */
const PLAUSIBLE = new Set<number>([
  A.unexpected_message,
  A.bad_record_mac,
  A.record_overflow,
  A.handshake_failure,
  A.illegal_parameter,
  A.decode_error,
  A.decrypt_error,
]);
/** And for a client certificate (§7.4.6, RFC 5280 through the chain verifier). */
const PLAUSIBLE_WITH_CERTIFICATE = new Set<number>([...PLAUSIBLE, A.bad_certificate, A.unsupported_certificate, A.certificate_expired, A.certificate_unknown, A.unknown_ca]);

type Stage = 'whileSigning' | 'afterFlight' | 'afterChangeCipherSpec' | 'established';

/** A client at `stage`; its records are sealed from the ChangeCipherSpec on. */
async function clientAt(stage: Stage): Promise<Tls12TestClient> {
  const c = new Tls12TestClient(options);
  c.hello();
  if (stage === 'whileSigning') return c; // what follows waits in the record layer until our flight is out
  await settle();
  c.receive();
  if (stage === 'afterFlight') return c;
  c.keyExchange();
  c.changeCipherSpec();
  if (stage === 'afterChangeCipherSpec') return c;
  c.finished();
  c.receive();
  assert.equal(c.completed, true);
  return c;
}

/** One thing the client sends: raw bytes, or a record (sealed once the client's keys are on). */
type Step = { readonly raw: Buffer } | { readonly type: number; readonly body: Buffer };

function send(c: Tls12TestClient, step: Step): unknown {
  try {
    if ('raw' in step) c.conn.receive(step.raw);
    else c.sendRecord(step.type, step.body);
    return undefined;
  } catch (err) {
    return err;
  }
}

async function assertOnlyOneAlert(c: Tls12TestClient, steps: readonly Step[], what: string, plausible = PLAUSIBLE): Promise<void> {
  const thrown = steps.map((s) => send(c, s)).filter((e) => e !== undefined);
  await settle();
  assert.deepEqual(thrown, [], `${what}: receive() threw`);
  c.receive();
  assert.ok(c.errors.length <= 1, `${what}: ${c.errors.length} errors`);
  const err = c.errors[0];
  if (err === undefined) return;
  if (err instanceof TlsPeerAlert) return; // the client's own fatal alert, not answered
  assert.ok(err instanceof TlsAlert, `${what}: a ${(err as Error).name} reached onError`);
  assert.equal((err as Error & { cause?: unknown }).cause, undefined, `${what}: internal error: ${err.message}`);
  assert.ok(plausible.has(err.alert), `${what}: alert ${err.alertName} (${err.message})`);
  const fatal = c.alerts.filter((a) => a.level === 2);
  assert.deepEqual(fatal, [{ level: 2, description: err.alert }], `${what}: the fatal alert sent`);
  assert.equal(c.conn.closed, true, `${what}: closed after the alert`);
}

const bodyArb = fc.uint8Array({ maxLength: 120 }).map((a) => Buffer.from(a));
const typeArb = fc.oneof(fc.constantFrom(20, 21, 22, 23), fc.integer({ min: 0, max: 255 }));

/** A raw record with a correct length: plaintext whatever the stage. */
const rawRecordArb = fc
  .record({ type: typeArb, version: fc.constantFrom(0x0301, 0x0303, 0x0304), body: bodyArb })
  .map(({ type, version, body }): Step => {
    const h = Buffer.alloc(5);
    h[0] = type;
    h.writeUInt16BE(version, 1);
    h.writeUInt16BE(body.length, 3);
    return { raw: Buffer.concat([h, body]) };
  });

/** A handshake message of any type with a correct header, in one record. */
const handshakeArb = fc
  .record({ type: fc.oneof(fc.constantFrom(1, 11, 15, 16, 20), fc.integer({ min: 0, max: 255 })), body: bodyArb })
  .map(({ type, body }): Step => {
    const m = Buffer.alloc(4 + body.length);
    m[0] = type;
    m.writeUIntBE(body.length, 1, 3);
    body.copy(m, 4);
    return { type: 22, body: m };
  });

const recordArb = fc.record({ type: typeArb, body: bodyArb }).map((r): Step => r);
const stepArb = fc.oneof(rawRecordArb, recordArb, handshakeArb);
const stepsArb = fc.array(stepArb, { minLength: 1, maxLength: 4 });
const editsArb = fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 3 });

function edited(message: Buffer, edits: readonly { at: number; value: number }[]): Buffer {
  const b = Buffer.from(message);
  for (const e of edits) b[e.at % b.length] = e.value;
  return b;
}

test('TLS 1.2 pipelined after the ClientHello, while we sign: arbitrary records and messages only ever end in one plausible alert', async () => {
  await fc.assert(
    fc.asyncProperty(stepsArb, async (steps) => assertOnlyOneAlert(await clientAt('whileSigning'), steps, 'while signing')),
    { numRuns: 80 },
  );
});

test('TLS 1.2 after our flight: arbitrary records and messages only ever end in one plausible alert', async () => {
  await fc.assert(
    fc.asyncProperty(stepsArb, async (steps) => assertOnlyOneAlert(await clientAt('afterFlight'), steps, 'after flight')),
    { numRuns: 120 },
  );
});

test('TLS 1.2 after our flight: a mutated ClientKeyExchange ends in one plausible alert or goes on', async () => {
  await fc.assert(
    fc.asyncProperty(editsArb, fc.array(stepArb, { maxLength: 2 }), async (edits, tail) => {
      const c = await clientAt('afterFlight');
      // A valid share for the server's group (RFC 8422 §5.7), then altered.
      const group = c.serverKeyExchange!.body.readUInt16BE(1);
      const point = group === NamedGroup.x25519 ? montgomeryKeyPair('x25519').publicRaw : createECDH('prime256v1').generateKeys();
      const cke = Buffer.concat([Buffer.from([16, 0, 0, 1 + point.length, point.length]), point]);
      await assertOnlyOneAlert(c, [{ type: 22, body: edited(cke, edits) }, ...tail], 'mutated ClientKeyExchange');
    }),
    { numRuns: 60 },
  );
});

test('TLS 1.2 after ClientKeyExchange and ChangeCipherSpec: arbitrary records, sealed or not, only ever end in one plausible alert', async () => {
  await fc.assert(
    fc.asyncProperty(stepsArb, async (steps) => assertOnlyOneAlert(await clientAt('afterChangeCipherSpec'), steps, 'after CCS')),
    { numRuns: 120 },
  );
});

test('TLS 1.2 after ChangeCipherSpec: a mutated Finished ends in one plausible alert', async () => {
  await fc.assert(
    fc.asyncProperty(editsArb, fc.array(stepArb, { maxLength: 2 }), async (edits, tail) => {
      const c = await clientAt('afterChangeCipherSpec');
      const finished = c.finishedMessage();
      const altered = edited(finished, edits);
      await assertOnlyOneAlert(c, [{ type: 22, body: altered }, ...tail], 'mutated Finished');
      if (!altered.equals(finished)) assert.equal(c.completed, false, 'an altered Finished never completes the handshake');
    }),
    { numRuns: 80 },
  );
});

test('TLS 1.2 established: arbitrary records, sealed or not, only ever end in one plausible alert', async () => {
  await fc.assert(
    fc.asyncProperty(stepsArb, async (steps) => assertOnlyOneAlert(await clientAt('established'), steps, 'established')),
    { numRuns: 120 },
  );
});

/** A client whose flight answers a CertificateRequest: before its Certificate, or after Certificate + ClientKeyExchange. */
async function clientAuthClientAt(stage: 'expectCertificate' | 'expectCertificateVerify'): Promise<Tls12TestClient> {
  const c = new Tls12TestClient(clientAuthOptions, () => Date.now());
  c.hello();
  await settle();
  assert.ok(c.receive().some((m) => m.type === 13), 'a CertificateRequest');
  if (stage === 'expectCertificate') return c;
  c.certificate([alice.der]);
  c.keyExchange();
  return c;
}

test('TLS 1.2 client certificates, before the Certificate: arbitrary messages and a mutated chain end in one plausible alert', async () => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(stepsArb, editsArb.map((edits) => ({ edits }))), async (input) => {
      const c = await clientAuthClientAt('expectCertificate');
      if (Array.isArray(input)) return assertOnlyOneAlert(c, input, 'before Certificate', PLAUSIBLE_WITH_CERTIFICATE);
      const der = Buffer.from(alice.der);
      const message = Buffer.concat([Buffer.of(11), u24(der.length + 6), u24(der.length + 3), u24(der.length), der]);
      await assertOnlyOneAlert(c, [{ type: 22, body: edited(message, input.edits) }], 'mutated Certificate', PLAUSIBLE_WITH_CERTIFICATE);
    }),
    { numRuns: 60 },
  );
});

test('TLS 1.2 client certificates, before the CertificateVerify: arbitrary messages and a mutated CertificateVerify end in one plausible alert', async () => {
  await fc.assert(
    fc.asyncProperty(fc.oneof(stepsArb, editsArb.map((edits) => ({ edits }))), async (input) => {
      const c = await clientAuthClientAt('expectCertificateVerify');
      if (Array.isArray(input)) return assertOnlyOneAlert(c, input, 'before CertificateVerify', PLAUSIBLE_WITH_CERTIFICATE);
      // The scheme and the signature's bytes altered through the message (header included).
      let verify: Buffer | undefined;
      const send = c.sendHandshake.bind(c);
      c.sendHandshake = (m: Buffer) => void (verify = m);
      c.certificateVerify(alice.key, 0x0403);
      c.sendHandshake = send;
      await assertOnlyOneAlert(c, [{ type: 22, body: edited(verify!, input.edits) }], 'mutated CertificateVerify', PLAUSIBLE_WITH_CERTIFICATE);
    }),
    { numRuns: 60 },
  );
});

function u24(n: number): Buffer {
  const b = Buffer.alloc(3);
  b.writeUIntBE(n, 0, 3);
  return b;
}
