import { timingSafeEqual } from 'node:crypto';
import { TlsAlert } from '../alert.js';
import { generateEphemeralKey, groupName, TLS12_GROUPS, type EphemeralKey } from '../crypto/key-exchange.js';
import { extendedMasterSecret, finishedVerifyData12, keyBlock12, masterSecret } from '../crypto/prf12.js';
import { randomBytesFromPool } from '../crypto/random-pool.js';
import { SUITES12, type Suite12Info } from '../crypto/suites12.js';
import type { ClientHello } from '../messages/client-hello.js';
import { encodeFinished } from '../messages/server-messages.js';
import {
  decodeClientHello12Extensions,
  decodeClientKeyExchange,
  encodeCertificate12,
  encodeNewSessionTicket12,
  encodeServerEcdhParams,
  encodeServerHello12,
  encodeServerHelloDone,
  encodeServerKeyExchange,
  type ClientHello12Extensions,
} from '../messages/tls12-messages.js';
import { ClientCertificateType, decodeCertificateVerify, decodeClientCertificate12, encodeCertificateRequest12 } from '../messages/client-authentication.js';
import type { ClientAuthOptions, VerifiedClientCertificate } from '../options.js';
import { RecordProtection12 } from '../record/protection12.js';
import { MAX_PLAINTEXT } from '../record/protection.js';
import type { Identity } from '../signer.js';
import { ContentType, NamedGroup, nameOf, SignatureScheme } from '../wire/codepoints.js';
import { clientAuthFor, clientAuthPolicyId, sessionFitsClientAuth } from './client-auth-policy.js';
import { CLIENT_SIGNATURE_SCHEMES_12, verifyClientCertificateVerify12 } from './client-certificate-verify.js';
import type { HandshakeContext } from './context.js';
import { lookUpIdentity } from './identity-lookup.js';
import { selectAlpn } from './negotiate.js';
import { openTicket12, sealTicket12, sessionIsLive, type Session12 } from './session12.js';
import { serverNameFitsTicket } from './session-ticket.js';
import { clientIdentityFitsTicket } from './ticket-fields.js';
import { Transcript } from './transcript.js';

/**
 * The TLS 1.2 server handshake (RFC 5246 §7.3 with ECDHE, RFC 8422; the modern profile of
 * docs/TLS12.md), one named step per part of the RFC, called in order:
 *
 *   processClientHello        §7.4.1.2          compression, EMS policy, renegotiation_info (RFC 5746)
 *   pickIdentity              RFC 6066 §3       certificate + signer for the name, ALPN
 *   checkForResumption        §7.4.1.2, RFC 5077 a session by ticket or by session id
 *   — full handshake —
 *   chooseParameters          §7.4.1.3, RFC 8422 suite for the key type (client preference), group, signature scheme
 *   sendServerHello           §7.4.1.3          random with the RFC 8446 §4.1.3 downgrade sentinel
 *   sendCertificate           §7.4.2
 *   sendServerKeyExchange     RFC 8422 §5.4     the Signer signs randoms + ECDH parameters
 *   requestClientCertificate  §7.4.4            CertificateRequest when the identity's client-auth mode asks
 *   sendServerHelloDone       §7.4.5            the flight goes out as one write
 *   readClientCertificate     §7.4.6            the client's chain, checked by the policy's verifier
 *   readClientKeyExchange     RFC 8422 §5.7     shared secret, (extended) master secret, key block
 *   readClientCertificateVerify §7.4.8          the client's signature over the handshake messages
 *   readChangeCipherSpec      §7.1              the client's keys take effect
 *   readClientFinished        §7.4.9            verify_data checks
 *   sendTickets               RFC 5077 §3.3     NewSessionTicket before our ChangeCipherSpec
 *   sendFinished              §7.4.9            ChangeCipherSpec + Finished; the session is cached
 *   — abbreviated handshake (resumption) —
 *   sendServerHello, sendFinished, readChangeCipherSpec, readClientFinished
 *
 * Each step takes what exists at its point as a typed value and returns what the next
 * needs. The connection holds the phase between messages; the record layer moves bytes.
 */

/** RFC 8446 §4.1.3: the last 8 bytes of ServerHello.random when a TLS 1.3 server negotiates TLS 1.2. */
export const DOWNGRADE_SENTINEL_TLS12 = Buffer.from('444f574e47524401', 'hex');

/** Waiting for the identity and the signature; the promise settles once our flight is sent. */
export interface Negotiating12 {
  readonly kind: 'negotiating12';
  readonly server: ServerHandshake12;
  /** What the next client message is checked against; undefined when the connection closed meanwhile. */
  readonly flight: Promise<Expect12 | undefined>;
}

