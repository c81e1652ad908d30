/**
 * TLS 1.3 client authentication in the engine (RFC 8446 §4.3.2, §4.4.2, §4.4.3), driven by
 * the scripted client (test/helpers/tls13-client.ts), which builds its Certificate and
 * CertificateVerify from the RFC text. Each attack sits next to a positive control that
 * differs only in the part attacked. Alert codes are RFC 8446 §6 literals.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { TlsAlert } from '../../src/tls/alert.js';
import { loadClientAuth } from '../../src/tls/client-auth/chain-verifier.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import type { ClientAuthOptions } from '../../src/tls/options.js';
import { issue, makeClientCa, type Issued } from '../helpers/client-pki.js';
import { flipBit, memoryTransport, Tls13Client, type ClientCertificateFlight, type ReceivedTicket } from '../helpers/tls13-client.js';
import { ed25519Identity, makeOptions } from './connection-harness.js';

const UNEXPECTED_MESSAGE = 10;
const UNSUPPORTED_CERTIFICATE = 43;
const CERTIFICATE_EXPIRED = 45;
const ILLEGAL_PARAMETER = 47;
const UNSUPPORTED_EXTENSION = 110;
const UNKNOWN_CA = 48;
const DECRYPT_ERROR = 51;
const CERTIFICATE_REQUIRED = 116;
const EXT_PRE_SHARED_KEY = 41;
const HOUR = 3_600_000;

const identity = ed25519Identity();
let ca: Issued;
let otherCa: Issued;
let alice: Issued;
let rsaBob: Issued;
let required: ClientAuthOptions;
let optional: ClientAuthOptions;
let requiredOtherCa: ClientAuthOptions;

before(async () => {
  ca = await makeClientCa({ commonName: 'Engine test client CA' });
  otherCa = await makeClientCa({ commonName: 'Another CA' });
  alice = await issue(ca, { commonName: 'alice' });
  rsaBob = await issue(ca, { commonName: 'bob', keyType: 'rsa2048' });
  required = await loadClientAuth({ mode: 'required', caPem: ca.pem });
  optional = await loadClientAuth({ mode: 'optional', caPem: ca.pem });
  requiredOtherCa = await loadClientAuth({ mode: 'required', caPem: otherCa.pem });
});

function assertServerAlert(server: { error: unknown }, alertName: string, code: number): void {
  assert.ok(server.error instanceof TlsAlert, `server should have failed with ${alertName}, got ${String(server.error)}`);
  assert.equal(server.error.alertName, alertName, server.error.message);
  assert.equal(server.error.alert, code);
}

function withCert(cert: Issued, extra: Partial<ClientCertificateFlight> = {}): ClientCertificateFlight {
  return { chain: [cert.der], key: cert.key, ...extra };
}

/** Full handshake against `clientAuth`, answering the CertificateRequest with `flight`. */
async function attempt(clientAuth: ClientAuthOptions | undefined, flight: ClientCertificateFlight, extra: Parameters<typeof makeOptions>[1] = {}) {
  const t = memoryTransport(makeOptions(identity, { ticketCount: 0, ...(clientAuth ? { clientAuth } : {}), ...extra }));
  const client = new Tls13Client(t);
  client.sendClientHello();
  await client.readServerFlight();
  client.sendFinished({ certificate: flight, thenData: Buffer.from('hello') });
  const alert = await client.readAlert();
  return { t, client, alert, server: t.server };
}

