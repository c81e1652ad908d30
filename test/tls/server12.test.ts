/**
 * The TLS 1.2 server (src/tls/handshake/server12.ts) driven by a scripted client in
 * memory: the full and abbreviated handshakes, the downgrade sentinel, and the exact
 * alert RFC 5246 / 5746 / 7627 / 8422 / 9155 name for each thing a client gets wrong.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { AlertDescription as A } from '../../src/tls/alert.js';
import { LocalSigner, type Identity } from '../../src/tls/signer.js';
import { CipherSuite, ExtensionType as X, HandshakeType as H, NamedGroup, SignatureScheme } from '../../src/tls/wire/codepoints.js';
import { DOWNGRADE_SENTINEL_TLS12 } from '../../src/tls/handshake/server12.js';
import { openTicket12, sealTicket12, SessionCache12, type Session12 } from '../../src/tls/handshake/session12.js';
import { TicketKeyRing } from '../../src/tls/handshake/ticket-keys.js';
import { ext, extensions, x25519Share } from './client-hello-builder.js';
import { makeOptions, settle } from './connection-harness.js';
import { Tls12TestClient, tls12Extensions } from '../helpers/tls12-client.js';

function ecdsaIdentity(): Identity {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { certificateChain: [randomBytes(300)], signer: new LocalSigner(privateKey) };
}
const identity = ecdsaIdentity();

/** The fatal alert the server sent, after letting its promises settle. */
async function fatalAlert(client: Tls12TestClient): Promise<number | undefined> {
  await settle();
  client.receive();
  return client.alerts.find((a) => a.level === 2)?.description;
}

function withoutExt(type: number, list = tls12Extensions()) {
  return list.filter((e) => e.type !== type);
}

describe('TLS 1.2 full handshake', () => {
  test('completes with EMS; both Finished verify; application data flows both ways', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    c.hello();
    await settle();
    const flight = c.receive().map((m) => m.type);
    assert.deepEqual(flight, [H.server_hello, H.certificate, H.server_key_exchange, H.server_hello_done]);
    assert.ok(c.serverHello!.raw.includes(Buffer.from([0x00, 0x17, 0x00, 0x00])), 'ServerHello carries extended_master_secret');
    c.keyExchange();
    c.changeCipherSpec();
    c.finished();
    c.receive();
    assert.ok(c.serverFinishedVerifies(), 'server Finished verifies');
    assert.equal(c.completed, true);
    assert.equal(c.conn.info.version, 'TLSv1.2');
    assert.equal(c.conn.info.cipherSuite, 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256');
    assert.equal(c.conn.info.signatureScheme, 'ecdsa_secp256r1_sha256');
    c.sendRecord(23, Buffer.from('ping'));
    assert.equal(c.appData.map(String).join(''), 'ping');
    c.appData.length = 0;
    c.conn.write(Buffer.from('pong'));
    c.receive();
    assert.equal(c.appData.map(String).join(''), 'pong');
    assert.deepEqual(c.errors, []);
  });

  // The edge reads info.serverCertificateChain for the PROXY v2 PP2_SUBTYPE_SSL_SIG_ALG and
  // _KEY_ALG of the certificate it served (docs/EDGE.md); TLS 1.2 left it unset.
  test('the served certificate chain is in the connection info, after a full handshake and after a resumption', async () => {
    const options = makeOptions(identity);
    const c = new Tls12TestClient(options);
    assert.equal(c.conn.info.serverCertificateChain, undefined, 'control: none before the handshake');
    await c.fullHandshake();
    assert.equal(c.completed, true);
    assert.equal(c.conn.info.serverCertificateChain, identity.certificateChain);
    const again = new Tls12TestClient(options);
    again.clientRandom = Buffer.alloc(32, 0x33);
    again.hello({ sessionId: c.sessionId, extensions: tls12Extensions() });
    await settle();
    again.receive();
    again.installFromMaster(c.master);
    again.receive();
    again.changeCipherSpec();
    again.finished();
    assert.equal(again.completed, true);
    assert.equal(again.conn.info.resumed, true);
    assert.equal(again.conn.info.serverCertificateChain, identity.certificateChain);
  });

  test('without EMS (not required) the classic master secret is used and verifies', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    await c.fullHandshake({ extensions: tls12Extensions({ ems: false }) });
    assert.ok(!c.serverHello!.raw.includes(Buffer.from([0x00, 0x17, 0x00, 0x00])), 'no EMS in ServerHello');
    assert.ok(c.serverFinishedVerifies(), 'server Finished verifies');
    assert.equal(c.completed, true);
  });

  test('the downgrade sentinel (RFC 8446 §4.1.3) ends ServerHello.random only when TLS 1.3 is on', async () => {
    for (const tls13 of [true, false]) {
      const c = new Tls12TestClient(makeOptions(identity, { tls13 }));
      c.hello();
      await settle();
      c.receive();
      assert.equal(c.serverRandom.subarray(24).equals(DOWNGRADE_SENTINEL_TLS12), tls13, `tls13 ${tls13}`);
    }
  });
});