/** What our CertificateRequest asked for, and the handshake messages a CertificateVerify covers (§7.4.8). */
interface CertificateRequest12 {
  readonly clientAuth: ClientAuthOptions;
  readonly signatureSchemes: readonly number[];
  /** ClientHello … ServerHelloDone, then the client's Certificate and ClientKeyExchange as they arrive. */
  readonly handshakeMessages: Buffer[];
  /** The verified client certificate, once its Certificate was read (none: the client sent an empty one). */
  certificate?: VerifiedClientCertificate;
}

/** After a ServerHelloDone that followed a CertificateRequest: the client's Certificate is next (§7.4.6). */
export interface ExpectClientCertificate12 extends Omit<ExpectClientKeyExchange, 'kind'> {
  readonly kind: 'expectClientCertificate';
  readonly certificateRequest: CertificateRequest12;
}

/** The client sent a certificate: its CertificateVerify follows its ClientKeyExchange (§7.4.8). */
export interface ExpectCertificateVerify12 {
  readonly kind: 'expectCertificateVerify';
  readonly next: ExpectChangeCipherSpec;
  readonly certificateRequest: CertificateRequest12;
  readonly certificate: VerifiedClientCertificate;
}

/** After ServerHelloDone: the client's ECDHE share is next (RFC 8422 §5.7). */
export interface ExpectClientKeyExchange {
  readonly kind: 'expectClientKeyExchange';
  /** Set when our flight held a CertificateRequest. */
  readonly certificateRequest?: CertificateRequest12;
  readonly suite: Suite12Info;
  readonly transcript: Transcript;
  readonly clientRandom: Uint8Array;
  readonly serverRandom: Buffer;
  readonly ephemeral: EphemeralKey;
  readonly extendedMasterSecret: boolean;
  readonly session: SessionPlan;
}

/** The master secret exists; the client's ChangeCipherSpec switches its keys (§7.1). */
export interface ExpectChangeCipherSpec {
  readonly kind: 'expectChangeCipherSpec';
  readonly suite: Suite12Info;
  readonly transcript: Transcript;
  readonly master: Buffer;
  readonly clientProtection: RecordProtection12;
  /** Full handshake: our keys, ChangeCipherSpec and Finished follow the client's Finished. Resumption: sent already. */
  readonly serverProtection: RecordProtection12 | undefined;
  readonly extendedMasterSecret: boolean;
  readonly session: SessionPlan;
}

/** The client's keys are in use; its Finished is next (§7.4.9). */
export interface ExpectClientFinished12 extends Omit<ExpectChangeCipherSpec, 'kind' | 'clientProtection'> {
  readonly kind: 'expectClientFinished';
}

export type Expect12 =
  | ExpectClientCertificate12
  | ExpectClientKeyExchange
  | ExpectCertificateVerify12
  | ExpectChangeCipherSpec
  | ExpectClientFinished12;

/** What the session of this handshake becomes once it completes. */
interface SessionPlan {
  /** The session id in our ServerHello (cached under it after a full handshake). */
  readonly sessionId: Uint8Array;
  readonly resumed: boolean;
  /** A NewSessionTicket is promised in ServerHello (RFC 5077 §3.2). */
  readonly sendTicket: boolean;
  readonly serverName: string;
}

/** processClientHello's answer. */
interface ClientHello12State {
  readonly hello: ClientHello;
  readonly extensions: ClientHello12Extensions;
  readonly transcript: Transcript;
}

interface PickedIdentity12 {
  readonly identity: Identity;
  readonly alpnProtocol: string | undefined;
}

/** chooseParameters' answer: what the full handshake uses. */
interface FullParameters {
  readonly suite: Suite12Info;
  readonly group: number;
  readonly scheme: number;
}

/** After ServerHello in a full handshake: the rest of the flight is being built. */
interface Flight12 {
  readonly state: ClientHello12State;
  readonly suite: Suite12Info;
  readonly serverRandom: Buffer;
  readonly messages: Buffer[];
  readonly session: SessionPlan;
  readonly extendedMasterSecret: boolean;
}

/** The identity's key type, as TLS 1.2 needs it: the suite's authentication and, for ECDSA, the certificate's curve. */
type KeyAuth = { readonly auth: 'rsa' } | { readonly auth: 'ecdsa'; readonly curve: number };