describe('CertificateRequest (§4.3.2)', () => {
  test('required mode: empty context, signature_algorithms and the CA name in certificate_authorities', async () => {
    const t = memoryTransport(makeOptions(identity, { ticketCount: 0, clientAuth: required }));
    const client = new Tls13Client(t);
    client.sendClientHello();
    await client.readServerFlight();
    const cr = client.certificateRequest;
    assert.ok(cr, 'the flight must carry a CertificateRequest');
    assert.equal(cr.context.length, 0);
    // ecdsa_secp256r1_sha256, _secp384r1_sha384, _secp521r1_sha512, ed25519, rsa_pss_rsae_sha256/384/512
    assert.deepEqual(cr.signatureAlgorithms, [0x0403, 0x0503, 0x0603, 0x0807, 0x0804, 0x0805, 0x0806]);
    assert.deepEqual(cr.certificateAuthorities?.map((n) => new x509.Name(n).toString()), ['CN=Engine test client CA']);
  });

  test('positive control: no clientAuth (and mode off) sends no CertificateRequest', async () => {
    for (const clientAuth of [undefined, { mode: 'off' as const }]) {
      const t = memoryTransport(makeOptions(identity, { ticketCount: 0, ...(clientAuth ? { clientAuth } : {}) }));
      const client = new Tls13Client(t);
      await client.handshake();
      assert.equal(client.certificateRequest, undefined);
      assert.equal(t.server.handshakeComplete, true);
    }
  });

  test("an identity's clientAuth overrides the server's", async () => {
    const t = memoryTransport(makeOptions(identity, { ticketCount: 0, resolveIdentity: () => ({ ...identity, clientAuth: required }) }));
    const client = new Tls13Client(t);
    client.sendClientHello();
    await client.readServerFlight();
    assert.ok(client.certificateRequest);
  });
});

