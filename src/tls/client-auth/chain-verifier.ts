import type * as X509 from '@peculiar/x509';
import { createHash, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import { TlsAlert } from '../alert.js';
import type { ClientAuthOptions, VerifiedClientCertificate } from '../options.js';
import { CLIENT_SIGNATURE_SCHEMES } from '../handshake/client-certificate-verify.js';
import type { ClientIdentity } from '../handshake/context.js';

/**
 * @peculiar/x509, loaded on first use: it (with reflect-metadata) costs hundreds of ms to
 * import, which every edge worker and `serve` would pay at start without client certificates.
 */
let x509: typeof X509 | undefined;
async function peculiar(): Promise<typeof X509> {
  if (!x509) {
    await import('reflect-metadata');
    const loaded = await import('@peculiar/x509');
    loaded.cryptoProvider.set(webcrypto as never);
    x509 = loaded;
  }
  return x509;
}

/**
 * Client certificate policy over a CA bundle and an optional CRL file (RFC 5280 §6 path
 * validation, the parts a TLS client-auth deployment needs): the engine calls `verifyChain`
 * with the client's chain (src/tls/options.ts, ClientAuthOptions) and gets the client's
 * identity, or a TlsAlert naming what is wrong (RFC 8446 §6.2):
 *
 *   unparsable certificate                               bad_certificate
 *   no path from the leaf to a configured CA, or none
 *     within maxPathLength + 2 signature checks          unknown_ca
 *   a certificate of the path outside its validity       certificate_expired
 *   leaf keyUsage without digitalSignature, an
 *     extendedKeyUsage without clientAuth, or a key
 *     node:crypto cannot load                            unsupported_certificate
 *   a client-sent key beyond the cost bounds (RSA over
 *     8192 bits or e ≥ 2^33, unnamed EC curve, no
 *     signature key type), leaf or issuer candidate      unsupported_certificate
 *   a critical extension this policy does not process
 *     (e.g. nameConstraints), leaf or intermediate       unsupported_certificate
 *   an issuer that is not a CA (basicConstraints), its
 *     keyUsage without keyCertSign, or a path longer
 *     than an issuer's pathLenConstraint                 bad_certificate
 *   a serial number in the issuer's CRL                  certificate_revoked
 *   the issuer's CRL is past its nextUpdate              certificate_unknown
 *
 * Parsing is node:crypto's X509Certificate (signatures, issuer checks) and @peculiar/x509
 * (extensions, CRLs): no ASN.1 of our own.
 */

export interface ClientAuthPolicyOptions {
  readonly mode: 'optional' | 'required';
  /** PEM bundle of the CAs whose (direct or intermediate-chained) certificates are accepted. */
  readonly caPem: string | Uint8Array;
  /** PEM (or DER) CRLs, each signed by one of the CAs of the bundle or of the client's chain issuers. */
  readonly crlPem?: string | Uint8Array;
  /** Send the CAs' names in certificate_authorities (RFC 8446 §4.2.4). Default true. */
  readonly advertiseCaNames?: boolean;
  /** Longest path from leaf to trust anchor, in certificates (leaf and anchor included). Default 6. */
  readonly maxPathLength?: number;
  readonly now?: () => number;
}

export class ClientAuthConfigError extends Error {
  readonly code = 'CLIENT_AUTH_CONFIG';
}

const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/**
 * Extensions this policy processes, or may ignore without changing the outcome (names,
 * key identifiers, where CRLs and issuers are published, policies under an any-policy
 * initial set). A critical extension outside this set (nameConstraints, policyConstraints,
 * inhibitAnyPolicy, anything unknown) refuses the certificate: RFC 5280 §4.2.
 */
const RECOGNISED_EXTENSIONS: ReadonlySet<string> = new Set([
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.15', // keyUsage
  '2.5.29.17', // subjectAltName
  '2.5.29.19', // basicConstraints
  '2.5.29.31', // cRLDistributionPoints
  '2.5.29.32', // certificatePolicies
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.37', // extKeyUsage
  '1.3.6.1.5.5.7.1.1', // authorityInfoAccess
]);
const OID_ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';

/** One certificate, parsed by both libraries once. */
interface Parsed {
  readonly node: X509Certificate;
  readonly peculiar: X509.X509Certificate;
  readonly der: Buffer;
  /** Its public key, loaded and checked the first time a signature is verified with it. */
  key?: KeyObject;
}

/**
 * What one public-key verification may cost, for keys the client chooses: every certificate
 * it sends can be tried as an issuer before anything about it is trusted. RSA verification
 * grows with the modulus and with the public exponent, and below 3072-bit moduli OpenSSL
 * accepts an exponent as long as the modulus: one verification with a 3072-bit exponent
 * takes milliseconds (docs/EDGE.md). These are the bounds the webpki and ring verifiers use:
 * moduli up to 8192 bits, exponents below 2^33; EC keys only on the named curves TLS signs
 * with (an explicit-parameters curve could be of any size).
 */
const MAX_RSA_MODULUS_BITS = 8192;
const MAX_RSA_PUBLIC_EXPONENT = (1n << 33n) - 1n;
const ACCEPTED_CURVES: ReadonlySet<string> = new Set(['prime256v1', 'secp384r1', 'secp521r1']);

/** Parses with both libraries; only called once `peculiar()` has loaded (ClientChainVerifier.load). */
function parse(der: Uint8Array, what: string): Parsed {
  try {
    const buf = Buffer.from(der.buffer, der.byteOffset, der.byteLength);
    return { node: new X509Certificate(buf), peculiar: new x509!.X509Certificate(buf), der: buf };
  } catch (err) {
    throw new TlsAlert('bad_certificate', `${what} does not parse (${(err as Error).message})`);
  }
}

/** Splits a PEM bundle into its blocks of one label. */
function pemBlocks(text: string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, 'g');
  return [...text.matchAll(re)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}

function asText(input: string | Uint8Array): string {
  return typeof input === 'string' ? input : Buffer.from(input).toString('latin1');
}

/** Serial numbers compared as hex without leading zeros, case-insensitively. */
function normaliseSerial(hex: string): string {
  return hex.toUpperCase().replace(/^0+(?=.)/, '');
}

interface LoadedCrl {
  readonly issuer: string;
  readonly revoked: ReadonlySet<string>;
  readonly nextUpdate: number | undefined;
}

export class ClientChainVerifier {
  private readonly anchors: Parsed[];
  private readonly crls: LoadedCrl[];
  private readonly maxPathLength: number;
  private readonly now: () => number;

  private constructor(anchors: Parsed[], crls: LoadedCrl[], maxPathLength: number, now: () => number) {
    this.anchors = anchors;
    this.crls = crls;
    this.maxPathLength = maxPathLength;
    this.now = now;
  }

  /** Loads the bundle and CRLs; every CRL must verify under a CA of the bundle. */
  static async load(options: ClientAuthPolicyOptions): Promise<ClientChainVerifier> {
    const lib = await peculiar();
    const blocks = pemBlocks(asText(options.caPem), 'CERTIFICATE');
    if (blocks.length === 0) throw new ClientAuthConfigError('the client CA file holds no PEM certificate');
    const anchors = blocks.map((der, i) => {
      try {
        return parse(der, `client CA certificate ${i + 1}`);
      } catch (err) {
        throw new ClientAuthConfigError((err as Error).message.replace(/^tls: /, ''));
      }
    });
    for (const anchor of anchors) {
      if (!anchor.node.ca) throw new ClientAuthConfigError(`client CA '${anchor.peculiar.subject}' is not a CA certificate (basicConstraints cA)`);
      // Loaded now, and outside the cost bounds of client-sent keys: the operator chose it.
      try {
        anchor.key = anchor.node.publicKey;
      } catch (err) {
        throw new ClientAuthConfigError(`client CA '${anchor.peculiar.subject}' has a key node:crypto cannot load (${(err as Error).message})`);
      }
    }
    const crls: LoadedCrl[] = [];
    if (options.crlPem !== undefined) {
      const text = asText(options.crlPem);
      // OpenSSL writes "X509 CRL"; some tools write "CRL".
      const crlBlocks = text.includes('-----BEGIN') ? pemBlocks(text, '(?:X509 )?CRL') : [Buffer.from(options.crlPem as Uint8Array)];
      if (crlBlocks.length === 0) throw new ClientAuthConfigError('the CRL file holds no PEM "X509 CRL" block');
      for (const der of crlBlocks) {
        let crl: X509.X509Crl;
        try {
          crl = new lib.X509Crl(der);
        } catch (err) {
          throw new ClientAuthConfigError(`a CRL does not parse (${(err as Error).message})`);
        }
        let signedBy: Parsed | undefined;
        for (const anchor of anchors) {
          if (anchor.peculiar.subject === crl.issuer && (await crl.verify({ publicKey: anchor.peculiar }).catch(() => false))) signedBy = anchor;
        }
        if (!signedBy) throw new ClientAuthConfigError(`the CRL of '${crl.issuer}' is not signed by a CA of the client CA file`);
        crls.push({
          issuer: crl.issuer,
          revoked: new Set(crl.entries.map((e) => normaliseSerial(e.serialNumber))),
          nextUpdate: crl.nextUpdate?.getTime(),
        });
      }
    }
    return new ClientChainVerifier(anchors, crls, options.maxPathLength ?? 6, options.now ?? Date.now);
  }

  /** The CAs' subject names, DER, for certificate_authorities (RFC 8446 §4.2.4). */
  caNames(): Uint8Array[] {
    return this.anchors.map((a) => new Uint8Array(a.peculiar.subjectName.toArrayBuffer()));
  }

  /** Names this trust configuration in tickets: the anchors and CRLs, hashed. */
  fingerprint(): string {
    const h = createHash('sha256');
    for (const a of this.anchors) h.update(a.der);
    for (const c of this.crls) h.update(c.issuer).update([...c.revoked].join(','));
    return h.digest('hex').slice(0, 32);
  }

  /**
   * The most signatures one chain may make us verify: a path of maxPathLength certificates
   * needs maxPathLength - 1, and two more leave room for a same-name candidate that is not
   * the issuer (a re-keyed CA). Path building tries every offered certificate whose name and
   * key identifier match, so without this bound a client could send ten look-alike issuers
   * and make each step cost ten verifications.
   */
  private get maxSignatureChecks(): number {
    return this.maxPathLength + 2;
  }

  /** RFC 5280 §6.1, for a TLS client: builds and checks the path, or throws the alert. */
  verify(chainDer: readonly Uint8Array[]): VerifiedClientCertificate {
    const chain = chainDer.map((der, i) => parse(der, i === 0 ? 'client certificate' : `client chain certificate ${i + 1}`));
    const leaf = chain[0];
    if (!leaf) throw new TlsAlert('bad_certificate', 'empty client certificate chain');
    const path = this.buildPath(leaf, chain.slice(1));
    const now = this.now();
    for (const cert of path) this.checkValidity(cert, now);
    // The anchor is configuration, not input (RFC 5280 §6.1): its extensions are not checked.
    for (const cert of path) if (!this.anchors.includes(cert)) checkCriticalExtensions(cert);
    this.checkLeafPurpose(leaf);
    // path: leaf, intermediates…, anchor. An issuer at index i has i - 1 intermediates below it.
    for (let i = 1; i < path.length; i++) this.checkIssuer(path[i]!, i - 1);
    for (let i = 0; i < path.length - 1; i++) this.checkRevocation(path[i]!, now);
    return { identity: identityOf(leaf), publicKey: publicKeyOf(leaf) };
  }

  /** Leaf → anchor: each step an issuer whose name, key identifier and signature fit (node:crypto). */
  private buildPath(leaf: Parsed, offered: Parsed[]): Parsed[] {
    const path = [leaf];
    const checks = { left: this.maxSignatureChecks, limit: this.maxSignatureChecks };
    let current = leaf;
    for (;;) {
      const anchor = this.anchors.find((a) => a.der.equals(current.der) || issued(a, current, checks));
      if (anchor) {
        if (!anchor.der.equals(current.der)) path.push(anchor);
        return path;
      }
      // Another intermediate makes the path at least path.length + 2 long (it still needs an anchor).
      if (path.length + 2 > this.maxPathLength) {
        throw new TlsAlert('unknown_ca', `no path to a configured client CA within ${this.maxPathLength} certificates`);
      }
      const next = offered.find((c) => !path.includes(c) && issued(c, current, checks));
      if (!next) throw new TlsAlert('unknown_ca', `client certificate issuer '${current.peculiar.issuer}' is not a configured client CA`);
      path.push(next);
      current = next;
    }
  }

  private checkValidity(cert: Parsed, now: number): void {
    const { notBefore, notAfter, subject } = cert.peculiar;
    if (now < notBefore.getTime()) throw new TlsAlert('certificate_expired', `certificate '${subject}' is not valid before ${notBefore.toISOString()}`);
    if (now > notAfter.getTime()) throw new TlsAlert('certificate_expired', `certificate '${subject}' expired at ${notAfter.toISOString()}`);
  }

  /** RFC 5280 §4.2.1.3 / §4.2.1.12 for a TLS client certificate. */
  private checkLeafPurpose(leaf: Parsed): void {
    const lib = x509!;
    const ku = leaf.peculiar.getExtension(lib.KeyUsagesExtension);
    if (ku && !(ku.usages & lib.KeyUsageFlags.digitalSignature)) {
      throw new TlsAlert('unsupported_certificate', 'client certificate keyUsage lacks digitalSignature');
    }
    const eku = leaf.peculiar.getExtension(lib.ExtendedKeyUsageExtension);
    if (eku && !eku.usages.some((u) => u === OID_CLIENT_AUTH || u === OID_ANY_EXTENDED_KEY_USAGE)) {
      throw new TlsAlert('unsupported_certificate', 'client certificate extendedKeyUsage lacks clientAuth');
    }
  }

  /** RFC 5280 §4.2.1.9, §4.2.1.3: an issuer must be a CA allowed this many intermediates below it. */
  private checkIssuer(issuer: Parsed, intermediatesBelow: number): void {
    const lib = x509!;
    const bc = issuer.peculiar.getExtension(lib.BasicConstraintsExtension);
    const subject = issuer.peculiar.subject;
    if (!bc?.ca) throw new TlsAlert('bad_certificate', `issuer '${subject}' is not a CA (basicConstraints)`);
    if (bc.pathLength !== undefined && intermediatesBelow > bc.pathLength) {
      throw new TlsAlert('bad_certificate', `issuer '${subject}' allows ${bc.pathLength} intermediate CA(s) below it, the path has ${intermediatesBelow}`);
    }
    const ku = issuer.peculiar.getExtension(lib.KeyUsagesExtension);
    if (ku && !(ku.usages & lib.KeyUsageFlags.keyCertSign)) {
      throw new TlsAlert('bad_certificate', `issuer '${subject}' keyUsage lacks keyCertSign`);
    }
  }

  private checkRevocation(cert: Parsed, now: number): void {
    for (const crl of this.crls) {
      if (crl.issuer !== cert.peculiar.issuer) continue;
      if (crl.nextUpdate !== undefined && now > crl.nextUpdate) {
        throw new TlsAlert('certificate_unknown', `the CRL of '${crl.issuer}' is past its nextUpdate; refusing its certificates until it is renewed`);
      }
      if (crl.revoked.has(normaliseSerial(cert.node.serialNumber))) {
        throw new TlsAlert('certificate_revoked', `certificate '${cert.peculiar.subject}' (serial ${cert.node.serialNumber}) is revoked`);
      }
    }
  }
}

/** RFC 5280 §4.2: a critical extension this policy does not process refuses the certificate. */
function checkCriticalExtensions(cert: Parsed): void {
  for (const extension of cert.peculiar.extensions) {
    if (extension.critical && !RECOGNISED_EXTENSIONS.has(extension.type)) {
      throw new TlsAlert('unsupported_certificate', `certificate '${cert.peculiar.subject}' has a critical extension ${extension.type} this server does not process (RFC 5280 §4.2)`);
    }
  }
}

/**
 * `issuer` issued `cert`: names and key identifiers match (X509_check_issued) and the
 * signature verifies. Only a name match costs a signature check, counted against the chain's
 * bound; an issuer key beyond the cost bounds refuses the chain before it is used.
 */
function issued(issuer: Parsed, cert: Parsed, checks: { left: number; limit: number }): boolean {
  let nameMatches: boolean;
  try {
    nameMatches = cert.node.checkIssued(issuer.node);
  } catch {
    return false;
  }
  if (!nameMatches) return false;
  const key = checkedKey(issuer);
  if (checks.left-- <= 0) throw new TlsAlert('unknown_ca', `no path to a configured client CA within ${checks.limit} signature checks`);
  try {
    return cert.node.verify(key);
  } catch {
    return false;
  }
}

/**
 * A certificate's public key, loaded once and within the cost bounds above. A key node:crypto
 * cannot load, or one outside the bounds, is RFC 8446 §6.2 unsupported_certificate (such a
 * key would otherwise be sent as internal_error, or cost milliseconds per check).
 */
function checkedKey(cert: Parsed): KeyObject {
  if (cert.key) return cert.key;
  const subject = cert.peculiar.subject;
  let key: KeyObject;
  try {
    key = cert.node.publicKey;
  } catch (err) {
    throw new TlsAlert('unsupported_certificate', `certificate '${subject}' has a key of a type this server cannot load (${(err as Error).message})`);
  }
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss': {
      const bits = details.modulusLength ?? Infinity;
      if (bits > MAX_RSA_MODULUS_BITS) throw new TlsAlert('unsupported_certificate', `certificate '${subject}' has a ${bits}-bit RSA modulus; at most ${MAX_RSA_MODULUS_BITS} bits are accepted`);
      const exponent = details.publicExponent ?? 0n;
      if (exponent > MAX_RSA_PUBLIC_EXPONENT) {
        throw new TlsAlert('unsupported_certificate', `certificate '${subject}' has a ${exponent.toString(2).length}-bit RSA public exponent; at most 33 bits are accepted`);
      }
      break;
    }
    case 'ec':
      if (!ACCEPTED_CURVES.has(details.namedCurve ?? '')) {
        throw new TlsAlert('unsupported_certificate', `certificate '${subject}' has an EC key on ${details.namedCurve ?? 'explicit parameters'}; accepted: P-256, P-384, P-521`);
      }
      break;
    case 'ed25519':
    case 'ed448':
      break;
    default:
      throw new TlsAlert('unsupported_certificate', `certificate '${subject}' has a ${key.asymmetricKeyType} key, which this server does not verify with`);
  }
  cert.key = key;
  return key;
}

