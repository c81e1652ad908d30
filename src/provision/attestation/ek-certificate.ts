import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import { ProvisionError } from '../errors.js';

x509.cryptoProvider.set(webcrypto as never);

/**
 * Checks a TPM's EK certificate against the operator's bundle of TPM manufacturer CAs
 * (roots and intermediates, PEM): a chain of valid signatures, each certificate inside
 * its validity period, each issuer a CA certificate that may sign certificates (below)
 * and whose pathLenConstraint allows the intermediates under it, no certificate with a
 * critical extension this verifier does not process, ending at a self-signed
 * certificate of the bundle. Returns the EK
 * public key, to which the admin wraps its credential (make-credential.ts).
 */
export interface VerifiedEk {
  publicKey: KeyObject;
  issuer: string;
  serialNumber: string;
  /** Subjects from the EK certificate up to the trusted root. */
  chain: string[];
}

const MAX_CHAIN = 8;

function fail(message: string): never {
  throw new ProvisionError('PROVISION_ATTESTATION_FAILED', `ek-certificate: ${message}`);
}

/**
 * Why `cert` may not sign certificates, or undefined when it may. RFC 5280 §4.2.1.9 and
 * §6.1.4 (k): an issuer's key verifies certificate signatures only when basicConstraints
 * asserts cA; §4.2.1.3 and §6.1.4 (n): when keyUsage is present, keyCertSign must be set.
 * Without this, any end-entity certificate an operator's bundle happens to hold (a
 * manufacturer's EK or server certificate) would vouch for certificates its key signed.
 */
