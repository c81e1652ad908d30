import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { errorCode, errorMessage, ProvisionError } from './errors.js';
import { isFingerprint } from './fingerprint.js';
import { defaultKnownKeydPath, lookupPin, pin } from './known-keyd.js';
import { parseHostPort } from './listener.js';
import { GENERATE_KEY_TYPES, type GenerateKeyType } from './protocol.js';
import { parsePemChain, RemoteAdminClient } from './remote-client.js';
import { attestKeyd } from './attestation/attest-keyd.js';
import { parseCaBundle } from './attestation/ek-certificate.js';
import { formatPolicy, readPolicy, writePolicy } from './attestation/policy.js';
import type * as x509 from '@peculiar/x509';

/**
 * `delegator admin --server HOST:PORT --cert op.pem --key op.key --ca keyd-ca.pem <op> …`:
 * the local admin commands over keyd's provisioning listener. Connection options come
 * before the operation (so `put … --key` can still name the key to install).
 */

export const REMOTE_USAGE = `Usage: delegator admin --server HOST:PORT --cert OP.pem --key OP.key --ca KEYD-CA.pem [options] <operation>

Connection options (before the operation):
  --server HOST:PORT        keyd's provisioning listener (keyd --provision-listen)
  --cert FILE, --key FILE   your operator certificate and key (issued by keyd's operator CA)
  --ca FILE                 CA that issued keyd's provisioning TLS certificate
  --servername NAME         name to check in keyd's certificate (default: HOST)
  --keyd-fingerprint F      expect keyd's provisioning key to be F (SHA256:…) instead of the pin
  --known-keyd FILE         pin file (default $DELEGATOR_KNOWN_KEYD or ~/.config/delegator/known_keyd)
  --timeout SECONDS         per-request timeout (default 30)
  --attestation-policy FILE attest keyd's TPM before trust, put and gen: the expected PCRs
                            (written by "attestation-policy record"); needs --ek-ca
  --ek-ca FILE              TPM manufacturer CA bundle (PEM, roots and intermediates) that
                            keyd's EK certificate must chain to

Operations:
  trust [--replace]                                  show keyd's provisioning key fingerprint and pin it
  put NAME[,NAME…] --key KEY.pem --chain CHAIN.pem [--passphrase-file F]
                                                     seal KEY to keyd (HPKE) and install it for NAMEs
  gen NAME --type TYPE --subject "CN=…" --csr OUT.csr   create a key inside keyd, write its CSR
                                                     (TYPE: ${GENERATE_KEY_TYPES.join(', ')})
  chain NAME CHAIN.pem                               set the certificate chain of NAME's key
  delete NAME                                        stop serving NAME
  list [--json]                                      keys: names, type, SKI, leaf not-after, added
  show NAME [--json]                                 one key
  audit [--limit N] [--since ISO-TIME] [--json]      keyd's audit log
  stats [--json]                                     signatures and refusals per client (kept across restarts)
  attestation-policy record --pcrs sha256:0+7        attest keyd (EK chain, AK, fresh quote) and write
                                                     its PCR values to --attestation-policy FILE
  attestation-policy show                            print --attestation-policy FILE (no connection)

Roles: "admin" may do everything, "auditor" only list, show, audit and stats.
`;

interface Parsed {
  global: Map<string, string | true>;
  op: string | undefined;
  positional: string[];
  options: Map<string, string | true>;
}

const GLOBAL_VALUE_OPTIONS = new Set(['--server', '--cert', '--key', '--ca', '--servername', '--keyd-fingerprint', '--known-keyd', '--timeout', '--attestation-policy', '--ek-ca']);
/** Operations that seal or create key material: with --attestation-policy, keyd is attested first. */
const ATTESTED_OPERATIONS = new Set(['trust', 'put', 'gen']);
const OP_FLAGS = new Set(['--json', '--replace']);

