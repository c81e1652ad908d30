import { timingSafeEqual } from 'node:crypto';
import { TlsAlert } from '../alert.js';
import { randomBytesFromPool } from '../crypto/random-pool.js';
import { groupName, keyExchange } from '../crypto/key-exchange.js';
import type { SuiteInfo } from '../crypto/suites.js';
import type { ClientHello } from '../messages/client-hello.js';
import { decodeCertificateVerify, decodeClientCertificate13, encodeCertificateRequest13 } from '../messages/client-authentication.js';
import type { ClientAuthOptions, VerifiedClientCertificate } from '../options.js';
import {
  encodeCertificate,
  encodeCertificateVerify,
  encodeEncryptedExtensions,
  encodeFinished,
  encodeHelloRetryRequest,
  encodeNewSessionTicket,
  encodeServerHello,
} from '../messages/server-messages.js';
import { SCHEMES } from '../signature-schemes.js';
import type { Identity } from '../signer.js';
import { ContentType } from '../wire/codepoints.js';
import { CLIENT_AUTH_OFF, clientAuthFor, clientAuthPolicyId, sessionFitsClientAuth } from './client-auth-policy.js';
import { CLIENT_SIGNATURE_SCHEMES, verifyClientCertificateVerify } from './client-certificate-verify.js';
import type { HandshakeContext } from './context.js';
import { lookUpIdentity } from './identity-lookup.js';
import { openCookie, sealCookie } from './cookie.js';
import { certificateMessageWithCredential, chooseDelegatedCredential, offeredCredentialSchemes, type ChosenCredential } from './delegation.js';
import { EarlySecrets, finishedVerifyData, resumptionPsk, type HandshakeSecrets, type MasterSecrets } from './key-schedule.js';
import {
  checkClientHello13,
  offersPskDhe,
  retryConsistencyDigest,
  selectAlpn,
  selectCipherSuite,
  selectGroup,
  selectSignatureScheme,
} from './negotiate.js';
import { openTicket, sealTicket, serverNameFitsTicket, type TicketState } from './session-ticket.js';
import { clientIdentityFitsTicket } from './ticket-fields.js';
import { messageHash, Transcript } from './transcript.js';

/**
 * The TLS 1.3 server handshake (RFC 8446 §2), one named step per part of the RFC, called
 * in order by `handshake()`:
 *
 *   processClientHello      §4.1.2, §4.1.4   suite, group; HelloRetryRequest when no usable share
 *   checkForResumption      §4.2.11          a ticket whose binder verifies
 *   exchangeKeys            §4.2.8           our (EC)DHE share and the shared secret
 *   pickIdentity            §4.4.2, §4.2.3   certificate + signer for the name, ALPN, scheme
 *   sendServerParameters    §4.1.3, §4.3.1   ServerHello, EncryptedExtensions
 *   sendCertificateRequest  §4.3.2           when the identity's client-auth mode asks for one
 *   sendCertificate         §4.4.2
 *   sendCertificateVerify   §4.4.3           the Signer signs the transcript hash
 *   sendFinished            §4.4.4           the flight goes out as one write; keys change
 *   readClientCertificate   §4.4.2, §4.4.2.4 the client's chain, checked by the policy's verifier
 *   readClientCertificateVerify §4.4.3       the client's signature over the transcript
 *   readClientFinished      §4.4.4           the client Finished verifies; application keys
 *   sendSessionTickets      §4.6.1
 *
 * Each step takes what exists at its point of the handshake as a typed value and returns
 * what the next needs, so nothing is read before it is set. The connection holds the
 * phase between messages; the record layer moves the bytes.
 */

/** §4.6.1: ticket ages must match within this tolerance for the PSK to be used. */
const TICKET_AGE_TOLERANCE_MS = 10_000;
/** §4.2.11: at most this many offered tickets are tried (each costs a decryption and an HMAC). */
const MAX_TICKETS_TRIED = 8;