/** RFC 9155: SHA-1 signatures are never used in TLS 1.2. */
const SHA1_SCHEMES = new Set<number>([SignatureScheme.rsa_pkcs1_sha1, SignatureScheme.ecdsa_sha1]);

/** Certificate messages are encoded once per chain, not once per handshake. */
const certificateMessages = new WeakMap<readonly Uint8Array[], Buffer>();
function certificateMessage(chain: readonly Uint8Array[]): Buffer {
  let message = certificateMessages.get(chain);
  if (!message) {
    message = encodeCertificate12(chain);
    certificateMessages.set(chain, message);
  }
  return message;
}

export class ServerHandshake12 {
  /** The client-auth policy of this handshake's identity, written into its session. */
  private clientAuthPolicy = clientAuthPolicyId(undefined);
  /**
   * The session cache's id of this connection's session: the one resumed from the cache, or
   * the one a full handshake cached. RFC 5246 §7.2: a fatal alert invalidates it (the
   * connection calls forgetSession); a ticket cannot be recalled, so a ticket's is not set.
   */
  private cachedSessionId: Uint8Array | undefined;

  constructor(private readonly ctx: HandshakeContext) {}

  /**
   * From a ClientHello to the next phase. Everything that needs only the ClientHello is
   * checked before this returns; the identity lookup and the signature follow.
   */
  handshake(hello: ClientHello): Negotiating12 {
    const state = this.processClientHello(hello);
    const flight = this.pickIdentity(state).then((picked): Promise<Expect12 | undefined> | Expect12 | undefined => {
      if (!picked) return undefined;
      this.clientAuthPolicy = clientAuthPolicyId(clientAuthFor(picked.identity, this.ctx.options));
      const session = this.checkForResumption(state);
      if (session) return this.sendAbbreviatedFlight(state, picked, session);
      return this.sendFullFlight(state, picked);
    });
    return { kind: 'negotiating12', server: this, flight };
  }

  // ---- ClientHello ------------------------------------------------------------

  /** §7.4.1.2 and the extensions only TLS 1.2 acts on; from here on the TLS 1.2 record rules apply. */
  private processClientHello(hello: ClientHello): ClientHello12State {
    this.ctx.records.useTls12();
    this.ctx.info.version = 'TLSv1.2';
    this.ctx.info.serverName = hello.serverName;
    // §7.4.1.2: the list must contain null; we never compress (CRIME).
    if (!hello.compressionMethods.includes(0)) {
      throw new TlsAlert('illegal_parameter', 'compression_methods does not include null');
    }
    const extensions = decodeClientHello12Extensions(hello);
    if (this.ctx.options.requireExtendedMasterSecret && !extensions.extendedMasterSecret) {
      // RFC 7627 §5.2: a server that requires EMS aborts a handshake without it.
      throw new TlsAlert('handshake_failure', 'extended_master_secret is required and the client did not offer it');
    }
    const transcript = new Transcript();
    transcript.add(hello.raw);
    return { hello, extensions, transcript };
  }

  /** The identity for the server name (RFC 6066 §3) and the ALPN protocol (RFC 7301 §3.2). */
  private pickIdentity(state: ClientHello12State): Promise<PickedIdentity12 | undefined> {
    const serverName = state.hello.serverName;
    return lookUpIdentity(this.ctx, serverName).then((identity) => {
      if (!identity) return undefined;
      if (identity.tls12 === false) {
        // The route served under this name speaks TLS 1.3 only (docs/EDGE.md).
        throw new TlsAlert('protocol_version', `TLS 1.2 is turned off for "${serverName ?? ''}"`);
      }
      const alpnProtocol = selectAlpn(state.hello, identity.alpnProtocols ?? this.ctx.options.alpnProtocols);
      this.ctx.info.alpnProtocol = alpnProtocol;
      // The certificate this name is served with, full handshake or resumption, as in TLS 1.3:
      // the edge describes it to the upstream (PROXY v2 PP2_SUBTYPE_SSL_SIG_ALG / _KEY_ALG).
      this.ctx.info.serverCertificateChain = identity.certificateChain;
      return { identity, alpnProtocol };
    });
  }