describe('TLS 1.2 alerts', () => {
  const cases: { name: string; alert: number; options?: Parameters<typeof makeOptions>[1]; hello: () => Parameters<Tls12TestClient['hello']>[0] }[] = [
    {
      name: 'SHA-1-only signature_algorithms → handshake_failure (RFC 9155)',
      alert: A.handshake_failure,
      hello: () => ({ extensions: [...withoutExt(X.signature_algorithms), extensions.signatureAlgorithms([SignatureScheme.ecdsa_sha1, SignatureScheme.rsa_pkcs1_sha1])] }),
    },
    {
      name: 'no signature_algorithms (TLS 1.2 default is SHA-1) → handshake_failure',
      alert: A.handshake_failure,
      hello: () => ({ extensions: withoutExt(X.signature_algorithms) }),
    },
    {
      name: 'no null compression method → illegal_parameter (§7.4.1.2)',
      alert: A.illegal_parameter,
      hello: () => ({ compression: true }) as never,
    },
    {
      name: 'non-empty renegotiation_info in an initial handshake → handshake_failure (RFC 5746 §3.6)',
      alert: A.handshake_failure,
      hello: () => ({ extensions: [...withoutExt(X.renegotiation_info), ext(X.renegotiation_info, (w) => w.opaque(1, Buffer.alloc(12, 1)))] }),
    },
    {
      name: 'malformed extended_master_secret → decode_error (RFC 7627 §5.1)',
      alert: A.decode_error,
      hello: () => ({ extensions: [...withoutExt(X.extended_master_secret), extensions.raw(X.extended_master_secret, Buffer.of(0))] }),
    },
    {
      name: 'ec_point_formats without uncompressed → illegal_parameter (RFC 8422 §5.1.2)',
      alert: A.illegal_parameter,
      hello: () => ({ extensions: [...withoutExt(X.ec_point_formats), ext(X.ec_point_formats, (w) => w.vec(1, (l) => l.u8(1)))] }),
    },
    {
      name: 'EMS required and not offered → handshake_failure (RFC 7627 §5.2)',
      alert: A.handshake_failure,
      options: { requireExtendedMasterSecret: true },
      hello: () => ({ extensions: tls12Extensions({ ems: false }) }),
    },
    {
      name: 'TLS 1.2 turned off → protocol_version',
      alert: A.protocol_version,
      options: { tls12: false },
      hello: () => ({}),
    },
    {
      name: 'TLS_FALLBACK_SCSV to a TLS 1.3 server → inappropriate_fallback (RFC 7507)',
      alert: A.inappropriate_fallback,
      hello: () => ({ cipherSuites: [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherSuite.TLS_FALLBACK_SCSV] }),
    },
    {
      name: "ECDSA P-256 certificate, client lacks secp256r1 → handshake_failure (RFC 8422 §5.3)",
      alert: A.handshake_failure,
      hello: () => ({ extensions: [...withoutExt(X.supported_groups), extensions.supportedGroups([NamedGroup.x25519])] }),
    },
    {
      name: 'supported_groups of FFDHE groups only (TLS 1.2 here is ECDHE only) → insufficient_security (RFC 7919 §4)',
      alert: A.insufficient_security,
      hello: () => ({ extensions: [...withoutExt(X.supported_groups), extensions.supportedGroups([NamedGroup.ffdhe2048, 0x0101 /* ffdhe3072 */])] }),
    },
    {
      name: 'an FFDHE group unknown to us (0x01ff) and an EC group we do not do in TLS 1.2 → insufficient_security (RFC 7919 §4)',
      alert: A.insufficient_security,
      hello: () => ({ extensions: [...withoutExt(X.supported_groups), extensions.supportedGroups([0x01ff, NamedGroup.secp521r1])] }),
    },
    {
      name: 'control: no EC group in common and no FFDHE group offered stays handshake_failure',
      alert: A.handshake_failure,
      hello: () => ({ extensions: [...withoutExt(X.supported_groups), extensions.supportedGroups([NamedGroup.secp521r1])] }),
    },
    {
      name: 'control: FFDHE groups next to a common EC group, but the certificate curve missing, stays handshake_failure (RFC 8422 §5.3)',
      alert: A.handshake_failure,
      hello: () => ({ extensions: [...withoutExt(X.supported_groups), extensions.supportedGroups([NamedGroup.ffdhe2048, NamedGroup.x25519])] }),
    },
    {
      name: 'only RSA suites for an ECDSA key → handshake_failure',
      alert: A.handshake_failure,
      hello: () => ({ cipherSuites: [CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256] }),
    },
    {
      name: 'no ALPN protocol in common → no_application_protocol (RFC 7301 §3.2)',
      alert: A.no_application_protocol,
      options: { alpnProtocols: ['http/1.1'] },
      hello: () => ({ extensions: [...tls12Extensions(), extensions.alpn(['h2'])] }),
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const client = new Tls12TestClient(makeOptions(identity, c.options));
      const spec = c.hello() as Parameters<Tls12TestClient['hello']>[0] & { compression?: boolean };
      if (spec.compression) {
        // The builder takes compression methods only through encodeClientHello; send it raw.
        const { encodeClientHello } = await import('./client-hello-builder.js');
        client.sendHandshake(encodeClientHello({ legacyVersion: 0x0303, sessionId: new Uint8Array(0), cipherSuites: [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256], compressionMethods: [1], extensions: tls12Extensions() }));
      } else client.hello(spec ?? {});
      assert.equal(await fatalAlert(client), c.alert);
      assert.equal(client.completed, false);
    });
  }

  test('positive control: the same client with a valid ClientHello completes', async () => {
    const c = new Tls12TestClient(makeOptions(identity, { alpnProtocols: ['http/1.1'] }));
    c.hello({ extensions: [...tls12Extensions(), extensions.alpn(['h2', 'http/1.1'])] });
    await settle();
    c.receive();
    c.keyExchange();
    c.changeCipherSpec();
    c.finished();
    c.receive();
    assert.equal(c.completed, true);
    assert.equal(c.conn.info.alpnProtocol, 'http/1.1');
  });

  test('positive control (RFC 7919 §4): FFDHE groups next to an EC group of ours → an ECDHE handshake', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    await c.fullHandshake({ extensions: [...withoutExt(X.supported_groups), extensions.supportedGroups([NamedGroup.ffdhe2048, 0x0101 /* ffdhe3072 */, NamedGroup.secp256r1])] });
    assert.equal(c.completed, true);
    assert.equal(c.conn.info.group, 'secp256r1');
    assert.deepEqual(c.errors, []);
  });

  test('an identity with tls12: false (an edge route served over TLS 1.3 only) → protocol_version', async () => {
    const c = new Tls12TestClient(makeOptions({ ...identity, tls12: false }));
    c.hello();
    assert.equal(await fatalAlert(c), A.protocol_version);
    const control = new Tls12TestClient(makeOptions({ ...identity, tls12: true }));
    control.hello();
    await settle();
    assert.equal(control.receive()[0]?.type, H.server_hello);
  });

  test('legacy_version TLS 1.1 without supported_versions → protocol_version', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    const { encodeClientHello } = await import('./client-hello-builder.js');
    c.sendHandshake(encodeClientHello({ legacyVersion: 0x0302, sessionId: new Uint8Array(0), cipherSuites: [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256], extensions: tls12Extensions() }));
    assert.equal(await fatalAlert(c), A.protocol_version);
  });

  async function afterFlight(): Promise<Tls12TestClient> {
    const c = new Tls12TestClient(makeOptions(identity));
    c.hello();
    await settle();
    c.receive();
    return c;
  }

  test('ClientKeyExchange with a point not on the curve → illegal_parameter (RFC 8422 §5.7)', async () => {
    const c = await afterFlight();
    const bad = Buffer.alloc(65, 1);
    bad[0] = 4;
    c.keyExchange(bad);
    assert.equal(await fatalAlert(c), A.illegal_parameter);
  });

  test('ClientKeyExchange with a truncated vector → decode_error', async () => {
    const c = await afterFlight();
    c.sendHandshake(Buffer.from([16, 0, 0, 3, 65, 4, 1]));
    assert.equal(await fatalAlert(c), A.decode_error);
  });

  test('ChangeCipherSpec before ClientKeyExchange → unexpected_message', async () => {
    const c = await afterFlight();
    c.sendRecord(20, Buffer.of(1));
    assert.equal(await fatalAlert(c), A.unexpected_message);
  });

  test('Finished without ChangeCipherSpec → unexpected_message', async () => {
    const c = await afterFlight();
    c.keyExchange();
    c.finished();
    assert.equal(await fatalAlert(c), A.unexpected_message);
  });

  test('a client Finished that does not verify → decrypt_error (§7.4.9)', async () => {
    const c = await afterFlight();
    c.keyExchange();
    c.changeCipherSpec();
    c.finished(true);
    assert.equal(await fatalAlert(c), A.decrypt_error);
    assert.equal(c.completed, false);
  });

  test('a client Finished of 11 bytes → decode_error (§7.4.9: verify_data is 12 bytes), not a crash (internal_error)', async () => {
    const c = await afterFlight();
    c.keyExchange();
    c.changeCipherSpec();
    c.sendHandshake(Buffer.concat([Buffer.of(20, 0, 0, 11), c.finishedMessage().subarray(4, 15)]));
    assert.equal(await fatalAlert(c), A.decode_error);
    assert.equal(c.completed, false);
    // Control: the correct Finished completes (the positive control above).
  });

  test('a signer that lists a SHA-1 scheme for TLS 1.2 never signs with it (RFC 9155): SHA-1 only → handshake_failure; with SHA-256 offered too → 0x0403', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const local = new LocalSigner(privateKey);
    const requested: number[] = [];
    // A Signer of someone else's making (the interface is public) that claims ecdsa_sha1 first.
    const withSha1: Identity = {
      certificateChain: [randomBytes(300)],
      signer: {
        schemes: local.schemes,
        tls12Schemes: [SignatureScheme.ecdsa_sha1, ...local.tls12Schemes],
        sign: (r) => {
          if (r.kind === 'tls12-server-key-exchange') requested.push(r.scheme);
          return local.sign(r);
        },
      },
    };
    const refused = new Tls12TestClient(makeOptions(withSha1));
    refused.hello({ extensions: [...withoutExt(X.signature_algorithms), extensions.signatureAlgorithms([SignatureScheme.ecdsa_sha1])] });
    assert.equal(await fatalAlert(refused), A.handshake_failure);
    const control = new Tls12TestClient(makeOptions(withSha1));
    await control.fullHandshake({ extensions: [...withoutExt(X.signature_algorithms), extensions.signatureAlgorithms([SignatureScheme.ecdsa_sha1, SignatureScheme.ecdsa_secp256r1_sha256])] });
    assert.equal(control.completed, true);
    assert.deepEqual(requested, [SignatureScheme.ecdsa_secp256r1_sha256]);
  });

  test('up to 4 warning alerts in a row are ignored; the 5th → unexpected_message', async () => {
    for (const [count, expected] of [[4, undefined], [5, A.unexpected_message]] as const) {
      const c = await afterFlight();
      for (let i = 0; i < count; i++) c.sendRecord(21, Buffer.from([1, A.unsupported_certificate]));
      assert.equal(await fatalAlert(c), expected, `${count} warnings`);
      if (expected === undefined) {
        c.keyExchange();
        c.changeCipherSpec();
        c.finished();
        c.receive();
        assert.equal(c.completed, true);
      }
    }
  });

  test('renegotiation is refused with a warning no_renegotiation and the connection is kept (RFC 5746 §4.4)', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    await c.fullHandshake();
    assert.equal(c.completed, true);
    c.hello();
    c.receive();
    assert.deepEqual(c.alerts, [{ level: 1, description: A.no_renegotiation }]);
    c.sendRecord(23, Buffer.from('still here'));
    assert.equal(c.appData.map(String).join(''), 'still here');
    assert.equal(c.conn.closed, false);
    assert.deepEqual(c.errors, []);
  });

  /** The smallest ClientHello header a renegotiation refusal answers: type 1, empty body. */
  const TINY_HELLO = Buffer.from([H.client_hello, 0, 0, 0]);
  const noRenegotiation = { level: 1, description: A.no_renegotiation };

  test('a record packed with renegotiating ClientHellos gets 4 no_renegotiation warnings, then unexpected_message', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    await c.fullHandshake();
    // 4096 ClientHellos in one 16 KiB record: one alert record each would be 127 KB out.
    c.sendRecord(22, Buffer.concat(Array.from({ length: 4096 }, () => TINY_HELLO)));
    c.receive();
    assert.deepEqual(c.alerts, [noRenegotiation, noRenegotiation, noRenegotiation, noRenegotiation, { level: 2, description: A.unexpected_message }]);
    assert.equal(c.conn.closed, true);
  });

  test('renegotiations and warning alerts count together: 4 in a row are refused, the 5th → unexpected_message', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    await c.fullHandshake();
    c.sendRecord(21, Buffer.from([1, A.unsupported_certificate]));
    c.sendRecord(22, Buffer.concat([TINY_HELLO, TINY_HELLO, TINY_HELLO]));
    c.sendRecord(21, Buffer.from([1, A.unsupported_certificate]));
    c.receive();
    assert.deepEqual(c.alerts, [noRenegotiation, noRenegotiation, noRenegotiation, { level: 2, description: A.unexpected_message }]);
  });

  test('positive control: renegotiations between application data are each refused and the connection goes on', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    await c.fullHandshake();
    for (let i = 0; i < 10; i++) {
      c.sendRecord(22, Buffer.concat([TINY_HELLO, TINY_HELLO, TINY_HELLO, TINY_HELLO]));
      c.sendRecord(23, Buffer.from(`data ${i};`));
    }
    c.receive();
    assert.equal(c.alerts.length, 40);
    assert.ok(c.alerts.every((a) => a.level === 1 && a.description === A.no_renegotiation));
    assert.equal(c.appData.map(String).join(''), Array.from({ length: 10 }, (_, i) => `data ${i};`).join(''));
    assert.equal(c.conn.closed, false);
    assert.deepEqual(c.errors, []);
  });
});

