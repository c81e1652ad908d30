/**
 * The TLS engine's public entry: everything outside src/tls imports from here and
 * nowhere else (test/tls, which tests the internals, is the exception).
 *
 * - the node:net server and socket (socket.ts) and its options (options.ts), with the
 *   ALPN list check the edge's config and serve share (alpn-names.ts);
 * - client certificates: the options the engine takes and the CA-bundle policy that
 *   fills them (client-auth/chain-verifier.ts);
 * - the sans-I/O connection underneath, for embedding without node:net (connection.ts);
 * - the key seam: Signer / Identity / ResolveIdentity, the in-process LocalSigner, and
 *   the RFC 8446 §4.4.3 content a signer builds (signer.ts, signature-schemes.ts);
 * - the session ticket key ring that workers share (handshake/ticket-keys.ts);
 * - alert and codepoint names for configuration, logs and errors.
 */
export { createServer, TlsSocket, type TlsServer, type TlsServerEvents } from './socket.js';
export { connectForRelay } from './relay.js';
export {
  resolveOptions,
  type ClientAuthOptions,
  type ResolvedOptions,
  type TlsServerOptions,
  type VerifiedClientCertificate,
} from './options.js';
export { checkAlpnNames, MAX_ALPN_NAME_BYTES } from './alpn-names.js';
export { TlsServerConnection } from './connection.js';
export type { ClientIdentity, ConnectionInfo } from './handshake/context.js';
export { CLIENT_SIGNATURE_SCHEMES } from './handshake/client-certificate-verify.js';
export { ClientAuthConfigError, ClientChainVerifier, loadClientAuth, type ClientAuthPolicyOptions } from './client-auth/chain-verifier.js';

export {
  LocalSigner,
  certificateVerifyContent,
  keyTypeOf,
  serverKeyExchangeContent,
  signWithScheme,
  type DelegatedCredentialOffer,
  type Identity,
  type ResolveIdentity,
  type SignRequest,
  type Signer,
  type Tls12ServerKeyExchangeRequest,
  type Tls13CertificateVerifyRequest,
} from './signer.js';
export { SCHEMES, TRANSCRIPT_HASH_LENGTHS, schemesForKeyType, tls12SchemesForKeyType, type KeyType, type SchemeInfo } from './signature-schemes.js';
export {
  DELEGATED_CREDENTIAL_SCHEMES,
  DELEGATION_USAGE_OID,
  MAX_DELEGATED_CREDENTIAL_SECONDS,
  RSA_PKCS1_SCHEMES,
  decodeDelegatedCredential,
  delegatedCredentialSignedContent,
  encodeCredential,
  encodeDelegatedCredential,
  type Credential,
  type DelegatedCredential,
} from './messages/delegated-credential.js';
export { DEFAULT_RETAIN_MS, DEFAULT_ROTATION_MS, TicketKeyRing, type SharedTicketKey, type TicketKeyRingOptions } from './handshake/ticket-keys.js';

export { AlertDescription, TlsAlert, TlsPeerAlert, alertName, type AlertName } from './alert.js';
export {
  CipherSuite,
  ContentType,
  ExtensionType,
  HandshakeType,
  NamedGroup,
  ProtocolVersion,
  SignatureScheme,
  nameOf,
} from './wire/codepoints.js';
export { DEFAULT_GROUPS, SUPPORTED_GROUPS, groupByName, groupName, keyExchange } from './crypto/key-exchange.js';
export { FFDHE_PRIMES } from './crypto/ffdhe-primes.js';
export { DEFAULT_CIPHER_SUITES, suiteByName } from './crypto/suites.js';
export { DEFAULT_CIPHER_SUITES12, suite12ByName } from './crypto/suites12.js';