function notAnIssuer(cert: x509.X509Certificate): string | undefined {
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  if (!bc) return 'it has no basicConstraints extension, so it is not a CA certificate (RFC 5280 §4.2.1.9)';
  if (!bc.ca) return 'its basicConstraints has cA FALSE, so it is not a CA certificate (RFC 5280 §4.2.1.9)';
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (ku && (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0) return 'its keyUsage lacks keyCertSign (RFC 5280 §4.2.1.3)';
  return undefined;
}

/**
 * Why `cert` may not sign this certificate of the path, `intermediatesBelow` being how many
 * non-self-issued CA certificates lie between it and the EK certificate; undefined when its
 * pathLenConstraint allows them. RFC 5280 §4.2.1.9 and §6.1.4 (l), (m): a CA with
 * pathLenConstraint n may be followed by at most n non-self-issued intermediate CA
 * certificates (self-issued ones, key rollover certificates, are not counted). The root's
 * own constraint counts too (RFC 5937 §3: a trust anchor's pathLenConstraint initialises
 * max_path_length): a manufacturer root published with pathLen 0 issues EK certificates
 * only directly.
 */
function pathTooLong(cert: x509.X509Certificate, intermediatesBelow: number): string | undefined {
  const limit = cert.getExtension(x509.BasicConstraintsExtension)?.pathLength;
  if (limit === undefined || intermediatesBelow <= limit) return undefined;
  return `its basicConstraints pathLenConstraint ${limit} allows ${limit} intermediate CA certificate(s) below it, this path has ${intermediatesBelow} (RFC 5280 §4.2.1.9, §6.1.4 (l), (m))`;
}

/** tcg-kp-EKCertificate (TCG EK Credential Profile): the purpose an EK certificate chain serves. */
const OID_TCG_KP_EK_CERTIFICATE = '2.23.133.8.1';
const OID_ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';
const OID_EXTENDED_KEY_USAGE = '2.5.29.37';

/**
 * The critical extensions this verifier accepts, with why each is processed or may be
 * ignored without changing the outcome. RFC 5280 §4.2: a certificate-using system MUST
 * reject a certificate with a critical extension it does not recognise, or one holding
 * information it cannot process. TPM manufacturers' EK certificates (TCG EK Credential
 * Profile for TPM Family 2.0; swtpm's local CA makes the same) mark basicConstraints,
 * keyUsage and, since their subject is commonly empty, subjectAltName critical; these,
 * and the others listed, must keep passing.
 */
const ACCEPTED_CRITICAL: ReadonlyMap<string, string> = new Map([
  // Processed: cA and pathLenConstraint of every issuer (notAnIssuer, pathTooLong).
  ['2.5.29.19', 'basicConstraints'],
  // Processed on every issuer (keyCertSign, RFC 5280 §6.1.4 (n)) and on the EK certificate
  // (ekKeyUsageRefusal: the use make-credential puts the EK to).
  ['2.5.29.15', 'keyUsage'],
  // The TPM manufacturer, model and version (directoryName of TCG attributes 2.23.133.2.1-3)
  // of an EK certificate, critical when the subject is empty (RFC 5280 §4.2.1.6). No
  // decision here depends on a name (the EK is its key; issuers are found by signature),
  // so its content changes no outcome.
  ['2.5.29.17', 'subjectAltName'],
  // Validation runs with initial-policy-set anyPolicy and initial-explicit-policy FALSE
  // (RFC 5280 §6.1.1 (c), (f)); policyConstraints, policyMappings and inhibitAnyPolicy,
  // the extensions that could make policies decide, are refused below when critical. Under
  // these inputs §6.1 succeeds whatever policies the path asserts.
  ['2.5.29.32', 'certificatePolicies'],
  // Processed (extendedKeyUsageRefusal): a critical one must allow the EK-certificate purpose.
  [OID_EXTENDED_KEY_USAGE, 'extendedKeyUsage'],
  // Path-building hints (RFC 5280 §4.2.1.1, §4.2.1.2, §4.2.2.1); the path is built from the
  // bundle by name and signature, nothing is fetched, so they change no outcome.
  ['2.5.29.35', 'authorityKeyIdentifier'],
  ['2.5.29.14', 'subjectKeyIdentifier'],
  ['1.3.6.1.5.5.7.1.1', 'authorityInfoAccess'],
]);

/**
 * Names of extensions refused when critical, for the error: not processed here. nameConstraints
 * would restrict the names below a CA; the policy extensions could fail §6.1 policy
 * processing; cRLDistributionPoints and freshestCRL call for revocation checking, which
 * this verifier does not do; subjectDirectoryAttributes carries the TCG TPM specification
 * and security assertions, which it does not evaluate (RFC 5280 §4.2.1.8 requires it
 * non-critical, as swtpm and the TCG profile issue it).
 */
const REFUSED_NAMES: ReadonlyMap<string, string> = new Map([
  ['2.5.29.30', 'nameConstraints'],
  ['2.5.29.36', 'policyConstraints'],
  ['2.5.29.33', 'policyMappings'],
  ['2.5.29.54', 'inhibitAnyPolicy'],
  ['2.5.29.31', 'cRLDistributionPoints'],
  ['2.5.29.46', 'freshestCRL'],
  ['2.5.29.9', 'subjectDirectoryAttributes'],
]);

function describe(cert: x509.X509Certificate): string {
  return cert.subject ? `"${cert.subject}"` : `the certificate with an empty subject (serial ${cert.serialNumber})`;
}

/**
 * RFC 5280 §4.2.1.12: a critical extendedKeyUsage limits the certificate to the purposes
 * listed. The chain is used only as an EK certificate chain, so a critical one must list
 * tcg-kp-EKCertificate or anyExtendedKeyUsage. (A non-critical one is advisory.)
 */
function extendedKeyUsageRefusal(cert: x509.X509Certificate): string | undefined {
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (!eku?.critical) return undefined;
  const usages = eku.usages.map(String);
  if (usages.includes(OID_TCG_KP_EK_CERTIFICATE) || usages.includes(OID_ANY_EXTENDED_KEY_USAGE)) return undefined;
  return `${describe(cert)} has a critical extendedKeyUsage (${OID_EXTENDED_KEY_USAGE}) that does not list tcg-kp-EKCertificate (${OID_TCG_KP_EK_CERTIFICATE}): it may not be used in an EK certificate chain (RFC 5280 §4.2.1.12)`;
}

/** Refuses `cert` (the EK certificate, an intermediate, the root) for a critical extension not processed here. */
function checkCriticalExtensions(cert: x509.X509Certificate): void {
  let extensions: x509.Extension[];
  try {
    // @peculiar/x509 decodes the extensions it knows on first access; a malformed one throws.
    extensions = [...cert.extensions];
  } catch (err) {
    fail(`${describe(cert)} has an extension that does not parse: ${(err as Error).message}`);
  }
  for (const extension of extensions) {
    if (!extension.critical || ACCEPTED_CRITICAL.has(extension.type)) continue;
    const name = REFUSED_NAMES.get(extension.type);
    fail(`${describe(cert)} has a critical extension ${extension.type}${name ? ` (${name})` : ''} that this verifier does not process (RFC 5280 §4.2)`);
  }
  const eku = extendedKeyUsageRefusal(cert);
  if (eku !== undefined) fail(eku);
}

/**
 * Why the EK certificate's keyUsage forbids the use the admin makes of the EK, or undefined.
 * RFC 5280 §4.2.1.3: when keyUsage is present the key serves only the uses it asserts.
 * make-credential.ts wraps the credential's seed to the EK (TPM 2.0 Library Part 1 §24):
 * RSA-OAEP encryption for an RSA EK, keyEncipherment; ECDH for an ECC EK, keyAgreement.
 * These are the bits the TCG EK Credential Profile and swtpm's local CA set.
 */
function ekKeyUsageRefusal(ek: x509.X509Certificate, keyType: string | undefined): string | undefined {
  const ku = ek.getExtension(x509.KeyUsagesExtension);
  if (!ku) return undefined;
  const [bit, bitName] = keyType === 'rsa' ? [x509.KeyUsageFlags.keyEncipherment, 'keyEncipherment'] : [x509.KeyUsageFlags.keyAgreement, 'keyAgreement'];
  if ((ku.usages & bit) !== 0) return undefined;
  return `${describe(ek)} has a keyUsage without ${bitName}, which the credential wrapped to its ${keyType === 'rsa' ? 'RSA' : 'ECC'} key needs (RFC 5280 §4.2.1.3)`;
}

export function parseCaBundle(pem: string, what: string): x509.X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new ProvisionError('PROVISION_USAGE', `${what} holds no PEM certificate`);
  return blocks.map((b) => new x509.X509Certificate(b));
}

