import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type * as x509 from '@peculiar/x509';
import { GENERATE_REQUEST_TIMEOUT_MS, type AdminTransport, type TokenOption } from '../keyd/admin-client.js';
import type { AuditQuery, AuditReply } from '../keyd/audit.js';
import type { KeyInfo } from '../keyd/keyring.js';
import type { GenerateKeyType } from '../keyd/pki.js';
import { MAX_TIMER_MS } from '../keyd/limits.js';
import { parseHostPort } from '../lib/host-port.js';
import { errorMessage, ProvisionError } from './errors.js';
import { isFingerprint } from './fingerprint.js';
import { defaultKnownKeydPath, lookupPin, pin } from './known-keyd.js';
import { RemoteAdminClient } from './remote-client.js';
import { attestKeyd } from './attestation/attest-keyd.js';
import { parseCaBundle } from './attestation/ek-certificate.js';
import { formatPolicy, readPolicy, writePolicy, type AttestationPolicy } from './attestation/policy.js';

/**
 * The remote side of `delegator admin --server HOST:PORT …` (src/cli/admin.ts parses and
 * formats every operation, local or remote): the connection options, connecting with the
 * operator certificate, attesting keyd when a policy says so, checking keyd's provisioning
 * key against the pin, and `RemoteAdminTransport`, the same AdminTransport the local admin
 * socket gives. Plus the two operations only a remote keyd has: `trust` and
 * `attestation-policy`.
 */

export const REMOTE_OPTIONS_USAGE = `Remote administration (connection options, before the operation):
  --server HOST:PORT        keyd's provisioning listener (keyd --provision-listen)
  --cert FILE, --key FILE   your operator certificate and key (issued by keyd's operator CA)
  --ca FILE                 CA that issued keyd's provisioning TLS certificate
  --servername NAME         name to check in keyd's certificate (default: HOST)
  --keyd-fingerprint F      expect keyd's provisioning key to be F (SHA256:…) instead of the pin
  --known-keyd FILE         pin file (default $DELEGATOR_KNOWN_KEYD or ~/.config/delegator/known_keyd)
  --timeout SECONDS         per-request timeout (default 30, and 660 for gen's request; at most 2147483)
  --attestation-policy FILE attest keyd's TPM before trust, put and gen: the expected PCRs
                            (written by "attestation-policy record"); needs --ek-ca
  --ek-ca FILE              TPM manufacturer CA bundle (PEM, roots and intermediates) that
                            keyd's EK certificate must chain to
  Remote only: trust [--replace] (show keyd's provisioning key fingerprint and pin it);
  attestation-policy record --pcrs sha256:0+7 | show. Roles: "admin" may do everything,
  "auditor" only list, show, audit and stats (docs/PROVISIONING.md).
`;

/** The connection options `delegator admin` accepts before the operation in remote mode. */
export const REMOTE_OPTION_NAMES: readonly string[] = ['--server', '--cert', '--key', '--ca', '--servername', '--keyd-fingerprint', '--known-keyd', '--timeout', '--attestation-policy', '--ek-ca'];

/** Operations that seal or create key material: with --attestation-policy, keyd is attested first. */
const ATTESTED_OPERATIONS = new Set(['trust', 'put', 'gen']);

export interface RemoteOptions {
  server: string;
  host: string;
  port: number;
  certFile: string;
  keyFile: string;
  caFile: string;
  servername?: string;
  expectedFingerprint?: string;
  knownKeyd: string;
  timeoutMs?: number;
  policyPath?: string;
  ekCaFile?: string;
}

function required(options: ReadonlyMap<string, string>, name: string, why: string): string {
  const value = options.get(name);
  if (value === undefined) throw new ProvisionError('PROVISION_USAGE', `${name} is required ${why}`);
  return value;
}