  /**
   * §7.4.1.2, RFC 5077 §3.4: a ticket first, else the session id. A session resumes only
   * with a suite the client still offers, under the same name (RFC 6066 §3), within its
   * lifetime, and with the same extended master secret choice (RFC 7627 §5.3).
   */
  private checkForResumption(state: ClientHello12State): Session12 | undefined {
    const { hello, extensions } = state;
    if (this.ctx.options.ticketCount === 0) return undefined;
    const now = this.ctx.now();
    const ticket = extensions.sessionTicket;
    const byTicket = ticket !== undefined && ticket.length > 0;
    // The session-id cache sweeps on its lookups; a ticket does not look it up, so sweep here
    // too, else a server whose clients resume only by ticket never drops expired session ids.
    if (byTicket) this.ctx.options.sessionCache12.dropExpired(now);
    const candidate = byTicket ? openTicket12(this.ctx.ticketKeys, ticket) : this.ctx.options.sessionCache12.get(hello.legacySessionId, now);
    if (!candidate || !sessionIsLive(candidate, now)) return undefined;
    if (candidate.serverName !== (hello.serverName ?? '')) return undefined;
    if (!this.ctx.options.cipherSuites12.includes(candidate.cipherSuite)) return undefined;
    if (!hello.cipherSuites.includes(candidate.cipherSuite)) {
      // §7.4.1.2: a resumption request "MUST include at least the cipher_suite from that
      // session"; resuming under another suite is what CVE-2010-4180 exploited.
      throw new TlsAlert('illegal_parameter', "resumption request without the session's cipher suite");
    }
    if (candidate.extendedMasterSecret && !extensions.extendedMasterSecret) {
      // RFC 7627 §5.3: resuming an EMS session without EMS is an attack; abort.
      throw new TlsAlert('handshake_failure', 'resumption of an extended master secret session without the extension');
    }
    // RFC 7627 §5.3: a session without EMS is not resumed by a client offering EMS (full handshake instead).
    if (!candidate.extendedMasterSecret && extensions.extendedMasterSecret) return undefined;
    // A session of another client-auth policy, or whose client certificate has expired: full handshake.
    if (!sessionFitsClientAuth(candidate, this.clientAuthPolicy, now)) return undefined;
    this.ctx.info.clientCertificate = candidate.clientIdentity;
    this.ctx.info.clientCertificateFromSession = candidate.clientIdentity !== undefined;
    if (!byTicket) this.cachedSessionId = hello.legacySessionId;
    return candidate;
  }

  // ---- full handshake ---------------------------------------------------------

  /** ServerHello … ServerHelloDone as one write; undefined when the connection closed while signing. */
  private async sendFullFlight(state: ClientHello12State, picked: PickedIdentity12): Promise<ExpectClientKeyExchange | ExpectClientCertificate12 | undefined> {
    const parameters = this.chooseParameters(state, picked.identity);
    const flight = this.sendServerHello(state, picked, parameters.suite, undefined);
    this.sendCertificate(flight, picked.identity);
    const ephemeral = await this.sendServerKeyExchange(flight, picked.identity, parameters);
    if (!ephemeral) return undefined;
    const certificateRequest = this.requestClientCertificate(flight, picked.identity);
    const expect = this.sendServerHelloDone(flight, ephemeral);
    if (!certificateRequest) return expect;
    // §7.4.8: the client's CertificateVerify covers every handshake message so far.
    certificateRequest.handshakeMessages.push(state.hello.raw, ...flight.messages);
    return { ...expect, kind: 'expectClientCertificate', certificateRequest };
  }

  /**
   * §7.4.1.3, RFC 8422 §5.1, §5.3: the first of our suites the client offers whose
   * authentication matches the key; an ECDHE group in common; a signature scheme the
   * client accepts. An ECDSA certificate needs its curve in the client's supported_groups.
   */
  private chooseParameters(state: ClientHello12State, identity: Identity): FullParameters {
    const { hello } = state;
    const key = keyAuthOf(identity);
    const offeredGroups = hello.supportedGroups;
    const ourGroups = this.ctx.options.groups.filter((g) => TLS12_GROUPS.includes(g));
    if (offeredGroups && offeredGroups.some(isFfdheGroup) && !offeredGroups.some((g) => ourGroups.includes(g))) {
      // RFC 7919 §4: supported_groups lists FFDHE groups, none of its groups is acceptable and
      // so none of its non-FFDHE suites (our suites are all ECDHE; no DHE in TLS 1.2 here):
      // "the server MUST end the connection with a fatal TLS alert of type insufficient_security".
      throw new TlsAlert('insufficient_security', 'supported_groups has FFDHE groups and no ECDHE group of ours (TLS 1.2 has no DHE suites here)');
    }
    if (key.auth === 'ecdsa' && offeredGroups && !offeredGroups.includes(key.curve)) {
      throw new TlsAlert('handshake_failure', `client does not support the certificate's curve ${groupName(key.curve)}`);
    }
    // Client preference among our suites, as Mozilla's "intermediate" profile sets it: every
    // suite here is strong, so the client's choice (e.g. ChaCha20 without AES hardware) wins.
    const ours = this.ctx.options.cipherSuites12;
    const suiteId = hello.cipherSuites.find((id) => ours.includes(id) && SUITES12.get(id)?.auth === key.auth);
    const suite = suiteId === undefined ? undefined : SUITES12.get(suiteId);
    if (!suite) throw new TlsAlert('handshake_failure', `no TLS 1.2 ECDHE-${key.auth.toUpperCase()} AEAD cipher suite in common`);
    // RFC 8422 §4: without supported_groups the server picks; P-256 is what every ECC client has.
    const group = offeredGroups
      ? ourGroups.find((g) => offeredGroups.includes(g))
      : (ourGroups.find((g) => g === NamedGroup.secp256r1) ?? ourGroups[0]);
    if (group === undefined) throw new TlsAlert('handshake_failure', 'no ECDHE group in common');
    return { suite, group, scheme: this.selectSignatureScheme12(hello, identity) };
  }