/** After a HelloRetryRequest: the cookie carries the rest (§4.2.2), so this is all we keep. */
export interface AwaitSecondClientHello {
  readonly kind: 'awaitSecondClientHello';
  /** The first ClientHello offered 0-RTT data, which we skip until the second arrives (§4.2.10). */
  readonly earlyDataInFirstHello: boolean;
}

/** Waiting for the identity and the signature; the promise settles once our flight is sent. */
export interface Negotiating {
  readonly kind: 'negotiating';
  /** The handshake that reads the client Finished once the flight is out. */
  readonly server: ServerHandshake13;
  /** What the client Finished is checked against; undefined when the connection closed meanwhile. */
  readonly flight: Promise<ExpectClientFinished | undefined>;
}

/** Our flight is sent (§4.4.4): what checking the client's flight and what follows need. */
export interface ExpectClientFinished {
  readonly suite: SuiteInfo;
  readonly transcript: Transcript;
  readonly master: MasterSecrets;
  /** The client Finished key's base (§4.4.4); its verify_data covers everything up to it. */
  readonly clientHandshakeSecret: Buffer;
  readonly clientApplicationSecret: Buffer;
  /** Set when our flight held a CertificateRequest: the client's Certificate comes first (§4.4.2). */
  readonly certificateRequest: CertificateRequestSent | undefined;
}

/** What our CertificateRequest asked for (§4.3.2). */
export interface CertificateRequestSent {
  readonly clientAuth: ClientAuthOptions;
  readonly signatureSchemes: readonly number[];
}

/** The client's chain was accepted; its CertificateVerify is next (§4.4.3). */
export interface ExpectClientCertificateVerify {
  readonly expect: ExpectClientFinished;
  readonly certificate: VerifiedClientCertificate;
}

/** The client Finished verified: the handshake is complete. */
export interface Established13 {
  readonly suite: SuiteInfo;
  readonly master: MasterSecrets;
  /** Transcript-Hash(ClientHello … client Finished), the input of resumption_master_secret (§7.1). */
  readonly finishedHash: Buffer;
}

/** processClientHello's answer: ask for another key share, or go on with these choices. */
type HelloDecision =
  | { readonly kind: 'retry'; readonly hello: ClientHello; readonly suite: SuiteInfo; readonly group: number }
  | { readonly kind: 'proceed'; readonly state: ClientHelloState };

/** The choices made from the ClientHello that the handshake proceeds with. */
interface ClientHelloState {
  readonly hello: ClientHello;
  readonly suite: SuiteInfo;
  readonly group: number;
  readonly clientShare: Uint8Array;
  /** Everything before this ClientHello (nothing, or message_hash + HelloRetryRequest, §4.4.1). */
  readonly transcript: Transcript;
  /** This ClientHello answers our HelloRetryRequest. */
  readonly retried: boolean;
  /** The client's delegated_credential schemes (RFC 9345 §4.1.1), undefined when not offered. */
  readonly delegatedCredentialSchemes: readonly number[] | undefined;
}

interface Resumption {
  readonly psk: Buffer;
  /** selected_identity in the ServerHello (§4.2.11). */
  readonly index: number;
  readonly ticket: TicketState;
}

interface KeyShare {
  readonly serverShare: Buffer;
  readonly sharedSecret: Buffer;
}

/** pickIdentity's answer: the ALPN protocol and, unless resuming, the certificate to authenticate with. */
interface PickedIdentity {
  readonly alpnProtocol: string | undefined;
  readonly certificate: { readonly identity: Identity; readonly scheme: number; readonly credential?: ChosenCredential } | undefined;
  /** The offered ticket, unless the identity's client-auth policy refused it. */
  readonly resumption: Resumption | undefined;
  /** The identity's client-auth setting, when it asks for a certificate. */
  readonly clientAuth: ClientAuthOptions | undefined;
}

