/**
 * TLS 1.2 client authentication in the engine (RFC 5246 §7.4.4, §7.4.6, §7.4.8), driven by
 * the scripted TLS 1.2 client (test/helpers/tls12-client.ts), which signs its
 * CertificateVerify over the handshake messages itself. Each refusal next to a control that
 * differs only in the part attacked. Alert codes are RFC 5246 §7.2 literals.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { before, describe, test } from 'node:test';
import { loadClientAuth } from '../../src/tls/client-auth/chain-verifier.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import type { ClientAuthOptions } from '../../src/tls/options.js';
import { LocalSigner, type Identity } from '../../src/tls/signer.js';
import { issue, makeClientCa, type Issued } from '../helpers/client-pki.js';
import { Tls12TestClient, tls12Extensions } from '../helpers/tls12-client.js';
import { makeOptions, settle } from './connection-harness.js';

const HANDSHAKE_FAILURE = 40;
const ILLEGAL_PARAMETER = 47;
const UNKNOWN_CA = 48;
const DECRYPT_ERROR = 51;
const CERTIFICATE_REQUEST = 13;

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const identity: Identity = { certificateChain: [randomBytes(300)], signer: new LocalSigner(privateKey) };
let ca: Issued;
let alice: Issued;
let rsaBob: Issued;
let required: ClientAuthOptions;
let optional: ClientAuthOptions;

before(async () => {
  ca = await makeClientCa({ commonName: 'TLS 1.2 client CA' });
  alice = await issue(ca, { commonName: 'alice' });
  rsaBob = await issue(ca, { commonName: 'bob', keyType: 'rsa2048' });
  required = await loadClientAuth({ mode: 'required', caPem: ca.pem });
  optional = await loadClientAuth({ mode: 'optional', caPem: ca.pem });
});

/** Runs a full handshake answering the CertificateRequest with `answer`; the fatal alert, if any. */
async function run(clientAuth: ClientAuthOptions, answer: (c: Tls12TestClient) => void, extra = {}, hello = {}) {
  const c = new Tls12TestClient(makeOptions(identity, { clientAuth, ...extra }), () => Date.now());
  c.hello(hello);
  await settle();
  const flight = c.receive();
  answer(c);
  c.changeCipherSpec();
  c.finished();
  await settle();
  c.receive();
  return { c, flight, alert: c.alerts.find((a) => a.level === 2)?.description };
}