  /**
   * RFC 5246 §7.4.1.4.1: the client's signature_algorithms; without it TLS 1.2 allows only
   * SHA-1, which RFC 9155 forbids, so there is nothing we may sign with.
   */
  private selectSignatureScheme12(hello: ClientHello, identity: Identity): number {
    const offered = hello.signatureAlgorithms;
    if (!offered) throw new TlsAlert('handshake_failure', 'no signature_algorithms: TLS 1.2 would default to SHA-1 (RFC 9155)');
    const ours = identity.signer.tls12Schemes ?? [];
    const scheme = ours.find((s) => !SHA1_SCHEMES.has(s) && offered.includes(s));
    if (scheme === undefined) throw new TlsAlert('handshake_failure', 'no TLS 1.2 signature scheme in common with the server key (SHA-1 is refused)');
    return scheme;
  }

  /**
   * §7.4.1.3: ServerHello. The random ends with the downgrade sentinel when this server
   * also speaks TLS 1.3 (RFC 8446 §4.1.3), so a TLS 1.3 client detects a downgrade.
   */
  private sendServerHello(state: ClientHello12State, picked: PickedIdentity12, suite: Suite12Info, resumed: Session12 | undefined): Flight12 {
    const { hello, extensions, transcript } = state;
    transcript.start(suite.hash);
    const serverRandom = Buffer.from(randomBytesFromPool(32));
    if (this.ctx.options.tls13) DOWNGRADE_SENTINEL_TLS12.copy(serverRandom, 24);
    const ticketsOn = this.ctx.options.ticketCount > 0;
    // No ticket for a server name a ticket cannot hold (serverNameFitsTicket); the session id still resumes.
    const sendTicket = !resumed && ticketsOn && extensions.sessionTicket !== undefined && serverNameFitsTicket(this.ctx.info.serverName);
    // RFC 5077 §3.4: a ticket resumption echoes the client's session id. A full handshake gets
    // a fresh id (cached for session-id resumption once the handshake completes).
    const sessionId = resumed ? hello.legacySessionId : ticketsOn ? randomBytesFromPool(32) : new Uint8Array(0);
    const extendedMasterSecret = resumed ? resumed.extendedMasterSecret : extensions.extendedMasterSecret;
    const serverHello = encodeServerHello12({
      random: serverRandom,
      sessionId,
      cipherSuite: suite.id,
      secureRenegotiation: extensions.secureRenegotiation,
      extendedMasterSecret,
      sessionTicket: sendTicket,
      alpnProtocol: picked.alpnProtocol,
      // RFC 6066 §3: the acknowledgement says the name chose the certificate; the engine cannot
      // tell a name's own identity from a catch-all one, so TLS 1.2 never claims it.
      serverNameAcknowledged: false,
      ecPointFormats: extensions.ecPointFormats && !resumed,
    });
    transcript.add(serverHello);
    this.ctx.info.cipherSuite = suite.name;
    this.ctx.info.resumed = resumed !== undefined;
    return {
      state,
      suite,
      serverRandom,
      messages: [serverHello],
      session: { sessionId, resumed: resumed !== undefined, sendTicket, serverName: hello.serverName ?? '' },
      extendedMasterSecret,
    };
  }

  /** §7.4.2: the chain as the identity holds it (the engine never parses certificates). */
  private sendCertificate(flight: Flight12, identity: Identity): void {
    this.addToFlight(flight, certificateMessage(identity.certificateChain));
  }