/** After ServerHello: the handshake secrets exist and the rest of the flight is being built. */
interface ServerParameters {
  readonly state: ClientHelloState;
  readonly handshakeSecrets: HandshakeSecrets;
  readonly serverHandshakeSecret: Buffer;
  readonly clientHandshakeSecret: Buffer;
  readonly serverHello: Buffer;
  /** EncryptedExtensions … Finished, protected with the server handshake traffic keys when sent. */
  readonly protectedMessages: Buffer[];
}

/** Certificate messages are encoded once per chain, not once per handshake. */
const certificateMessages = new WeakMap<readonly Uint8Array[], Buffer>();
function certificateMessage(chain: readonly Uint8Array[]): Buffer {
  let message = certificateMessages.get(chain);
  if (!message) {
    message = encodeCertificate(chain);
    certificateMessages.set(chain, message);
  }
  return message;
}

export class ServerHandshake13 {
  /** The client-auth policy of this handshake's identity, written into its tickets. */
  private clientAuthPolicy = CLIENT_AUTH_OFF;

  constructor(private readonly ctx: HandshakeContext) {}

  /**
   * From a ClientHello to the next phase: a HelloRetryRequest sent, or the identity and
   * signature under way. Everything up to the identity lookup happens before this returns,
   * so a bad ClientHello fails before any further record is read.
   */
  handshake(hello: ClientHello, retry: AwaitSecondClientHello | undefined): AwaitSecondClientHello | Negotiating {
    const decision = this.processClientHello(hello, retry);
    if (decision.kind === 'retry') return this.sendHelloRetryRequest(decision.hello, decision.suite, decision.group);
    const state = decision.state;
    const resumption = this.checkForResumption(state);
    // §4.4.1: the ClientHello joins the transcript after its binders were checked against the truncated one.
    state.transcript.add(hello.raw);
    const keyShare = this.exchangeKeys(state);
    const flight = this.pickIdentity(state, resumption).then((picked) =>
      picked ? this.sendServerFlight(state, picked.resumption, keyShare, picked) : undefined,
    );
    return { kind: 'negotiating', server: this, flight };
  }

  /** ServerHello … Finished as one write (§2); undefined when the connection closed while signing. */
  private async sendServerFlight(
    state: ClientHelloState,
    resumption: Resumption | undefined,
    keyShare: KeyShare,
    picked: PickedIdentity,
  ): Promise<ExpectClientFinished | undefined> {
    const parameters = this.sendServerParameters(state, resumption, keyShare, picked.alpnProtocol);
    const certificateRequest = picked.certificate && picked.clientAuth ? this.sendCertificateRequest(parameters, picked.clientAuth) : undefined;
    if (picked.certificate) {
      this.sendCertificate(parameters, picked.certificate.identity, picked.certificate.credential);
      const signed = await this.sendCertificateVerify(parameters, picked.certificate.identity, picked.certificate.scheme, picked.certificate.credential);
      if (!signed) return undefined;
    }
    return this.sendFinished(parameters, certificateRequest);
  }

  // ---- ClientHello ------------------------------------------------------------

  /** §4.1.2: the extension rules, then the suite and group, or a retry with the group we want. */
  private processClientHello(hello: ClientHello, retry: AwaitSecondClientHello | undefined): HelloDecision {
    checkClientHello13(hello);
    // RFC 9345 §4.1.1 with RFC 8446 §6.2: a malformed delegated_credential is decode_error,
    // before any HelloRetryRequest, whether or not we have a credential to send.
    const delegatedCredentialSchemes = offeredCredentialSchemes(hello);
    this.ctx.records.requireRecordBoundary('ClientHello');
    if (hello.recordSizeLimit !== undefined) this.ctx.records.limitPeerRecords(hello.recordSizeLimit);
    if (retry) return { kind: 'proceed', state: this.processSecondClientHello(hello, delegatedCredentialSchemes) };

    const suite = selectCipherSuite(hello, this.ctx.options.cipherSuites);
    const choice = selectGroup(hello, this.ctx.options.groups);
    if (choice.kind === 'retry') return { kind: 'retry', hello, suite, group: choice.group };
    if (hello.cookie) {
      // We never asked for this ClientHello to carry a cookie (§4.2.2).
      throw new TlsAlert('illegal_parameter', 'cookie in a first ClientHello');
    }
    const transcript = new Transcript();
    transcript.start(suite.hash);
    return { kind: 'proceed', state: this.chose({ hello, suite, group: choice.group, clientShare: choice.share.keyExchange, transcript, retried: false, delegatedCredentialSchemes }) };
  }