/** Checks the connection options (usage errors before anything is read or connected). */
export function remoteOptions(options: ReadonlyMap<string, string>): RemoteOptions {
  const server = required(options, '--server', 'for remote admin');
  let address;
  try {
    address = parseHostPort(server, '--server');
  } catch (err) {
    throw new ProvisionError('PROVISION_USAGE', errorMessage(err));
  }
  const why = "to authenticate to keyd's provisioning listener";
  const expected = options.get('--keyd-fingerprint');
  if (expected !== undefined && !isFingerprint(expected)) {
    throw new ProvisionError('PROVISION_USAGE', `--keyd-fingerprint must look like SHA256:<43 base64 characters>, got "${expected}"`);
  }
  const timeout = options.get('--timeout');
  const timeoutMs = timeout === undefined ? undefined : Number(timeout) * 1000;
  // Node runs a timer longer than MAX_TIMER_MS after 1 ms: every request would time out at once.
  if (timeoutMs !== undefined && !(timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS)) {
    throw new ProvisionError('PROVISION_USAGE', `--timeout must be a positive number of seconds, at most ${Math.floor(MAX_TIMER_MS / 1000)}`);
  }
  return {
    server,
    host: address.host,
    port: address.port,
    certFile: required(options, '--cert', why),
    keyFile: required(options, '--key', why),
    caFile: required(options, '--ca', "to verify keyd's TLS certificate"),
    ...(options.has('--servername') ? { servername: options.get('--servername')! } : {}),
    ...(expected !== undefined ? { expectedFingerprint: expected } : {}),
    knownKeyd: options.get('--known-keyd') ?? defaultKnownKeydPath(),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(options.has('--attestation-policy') ? { policyPath: options.get('--attestation-policy')! } : {}),
    ...(options.has('--ek-ca') ? { ekCaFile: options.get('--ek-ca')! } : {}),
  };
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new ProvisionError('PROVISION_USAGE', `cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
  }
}

async function manufacturerCas(opts: RemoteOptions): Promise<x509.X509Certificate[]> {
  if (!opts.ekCaFile) throw new ProvisionError('PROVISION_USAGE', 'attestation needs --ek-ca FILE (the TPM manufacturer CA bundle)');
  return parseCaBundle(await readText(opts.ekCaFile, 'EK CA bundle'), opts.ekCaFile);
}

async function connectClient(opts: RemoteOptions): Promise<RemoteAdminClient> {
  return RemoteAdminClient.connect({
    host: opts.host,
    port: opts.port,
    cert: await readText(opts.certFile, 'operator certificate'),
    key: await readText(opts.keyFile, 'operator key'),
    ca: await readText(opts.caFile, 'keyd CA'),
    ...(opts.servername !== undefined ? { servername: opts.servername } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  });
}

/** With --attestation-policy, an operation that seals or creates a key first attests keyd (any failure ends the command). */
async function attestIfRequired(client: RemoteAdminClient, opts: RemoteOptions, operation: string, io: { out(s: string): void }): Promise<void> {
  if (opts.policyPath === undefined || !ATTESTED_OPERATIONS.has(operation)) return;
  const cas = await manufacturerCas(opts);
  const policy: AttestationPolicy = await readPolicy(opts.policyPath);
  const result = await attestKeyd(client, { manufacturerCas: cas, policy, pcrs: policy.pcrs });
  io.out(`keyd at ${opts.server} attested: EK certificate chains to ${result.ekChain.at(-1)}, PCRs ${result.pcrs} match ${opts.policyPath}, quote bound to provisioning key ${client.fingerprint}\n`);
}

/**
 * Connects for one admin operation: TLS with the operator certificate, attestation when the
 * policy asks for it, then keyd's provisioning key checked against --keyd-fingerprint or the
 * pin — a keyd nobody pinned gets no operation at all.
 */
export async function connectRemoteAdmin(opts: RemoteOptions, operation: string, io: { out(s: string): void }): Promise<RemoteAdminTransport> {
  if (opts.policyPath !== undefined && ATTESTED_OPERATIONS.has(operation)) await manufacturerCas(opts); // usage errors before connecting
  const client = await connectClient(opts);
  try {
    await attestIfRequired(client, opts, operation, io);
    const pinned = await lookupPin(opts.knownKeyd, opts.server);
    if (opts.expectedFingerprint !== undefined) await client.verifyFingerprint(opts.expectedFingerprint, '--keyd-fingerprint');
    else if (pinned !== undefined) await client.verifyFingerprint(pinned, opts.knownKeyd);
    else {
      throw new ProvisionError(
        'PROVISION_KEYD_NOT_TRUSTED',
        `keyd at ${opts.server} is not pinned in ${opts.knownKeyd}: run "delegator admin --server ${opts.server} … trust" first, or give --keyd-fingerprint`,
      );
    }
    // Without --timeout a generation waits longer than the connection (admin-client.ts GENERATE_REQUEST_TIMEOUT_MS).
    return new RemoteAdminTransport(client, { generateTimeoutMs: opts.timeoutMs ?? GENERATE_REQUEST_TIMEOUT_MS });
  } catch (err) {
    client.close();
    throw err;
  }
}

/** `trust [--replace]`: shows keyd's provisioning key and pins it (checked against an existing pin unless --replace). */
export async function trustKeyd(opts: RemoteOptions, replace: boolean, io: { out(s: string): void }): Promise<void> {
  if (opts.policyPath !== undefined) await manufacturerCas(opts);
  const client = await connectClient(opts);
  try {
    await attestIfRequired(client, opts, 'trust', io);
    const pinned = await lookupPin(opts.knownKeyd, opts.server);
    if (opts.expectedFingerprint !== undefined) await client.verifyFingerprint(opts.expectedFingerprint, '--keyd-fingerprint');
    else if (pinned !== undefined && !replace) await client.verifyFingerprint(pinned, opts.knownKeyd);
    const outcome = await pin(opts.knownKeyd, opts.server, client.fingerprint, replace);
    io.out(
      `keyd at ${opts.server}: provisioning key ${client.fingerprint} (X25519)\n` +
        `you are "${client.welcome.operator}", role ${client.welcome.role}\n` +
        (outcome === 'unchanged' ? `already pinned in ${opts.knownKeyd}\n` : `pinned in ${opts.knownKeyd} (${outcome})\n`) +
        (opts.expectedFingerprint === undefined && outcome !== 'unchanged'
          ? 'check this fingerprint against the one keyd logged at start ("provisioning key SHA256:…")\n'
          : ''),
    );
  } finally {
    client.close();
  }
}

/** `attestation-policy show` (no connection). */
export async function showAttestationPolicy(policyPath: string | undefined, io: { out(s: string): void }): Promise<void> {
  if (!policyPath) throw new ProvisionError('PROVISION_USAGE', 'attestation-policy show needs --attestation-policy FILE');
  io.out(formatPolicy(await readPolicy(policyPath), policyPath));
}

/** `attestation-policy record --pcrs …`: attests keyd and writes what it measured as the policy. */
export async function recordAttestationPolicy(opts: RemoteOptions, pcrs: string, io: { out(s: string): void }): Promise<void> {
  if (!/^(sha1|sha256|sha384|sha512):\d{1,2}(\+\d{1,2})*$/.test(pcrs)) {
    throw new ProvisionError('PROVISION_USAGE', `--pcrs must look like sha256:0+7, got "${pcrs}"`);
  }
  if (!opts.policyPath) throw new ProvisionError('PROVISION_USAGE', 'attestation-policy record needs --attestation-policy FILE (where to write it)');
  const cas = await manufacturerCas(opts);
  const client = await connectClient(opts);
  try {
    const result = await attestKeyd(client, { manufacturerCas: cas, policy: undefined, pcrs });
    await writePolicy(opts.policyPath, {
      format: 1,
      pcrs: result.pcrs,
      values: result.pcrValues,
      recordedFrom: opts.server,
      recordedAt: new Date().toISOString(),
      ekCertificate: { issuer: result.ekIssuer, serialNumber: result.ekSerialNumber },
    });
    io.out(`keyd at ${opts.server}: EK certificate chains to ${result.ekChain.at(-1)}; attestation key activated; quote fresh and bound to provisioning key ${client.fingerprint}\n`);
    io.out(`recorded PCRs ${result.pcrs} in ${opts.policyPath}: only record from a keyd you know is in a good state\n`);
  } finally {
    client.close();
  }
}

/** AdminTransport over the provisioning channel: the key is HPKE-sealed to keyd's pinned provisioning key. */
export class RemoteAdminTransport implements AdminTransport {
  /** How long `generate` waits for keyd's answer; other requests wait the connection's timeout. */
  readonly generateTimeoutMs: number | undefined;

  constructor(
    readonly client: RemoteAdminClient,
    opts: { generateTimeoutMs?: number } = {},
  ) {
    this.generateTimeoutMs = opts.generateTimeoutMs;
  }

  async put(names: string[], privateKey: KeyObject, chainDer: Uint8Array[], opts: TokenOption = {}): Promise<KeyInfo> {
    if (opts.token !== undefined) throw new ProvisionError('PROVISION_USAGE', '--token is for the local admin socket; over --server the key is sealed to keyd');
    return (await this.client.put(names, privateKey, chainDer)) as KeyInfo;
  }

  async generate(name: string, keyType: GenerateKeyType, subject: string, opts: TokenOption = {}): Promise<{ info: KeyInfo; csrPem: string }> {
    if (opts.token !== undefined) throw new ProvisionError('PROVISION_USAGE', '--token is for the local admin socket');
    return (await this.client.generate(name, keyType as never, subject, this.generateTimeoutMs)) as { info: KeyInfo; csrPem: string };
  }

  async setChain(name: string, chainDer: Uint8Array[]): Promise<KeyInfo> {
    return (await this.client.setChain(name, chainDer)) as KeyInfo;
  }

  async delete(name: string): Promise<void> {
    await this.client.delete(name);
  }

  async list(): Promise<KeyInfo[]> {
    return (await this.client.list()) as KeyInfo[];
  }

  async show(name: string): Promise<KeyInfo> {
    return (await this.client.show(name)) as KeyInfo;
  }

  async audit(query: AuditQuery = {}): Promise<AuditReply> {
    // The newest entries that fit one frame, and how many older ones were left out (docs/PROVISIONING.md).
    return this.client.auditReply(query);
  }

  async stats(): Promise<Record<string, { signatures: number; refusals: number; keys?: Record<string, { signatures: number; refusals: number }> }>> {
    return (await this.client.stats()) as Record<string, { signatures: number; refusals: number }>;
  }

  close(): void {
    this.client.close();
  }
}