describe('TLS 1.2 close_notify', () => {
  // RFC 5246 §7.2.1: "Any data received after a closure alert is ignored." The records
  // that follow a close_notify in the same read were delivered (and, through the socket
  // adapter, pushed after the stream's end: ERR_STREAM_PUSH_AFTER_EOF).
  test('records after the client close_notify, in the same read, are ignored: no data, no renegotiation answer, no error', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    await c.fullHandshake();
    let peerCloses = 0;
    c.conn.onPeerClose = () => peerCloses++;
    c.conn.receive(
      Buffer.concat([
        c.sealRecord(23, Buffer.from('before;')),
        c.sealRecord(21, Buffer.from([1, A.close_notify])),
        c.sealRecord(23, Buffer.from('after close_notify')),
        c.sealRecord(22, Buffer.from([H.client_hello, 0, 0, 0])),
        c.sealRecord(21, Buffer.from([2, A.internal_error])),
      ]),
    );
    c.receive();
    assert.equal(c.appData.map(String).join(''), 'before;', 'only the data before close_notify');
    assert.equal(peerCloses, 1);
    assert.deepEqual(c.alerts, [], 'no no_renegotiation warning for a ClientHello after close_notify');
    assert.deepEqual(c.errors, [], 'a fatal alert after close_notify ends nothing');
    // Positive control: our side is still open (half-close, RFC 5246 §7.2.1) and closes cleanly.
    c.conn.write(Buffer.from('reply'));
    c.conn.close();
    c.receive();
    assert.equal(c.appData.map(String).join(''), 'before;reply');
    assert.deepEqual(c.alerts, [{ level: 1, description: A.close_notify }]);
    assert.equal(c.conn.closed, true);
  });

  test('positive control: records in separate reads before the close_notify are all delivered', async () => {
    const c = new Tls12TestClient(makeOptions(identity));
    await c.fullHandshake();
    c.sendRecord(23, Buffer.from('one;'));
    c.conn.receive(Buffer.concat([c.sealRecord(23, Buffer.from('two;')), c.sealRecord(23, Buffer.from('three;'))]));
    c.sendRecord(21, Buffer.from([1, A.close_notify]));
    assert.equal(c.appData.map(String).join(''), 'one;two;three;');
    assert.deepEqual(c.errors, []);
  });
});