  /** §4.1.4: stateless HelloRetryRequest; the cookie carries what the second ClientHello is checked against. */
  private sendHelloRetryRequest(hello: ClientHello, suite: SuiteInfo, group: number): AwaitSecondClientHello {
    const transcript = new Transcript();
    transcript.start(suite.hash);
    transcript.add(hello.raw);
    const cookie = sealCookie(this.ctx.ticketKeys, {
      issuedAt: this.ctx.now(),
      cipherSuite: suite.id,
      group,
      clientHello1Hash: transcript.current(),
      consistencyDigest: retryConsistencyDigest(hello),
    });
    const hrr = encodeHelloRetryRequest({ legacySessionIdEcho: hello.legacySessionId, cipherSuite: suite.id, selectedGroup: group, cookie });
    const records = this.ctx.records;
    const out = [records.plaintextRecord(ContentType.handshake, hrr)];
    // §D.4: a client in middlebox compatibility mode (non-empty session id) gets our CCS right after the HRR.
    const ccs = hello.legacySessionId.length > 0 ? records.compatibilityCcs() : undefined;
    if (ccs) out.push(ccs);
    records.send(out);
    return { kind: 'awaitSecondClientHello', earlyDataInFirstHello: hello.earlyData };
  }

  /** §4.1.2: the second ClientHello must match the first except where the RFC allows. */
  private processSecondClientHello(hello: ClientHello, delegatedCredentialSchemes: readonly number[] | undefined): ClientHelloState {
    if (!hello.cookie) throw new TlsAlert('missing_extension', 'second ClientHello without the cookie from HelloRetryRequest');
    const cookie = openCookie(this.ctx.ticketKeys, hello.cookie, this.ctx.now());
    if (!cookie) throw new TlsAlert('illegal_parameter', 'HelloRetryRequest cookie is invalid or expired');
    if (!retryConsistencyDigest(hello).equals(cookie.consistencyDigest)) {
      throw new TlsAlert('illegal_parameter', 'second ClientHello differs from the first beyond what §4.1.2 allows');
    }
    if (hello.earlyData) throw new TlsAlert('illegal_parameter', 'early_data in the second ClientHello');
    const shares = hello.keyShares ?? [];
    const share = shares[0];
    if (shares.length !== 1 || !share || share.group !== cookie.group) {
      throw new TlsAlert('illegal_parameter', `second ClientHello must offer exactly one key share, for ${groupName(cookie.group)}`);
    }
    const suite = selectCipherSuite(hello, this.ctx.options.cipherSuites);
    if (suite.id !== cookie.cipherSuite) throw new TlsAlert('illegal_parameter', 'cipher suite changed after HelloRetryRequest');
    const transcript = new Transcript();
    transcript.start(suite.hash);
    transcript.add(messageHash(cookie.clientHello1Hash));
    transcript.add(
      encodeHelloRetryRequest({ legacySessionIdEcho: hello.legacySessionId, cipherSuite: suite.id, selectedGroup: cookie.group, cookie: hello.cookie }),
    );
    return this.chose({ hello, suite, group: cookie.group, clientShare: share.keyExchange, transcript, retried: true, delegatedCredentialSchemes });
  }

  /** Records the choices in the connection info as soon as they are made. */
  private chose(state: ClientHelloState): ClientHelloState {
    this.ctx.info.serverName = state.hello.serverName;
    this.ctx.info.cipherSuite = state.suite.name;
    this.ctx.info.helloRetryRequest = state.retried;
    return state;
  }

