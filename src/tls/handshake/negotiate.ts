import { createHash } from 'node:crypto';
import { TlsAlert } from '../alert.js';
import { SUITES, type SuiteInfo } from '../crypto/suites.js';
import type { ClientHello, KeyShareEntry } from '../messages/client-hello.js';
import { CipherSuite, ExtensionType as X, ProtocolVersion, PskKeyExchangeMode } from '../wire/codepoints.js';

/**
 * The version negotiation, and the choices a TLS 1.3 server makes from a ClientHello (RFC 8446 §4.1.1, §4.2),
 * as pure functions that throw the alert the RFC names when there is no valid choice.
 */

/** The protocol versions this server can negotiate: TLS 1.3 (server13.ts) and TLS 1.2 (server12.ts). */
export type NegotiatedVersion = typeof ProtocolVersion.TLS13 | typeof ProtocolVersion.TLS12;

/** Which versions are turned on (options `tls12` / `tls13`). */
export interface EnabledVersions {
  readonly tls12: boolean;
  readonly tls13: boolean;
}

/**
 * RFC 8446 §4.2.1, §D.1 and RFC 5246 §E.1: the version the handshake continues with, or
 * protocol_version. supported_versions decides when present; without it legacy_version
 * does (a TLS 1.2 client, or one that speaks a higher version in that field). RFC 7507:
 * a fallback retry (TLS_FALLBACK_SCSV) below our highest version is inappropriate_fallback.
 */
export function negotiateVersion(ch: ClientHello, enabled: EnabledVersions = { tls12: false, tls13: true }): NegotiatedVersion {
  const offered = ch.supportedVersions;
  let version: NegotiatedVersion;
  if (offered) {
    if (enabled.tls13 && offered.includes(ProtocolVersion.TLS13)) {
      if (ch.legacyVersion < ProtocolVersion.TLS12) {
        // §4.1.2 / §D.5: a TLS 1.3 ClientHello carries legacy_version 0x0303; older values mark an
        // old client or a downgrade attempt, which gets protocol_version.
        throw new TlsAlert('protocol_version', `legacy_version 0x${ch.legacyVersion.toString(16)} is below TLS 1.2`);
      }
      return ProtocolVersion.TLS13;
    }
    // §4.2.1: with supported_versions, legacy_version is ignored; TLS 1.2 must be listed.
    if (!enabled.tls12 || !offered.includes(ProtocolVersion.TLS12)) {
      throw new TlsAlert('protocol_version', `client offers no version this server speaks (supported_versions; TLS 1.2 ${enabled.tls12 ? 'on' : 'off'})`);
    }
    version = ProtocolVersion.TLS12;
  } else {
    if (!enabled.tls12) throw new TlsAlert('protocol_version', 'client does not offer TLS 1.3 (supported_versions)');
    // RFC 5246 §E.1: a higher legacy_version means "the highest the client speaks": we answer TLS 1.2.
    if (ch.legacyVersion < ProtocolVersion.TLS12) {
      throw new TlsAlert('protocol_version', `client offers at most version 0x${ch.legacyVersion.toString(16)} (below TLS 1.2)`);
    }
    version = ProtocolVersion.TLS12;
  }
  if (enabled.tls13 && ch.cipherSuites.includes(CipherSuite.TLS_FALLBACK_SCSV)) {
    // RFC 7507 §3: the client retried with a lower version although we speak a higher one.
    throw new TlsAlert('inappropriate_fallback', 'TLS_FALLBACK_SCSV in a TLS 1.2 ClientHello to a TLS 1.3 server');
  }
  return version;
}

/** §4.1.2, §9.2: the extension combinations every TLS 1.3 ClientHello must satisfy. */
export function checkClientHello13(ch: ClientHello): void {
  if (ch.compressionMethods.length !== 1 || ch.compressionMethods[0] !== 0) {
    throw new TlsAlert('illegal_parameter', 'legacy_compression_methods must be exactly [null]');
  }
  if (ch.keyShares && !ch.supportedGroups) {
    throw new TlsAlert('missing_extension', 'key_share without supported_groups');
  }
  if (ch.supportedGroups && !ch.keyShares) {
    throw new TlsAlert('missing_extension', 'supported_groups without key_share');
  }
  if (ch.preSharedKey && !ch.pskKeyExchangeModes) {
    throw new TlsAlert('missing_extension', 'pre_shared_key without psk_key_exchange_modes');
  }
  if (ch.keyShares && ch.supportedGroups) {
    for (const share of ch.keyShares) {
      if (!ch.supportedGroups.includes(share.group)) {
        // §4.2.8: every KeyShareEntry must be for a group in supported_groups.
        throw new TlsAlert('illegal_parameter', `key_share for group 0x${share.group.toString(16)} not in supported_groups`);
      }
    }
  }
}