function parseArgs(argv: string[]): Parsed {
  const global = new Map<string, string | true>();
  const options = new Map<string, string | true>();
  const positional: string[] = [];
  let op: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      (op === undefined ? global : options).set('--help', true);
      continue;
    }
    if (op === undefined) {
      if (arg.startsWith('--')) {
        if (!GLOBAL_VALUE_OPTIONS.has(arg)) throw new ProvisionError('PROVISION_USAGE', `unknown option ${arg} (see --help)`);
        const value = argv[++i];
        if (value === undefined) throw new ProvisionError('PROVISION_USAGE', `${arg} needs a value`);
        global.set(arg, value);
      } else {
        op = arg;
      }
      continue;
    }
    if (arg.startsWith('--')) {
      if (OP_FLAGS.has(arg)) {
        options.set(arg, true);
        continue;
      }
      const value = argv[++i];
      if (value === undefined) throw new ProvisionError('PROVISION_USAGE', `${arg} needs a value`);
      options.set(arg, value);
    } else {
      positional.push(arg);
    }
  }
  return { global, op, positional, options };
}

function required(map: Map<string, string | true>, name: string, why: string): string {
  const value = map.get(name);
  if (typeof value !== 'string') throw new ProvisionError('PROVISION_USAGE', `${name} is required ${why}`);
  return value;
}