  // ---- resumption and key exchange ------------------------------------------------

  /** Tries the offered tickets (§4.2.11); the PSK and identity index to use, if any. */
  private checkForResumption(state: ClientHelloState): Resumption | undefined {
    const { hello, suite, transcript } = state;
    const offer = hello.preSharedKey;
    if (!offer || !offersPskDhe(hello) || this.ctx.options.ticketCount === 0) return undefined;
    const serverName = hello.serverName ?? '';
    const now = this.ctx.now();
    for (let index = 0; index < offer.identities.length && index < MAX_TICKETS_TRIED; index++) {
      const id = offer.identities[index];
      const binder = offer.binders[index]; // the decoder checked there is one per identity
      if (id === undefined || binder === undefined) break;
      const ticket = openTicket(this.ctx.ticketKeys, id.identity);
      if (!ticket) continue;
      const ticketSuite = this.ctx.options.cipherSuites.includes(ticket.cipherSuite) ? ticket.cipherSuite : -1;
      // §4.2.11: a PSK is usable only with a suite of the same hash.
      if (ticketSuite < 0 || (ticket.psk.length === 48) !== (suite.hash === 'sha384')) continue;
      if (ticket.serverName !== serverName) continue;
      const serverAge = now - ticket.issuedAt;
      if (serverAge < 0 || serverAge > ticket.lifetimeSeconds * 1000) continue;
      const clientAge = (id.obfuscatedTicketAge - ticket.ageAdd) >>> 0;
      if (Math.abs(clientAge - serverAge) > TICKET_AGE_TOLERANCE_MS) continue;
      // §4.2.11.2: the binder covers the transcript up to the truncated ClientHello.
      const early = new EarlySecrets(suite.hash, ticket.psk);
      const truncatedHash = transcript.peekWith(hello.raw.subarray(0, offer.bindersOffset));
      const expected = finishedVerifyData(suite.hash, early.resumptionBinderKey(), truncatedHash);
      if (binder.length !== expected.length || !timingSafeEqual(binder, expected)) {
        throw new TlsAlert('decrypt_error', 'PSK binder does not verify');
      }
      return { psk: ticket.psk, index, ticket };
    }
    return undefined;
  }

  /** §4.2.8: our share for the chosen group; the client's share is validated (illegal_parameter). */
  private exchangeKeys(state: ClientHelloState): KeyShare {
    const exchange = keyExchange(state.group, state.clientShare);
    this.ctx.info.group = groupName(state.group);
    return exchange;
  }

  /**
   * The identity for the server name (§4.4.2), looked up on resumption too: a name no
   * longer served is not resumed, and the identity may carry its own ALPN list (e.g. one
   * per edge route). Undefined when the connection closed during the lookup.
   */
  private pickIdentity(state: ClientHelloState, resumption: Resumption | undefined): Promise<PickedIdentity | undefined> {
    const serverName = state.hello.serverName;
    return lookUpIdentity(this.ctx, serverName).then((identity) => {
      if (!identity) return undefined;
      const alpnProtocol = selectAlpn(state.hello, identity.alpnProtocols ?? this.ctx.options.alpnProtocols);
      this.ctx.info.alpnProtocol = alpnProtocol;
      this.ctx.info.serverCertificateChain = identity.certificateChain;
      const clientAuth = this.chooseClientAuth(identity);
      const resumed = resumption && this.ticketFitsClientAuth(resumption.ticket) ? resumption : undefined;
      this.ctx.info.resumed = resumed !== undefined;
      if (resumed) return { alpnProtocol, certificate: undefined, resumption: resumed, clientAuth };
      // RFC 9345 §4.1.1: a client that offers delegated credentials gets ours when the schemes fit.
      const credential = chooseDelegatedCredential(state.hello, state.delegatedCredentialSchemes, identity, this.ctx.now());
      return {
        alpnProtocol,
        certificate: credential
          ? { identity, scheme: credential.scheme, credential }
          : { identity, scheme: selectSignatureScheme(state.hello, identity.signer.schemes) },
        resumption: undefined,
        clientAuth,
      };
    });
  }

