import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import { ProvisionError } from '../errors.js';

x509.cryptoProvider.set(webcrypto as never);

/**
 * Checks a TPM's EK certificate against the operator's bundle of TPM manufacturer CAs
 * (roots and intermediates, PEM): a chain of valid signatures, each certificate inside
 * its validity period, each issuer a CA certificate that may sign certificates (below)
 * and whose pathLenConstraint allows the intermediates under it, ending at a self-signed
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
      chain.push(issuer.subject);
      const publicKey = createPublicKey({ key: Buffer.from(ek.publicKey.rawData), format: 'der', type: 'spki' });
      return { publicKey, issuer: ek.issuer, serialNumber: ek.serialNumber, chain };
    }
    chain.push(issuer.subject);
    if (issuer.subject !== issuer.issuer) intermediatesBelow++;
    current = issuer;
  }
  fail(`chain longer than ${MAX_CHAIN}`);
}