  /**
   * RFC 8422 §5.4: our ephemeral ECDH share, signed over client_random + server_random +
   * ServerECDHParams by the Signer, which builds that content itself (keyd never signs a
   * caller's digest). Undefined when the connection closed while signing.
   */
  private async sendServerKeyExchange(flight: Flight12, identity: Identity, parameters: FullParameters): Promise<EphemeralKey | undefined> {
    const ephemeral = generateEphemeralKey(parameters.group);
    const serverParams = encodeServerEcdhParams(parameters.group, ephemeral.publicKey);
    const signature = await identity.signer
      .sign({
        kind: 'tls12-server-key-exchange',
        scheme: parameters.scheme,
        clientRandom: flight.state.hello.random,
        serverRandom: flight.serverRandom,
        serverParams,
      })
      .catch((e: unknown) => {
        throw new TlsAlert('internal_error', `signing failed: ${e instanceof Error ? e.message : String(e)}`);
      });
    if (this.ctx.closed) return undefined;
    this.addToFlight(flight, encodeServerKeyExchange(serverParams, parameters.scheme, signature));
    this.ctx.info.group = groupName(parameters.group);
    this.ctx.info.signatureScheme = nameOf(SignatureScheme, parameters.scheme);
    return ephemeral;
  }

  /**
   * §7.4.4: a CertificateRequest between ServerKeyExchange and ServerHelloDone when the
   * identity's client-auth mode asks for one: certificate types RSA and ECDSA (RFC 8422
   * §5.5), the schemes whose CertificateVerify we verify (no SHA-1, RFC 9155), and the CAs'
   * names unless the policy hides them.
   */
  private requestClientCertificate(flight: Flight12, identity: Identity): CertificateRequest12 | undefined {
    const clientAuth = clientAuthFor(identity, this.ctx.options);
    if (!clientAuth) return undefined;
    const signatureSchemes = CLIENT_SIGNATURE_SCHEMES_12;
    this.addToFlight(
      flight,
      encodeCertificateRequest12({
        certificateTypes: [ClientCertificateType.rsa_sign, ClientCertificateType.ecdsa_sign],
        signatureSchemes,
        certificateAuthorities: clientAuth.certificateAuthorities,
      }),
    );
    this.ctx.info.clientCertificateRequested = true;
    return { clientAuth, signatureSchemes, handshakeMessages: [] };
  }

  /**
   * §7.4.6: the client's Certificate. An empty one is accepted in optional mode and refused
   * with handshake_failure in required mode (§7.4.6 names that alert); a chain goes to the
   * policy's verifier, which names the alert for a chain it refuses.
   */
  readClientCertificate(expect: ExpectClientCertificate12, raw: Buffer): ExpectClientKeyExchange {
    const { certificateRequest: request } = expect;
    const chain = decodeClientCertificate12(raw);
    expect.transcript.add(raw);
    request.handshakeMessages.push(raw);
    if (chain.length === 0) {
      if (request.clientAuth.mode === 'required') throw new TlsAlert('handshake_failure', 'client sent no certificate and one is required');
    } else {
      request.certificate = request.clientAuth.verifyChain!(chain);
    }
    return { ...expect, kind: 'expectClientKeyExchange' };
  }

  /** §7.4.8: the client's signature over ClientHello … ClientKeyExchange with the leaf's key. */
  readClientCertificateVerify(expect: ExpectCertificateVerify12, raw: Buffer): ExpectChangeCipherSpec {
    const { scheme, signature } = decodeCertificateVerify(raw);
    verifyClientCertificateVerify12({
      publicKey: expect.certificate.publicKey,
      scheme,
      signature,
      handshakeMessages: expect.certificateRequest.handshakeMessages,
      offered: expect.certificateRequest.signatureSchemes,
    });
    expect.next.transcript.add(raw);
    this.ctx.info.clientCertificate = expect.certificate.identity;
    this.ctx.info.clientCertificateFromSession = false;
    return expect.next;
  }

  /** §7.4.5: ServerHelloDone closes the flight, which goes out as one write. */
  private sendServerHelloDone(flight: Flight12, ephemeral: EphemeralKey): ExpectClientKeyExchange {
    this.addToFlight(flight, encodeServerHelloDone());
    this.ctx.records.send(this.plaintextHandshake(flight.messages));
    return {
      kind: 'expectClientKeyExchange',
      suite: flight.suite,
      transcript: flight.state.transcript,
      clientRandom: flight.state.hello.random,
      serverRandom: flight.serverRandom,
      ephemeral,
      extendedMasterSecret: flight.extendedMasterSecret,
      session: flight.session,
    };
  }