  /** The identity's client-auth setting (else the server's); undefined when it asks for no certificate. */
  private chooseClientAuth(identity: Identity): ClientAuthOptions | undefined {
    const clientAuth = clientAuthFor(identity, this.ctx.options);
    this.clientAuthPolicy = clientAuthPolicyId(clientAuth);
    return clientAuth;
  }

  /**
   * A ticket resumes only under the client-auth policy it was issued under, and while the
   * client certificate it carries is valid (client-auth-policy.ts); the client then keeps the
   * identity proven in the full handshake. Otherwise it gets a full handshake.
   */
  private ticketFitsClientAuth(ticket: TicketState): boolean {
    if (!sessionFitsClientAuth(ticket, this.clientAuthPolicy, this.ctx.now())) return false;
    this.ctx.info.clientCertificate = ticket.clientIdentity;
    this.ctx.info.clientCertificateFromSession = ticket.clientIdentity !== undefined;
    return true;
  }

  // ---- our flight -------------------------------------------------------------------

  /** ServerHello (§4.1.3) and EncryptedExtensions (§4.3.1); the handshake traffic secrets follow from them. */
  private sendServerParameters(
    state: ClientHelloState,
    resumption: Resumption | undefined,
    keyShare: KeyShare,
    alpnProtocol: string | undefined,
  ): ServerParameters {
    const { hello, suite, transcript } = state;
    const serverHello = encodeServerHello({
      random: randomBytesFromPool(32),
      legacySessionIdEcho: hello.legacySessionId,
      cipherSuite: suite.id,
      keyShare: { group: state.group, keyExchange: keyShare.serverShare },
      selectedIdentity: resumption?.index,
    });
    transcript.add(serverHello);
    const handshakeSecrets = new EarlySecrets(suite.hash, resumption?.psk).withSharedSecret(keyShare.sharedSecret);
    const helloHash = transcript.current();
    const parameters: ServerParameters = {
      state,
      handshakeSecrets,
      serverHandshakeSecret: handshakeSecrets.serverHandshakeTrafficSecret(helloHash),
      clientHandshakeSecret: handshakeSecrets.clientHandshakeTrafficSecret(helloHash),
      serverHello,
      protectedMessages: [],
    };
    // RFC 8449 §4: our limit is announced only to a client that sent its own, and binds the
    // client's records only once announced.
    const announceLimit = hello.recordSizeLimit !== undefined;
    this.addToFlight(
      parameters,
      encodeEncryptedExtensions({
        serverNameAcknowledged: hello.serverName !== undefined && !resumption,
        alpnProtocol,
        recordSizeLimit: announceLimit ? this.ctx.options.recordSizeLimit : undefined,
      }),
    );
    if (announceLimit) this.ctx.records.announceRecordLimit();
    return parameters;
  }

  /**
   * §4.3.2: asks for the client's certificate, after EncryptedExtensions and before our
   * Certificate, with an empty context (a request inside the handshake) and the schemes
   * whose CertificateVerify we verify.
   */
  private sendCertificateRequest(parameters: ServerParameters, clientAuth: ClientAuthOptions): CertificateRequestSent {
    const signatureSchemes = clientAuth.signatureSchemes ?? CLIENT_SIGNATURE_SCHEMES;
    this.addToFlight(parameters, encodeCertificateRequest13({ signatureSchemes, certificateAuthorities: clientAuth.certificateAuthorities }));
    this.ctx.info.clientCertificateRequested = true;
    return { clientAuth, signatureSchemes };
  }

  /**
   * §4.4.2: the chain as the identity holds it (the engine never parses certificates); with a
   * delegated credential in the end-entity entry's extensions when one is used (RFC 9345 §4.1.1).
   */
  private sendCertificate(parameters: ServerParameters, identity: Identity, credential: ChosenCredential | undefined): void {
    const chain = identity.certificateChain;
    this.addToFlight(parameters, credential ? certificateMessageWithCredential(chain, credential.offer.credential) : certificateMessage(chain));
  }