export async function verifyEkCertificate(der: Uint8Array, bundle: x509.X509Certificate[], now = new Date()): Promise<VerifiedEk> {
  let ek: x509.X509Certificate;
  try {
    ek = new x509.X509Certificate(Buffer.from(der));
  } catch (err) {
    fail(`keyd's EK certificate does not parse: ${(err as Error).message}`);
  }
  const chain: string[] = [ek.subject || '(empty subject)'];
  let current = ek;
  // Non-self-issued CA certificates between the issuer being looked for and the EK certificate.
  let intermediatesBelow = 0;
  for (let depth = 0; depth < MAX_CHAIN; depth++) {
    if (now < current.notBefore || now > current.notAfter) {
      fail(`"${current.subject}" is outside its validity period (${current.notBefore.toISOString()} – ${current.notAfter.toISOString()})`);
    }
    checkCriticalExtensions(current);
    const candidates = bundle.filter((c) => c.subject === current.issuer);
    let issuer: x509.X509Certificate | undefined;
    let refused: string | undefined;
    for (const c of candidates) {
      if (await current.verify({ publicKey: c.publicKey, signatureOnly: true }).catch(() => false)) {
        const why = notAnIssuer(c) ?? pathTooLong(c, intermediatesBelow);
        if (why === undefined) {
          issuer = c;
          break;
        }
        refused ??= `"${current.subject}" was signed by "${c.subject}" of the manufacturer CA bundle, which may not issue certificates: ${why}`;
      }
    }
    if (!issuer) {
      fail(
        refused ??
          (candidates.length > 0
            ? `"${current.subject}" names issuer "${current.issuer}" but no certificate of that name in the manufacturer CA bundle signed it`
            : `"${current.subject}" was issued by "${current.issuer}", which is not in the manufacturer CA bundle: this is not a TPM from a trusted manufacturer`),
      );
    }
    if (issuer.subject === issuer.issuer && (await issuer.verify({ publicKey: issuer.publicKey, signatureOnly: true }).catch(() => false))) {
      if (now < issuer.notBefore || now > issuer.notAfter) fail(`root "${issuer.subject}" is outside its validity period`);
      checkCriticalExtensions(issuer);
      chain.push(issuer.subject);
      const publicKey = createPublicKey({ key: Buffer.from(ek.publicKey.rawData), format: 'der', type: 'spki' });
      const usage = ekKeyUsageRefusal(ek, publicKey.asymmetricKeyType);
      if (usage !== undefined) fail(usage);
      return { publicKey, issuer: ek.issuer, serialNumber: ek.serialNumber, chain };
    }
    chain.push(issuer.subject);
    if (issuer.subject !== issuer.issuer) intermediatesBelow++;
    current = issuer;
  }
  fail(`chain longer than ${MAX_CHAIN}`);
}