  /**
   * RFC 8422 §5.7, RFC 5246 §8.1, RFC 7627 §4: the client's share gives the premaster
   * secret; the master secret binds the randoms, or with EMS the transcript up to here.
   */
  readClientKeyExchange(expect: ExpectClientKeyExchange, raw: Buffer): ExpectChangeCipherSpec | ExpectCertificateVerify12 {
    const next = this.deriveKeys(expect, raw);
    const request = expect.certificateRequest;
    if (!request?.certificate) return next;
    request.handshakeMessages.push(raw);
    return { kind: 'expectCertificateVerify', next, certificateRequest: request, certificate: request.certificate };
  }

  private deriveKeys(expect: ExpectClientKeyExchange, raw: Buffer): ExpectChangeCipherSpec {
    const { suite, transcript } = expect;
    const point = decodeClientKeyExchange(raw);
    const preMasterSecret = expect.ephemeral.deriveSharedSecret(point);
    transcript.add(raw);
    const master = expect.extendedMasterSecret
      ? extendedMasterSecret(suite.hash, preMasterSecret, transcript.current())
      : masterSecret(suite.hash, preMasterSecret, expect.clientRandom, expect.serverRandom);
    const keys = keyBlock12(suite.hash, master, expect.clientRandom, expect.serverRandom, suite.keyLength, suite.fixedIvLength);
    return {
      kind: 'expectChangeCipherSpec',
      suite,
      transcript,
      master,
      clientProtection: new RecordProtection12(suite, keys.clientWriteKey, keys.clientWriteIv),
      serverProtection: new RecordProtection12(suite, keys.serverWriteKey, keys.serverWriteIv),
      extendedMasterSecret: expect.extendedMasterSecret,
      session: expect.session,
    };
  }

  /** §7.1: the client's ChangeCipherSpec: what it sends next is under its new keys. */
  readChangeCipherSpec(expect: ExpectChangeCipherSpec): ExpectClientFinished12 {
    this.ctx.records.installKeys12('read', expect.clientProtection);
    return {
      kind: 'expectClientFinished',
      suite: expect.suite,
      transcript: expect.transcript,
      master: expect.master,
      serverProtection: expect.serverProtection,
      extendedMasterSecret: expect.extendedMasterSecret,
      session: expect.session,
    };
  }

  /**
   * §7.4.9: the client Finished must verify. In a full handshake our tickets,
   * ChangeCipherSpec and Finished follow, and the session is cached.
   */
  readClientFinished(expect: ExpectClientFinished12, raw: Buffer): void {
    const { suite, transcript, master } = expect;
    const verifyData = raw.subarray(4);
    if (verifyData.length !== 12) throw new TlsAlert('decode_error', `Finished of ${verifyData.length} bytes, expected 12`);
    const expected = finishedVerifyData12(suite.hash, master, 'client', transcript.current());
    if (!timingSafeEqual(verifyData, expected)) throw new TlsAlert('decrypt_error', 'client Finished does not verify');
    transcript.add(raw);
    const protection = expect.serverProtection;
    if (!protection) return; // abbreviated handshake: our Finished went first
    const session: Session12 = {
      cipherSuite: suite.id,
      masterSecret: master,
      extendedMasterSecret: expect.extendedMasterSecret,
      issuedAt: this.ctx.now(),
      lifetimeSeconds: this.ctx.options.ticketLifetimeSeconds,
      serverName: expect.session.serverName,
      clientAuthPolicy: this.clientAuthPolicy,
      clientIdentity: this.ctx.info.clientCertificate,
    };
    // A client identity too large for a ticket is not kept by session id either: the cache
    // is bounded in entries, and each entry should be small (ticket-fields.ts).
    const resumable = clientIdentityFitsTicket(session.clientIdentity);
    const out = this.sendTickets(expect, session, resumable);
    out.push(...this.sendFinished(suite, transcript, master, protection));
    this.ctx.records.send(out);
    if (!resumable) return;
    this.ctx.options.sessionCache12.set(expect.session.sessionId, session);
    this.cachedSessionId = expect.session.sessionId;
  }

  /** RFC 5246 §7.2.2: "any connection terminated with a fatal alert MUST NOT be resumed". */
  forgetSession(): void {
    if (this.cachedSessionId) this.ctx.options.sessionCache12.delete(this.cachedSessionId);
  }