/**
 * The leaf's key, which its CertificateVerify must verify with. A CA may certify a key type
 * node:crypto cannot load (its SubjectPublicKeyInfo then throws a plain Error, which the
 * engine would send as internal_error): RFC 8446 §6.2 unsupported_certificate.
 */
function publicKeyOf(leaf: Parsed): KeyObject {
  return checkedKey(leaf);
}

function identityOf(leaf: Parsed): ClientIdentity {
  return {
    subject: leaf.peculiar.subject,
    commonName: leaf.peculiar.subjectName.getField('CN')[0],
    issuer: leaf.peculiar.issuer,
    serialNumber: leaf.node.serialNumber,
    fingerprint256: leaf.node.fingerprint256,
    notAfter: leaf.peculiar.notAfter.getTime(),
  };
}

/**
 * The most bytes the CAs' names may take in certificate_authorities (2-byte length + DER each):
 * the TLS 1.3 CertificateRequest's extensions<2..2^16-1> (RFC 8446 §4.3.2) also hold
 * signature_algorithms (4 + 2 + 2 per scheme) and this extension's own headers (4 + 2).
 */
export const MAX_CA_NAMES_BYTES = 0xffff - (4 + 2 + 2 * CLIENT_SIGNATURE_SCHEMES.length) - (4 + 2);

/** The engine's ClientAuthOptions for a CA bundle (and CRL): what `serve` and each edge route use. */
export async function loadClientAuth(options: ClientAuthPolicyOptions): Promise<ClientAuthOptions & { readonly verifier: ClientChainVerifier }> {
  const verifier = await ClientChainVerifier.load(options);
  const certificateAuthorities = options.advertiseCaNames === false ? undefined : verifier.caNames();
  const namesBytes = certificateAuthorities?.reduce((n, name) => n + 2 + name.length, 0) ?? 0;
  if (namesBytes > MAX_CA_NAMES_BYTES) {
    // Otherwise every CertificateRequest would fail to encode: internal_error for every client.
    throw new ClientAuthConfigError(
      `the client CAs' names take ${namesBytes} bytes, more than certificate_authorities can carry (${MAX_CA_NAMES_BYTES}, RFC 8446 §4.2.4): fewer CAs, or advertiseCaNames false`,
    );
  }
  return {
    mode: options.mode,
    verifyChain: (chain) => verifier.verify(chain),
    certificateAuthorities,
    policyId: `${options.mode}:${verifier.fingerprint()}`,
    verifier,
  };
}