describe('TLS 1.2 resumption', () => {
  async function firstSession(options: ReturnType<typeof makeOptions>, ems = true, ticket?: Uint8Array, serverName?: string) {
    const c = new Tls12TestClient(options);
    c.hello({ extensions: tls12Extensions({ ems, ...(ticket ? { ticket } : {}), ...(serverName ? { serverName } : {}) }) });
    await settle();
    c.receive();
    c.keyExchange();
    c.changeCipherSpec();
    c.finished();
    c.receive();
    assert.equal(c.completed, true);
    return c;
  }

  async function resume(options: ReturnType<typeof makeOptions>, first: Tls12TestClient, hello: Parameters<Tls12TestClient['hello']>[0]) {
    const c = new Tls12TestClient(options);
    c.clientRandom = Buffer.alloc(32, 0x33);
    c.hello(hello);
    await settle();
    const messages = c.receive();
    return { c, messages };
  }

  /** One ClientHello at `at` (the client's clock), the server's answer read; nothing more is sent. */
  async function helloAt(options: ReturnType<typeof makeOptions>, at: number, hello: Parameters<Tls12TestClient['hello']>[0]) {
    const c = new Tls12TestClient(options, () => at);
    c.hello(hello);
    await settle();
    c.receive();
    assert.deepEqual(c.errors, []);
    return c;
  }

  /** Whether `first`'s session resumes at `at`, offered by its ticket or by its session id. */
  async function resumesAt(options: ReturnType<typeof makeOptions>, first: Tls12TestClient, at: number, byTicket: boolean) {
    const hello = byTicket ? { sessionId: randomBytes(32), extensions: tls12Extensions({ ticket: first.ticket! }) } : { sessionId: first.sessionId, extensions: tls12Extensions() };
    return (await helloAt(options, at, hello)).conn.info.resumed;
  }

  test('by session id: ServerHello, ChangeCipherSpec, Finished; the client Finished completes it', async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options);
    assert.equal(first.sessionId.length, 32);
    const { c, messages } = await resume(options, first, { sessionId: first.sessionId, extensions: tls12Extensions() });
    assert.deepEqual(messages.map((m) => m.type), [H.server_hello]);
    assert.deepEqual(c.sessionId, first.sessionId);
    // The server's ChangeCipherSpec and Finished follow; read them with the session's keys.
    c.installFromMaster(first.master);
    assert.deepEqual(c.receive().map((m) => m.type), [H.finished]);
    assert.ok(c.serverFinishedVerifies(), 'server Finished verifies with the resumed master secret');
    c.changeCipherSpec();
    c.finished();
    assert.equal(c.completed, true);
    assert.equal(c.conn.info.resumed, true);
    c.sendRecord(23, Buffer.from('resumed'));
    assert.equal(c.appData.map(String).join(''), 'resumed');
  });

  test('a server name too long for a ticket (over 255 bytes) gets no ticket; the handshake completes and the session id resumes', async () => {
    const options = makeOptions(identity);
    const longName = `${'a'.repeat(300)}.example`;
    const c = await firstSession(options, true, new Uint8Array(0), longName);
    assert.deepEqual(c.errors, []);
    assert.equal(c.ticket, undefined, 'no NewSessionTicket');
    const { c: again } = await resume(options, c, { sessionId: c.sessionId, extensions: tls12Extensions({ serverName: longName }) });
    again.installFromMaster(c.master);
    again.receive();
    again.changeCipherSpec();
    again.finished();
    assert.equal(again.conn.info.resumed, true);
    // Positive control: an ordinary name gets its ticket.
    const control = await firstSession(options, true, new Uint8Array(0));
    assert.ok(control.ticket && control.ticket.length > 0);
  });

  test('by ticket (RFC 5077): the ticket from the first handshake resumes', async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options, true, new Uint8Array(0));
    assert.ok(first.ticket && first.ticket.length > 0, 'NewSessionTicket sent');
    const { c, messages } = await resume(options, first, { sessionId: randomBytes(32), extensions: tls12Extensions({ ticket: first.ticket }) });
    assert.deepEqual(messages.map((m) => m.type), [H.server_hello]);
    c.installFromMaster(first.master);
    assert.deepEqual(c.receive().map((m) => m.type), [H.finished]);
    assert.ok(c.serverFinishedVerifies());
    c.changeCipherSpec();
    c.finished();
    assert.equal(c.completed, true);
    assert.equal(c.conn.info.resumed, true);
  });

  test('an EMS session offered without EMS → handshake_failure (RFC 7627 §5.3)', async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options, true);
    const c = new Tls12TestClient(options);
    c.hello({ sessionId: first.sessionId, extensions: tls12Extensions({ ems: false }) });
    assert.equal(await fatalAlert(c), A.handshake_failure);
  });

  test('a non-EMS session offered with EMS gets a full handshake, not a resumption', async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options, false);
    const { c, messages } = await resume(options, first, { sessionId: first.sessionId, extensions: tls12Extensions({ ems: true }) });
    assert.equal(messages.map((m) => m.type).includes(H.certificate), true);
    assert.equal(c.conn.info.resumed, false);
  });

  test('a ticket altered in one byte is not resumed (full handshake)', async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options, true, new Uint8Array(0));
    const altered = Buffer.from(first.ticket!);
    altered[altered.length - 1]! ^= 1;
    const { c, messages } = await resume(options, first, { sessionId: randomBytes(32), extensions: tls12Extensions({ ticket: altered }) });
    assert.equal(messages.map((m) => m.type).includes(H.certificate), true);
    assert.equal(c.conn.info.resumed, false);
  });

  /** A resumption by session id taken up to the client's ChangeCipherSpec. */
  async function resumeToClientFinished(options: ReturnType<typeof makeOptions>, first: Tls12TestClient) {
    const { c } = await resume(options, first, { sessionId: first.sessionId, extensions: tls12Extensions() });
    assert.equal(c.conn.info.resumed, true);
    c.installFromMaster(first.master);
    c.receive();
    c.changeCipherSpec();
    return c;
  }

  // RFC 5246 §7.2.2: "Servers and clients MUST forget any session-identifiers, keys, and
  // secrets associated with a failed connection. Thus, any connection terminated with a
  // fatal alert MUST NOT be resumed."
  test('a resumption whose client Finished fails (decrypt_error) takes the session out of the cache', async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options);
    const attacker = await resumeToClientFinished(options, first);
    attacker.finished(true);
    assert.equal(await fatalAlert(attacker), A.decrypt_error);
    const { c } = await resume(options, first, { sessionId: first.sessionId, extensions: tls12Extensions() });
    assert.equal(c.conn.info.resumed, false, 'full handshake');
  });

  test('a connection that ends with a fatal alert after its full handshake is not resumed', async () => {
    for (const ending of ['bad record', 'fatal alert from the client'] as const) {
      const options = makeOptions(identity);
      const first = await firstSession(options);
      if (ending === 'bad record') first.conn.receive(Buffer.from([23, 3, 3, 0, 40, ...randomBytes(40)]));
      else first.sendRecord(21, Buffer.from([2, A.internal_error]));
      assert.equal(first.conn.closed, true, ending);
      const { c } = await resume(options, first, { sessionId: first.sessionId, extensions: tls12Extensions() });
      assert.equal(c.conn.info.resumed, false, `${ending}: full handshake`);
    }
  });

  test('positive control: a resumption that completes, and a connection closed with close_notify, leave the session resumable', async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options);
    first.sendRecord(21, Buffer.from([1, A.close_notify]));
    const second = await resumeToClientFinished(options, first);
    second.finished();
    assert.equal(second.completed, true);
    second.sendRecord(21, Buffer.from([1, A.unsupported_certificate])); // a warning alert ends nothing
    const third = await resumeToClientFinished(options, first);
    third.finished();
    assert.equal(third.completed, true);
    assert.deepEqual([first.errors, second.errors, third.errors], [[], [], []]);
  });

  test('another server name does not resume (RFC 6066 §3)', async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options);
    const { c } = await resume(options, first, { sessionId: first.sessionId, extensions: tls12Extensions({ serverName: 'other.test' }) });
    assert.equal(c.conn.info.resumed, false);
  });

  // §7.4.1.2: a resumption request "MUST include at least the cipher_suite from that session";
  // resuming under another suite is what CVE-2010-4180 exploited.
  test("a resumption without the session's cipher suite → illegal_parameter, by session id and by ticket (§7.4.1.2)", async () => {
    const options = makeOptions(identity);
    const first = await firstSession(options, true, new Uint8Array(0));
    const other = [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384];
    // Control: the session's suite offered after another → it resumes, under the session's suite.
    const { c: control } = await resume(options, first, { sessionId: first.sessionId, cipherSuites: [...other, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256], extensions: tls12Extensions() });
    assert.equal(control.conn.info.resumed, true);
    assert.equal(control.conn.info.cipherSuite, 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256');
    for (const hello of [
      { sessionId: first.sessionId, cipherSuites: other, extensions: tls12Extensions() },
      { sessionId: randomBytes(32), cipherSuites: other, extensions: tls12Extensions({ ticket: first.ticket! }) },
    ]) {
      const c = new Tls12TestClient(options);
      c.hello(hello);
      assert.equal(await fatalAlert(c), A.illegal_parameter);
      assert.equal(c.conn.info.resumed, false);
    }
  });

  test('the session-id cache keeps at most sessionCacheSize sessions, the oldest dropped first', async () => {
    const options = makeOptions(identity, { sessionCacheSize: 2 });
    const sessions = [await firstSession(options), await firstSession(options), await firstSession(options)];
    assert.equal(options.sessionCache12.size, 2);
    const resumed: boolean[] = [];
    for (const s of sessions) {
      const { c } = await resume(options, s, { sessionId: s.sessionId, extensions: tls12Extensions() });
      resumed.push(c.conn.info.resumed);
    }
    assert.deepEqual(resumed, [false, true, true]);
  });

  // The master secrets of sessions past their lifetime were kept until sessionCacheSize newer
  // sessions pushed them out (on a quiet server: indefinitely), though never resumed again.
  test('caching a session drops the sessions already past their lifetime; live ones stay', async () => {
    const t0 = 1_700_000_000_000;
    const options = makeOptions(identity, { ticketLifetimeSeconds: 60 });
    const sessionAt = async (at: number) => {
      const c = new Tls12TestClient(options, () => at);
      await c.fullHandshake();
      assert.equal(c.completed, true);
      return c;
    };
    await sessionAt(t0);
    const second = await sessionAt(t0 + 30_000);
    assert.equal(options.sessionCache12.size, 2, 'control: both live');
    await sessionAt(t0 + 60_001); // the first is past its lifetime, the second is not
    assert.equal(options.sessionCache12.size, 2);
    await sessionAt(t0 + 200_000); // both earlier ones are past theirs
    assert.equal(options.sessionCache12.size, 1);
    assert.equal(options.sessionCache12.get(second.sessionId, t0 + 60_000), undefined);
  });

  // Handshakes look the cache up (and sweep it) before they insert, so the test above cannot
  // tell whether the insert sweeps too: this one inserts with no lookup in between.
  test('SessionCache12.set drops the sessions already past their lifetime, with no lookup in between', async () => {
    const t0 = 1_700_000_000_000;
    const options = makeOptions(identity, { ticketLifetimeSeconds: 60 });
    const c = new Tls12TestClient(options, () => t0);
    await c.fullHandshake();
    const session = options.sessionCache12.get(c.sessionId, t0)!;
    assert.ok(session, 'a session to copy');
    const cache = new SessionCache12(10);
    cache.set(randomBytes(32), session);
    cache.set(randomBytes(32), { ...session, issuedAt: t0 + 30_000 });
    assert.equal(cache.size, 2, 'control: both live');
    cache.set(randomBytes(32), { ...session, issuedAt: t0 + 60_001 });
    assert.equal(cache.size, 2, 'the first, past its lifetime, left at the insert');
    cache.set(randomBytes(32), { ...session, issuedAt: t0 + 200_000 });
    assert.equal(cache.size, 1);
  });

  test('a session past its lifetime is not resumed, by session id or by ticket; at its lifetime it is', async () => {
    const t0 = 1_700_000_000_000; // the scripted client's clock, when the first session is made
    const options = makeOptions(identity, { ticketLifetimeSeconds: 60 });
    const first = await firstSession(options, true, new Uint8Array(0));
    const resumedAt = (at: number, byTicket: boolean) => resumesAt(options, first, at, byTicket);
    for (const byTicket of [false, true]) {
      const how = byTicket ? 'ticket' : 'session id';
      assert.equal(await resumedAt(t0 + 60_000, byTicket), true, `${how}: at the lifetime`);
      assert.equal(await resumedAt(t0 + 60_001, byTicket), false, `${how}: 1 ms past it`);
    }
    assert.equal(await resumedAt(t0 - 1, true), false, 'ticket: a clock that went back');
  });

  // RFC 5246 Appendix F.1.4 suggests 24 h at most for session ids (a stolen master secret
  // impersonates until the id is retired); they lived as long as ticketLifetimeSeconds (≤ 7 days).
  test('a session id resumes for 24 h at most, whatever ticketLifetimeSeconds; its ticket keeps the full lifetime', async () => {
    const t0 = 1_700_000_000_000; // the scripted client's clock, when the first session is made
    const day = 86_400_000;
    const options = makeOptions(identity, { ticketLifetimeSeconds: 7 * 86_400 });
    const first = await firstSession(options, true, new Uint8Array(0));
    const resumedAt = (at: number, byTicket: boolean) => resumesAt(options, first, at, byTicket);
    assert.equal(await resumedAt(t0 + day + 1, false), false, 'session id: 1 ms past 24 h');
    assert.equal(options.sessionCache12.size, 0, 'and it is dropped');
    // Controls: the ticket of the same session lives its 7 days; a session id within 24 h resumes.
    assert.equal(await resumedAt(t0 + day + 1, true), true, 'ticket: past 24 h');
    assert.equal(await resumedAt(t0 + 7 * day, true), true, 'ticket: at 7 days');
    const second = await firstSession(options);
    assert.equal(await resumesAt(options, second, t0 + day, false), true, 'session id: at 24 h');
  });

  // Expired sessions were dropped only when a new one was cached: a server that makes no new
  // sessions (clients resuming by ticket, or none) kept their master secrets indefinitely.
  test('lookups drop expired session ids (unknown id, empty id, a ticket) without a new session being made', async () => {
    const t0 = 1_700_000_000_000;
    const options = makeOptions(identity, { ticketLifetimeSeconds: 60 });
    const first = await firstSession(options, true, new Uint8Array(0));
    // ServerHello and flight only: no session is made.
    const lookupAt = (at: number, offer: Parameters<Tls12TestClient['hello']>[0]) => helloAt(options, at, offer);
    const lookups: [string, Parameters<Tls12TestClient['hello']>[0]][] = [
      ['an unknown session id', { sessionId: randomBytes(32), extensions: tls12Extensions() }],
      ['no session id', { extensions: tls12Extensions() }],
      ['a ticket', { sessionId: randomBytes(32), extensions: tls12Extensions({ ticket: first.ticket! }) }],
    ];
    for (const [what, hello] of lookups) {
      const session = options.sessionCache12.size === 0 ? await firstSession(options) : first; // made at t0, cached by id
      assert.equal(options.sessionCache12.size, 1, what);
      await lookupAt(t0 + 30_000, hello);
      assert.equal(options.sessionCache12.size, 1, `${what}: control, a live session stays`);
      await lookupAt(t0 + 60_001, hello);
      assert.equal(options.sessionCache12.size, 0, `${what}: the expired session is dropped`);
      const late = await lookupAt(t0 + 60_001, { sessionId: session.sessionId, extensions: tls12Extensions() });
      assert.equal(late.conn.info.resumed, false);
    }
    // Control: a session id within its lifetime still resumes after such lookups.
    const live = await firstSession(options);
    await lookupAt(t0 - 1000, { sessionId: randomBytes(32), extensions: tls12Extensions() }); // a clock that went back: not expired
    await lookupAt(t0 + 59_000, { sessionId: randomBytes(32), extensions: tls12Extensions() });
    assert.equal(options.sessionCache12.size, 1);
    assert.equal((await lookupAt(t0 + 59_000, { sessionId: live.sessionId, extensions: tls12Extensions() })).conn.info.resumed, true);
  });

  test('a lifetime under 24 h still bounds session ids (the cap only lowers it)', async () => {
    const t0 = 1_700_000_000_000;
    const options = makeOptions(identity, { ticketLifetimeSeconds: 3600 });
    const first = await firstSession(options);
    const resumed = (at: number) => resumesAt(options, first, at, false);
    assert.equal(await resumed(t0 + 3_600_000), true);
    assert.equal(await resumed(t0 + 3_600_001), false);
  });

  // RFC 5077 §3.4: an empty SessionTicket extension in ServerHello promises a NewSessionTicket
  // before the server's ChangeCipherSpec; our abbreviated flight sends none, so a resumption
  // must not promise one (the client would wait for it, or abort).
  test('a resumption by ticket does not promise a new ticket in ServerHello; a full handshake does', async () => {
    const SESSION_TICKET_EMPTY = Buffer.from([0x00, 0x23, 0x00, 0x00]);
    const options = makeOptions(identity);
    const first = await firstSession(options, true, new Uint8Array(0));
    const { c } = await resume(options, first, { sessionId: randomBytes(32), extensions: tls12Extensions({ ticket: first.ticket! }) });
    assert.equal(c.conn.info.resumed, true);
    assert.equal(c.serverHello!.raw.includes(SESSION_TICKET_EMPTY), false);
    c.installFromMaster(first.master);
    assert.deepEqual(c.receive().map((m) => m.type), [H.finished], 'no NewSessionTicket before our Finished');
    // Control: a full handshake offering an empty ticket extension is promised one.
    const full = new Tls12TestClient(options);
    full.hello({ extensions: tls12Extensions({ ticket: new Uint8Array(0) }) });
    await settle();
    full.receive();
    assert.equal(full.serverHello!.raw.includes(SESSION_TICKET_EMPTY), true);
  });

  // A session of a cipher suite this server no longer offers (cipherSuites12 changed at a
  // reload, or another server sharing the ticket keys) is not resumed: full handshake.
  test('a ticket of a cipher suite the server no longer has: full handshake with a configured suite', async () => {
    const ticketKeys = new TicketKeyRing();
    const first = await firstSession(makeOptions(identity, { ticketKeys }), true, new Uint8Array(0));
    assert.equal(first.conn.info.cipherSuite, 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256');
    const hello = {
      sessionId: randomBytes(32),
      cipherSuites: [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384],
      extensions: tls12Extensions({ ticket: first.ticket! }),
    };
    const narrowed = await resume(makeOptions(identity, { ticketKeys, cipherSuites12: [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384] }), first, hello);
    assert.equal(narrowed.c.conn.info.resumed, false);
    assert.equal(narrowed.messages.map((m) => m.type).includes(H.certificate), true);
    assert.equal(narrowed.c.conn.info.cipherSuite, 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384');
    // Control: a server that still has the suite resumes the same ticket.
    const same = await resume(makeOptions(identity, { ticketKeys }), first, hello);
    assert.equal(same.c.conn.info.resumed, true);
  });

  // options.ts: ticketCount 0 disables resumption, TLS 1.2 too.
  test('ticketCount 0: a valid ticket of the shared ring is not resumed', async () => {
    const ticketKeys = new TicketKeyRing();
    const first = await firstSession(makeOptions(identity, { ticketKeys }), true, new Uint8Array(0));
    const hello = { sessionId: randomBytes(32), extensions: tls12Extensions({ ticket: first.ticket! }) };
    const off = await resume(makeOptions(identity, { ticketKeys, ticketCount: 0 }), first, hello);
    assert.equal(off.c.conn.info.resumed, false);
    assert.equal(off.messages.map((m) => m.type).includes(H.certificate), true);
    // Control: with tickets on, the same ticket resumes.
    assert.equal((await resume(makeOptions(identity, { ticketKeys }), first, hello)).c.conn.info.resumed, true);
  });
});

// The extended_master_secret flag of a TLS 1.2 ticket is one byte, 0 or 1: any other value is
// a ticket of another format and is not resumed (RFC 7627 §5.3 depends on reading it right).
test('a TLS 1.2 ticket whose extended_master_secret byte is 2 does not open; 0 and 1 do', () => {
  const ring = new TicketKeyRing();
  const session: Session12 = {
    cipherSuite: CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    masterSecret: randomBytes(48),
    extendedMasterSecret: true,
    issuedAt: 1_800_000_000_000,
    lifetimeSeconds: 3600,
    serverName: 'example.test',
    clientAuthPolicy: 'off',
    clientIdentity: undefined,
  };
  const plain = ring.open('tls12 ticket', sealTicket12(ring, session))!;
  // version (1), cipher suite (2), master secret (1 + 48), then the flag.
  const withFlag = (flag: number) => {
    const copy = Buffer.from(plain);
    assert.equal(copy[52], 1);
    copy[52] = flag;
    return ring.seal('tls12 ticket', copy);
  };
  assert.equal(openTicket12(ring, withFlag(2)), undefined);
  assert.equal(openTicket12(ring, withFlag(1))?.extendedMasterSecret, true);
  assert.equal(openTicket12(ring, withFlag(0))?.extendedMasterSecret, false);
});

// RFC 5746 §3.6: a client that signals secure renegotiation (renegotiation_info, or the SCSV)
// gets an empty renegotiation_info in ServerHello; without it, a client that requires secure
// renegotiation aborts. A client that signals neither gets none.
test('ServerHello carries an empty renegotiation_info for the extension or the SCSV, and none without either', async () => {
  const RENEGOTIATION_INFO_EMPTY = Buffer.from([0xff, 0x01, 0x00, 0x01, 0x00]);
  const suites = [CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256];
  const cases: [string, Parameters<Tls12TestClient['hello']>[0], boolean][] = [
    ['renegotiation_info', { cipherSuites: suites }, true],
    ['SCSV', { cipherSuites: [...suites, CipherSuite.TLS_EMPTY_RENEGOTIATION_INFO_SCSV], extensions: withoutExt(X.renegotiation_info) }, true],
    ['neither (control)', { cipherSuites: suites, extensions: withoutExt(X.renegotiation_info) }, false],
  ];
  for (const [what, hello, echoed] of cases) {
    const c = new Tls12TestClient(makeOptions(identity));
    c.hello(hello);
    await settle();
    c.receive();
    assert.ok(c.serverHello, what);
    assert.equal(c.serverHello.raw.includes(RENEGOTIATION_INFO_EMPTY), echoed, what);
    assert.deepEqual(c.errors, [], what);
  }
});

// options.ts: tls13 false turns TLS 1.3 off: a ClientHello that offers both versions (with a
// key share, so TLS 1.3 could go ahead) gets TLS 1.2 (RFC 8446 §4.2.1: the server picks).
test('tls13 off: a ClientHello offering TLS 1.3 and 1.2 gets TLS 1.2; control: with TLS 1.3 on it gets TLS 1.3', async () => {
  const both = [
    ...tls12Extensions(),
    extensions.supportedVersions([0x0304, 0x0303]),
    extensions.keyShare([{ group: NamedGroup.x25519, keyExchange: x25519Share() }]),
    extensions.pskModes([1]),
  ];
  const off = new Tls12TestClient(makeOptions(identity, { tls13: false }));
  off.hello({ extensions: both });
  await settle();
  off.receive();
  assert.deepEqual(off.errors, []);
  assert.equal(off.conn.info.version, 'TLSv1.2');
  assert.ok(off.serverHello, 'a TLS 1.2 ServerHello');
  const on = new Tls12TestClient(makeOptions(identity));
  on.hello({ extensions: both });
  await settle();
  assert.equal(on.conn.info.version, 'TLSv1.3');
});