  /**
   * RFC 5077 §3.3: NewSessionTicket, in the clear before our ChangeCipherSpec, when promised
   * in ServerHello. A session that is not to be resumed (a client identity too large for a
   * ticket, known only after the client's Certificate) gets the zero-length ticket §3.3
   * prescribes for a server that no longer wants to give one.
   */
  private sendTickets(expect: ExpectClientFinished12, session: Session12, resumable: boolean): Buffer[] {
    if (!expect.session.sendTicket) return [];
    const message = resumable
      ? encodeNewSessionTicket12(session.lifetimeSeconds, sealTicket12(this.ctx.ticketKeys, session))
      : encodeNewSessionTicket12(0, new Uint8Array(0));
    expect.transcript.add(message);
    return this.plaintextHandshake([message]);
  }

  /** §7.1, §7.4.9: our ChangeCipherSpec, then Finished under the new keys. */
  private sendFinished(suite: Suite12Info, transcript: Transcript, master: Buffer, protection: RecordProtection12): Buffer[] {
    const finished = encodeFinished(finishedVerifyData12(suite.hash, master, 'server', transcript.current()));
    transcript.add(finished);
    const records = this.ctx.records;
    const ccs = records.changeCipherSpecRecord();
    records.installKeys12('write', protection);
    return [ccs, ...records.protectHandshake([finished])];
  }

  // ---- abbreviated handshake ----------------------------------------------------

  /** §7.3 abbreviated handshake: ServerHello, ChangeCipherSpec, Finished in one write; the client's follow. */
  private sendAbbreviatedFlight(state: ClientHello12State, picked: PickedIdentity12, session: Session12): ExpectChangeCipherSpec {
    const suite = SUITES12.get(session.cipherSuite);
    if (!suite) throw new TlsAlert('internal_error', 'resumed session has an unknown cipher suite');
    const flight = this.sendServerHello(state, picked, suite, session);
    const { hello, transcript } = state;
    const keys = keyBlock12(suite.hash, session.masterSecret, hello.random, flight.serverRandom, suite.keyLength, suite.fixedIvLength);
    const serverProtection = new RecordProtection12(suite, keys.serverWriteKey, keys.serverWriteIv);
    const out = this.plaintextHandshake(flight.messages);
    out.push(...this.sendFinished(suite, transcript, session.masterSecret, serverProtection));
    this.ctx.records.send(out);
    return {
      kind: 'expectChangeCipherSpec',
      suite,
      transcript,
      master: session.masterSecret,
      clientProtection: new RecordProtection12(suite, keys.clientWriteKey, keys.clientWriteIv),
      serverProtection: undefined,
      extendedMasterSecret: session.extendedMasterSecret,
      session: flight.session,
    };
  }

  // ---- helpers ----------------------------------------------------------------------

  private addToFlight(flight: Flight12, message: Buffer): void {
    flight.state.transcript.add(message);
    flight.messages.push(message);
  }

  /** Handshake messages in plaintext records of at most 2^14 bytes (§6.2.1). */
  private plaintextHandshake(messages: readonly Buffer[]): Buffer[] {
    const all = (messages.length === 1 ? messages[0] : undefined) ?? Buffer.concat(messages);
    const out: Buffer[] = [];
    for (let off = 0; off < all.length; off += MAX_PLAINTEXT) {
      out.push(this.ctx.records.plaintextRecord(ContentType.handshake, all.subarray(off, off + MAX_PLAINTEXT)));
    }
    return out;
  }
}

/** RFC 7919 §4: "any codepoint between 256 and 511, inclusive, even if unknown to the server". */
function isFfdheGroup(group: number): boolean {
  return group >= 256 && group <= 511;
}

/** The identity's key as TLS 1.2 uses it, read from the TLS 1.3 schemes its signer offers. */
function keyAuthOf(identity: Identity): KeyAuth {
  const schemes = identity.signer.schemes;
  if (schemes.includes(SignatureScheme.ecdsa_secp256r1_sha256)) return { auth: 'ecdsa', curve: NamedGroup.secp256r1 };
  if (schemes.includes(SignatureScheme.ecdsa_secp384r1_sha384)) return { auth: 'ecdsa', curve: NamedGroup.secp384r1 };
  if (schemes.includes(SignatureScheme.ecdsa_secp521r1_sha512)) return { auth: 'ecdsa', curve: NamedGroup.secp521r1 };
  if (schemes.includes(SignatureScheme.rsa_pss_rsae_sha256)) return { auth: 'rsa' };
  throw new TlsAlert('handshake_failure', 'the certificate key cannot authenticate a TLS 1.2 ECDHE suite');
}