function allowOnly(parsed: Parsed, allowed: string[], positionals: number): void {
  for (const key of parsed.options.keys()) {
    if (!allowed.includes(key)) throw new ProvisionError('PROVISION_USAGE', `${parsed.op}: unknown option ${key}`);
  }
  if (parsed.positional.length !== positionals) {
    throw new ProvisionError('PROVISION_USAGE', `${parsed.op}: expected ${positionals} argument(s), got ${parsed.positional.length} (see --help)`);
  }
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new ProvisionError('PROVISION_USAGE', `cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
  }
}

async function readPrivateKey(file: string, passphraseFile: string | undefined): Promise<KeyObject> {
  const pem = await readText(file, 'key file');
  const passphrase = passphraseFile ? (await readText(passphraseFile, 'passphrase file')).replace(/\r?\n$/, '') : undefined;
  try {
    const key = createPrivateKey(passphrase !== undefined ? { key: pem, passphrase } : { key: pem });
    return key;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_MISSING_PASSPHRASE') throw new ProvisionError('PROVISION_USAGE', `${file} is encrypted: give --passphrase-file`);
    throw new ProvisionError('PROVISION_USAGE', `${file} is not a usable private key (${code ?? errorMessage(err)})`);
  }
}

/** Runs one remote admin command; returns the exit code (0 ok, 1 refused or failed, 2 usage). */
export async function runRemoteAdmin(
  argv: string[],
  io: { out: (s: string) => void; err: (s: string) => void } = {
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
  },
): Promise<number> {
  let client: RemoteAdminClient | undefined;
  try {
    const parsed = parseArgs(argv);
    if (parsed.global.has('--help') || parsed.options.has('--help') || parsed.op === undefined) {
      io.out(REMOTE_USAGE);
      return parsed.op === undefined && !parsed.global.has('--help') ? 2 : 0;
    }
    const policyPath = parsed.global.get('--attestation-policy') as string | undefined;
    if (parsed.op === 'attestation-policy' && parsed.positional[0] === 'show') {
      allowOnly(parsed, [], 1);
      if (!policyPath) throw new ProvisionError('PROVISION_USAGE', 'attestation-policy show needs --attestation-policy FILE');
      io.out(formatPolicy(await readPolicy(policyPath), policyPath));
      return 0;
    }
    const recording = parsed.op === 'attestation-policy';
    if (recording && parsed.positional[0] !== 'record') throw new ProvisionError('PROVISION_USAGE', 'attestation-policy: record or show');
    let manufacturerCas: x509.X509Certificate[] | undefined;
    const ekCaFile = parsed.global.get('--ek-ca') as string | undefined;
    if (policyPath !== undefined || recording) {
      if (!ekCaFile) throw new ProvisionError('PROVISION_USAGE', 'attestation needs --ek-ca FILE (the TPM manufacturer CA bundle)');
      if (!policyPath) throw new ProvisionError('PROVISION_USAGE', 'attestation-policy record needs --attestation-policy FILE (where to write it)');
      manufacturerCas = parseCaBundle(await readText(ekCaFile, 'EK CA bundle'), ekCaFile);
    }
    const policy = policyPath !== undefined && !recording ? await readPolicy(policyPath) : undefined;
    let recordPcrs: string | undefined;
    if (recording) {
      allowOnly(parsed, ['--pcrs'], 1);
      recordPcrs = required(parsed.options, '--pcrs', 'for attestation-policy record (e.g. sha256:0+7)');
      if (!/^(sha1|sha256|sha384|sha512):\d{1,2}(\+\d{1,2})*$/.test(recordPcrs)) {
        throw new ProvisionError('PROVISION_USAGE', `--pcrs must look like sha256:0+7, got "${recordPcrs}"`);
      }
    }
    const server = required(parsed.global, '--server', 'for remote admin');
    const { host, port } = parseHostPort(server);
    const why = 'to authenticate to keyd\'s provisioning listener';
    const certFile = required(parsed.global, '--cert', why);
    const keyFile = required(parsed.global, '--key', why);
    const caFile = required(parsed.global, '--ca', 'to verify keyd\'s TLS certificate');
    const expected = parsed.global.get('--keyd-fingerprint') as string | undefined;
    if (expected !== undefined && !isFingerprint(expected)) {
      throw new ProvisionError('PROVISION_USAGE', `--keyd-fingerprint must look like SHA256:<43 base64 characters>, got "${expected}"`);
    }
    const knownKeyd = (parsed.global.get('--known-keyd') as string | undefined) ?? defaultKnownKeydPath();
    const timeout = parsed.global.get('--timeout');
    const servername = parsed.global.get('--servername');
    const timeoutMs = typeof timeout === 'string' ? Number(timeout) * 1000 : undefined;
    if (timeoutMs !== undefined && !(timeoutMs > 0)) throw new ProvisionError('PROVISION_USAGE', '--timeout must be a positive number of seconds');

    // Usage errors of the operation are found before connecting.
    const run = recording ? async () => {} : prepareOperation(parsed);

    client = await RemoteAdminClient.connect({
      host,
      port,
      cert: await readText(certFile, 'operator certificate'),
      key: await readText(keyFile, 'operator key'),
      ca: await readText(caFile, 'keyd CA'),
      ...(typeof servername === 'string' ? { servername } : {}),
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    });

    if (recording) {
      const result = await attestKeyd(client, { manufacturerCas: manufacturerCas!, policy: undefined, pcrs: recordPcrs! });
      await writePolicy(policyPath!, {
        format: 1,
        pcrs: result.pcrs,
        values: result.pcrValues,
        recordedFrom: server,
        recordedAt: new Date().toISOString(),
        ekCertificate: { issuer: result.ekIssuer, serialNumber: result.ekSerialNumber },
      });
      io.out(`keyd at ${server}: EK certificate chains to ${result.ekChain.at(-1)}; attestation key activated; quote fresh and bound to provisioning key ${client.fingerprint}\n`);
      io.out(`recorded PCRs ${result.pcrs} in ${policyPath}: only record from a keyd you know is in a good state\n`);
      return 0;
    }
    if (policy && ATTESTED_OPERATIONS.has(parsed.op)) {
      // Before anything is pinned, sealed or generated: any failure ends the command here.
      const result = await attestKeyd(client, { manufacturerCas: manufacturerCas!, policy, pcrs: policy.pcrs });
      io.out(`keyd at ${server} attested: EK certificate chains to ${result.ekChain.at(-1)}, PCRs ${result.pcrs} match ${policyPath}, quote bound to provisioning key ${client.fingerprint}\n`);
    }
    const pinned = await lookupPin(knownKeyd, server);
    if (parsed.op === 'trust') {
      const replace = parsed.options.has('--replace');
      if (expected !== undefined) await client.verifyFingerprint(expected, '--keyd-fingerprint');
      else if (pinned !== undefined && !replace) await client.verifyFingerprint(pinned, knownKeyd);
      const outcome = await pin(knownKeyd, server, client.fingerprint, replace);
      io.out(
        `keyd at ${server}: provisioning key ${client.fingerprint} (X25519)\n` +
          `you are "${client.welcome.operator}", role ${client.welcome.role}\n` +
          (outcome === 'unchanged' ? `already pinned in ${knownKeyd}\n` : `pinned in ${knownKeyd} (${outcome})\n`) +
          (expected === undefined && outcome !== 'unchanged'
            ? 'check this fingerprint against the one keyd logged at start ("provisioning key SHA256:…")\n'
            : ''),
      );
      return 0;
    }
    if (expected !== undefined) await client.verifyFingerprint(expected, '--keyd-fingerprint');
    else if (pinned !== undefined) await client.verifyFingerprint(pinned, knownKeyd);
    else {
      throw new ProvisionError(
        'PROVISION_KEYD_NOT_TRUSTED',
        `keyd at ${server} is not pinned in ${knownKeyd}: run "delegator admin --server ${server} … trust" first, or give --keyd-fingerprint`,
      );
    }
    await run(client, io);
    return 0;
  } catch (err) {
    const code = errorCode(err);
    io.err(`delegator admin: ${errorMessage(err)} [${code}]\n`);
    return code === 'PROVISION_USAGE' ? 2 : 1;
  } finally {
    client?.close();
  }
}

type Io = { out: (s: string) => void; err: (s: string) => void };
type Operation = (client: RemoteAdminClient, io: Io) => Promise<void>;

/** Checks the operation's arguments and returns what runs it once connected and keyd is verified. */
function prepareOperation(parsed: Parsed): Operation {
  const json = parsed.options.has('--json');
  switch (parsed.op) {
    case 'trust':
      allowOnly(parsed, ['--replace'], 0);
      return async () => {};
    case 'put': {
      allowOnly(parsed, ['--key', '--chain', '--passphrase-file'], 1);
      const names = parsed.positional[0]!.split(',').map((n) => n.trim()).filter((n) => n !== '');
      const keyFile = required(parsed.options, '--key', 'for put (the private key to install)');
      const chainFile = required(parsed.options, '--chain', 'for put (the certificate chain, leaf first)');
      const passphraseFile = parsed.options.get('--passphrase-file') as string | undefined;
      return async (client, io) => {
        const privateKey = await readPrivateKey(keyFile, passphraseFile);
        const chain = parsePemChain(await readText(chainFile, 'chain file'), chainFile);
        const info = (await client.put(names, privateKey, chain)) as KeyInfoLike;
        io.out(`installed ${info.keyType ?? 'key'} ${info.keyRef ?? ''} for ${(info.names ?? names).join(', ')} (sealed to keyd ${client.fingerprint})\n`);
        io.out(`the key file ${keyFile} can now be deleted\n`);
      };
    }
    case 'gen': {
      allowOnly(parsed, ['--type', '--subject', '--csr'], 1);
      const name = parsed.positional[0]!;
      const type = required(parsed.options, '--type', `for gen (${GENERATE_KEY_TYPES.join(', ')})`);
      if (!GENERATE_KEY_TYPES.includes(type as GenerateKeyType)) {
        throw new ProvisionError('PROVISION_USAGE', `gen: --type must be one of ${GENERATE_KEY_TYPES.join(', ')}`);
      }
      const subject = required(parsed.options, '--subject', 'for gen (e.g. "CN=www.example.com")');
      const csrFile = required(parsed.options, '--csr', 'for gen (where to write the CSR)');
      return async (client, io) => {
        const { info, csrPem } = (await client.generate(name, type as GenerateKeyType, subject)) as { info: KeyInfoLike; csrPem: string };
        await writeFile(csrFile, csrPem);
        io.out(`generated ${info.keyType ?? type} key ${info.keyRef ?? ''} for ${name} inside keyd; CSR written to ${csrFile}\n`);
        io.out(`after your CA signs it: delegator admin … chain ${name} CHAIN.pem\n`);
      };
    }
    case 'chain': {
      allowOnly(parsed, [], 2);
      const [name, chainFile] = parsed.positional as [string, string];
      return async (client, io) => {
        const chain = parsePemChain(await readText(chainFile, 'chain file'), chainFile);
        const info = (await client.setChain(name, chain)) as KeyInfoLike;
        io.out(`chain of ${(info.names ?? [name]).join(', ')} set (leaf valid until ${info.notAfter ?? '?'})\n`);
      };
    }
    case 'delete': {
      allowOnly(parsed, [], 1);
      const name = parsed.positional[0]!;
      return async (client, io) => {
        await client.delete(name);
        io.out(`deleted ${name}\n`);
      };
    }
    case 'list':
      allowOnly(parsed, ['--json'], 0);
      return async (client, io) => {
        const keys = (await client.list()) as KeyInfoLike[];
        io.out(json ? JSON.stringify(keys, null, 2) + '\n' : formatKeyTable(keys));
      };
    case 'show': {
      allowOnly(parsed, ['--json'], 1);
      const name = parsed.positional[0]!;
      return async (client, io) => {
        const info = (await client.show(name)) as KeyInfoLike;
        io.out(json ? JSON.stringify(info, null, 2) + '\n' : formatKey(info));
      };
    }
    case 'audit': {
      allowOnly(parsed, ['--json', '--limit', '--since'], 0);
      const limit = parsed.options.get('--limit');
      const since = parsed.options.get('--since');
      if (limit !== undefined && !(Number(limit) > 0)) throw new ProvisionError('PROVISION_USAGE', 'audit: --limit must be a positive number');
      return async (client, io) => {
        const entries = (await client.audit({
          ...(typeof limit === 'string' ? { limit: Number(limit) } : {}),
          ...(typeof since === 'string' ? { since } : {}),
        })) as AuditLike[];
        io.out(json ? JSON.stringify(entries, null, 2) + '\n' : entries.map(formatAudit).join(''));
      };
    }
    case 'stats':
      allowOnly(parsed, ['--json'], 0);
      return async (client, io) => {
        const stats = (await client.stats()) as Record<string, { signatures: number; refusals: number }>;
        if (json) return io.out(JSON.stringify(stats, null, 2) + '\n');
        const rows = Object.entries(stats).map(([edge, c]) => `${edge}  signatures ${c.signatures}  refusals ${c.refusals}\n`);
        io.out(rows.length > 0 ? rows.join('') : 'no signing clients recorded\n');
      };
    default:
      throw new ProvisionError('PROVISION_USAGE', `unknown operation "${parsed.op}" (see --help)`);
  }
}

interface KeyInfoLike {
  keyRef?: string;
  names?: string[];
  keyType?: string;
  ski?: string;
  notAfter?: string | null;
  addedAt?: string;
  subject?: string;
  hasChain?: boolean;
}

interface AuditLike {
  time?: string;
  op?: string;
  caller?: { kind?: string; id?: string };
  names?: string[];
  ok?: boolean;
  code?: string;
  message?: string;
}

function formatKeyTable(keys: KeyInfoLike[]): string {
  if (keys.length === 0) return 'no keys\n';
  const rows = [['NAMES', 'TYPE', 'SKI', 'NOT AFTER', 'ADDED']];
  for (const k of keys) {
    rows.push([(k.names ?? []).join(','), k.keyType ?? '', k.ski ?? '', k.notAfter ?? (k.hasChain === false ? '(no chain)' : ''), k.addedAt ?? '']);
  }
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)));
  return rows.map((r) => r.map((cell, col) => cell.padEnd(widths[col]!)).join('  ').trimEnd() + '\n').join('');
}

function formatKey(k: KeyInfoLike): string {
  return Object.entries(k)
    .map(([field, value]) => `${field}: ${Array.isArray(value) ? value.join(', ') : String(value)}\n`)
    .join('');
}

function formatAudit(e: AuditLike): string {
  const who = e.caller ? `${e.caller.kind}:${e.caller.id}` : '?';
  const outcome = e.ok ? 'ok' : `REFUSED ${e.code ?? ''} ${e.message ?? ''}`.trimEnd();
  return `${e.time ?? ''} ${e.op ?? ''} ${who}${e.names ? ' ' + e.names.join(',') : ''} ${outcome}\n`;
}