describe('client Certificate and CertificateVerify (§4.4.2, §4.4.3)', () => {
  test('positive control: ECDSA and RSA client certificates verify; the identity is recorded', async () => {
    for (const [cert, cn] of [[alice, 'alice'], [rsaBob, 'bob']] as const) {
      const { alert, server } = await attempt(required, withCert(cert));
      assert.equal(alert, undefined, String(server.error));
      assert.equal(server.handshakeComplete, true);
      assert.equal(server.conn.info.clientCertificate?.commonName, cn);
      assert.equal(server.conn.info.clientCertificateFromSession, false);
      assert.equal(Buffer.concat(server.delivered).toString(), 'hello');
    }
  });

  test('required mode, empty Certificate: certificate_required, no data delivered', async () => {
    const { alert, server } = await attempt(required, { chain: [] });
    assert.equal(alert, CERTIFICATE_REQUIRED);
    assertServerAlert(server, 'certificate_required', CERTIFICATE_REQUIRED);
    assert.deepEqual(server.delivered, []);
  });

  // §4.4.3: the client's scheme must be one our CertificateRequest listed; a clientAuth with
  // its own signatureSchemes narrows that list (options.ts), whatever the verifier knows.
  test('clientAuth.signatureSchemes [rsa_pss_rsae_sha256]: an ECDSA CertificateVerify gets illegal_parameter; RSA-PSS verifies', async () => {
    const pssOnly: ClientAuthOptions = { ...required, signatureSchemes: [0x0804] };
    const ecdsa = await attempt(pssOnly, withCert(alice));
    assert.equal(ecdsa.alert, ILLEGAL_PARAMETER);
    assertServerAlert(ecdsa.server, 'illegal_parameter', ILLEGAL_PARAMETER);
    assert.deepEqual(ecdsa.client.certificateRequest?.signatureAlgorithms, [0x0804]);
    const rsa = await attempt(pssOnly, withCert(rsaBob, { scheme: 0x0804 }));
    assert.equal(rsa.alert, undefined, String(rsa.server.error));
    assert.equal(rsa.server.conn.info.clientCertificate?.commonName, 'bob');
  });

  test('optional mode, empty Certificate: the handshake completes without an identity', async () => {
    const { alert, server } = await attempt(optional, { chain: [] });
    assert.equal(alert, undefined);
    assert.equal(server.handshakeComplete, true);
    assert.equal(server.conn.info.clientCertificate, undefined);
  });

  test('CertificateVerify with one bit flipped: decrypt_error (ECDSA and RSA-PSS)', async () => {
    for (const cert of [alice, rsaBob]) {
      const { alert, server } = await attempt(required, withCert(cert, { alterSignature: (s) => flipBit(s, 20, 1) }));
      assert.equal(alert, DECRYPT_ERROR);
      assertServerAlert(server, 'decrypt_error', DECRYPT_ERROR);
      assert.equal(server.conn.info.clientCertificate, undefined);
    }
  });

  test('CertificateVerify signed by another key than the certificate: decrypt_error', async () => {
    const mallory = await issue(ca, { commonName: 'mallory' });
    const { alert, server } = await attempt(required, { chain: [alice.der], key: mallory.key });
    assert.equal(alert, DECRYPT_ERROR);
    assertServerAlert(server, 'decrypt_error', DECRYPT_ERROR);
  });

  test('a scheme the CertificateRequest did not offer (rsa_pkcs1_sha256): illegal_parameter', async () => {
    const { alert, server } = await attempt(required, withCert(rsaBob, { scheme: 0x0401 }));
    assert.equal(alert, ILLEGAL_PARAMETER);
    assertServerAlert(server, 'illegal_parameter', ILLEGAL_PARAMETER);
  });

  test("an offered scheme that does not fit the key (P-384 scheme, P-256 key): illegal_parameter", async () => {
    const { alert, server } = await attempt(required, withCert(alice, { scheme: 0x0503 }));
    assert.equal(alert, ILLEGAL_PARAMETER);
    assertServerAlert(server, 'illegal_parameter', ILLEGAL_PARAMETER);
  });

  test('a certificate from another CA: unknown_ca', async () => {
    const { alert, server } = await attempt(required, withCert(await issue(otherCa, { commonName: 'eve' })));
    assert.equal(alert, UNKNOWN_CA);
    assertServerAlert(server, 'unknown_ca', UNKNOWN_CA);
  });

  test('an expired certificate: certificate_expired', async () => {
    const old = await issue(ca, { commonName: 'old', notBefore: new Date(Date.now() - 48 * HOUR), notAfter: new Date(Date.now() - HOUR) });
    const { alert, server } = await attempt(required, withCert(old));
    assert.equal(alert, CERTIFICATE_EXPIRED);
    assertServerAlert(server, 'certificate_expired', CERTIFICATE_EXPIRED);
  });

  test('a certificate for serverAuth only: unsupported_certificate', async () => {
    const serverOnly = await issue(ca, { extendedKeyUsage: [x509.ExtendedKeyUsage.serverAuth] });
    const { alert, server } = await attempt(required, withCert(serverOnly));
    assert.equal(alert, UNSUPPORTED_CERTIFICATE);
    assertServerAlert(server, 'unsupported_certificate', UNSUPPORTED_CERTIFICATE);
  });

  test('a non-empty Certificate without CertificateVerify: unexpected_message', async () => {
    const { alert, server } = await attempt(required, withCert(alice, { omitCertificateVerify: true }));
    assert.equal(alert, UNEXPECTED_MESSAGE);
    assertServerAlert(server, 'unexpected_message', UNEXPECTED_MESSAGE);
  });

  test('a certificate_request_context we did not send: illegal_parameter', async () => {
    const { alert, server } = await attempt(required, withCert(alice, { requestContext: Buffer.from('ctx') }));
    assert.equal(alert, ILLEGAL_PARAMETER);
    assertServerAlert(server, 'illegal_parameter', ILLEGAL_PARAMETER);
  });

  test('CertificateEntry extensions: a delegated_credential is unexpected_message (RFC 9345 §4.1.2), any other unsupported_extension', async () => {
    // A delegated_credential (34) body: any bytes, the server must not read it.
    const dc = Buffer.concat([Buffer.of(0, 34, 0, 4), Buffer.of(0, 0, 0, 1)]);
    const withDc = await attempt(required, withCert(alice, { leafExtensions: dc }));
    assert.equal(withDc.alert, UNEXPECTED_MESSAGE);
    assertServerAlert(withDc.server, 'unexpected_message', UNEXPECTED_MESSAGE);
    // status_request (5) first, then the delegated_credential: still unexpected_message.
    const second = await attempt(required, withCert(alice, { leafExtensions: Buffer.concat([Buffer.of(0, 5, 0, 0), dc]) }));
    assert.equal(second.alert, UNEXPECTED_MESSAGE);
    const sct = await attempt(required, withCert(alice, { leafExtensions: Buffer.of(0, 18, 0, 0) }));
    assert.equal(sct.alert, UNSUPPORTED_EXTENSION);
    assertServerAlert(sct.server, 'unsupported_extension', UNSUPPORTED_EXTENSION);
    // Control: the same certificate with an empty extensions block is accepted.
    const plain = await attempt(required, withCert(alice, { leafExtensions: Buffer.alloc(0) }));
    assert.equal(plain.alert, undefined, String(plain.server.error));
    assert.equal(plain.server.conn.info.clientCertificate?.commonName, 'alice');
  });

  test('no CertificateRequest sent: a client Certificate is unexpected_message', async () => {
    const { alert, server } = await attempt(undefined, withCert(alice));
    assert.equal(alert, UNEXPECTED_MESSAGE);
    assertServerAlert(server, 'unexpected_message', UNEXPECTED_MESSAGE);
  });

  test('post-handshake authentication is not offered: a client Certificate in traffic is unexpected_message', async () => {
    const { client, server } = await attempt(required, withCert(alice));
    assert.equal(server.handshakeComplete, true);
    // §4.6.2: only an answer to a post-handshake CertificateRequest may carry one; we never send that.
    const certificate = client.certificateMessages({ chain: [alice.der], omitCertificateVerify: true })[0]!;
    client.transport.send(client.sealRecord(22, certificate));
    assert.equal(await client.readAlert(), UNEXPECTED_MESSAGE);
    assertServerAlert(server, 'unexpected_message', UNEXPECTED_MESSAGE);
  });
});