export function selectCipherSuite(ch: ClientHello, serverSuites: readonly number[]): SuiteInfo {
  for (const id of serverSuites) {
    if (ch.cipherSuites.includes(id)) return SUITES.get(id)!;
  }
  throw new TlsAlert('handshake_failure', 'no cipher suite in common');
}

export type GroupChoice =
  | { kind: 'share'; group: number; share: KeyShareEntry }
  | { kind: 'retry'; group: number };

/**
 * §4.2.8: use a key share the client already sent for a group we support (server
 * preference among those), otherwise ask for our most preferred common group with a
 * HelloRetryRequest; no common group at all is handshake_failure (§4.1.1).
 */
export function selectGroup(ch: ClientHello, serverGroups: readonly number[]): GroupChoice {
  const shares = ch.keyShares ?? [];
  const offered = ch.supportedGroups ?? [];
  if (!ch.keyShares) throw new TlsAlert('missing_extension', 'ClientHello has no key_share (psk_ke is not supported)');
  for (const group of serverGroups) {
    const share = shares.find((s) => s.group === group);
    if (share) return { kind: 'share', group, share };
  }
  for (const group of serverGroups) {
    if (offered.includes(group)) return { kind: 'retry', group };
  }
  throw new TlsAlert('handshake_failure', 'no key exchange group in common');
}

/** `name`'s UTF-8 bytes one char per byte; an ASCII name (h2, http/1.1: every handshake) is its own, not copied. */
function wireForm(name: string): string {
  return NON_ASCII.test(name) ? Buffer.from(name, 'utf8').toString('latin1') : name;
}
const NON_ASCII = /[^\x00-\x7f]/;

/**
 * RFC 7301 §3.2: server preference; no overlap is no_application_protocol. A ProtocolName is
 * opaque bytes (§3.1): the client's are kept one char per byte (latin1, client-hello.ts),
 * the server's are text sent as UTF-8 (the bytes the edge's config bounds to 255), so each
 * server name is compared by its UTF-8 bytes. Returns the server's name as configured.
 */
export function selectAlpn(ch: ClientHello, serverProtocols: readonly string[]): string | undefined {
  if (!ch.alpnProtocols || serverProtocols.length === 0) return undefined;
  for (const p of serverProtocols) if (ch.alpnProtocols.includes(wireForm(p))) return p;
  throw new TlsAlert('no_application_protocol', `no ALPN protocol in common (client offered ${ch.alpnProtocols.join(', ')})`);
}

/** §4.4.3 + §4.2.3: the first scheme of the key's (in the key's order of preference) that the client accepts. */
export function selectSignatureScheme(ch: ClientHello, keySchemes: readonly number[]): number {
  if (!ch.signatureAlgorithms) {
    throw new TlsAlert('missing_extension', 'signature_algorithms is required for certificate authentication');
  }
  for (const s of keySchemes) if (ch.signatureAlgorithms.includes(s)) return s;
  throw new TlsAlert('handshake_failure', 'no signature scheme in common with the server key');
}

export function offersPskDhe(ch: ClientHello): boolean {
  return ch.pskKeyExchangeModes?.includes(PskKeyExchangeMode.psk_dhe_ke) ?? false;
}

/** Extensions a client may change between its two ClientHellos (§4.1.2). */
const MAY_CHANGE_AFTER_RETRY = new Set<number>([X.key_share, X.early_data, X.cookie, X.pre_shared_key, X.padding]);

/**
 * Digest of everything in a ClientHello that must be identical in the ClientHello that
 * answers a HelloRetryRequest (§4.1.2), including the order of the extensions. Carried in
 * the cookie so the server keeps no state between the two ClientHellos.
 */
export function retryConsistencyDigest(ch: ClientHello): Buffer {
  const h = createHash('sha256');
  const head = Buffer.alloc(2);
  head.writeUInt16BE(ch.legacyVersion);
  h.update(head).update(ch.random).update(Buffer.of(ch.legacySessionId.length)).update(ch.legacySessionId);
  // Network byte order, so servers sharing cookie keys agree whatever their CPU.
  const suites = Buffer.alloc(2 + 2 * ch.cipherSuites.length);
  suites.writeUInt16BE(ch.cipherSuites.length, 0);
  ch.cipherSuites.forEach((suite, i) => suites.writeUInt16BE(suite, 2 + 2 * i));
  h.update(suites).update(Buffer.of(ch.compressionMethods.length)).update(ch.compressionMethods);
  for (const type of ch.extensionOrder) {
    if (MAY_CHANGE_AFTER_RETRY.has(type)) continue;
    const data = ch.extensions.get(type)!;
    const t = Buffer.alloc(6);
    t.writeUInt16BE(type, 0);
    t.writeUInt32BE(data.length, 2);
    h.update(t).update(data);
  }
  return h.digest();
}