describe('TLS 1.2 client certificates', () => {
  test('the CertificateRequest: rsa_sign and ecdsa_sign, our schemes, the CA name', async () => {
    const { flight } = await run(required, (c) => {
      c.certificate([alice.der]);
      c.keyExchange();
      c.certificateVerify(alice.key, 0x0403);
    });
    const cr = flight.find((m) => m.type === CERTIFICATE_REQUEST);
    assert.ok(cr, 'the flight must carry a CertificateRequest');
    const body = cr.body;
    assert.deepEqual([...body.subarray(1, 1 + body[0]!)], [1, 64]);
    const sigStart = 1 + body[0]!;
    const sigLength = body.readUInt16BE(sigStart);
    const schemes = [];
    for (let i = 0; i < sigLength; i += 2) schemes.push(body.readUInt16BE(sigStart + 2 + i));
    assert.deepEqual(schemes, [0x0403, 0x0503, 0x0603, 0x0807, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0303]);
    const caStart = sigStart + 2 + sigLength;
    const name = body.subarray(caStart + 4, caStart + 4 + body.readUInt16BE(caStart + 2));
    assert.equal(new x509.Name(name).toString(), 'CN=TLS 1.2 client CA');
  });

  test('positive control: ECDSA (ecdsa_secp256r1_sha256) and RSA (PKCS#1 and PSS) CertificateVerify complete', async () => {
    for (const [cert, scheme, cn] of [[alice, 0x0403, 'alice'], [rsaBob, 0x0401, 'bob'], [rsaBob, 0x0804, 'bob']] as const) {
      const { c, alert } = await run(required, (client) => {
        client.certificate([cert.der]);
        client.keyExchange();
        client.certificateVerify(cert.key, scheme);
      });
      assert.equal(alert, undefined, String(c.errors[0]));
      assert.equal(c.completed, true);
      assert.equal(c.conn.info.clientCertificate?.commonName, cn);
    }
  });

  test('CertificateVerify with a flipped bit: decrypt_error', async () => {
    const { c, alert } = await run(required, (client) => {
      client.certificate([alice.der]);
      client.keyExchange();
      client.certificateVerify(alice.key, 0x0403, (s) => {
        const t = Buffer.from(s);
        t[12]! ^= 0x10;
        return t;
      });
    });
    assert.equal(alert, DECRYPT_ERROR);
    assert.equal(c.completed, false);
  });

  test('a scheme not offered (rsa_pkcs1_sha1): illegal_parameter', async () => {
    const { alert } = await run(required, (client) => {
      client.certificate([rsaBob.der]);
      client.keyExchange();
      client.certificateVerify(rsaBob.key, 0x0201);
    });
    assert.equal(alert, ILLEGAL_PARAMETER);
  });

  test('required mode, empty Certificate: handshake_failure; optional mode: completes without an identity', async () => {
    const refused = await run(required, (client) => {
      client.certificate([]);
      client.keyExchange();
    });
    assert.equal(refused.alert, HANDSHAKE_FAILURE);
    const accepted = await run(optional, (client) => {
      client.certificate([]);
      client.keyExchange();
    });
    assert.equal(accepted.alert, undefined);
    assert.equal(accepted.c.completed, true);
    assert.equal(accepted.c.conn.info.clientCertificate, undefined);
  });

  test('a certificate from another CA: unknown_ca', async () => {
    const eve = await issue(await makeClientCa({ commonName: 'Other' }), { commonName: 'eve' });
    const { alert } = await run(required, (client) => {
      client.certificate([eve.der]);
      client.keyExchange();
      client.certificateVerify(eve.key, 0x0403);
    });
    assert.equal(alert, UNKNOWN_CA);
  });

  test('a certificate without CertificateVerify: unexpected_message', async () => {
    const { alert } = await run(required, (client) => {
      client.certificate([alice.der]);
      client.keyExchange();
    });
    assert.equal(alert, 10);
  });

  test('a session ticket carries the identity; under another policy it gives a full handshake', async () => {
    const ring = new TicketKeyRing();
    const { c } = await run(
      required,
      (client) => {
        client.certificate([alice.der]);
        client.keyExchange();
        client.certificateVerify(alice.key, 0x0403);
      },
      { ticketKeys: ring },
      { extensions: tls12Extensions({ ticket: Buffer.alloc(0) }) },
    );
    const ticket = c.ticket;
    assert.ok(ticket, 'a ticket was issued');
    for (const [policy, resumes] of [[required, true], [optional, false]] as const) {
      const r = new Tls12TestClient(makeOptions(identity, { clientAuth: policy, ticketKeys: ring }), () => Date.now());
      r.hello({ extensions: tls12Extensions({ ticket }), sessionId: randomBytes(32) });
      await settle();
      const flight = r.receive().map((m) => m.type);
      assert.equal(flight.includes(CERTIFICATE_REQUEST), !resumes);
      assert.equal(r.conn.info.resumed, resumes);
      if (resumes) assert.equal(r.conn.info.clientCertificate?.commonName, 'alice');
    }
  });

  // A ticket holds the client identity in 2-byte vectors inside a ticket of at most 2^16-1
  // bytes; a certificate's names are whatever its CA signed. Sealing such an identity threw
  // (RangeError) after the client Finished verified: internal_error for a valid client.
  test('a client certificate whose names do not fit a ticket: the handshake completes with the zero-length ticket of RFC 5077 §3.3 and is not cached by session id', async () => {
    const big = await issue(ca, { commonName: 'a'.repeat(70_000) });
    const options = makeOptions(identity, { clientAuth: required });
    const handshake = async (cert: Issued) => {
      const c = new Tls12TestClient(options, () => Date.now());
      c.hello({ extensions: tls12Extensions({ ticket: Buffer.alloc(0) }) });
      await settle();
      c.receive();
      c.certificate([cert.der]);
      c.keyExchange();
      c.certificateVerify(cert.key, 0x0403);
      c.changeCipherSpec();
      c.finished();
      await settle();
      c.receive();
      return c;
    };
    const c = await handshake(big);
    assert.deepEqual(c.errors, []);
    assert.equal(c.completed, true);
    assert.equal(c.conn.info.clientCertificate?.commonName?.length, 70_000);
    assert.deepEqual(c.ticket, Buffer.alloc(0), 'NewSessionTicket with a zero-length ticket');
    assert.ok(c.serverFinishedVerifies(), 'the empty NewSessionTicket is in the transcript both sides hash');
    const r = new Tls12TestClient(options, () => Date.now());
    r.clientRandom = Buffer.alloc(32, 0x44);
    r.hello({ sessionId: c.sessionId, extensions: tls12Extensions() });
    await settle();
    r.receive();
    assert.equal(r.conn.info.resumed, false, 'not kept in the session-id cache either');
    assert.equal(options.sessionCache12.size, 0);
    // Control: an ordinary certificate gets a real ticket on the same server, and its session id resumes.
    const control = await handshake(alice);
    assert.equal(control.completed, true);
    assert.ok(control.ticket && control.ticket.length > 0, 'a real ticket');
    const again = new Tls12TestClient(options, () => Date.now());
    again.clientRandom = Buffer.alloc(32, 0x55);
    again.hello({ sessionId: control.sessionId, extensions: tls12Extensions() });
    await settle();
    again.receive();
    assert.equal(again.conn.info.resumed, true);
    assert.equal(again.conn.info.clientCertificate?.commonName, 'alice');
  });
});