describe('resumption keeps the client identity and its policy (§4.6.1)', () => {
  // Inside the client certificates' validity: a carried identity past its notAfter is not resumed.
  const T0 = Date.now();
  const clock = () => T0;

  async function ticketUnder(clientAuth: ClientAuthOptions | undefined, ring: TicketKeyRing, flight?: ClientCertificateFlight): Promise<ReceivedTicket> {
    const t = memoryTransport(makeOptions(identity, { ticketCount: 1, ticketKeys: ring, ...(clientAuth ? { clientAuth } : {}) }), clock);
    const client = new Tls13Client(t);
    client.sendClientHello();
    await client.readServerFlight();
    client.sendFinished(flight ? { certificate: flight } : {});
    const [ticket] = await client.readTickets(1);
    assert.equal(t.server.handshakeComplete, true);
    return ticket!;
  }

  function resume(clientAuth: ClientAuthOptions | undefined, ring: TicketKeyRing, ticket: ReceivedTicket) {
    const t = memoryTransport(makeOptions(identity, { ticketCount: 1, ticketKeys: ring, ...(clientAuth ? { clientAuth } : {}) }), () => T0 + 1000);
    const client = new Tls13Client(t, { psk: { ticket: ticket.ticket, psk: ticket.psk, obfuscatedAge: (1000 + ticket.ageAdd) >>> 0 } });
    return { t, client };
  }

  // A ticket holds the client identity in 2-byte vectors inside a ticket<1..2^16-1>; a
  // certificate's names are whatever its CA signed. Sealing such an identity threw a
  // RangeError after the client Finished verified: internal_error for a valid client (and,
  // with tickets held back by socket.ts ticketDelayMs, a throw from its timer).
  test('a client certificate whose names do not fit a ticket: the handshake completes without tickets; control: alice gets hers', async () => {
    const big = await issue(ca, { commonName: 'a'.repeat(70_000) });
    const t = memoryTransport(makeOptions(identity, { ticketCount: 2, ticketKeys: new TicketKeyRing(), clientAuth: required }), clock);
    const client = new Tls13Client(t);
    client.sendClientHello();
    await client.readServerFlight();
    client.sendFinished({ certificate: withCert(big), thenData: Buffer.from('hello') });
    assert.equal(await client.readRecord(), null, 'nothing after the handshake: no NewSessionTicket, no alert');
    assert.equal(t.server.error, undefined, String(t.server.error));
    assert.equal(t.server.handshakeComplete, true);
    assert.equal((t.server.conn.info.clientCertificate?.commonName ?? '').length, 70_000);
    assert.equal(Buffer.concat(t.server.delivered).toString(), 'hello');
    const ticket = await ticketUnder(required, new TicketKeyRing(), withCert(alice));
    assert.ok(ticket.ticket.length > 0);
  });

  test('a ticket from a verified handshake resumes under the same policy, carrying the identity', async () => {
    const ring = new TicketKeyRing();
    const ticket = await ticketUnder(required, ring, withCert(alice));
    const { t, client } = resume(required, ring, ticket);
    client.sendClientHello();
    const sh = await client.readServerFlight();
    assert.equal(sh.selectedIdentity, 0);
    assert.equal(client.certificateRequest, undefined, 'a resumed handshake asks for no certificate');
    client.sendFinished();
    assert.equal(await client.readAlert(), undefined);
    assert.equal(t.server.conn.info.resumed, true);
    assert.equal(t.server.conn.info.clientCertificate?.commonName, 'alice');
    assert.equal(t.server.conn.info.clientCertificateFromSession, true);
  });

  test('the same ticket under another CA policy: full handshake with a CertificateRequest', async () => {
    const ring = new TicketKeyRing();
    const ticket = await ticketUnder(required, ring, withCert(alice));
    const { t, client } = resume(requiredOtherCa, ring, ticket);
    client.sendClientHello();
    const sh = await client.readServerFlight();
    assert.ok(!sh.extensionTypes.includes(EXT_PRE_SHARED_KEY));
    assert.ok(client.certificateRequest);
    client.sendFinished({ certificate: { chain: [] } });
    assert.equal(await client.readAlert(), CERTIFICATE_REQUIRED);
    assert.equal(t.server.conn.info.resumed, false);
  });

  test('a ticket from a server without client certificates does not skip a required one', async () => {
    const ring = new TicketKeyRing();
    const ticket = await ticketUnder(undefined, ring);
    const { t, client } = resume(required, ring, ticket);
    client.sendClientHello();
    const sh = await client.readServerFlight();
    assert.equal(sh.selectedIdentity, undefined);
    assert.ok(client.certificateRequest);
    client.sendFinished({ certificate: withCert(alice) });
    assert.equal(await client.readAlert(), undefined);
    assert.equal(t.server.conn.info.resumed, false);
    assert.equal(t.server.conn.info.clientCertificate?.commonName, 'alice');
  });

  test('a ticket whose client certificate expired since it was issued: full handshake (control: before notAfter it resumes)', async () => {
    const shortLived = await issue(ca, { commonName: 'short', notAfter: new Date(T0 + 2 * HOUR) });
    const ring = new TicketKeyRing();
    const options = { ticketCount: 1, ticketKeys: ring, ticketLifetimeSeconds: 86_400, clientAuth: required };
    const first = memoryTransport(makeOptions(identity, options), clock);
    const issuing = new Tls13Client(first);
    issuing.sendClientHello();
    await issuing.readServerFlight();
    issuing.sendFinished({ certificate: withCert(shortLived) });
    const [ticket] = await issuing.readTickets(1);
    for (const [elapsed, resumed] of [[HOUR, true], [3 * HOUR, false]] as const) {
      const t = memoryTransport(makeOptions(identity, options), () => T0 + elapsed);
      const client = new Tls13Client(t, { psk: { ticket: ticket!.ticket, psk: ticket!.psk, obfuscatedAge: (elapsed + ticket!.ageAdd) >>> 0 } });
      client.sendClientHello();
      const sh = await client.readServerFlight();
      assert.equal(sh.selectedIdentity !== undefined, resumed, `after ${elapsed / HOUR} h`);
      assert.equal(client.certificateRequest !== undefined, !resumed);
    }
  });

  test('positive control: a ticket of a server without client certificates resumes there', async () => {
    const ring = new TicketKeyRing();
    const ticket = await ticketUnder(undefined, ring);
    const { t, client } = resume(undefined, ring, ticket);
    client.sendClientHello();
    assert.equal((await client.readServerFlight()).selectedIdentity, 0);
    client.sendFinished();
    assert.equal(await client.readAlert(), undefined);
    assert.equal(t.server.conn.info.resumed, true);
    assert.equal(t.server.conn.info.clientCertificate, undefined);
  });
});