  /**
   * §4.4.3: the Signer signs the transcript hash — the credential's signer when a delegated
   * credential is used (RFC 9345 §4.1.3: the client verifies with the credential's key);
   * false when the connection closed meanwhile.
   */
  private async sendCertificateVerify(parameters: ServerParameters, identity: Identity, scheme: number, credential: ChosenCredential | undefined): Promise<boolean> {
    const signer = credential ? credential.offer.signer : identity.signer;
    this.ctx.info.delegatedCredential = credential !== undefined;
    const signature = await signer.sign({ kind: 'tls13-certificate-verify', scheme, transcriptHash: parameters.state.transcript.current() }).catch((e: unknown) => {
      throw new TlsAlert('internal_error', `signing failed: ${e instanceof Error ? e.message : String(e)}`);
    });
    if (this.ctx.closed) return false;
    this.addToFlight(parameters, encodeCertificateVerify(scheme, signature));
    this.ctx.info.signatureScheme = SCHEMES.get(scheme)?.name;
    return true;
  }

  /**
   * §4.4.4: our Finished closes the flight, which goes out as one write: ServerHello in
   * plaintext, the compatibility CCS when the client asked for it (§D.4), the rest under
   * the server handshake keys. Then we write with the application keys and read the
   * client's second flight with its handshake keys.
   */
  private sendFinished(parameters: ServerParameters, certificateRequest: CertificateRequestSent | undefined): ExpectClientFinished {
    const { state, handshakeSecrets, serverHandshakeSecret, clientHandshakeSecret } = parameters;
    const { hello, suite, transcript } = state;
    this.addToFlight(parameters, encodeFinished(finishedVerifyData(suite.hash, serverHandshakeSecret, transcript.current())));
    const serverFinishedHash = transcript.current();
    const master = handshakeSecrets.master();

    const records = this.ctx.records;
    const out = [records.plaintextRecord(ContentType.handshake, parameters.serverHello)];
    const ccs = hello.legacySessionId.length > 0 ? records.compatibilityCcs() : undefined;
    if (ccs) out.push(ccs);
    records.installKeys('write', suite, serverHandshakeSecret);
    out.push(...records.protectHandshake(parameters.protectedMessages));
    records.installKeys('write', suite, master.serverApplicationTrafficSecret(serverFinishedHash));
    const expect: ExpectClientFinished = {
      suite,
      transcript,
      master,
      clientApplicationSecret: master.clientApplicationTrafficSecret(serverFinishedHash),
      clientHandshakeSecret,
      certificateRequest,
    };
    // §4.2.10: 0-RTT data the client sent with its first ClientHello is skipped (we never accept it).
    records.installKeys('read', suite, clientHandshakeSecret, hello.earlyData && !state.retried);
    records.send(out);
    return expect;
  }

  private addToFlight(parameters: ServerParameters, message: Buffer): void {
    parameters.state.transcript.add(message);
    parameters.protectedMessages.push(message);
  }

  // ---- the client's second flight -------------------------------------------------

  /**
   * §4.4.2: the client's Certificate, answering our CertificateRequest. An empty one is
   * accepted in optional mode (then no CertificateVerify follows, §4.4.3) and refused with
   * certificate_required in required mode (§4.4.2.4); a non-empty chain goes to the policy's
   * verifier, which names the alert for a chain it refuses. Undefined: the Finished is next.
   */
  readClientCertificate(expect: ExpectClientFinished, raw: Buffer): ExpectClientCertificateVerify | undefined {
    const request = expect.certificateRequest;
    if (!request) throw new TlsAlert('unexpected_message', 'client Certificate without a CertificateRequest');
    const { requestContext, chain } = decodeClientCertificate13(raw);
    if (requestContext.length !== 0) {
      throw new TlsAlert('illegal_parameter', 'client Certificate carries a certificate_request_context we did not send');
    }
    expect.transcript.add(raw);
    if (chain.length === 0) {
      if (request.clientAuth.mode === 'required') throw new TlsAlert('certificate_required', 'client sent no certificate and one is required');
      return undefined;
    }
    const certificate = request.clientAuth.verifyChain!(chain);
    return { expect, certificate };
  }

  /** §4.4.3: the client's signature over Transcript-Hash(ClientHello … client Certificate). */
  readClientCertificateVerify(state: ExpectClientCertificateVerify, raw: Buffer): ExpectClientFinished {
    const { expect, certificate } = state;
    const { scheme, signature } = decodeCertificateVerify(raw);
    verifyClientCertificateVerify({
      publicKey: certificate.publicKey,
      scheme,
      signature,
      transcriptHash: expect.transcript.current(),
      offered: expect.certificateRequest!.signatureSchemes,
    });
    expect.transcript.add(raw);
    this.ctx.info.clientCertificate = certificate.identity;
    this.ctx.info.clientCertificateFromSession = false;
    return expect;
  }

  /** §4.4.4: the client Finished must verify; then the client writes with its application keys. */
  readClientFinished(expect: ExpectClientFinished, raw: Buffer): Established13 {
    const verifyData = raw.subarray(4);
    const expected = finishedVerifyData(expect.suite.hash, expect.clientHandshakeSecret, expect.transcript.current());
    if (verifyData.length !== expected.length) {
      throw new TlsAlert('decode_error', `Finished of ${verifyData.length} bytes, expected ${expected.length}`);
    }
    if (!timingSafeEqual(verifyData, expected)) {
      throw new TlsAlert('decrypt_error', 'client Finished does not verify');
    }
    this.ctx.records.requireRecordBoundary('Finished');
    expect.transcript.add(raw);
    this.ctx.records.installKeys('read', expect.suite, expect.clientApplicationSecret);
    return { suite: expect.suite, master: expect.master, finishedHash: expect.transcript.current() };
  }

  /**
   * NewSessionTicket messages (§4.6.1), after the client Finished rather than in our flight
   * (which §4.6.1 would allow): clients and conformance suites expect nothing but alerts
   * before their Finished is accepted. A client that did not offer psk_key_exchange_modes
   * may still offer psk_dhe_ke when it resumes, so it gets tickets too.
   */
  sendSessionTickets(established: Established13): void {
    const { ticketCount, ticketLifetimeSeconds } = this.ctx.options;
    if (ticketCount <= 0 || !serverNameFitsTicket(this.ctx.info.serverName)) return;
    // A client certificate whose names a ticket cannot hold (ticket-fields.ts): no tickets.
    if (!clientIdentityFitsTicket(this.ctx.info.clientCertificate)) return;
    const { suite } = established;
    const resumptionSecret = established.master.resumptionMasterSecret(established.finishedHash);
    const tickets: Buffer[] = [];
    const issuedAt = this.ctx.now();
    for (let i = 0; i < ticketCount; i++) {
      const nonce = Buffer.of(i);
      const ageAdd = randomBytesFromPool(4).readUInt32BE(0);
      const ticket = sealTicket(this.ctx.ticketKeys, {
        cipherSuite: suite.id,
        psk: resumptionPsk(suite.hash, resumptionSecret, nonce),
        issuedAt,
        ageAdd,
        lifetimeSeconds: ticketLifetimeSeconds,
        serverName: this.ctx.info.serverName ?? '',
        alpnProtocol: this.ctx.info.alpnProtocol ?? '',
        clientAuthPolicy: this.clientAuthPolicy,
        clientIdentity: this.ctx.info.clientCertificate,
      });
      tickets.push(encodeNewSessionTicket({ lifetime: ticketLifetimeSeconds, ageAdd, nonce, ticket }));
    }
    this.ctx.records.send(this.ctx.records.protectHandshake(tickets));
  }
}
