/**
 * `delegator admin` — key administration, locally over keyd's admin unix socket or, with
 * `--server HOST:PORT`, remotely over the provisioning channel. One parser and one set of
 * formatters for both: each operation is one entry of OPERATIONS that checks its arguments
 * (prepare) and then runs over an AdminTransport, whichever carries it
 * (LocalAdminTransport, or RemoteAdminTransport from src/provision/remote-admin.ts).
 * A new operation is one more entry.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { DEFAULT_ADMIN_TIMEOUT_MS, GENERATE_REQUEST_TIMEOUT_MS, LocalAdminTransport, type AdminTransport } from '../keyd/admin-client.js';
import { KeydError } from '../keyd/errors.js';
import { readChainFile, readPrivateKeyFile } from '../keyd/key-input.js';
import type { KeyInfo } from '../keyd/keyring.js';
import { GENERATE_KEY_TYPES, type GenerateKeyType } from '../keyd/pki.js';
import { encodeKeyReferencePem, keyReferenceFor } from '../keyd/key-reference.js';
import {
  connectRemoteAdmin,
  recordAttestationPolicy,
  REMOTE_OPTION_NAMES,
  REMOTE_OPTIONS_USAGE,
  remoteOptions,
  showAttestationPolicy,
  trustKeyd,
} from '../provision/remote-admin.js';
import { MAX_TIMER_MS } from '../keyd/limits.js';
import { DEFAULT_ADMIN_SOCKET, DEFAULT_SOCKET } from './keyd.js';

/** Node runs a timer longer than MAX_TIMER_MS after 1 ms: "--timeout 3000000" would time out at once. */
const TIMEOUT_USAGE = `--timeout must be a positive number of seconds, at most ${Math.floor(MAX_TIMER_MS / 1000)}`;

export const summary = 'install, generate, list and delete keys in keyd (local admin socket or --server)';

const USAGE = `Usage: delegator admin [--socket PATH] <operation> [arguments]
       delegator admin --server HOST:PORT --cert OP.pem --key OP.key --ca KEYD-CA.pem [options] <operation> [arguments]

Operations:
  put NAME[,NAME…] --key KEY.pem --chain CHAIN.pem [--passphrase-file FILE] [--token URI]
        install a private key and its certificate chain (leaf first) for the names;
        KEY may be PKCS#8, SEC1 or PKCS#1 PEM, or encrypted PKCS#8 (passphrase asked
        on a terminal, or read from --passphrase-file); with --token the key goes into
        that PKCS#11 token (non-extractable) and keyd keeps only a reference
  gen NAME --type TYPE --subject "CN=…" --csr OUT.csr [--token URI]
        create a key inside keyd (it never leaves) and write a CSR for it; with --token
        the key pair is generated inside that PKCS#11 token and never leaves it;
        TYPE: ${GENERATE_KEY_TYPES.join('|')}
        URI: a token label or pkcs11:token=LABEL[;object=LABEL] (RFC 7512), configured
        in keyd's config "pkcs11" (docs/KEYD.md)
  chain NAME CHAIN.pem       set the certificate chain of NAME's key (e.g. after gen)
  delete NAME                stop serving NAME (the key is deleted with its last name)
  list [--json]              names, key type, SKI, leaf not-after, added
  show NAME [--json]         one key
  audit [--limit N] [--since ISO-TIME] [--json]   the audit log
  stats [--json]             signatures and refusals per client and key (kept across restarts)
  export-ref NAME --out FILE [--keyd-socket PATH]
                             write a DELEGATOR KEY REFERENCE file for NAME's key: what an
                             unmodified OpenSSL server loads as its "key file" through the
                             OpenSSL provider (docs/OPENSSL-PROVIDER.md); no private part;
                             PATH: keyd's signing socket the server reaches (default ${DEFAULT_SOCKET})

Options:
  --socket PATH    keyd's admin socket (default $KEYD_ADMIN_SOCKET or ${DEFAULT_ADMIN_SOCKET})
  --timeout SEC    per-request timeout (default 60 locally, 30 remotely, and 660 for gen,
                   longer than keyd's longest wait for a token's key generation; at most 2147483)
  -h, --help       this text

${REMOTE_OPTIONS_USAGE}
Exit codes: 0 done, 1 refused or failed (one line on stderr with the reason and its code), 2 usage.
`;

export interface Io {
  out(text: string): void;
  err(text: string): void;
  /** Asks for a passphrase (no echo); undefined when there is no terminal. */
  askPassphrase?(prompt: string): Promise<string | undefined>;
}

const processIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  askPassphrase: promptHidden,
};

class UsageError extends Error {}

export async function main(
  argv: string[],
  io: Io = processIo,
  connect: (socket: string, timeoutMs: number) => Promise<AdminTransport> = LocalAdminTransport.connect,
): Promise<number> {
  if (io === processIo) {
    // `delegator admin list | head -1`: the reader went away; what is left to print is
    // unwanted, so stop quietly instead of dying on an unhandled EPIPE.
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
  }
  let transport: AdminTransport | undefined;
  try {
    const { options, op, rest } = parseGlobal(argv);
    if (options.has('--help') || rest.includes('--help') || rest.includes('-h')) {
      io.out(USAGE);
      return 0;
    }
    if (!op) throw new UsageError('an operation is needed');
    const entry = OPERATIONS[op];
    if (!entry) throw new UsageError(`unknown operation "${op}"`);
    const remote = options.has('--server');
    if ('remote' in entry) return await entry.remote(options, rest, io).then(() => 0);
    const local = [...options.keys()].filter((o) => REMOTE_OPTION_NAMES.includes(o) && o !== '--timeout');
    if (!remote && local.length) throw new UsageError(`${local.join(', ')} only with --server HOST:PORT`);
    if (remote && options.has('--socket')) throw new UsageError('--socket and --server exclude each other');
    const remoteOpts = remote ? remoteOptions(options) : undefined; // usage errors before reading files
    const run = await entry.prepare(rest, io);
    if (remoteOpts) transport = await connectRemoteAdmin(remoteOpts, op, io);
    else {
      // A key generation waits longer than keyd's own timeout for it, so that keyd's answer arrives.
      const timeoutMs = options.has('--timeout') ? Number(options.get('--timeout')) * 1000 : op === 'gen' ? GENERATE_REQUEST_TIMEOUT_MS : DEFAULT_ADMIN_TIMEOUT_MS;
      if (!(timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS)) throw new UsageError(TIMEOUT_USAGE);
      transport = await connect(options.get('--socket') ?? (process.env.KEYD_ADMIN_SOCKET || DEFAULT_ADMIN_SOCKET), timeoutMs);
    }
    await run(transport, io);
    return 0;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (err instanceof UsageError || code === 'PROVISION_USAGE' || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      io.err(`delegator admin: ${(err as Error).message}${code === 'PROVISION_USAGE' ? ` [${code}]` : ''}\n\n${USAGE}`);
      return 2;
    }
    io.err(`delegator admin: ${(err as Error).message}${typeof code === 'string' ? ` [${code}]` : ''}\n`);
    return 1;
  } finally {
    transport?.close();
  }
}

const LOCAL_OPTION_NAMES: readonly string[] = ['--socket', '--timeout'];

/** The options before the operation (local: --socket, --timeout; remote: the connection options), then the operation. */
function parseGlobal(argv: string[]): { options: Map<string, string>; op: string | undefined; rest: string[] } {
  const options = new Map<string, string>();
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      options.set('--help', '');
      continue;
    }
    if (!arg.startsWith('-')) break;
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (!LOCAL_OPTION_NAMES.includes(name) && !REMOTE_OPTION_NAMES.includes(name)) throw new UsageError(`unknown option ${name}`);
    options.set(name, eq > 0 ? arg.slice(eq + 1) : value(argv, ++i, name));
  }
  return { options, op: argv[i], rest: argv.slice(i + 1) };
}

function tokenOption(token: unknown): { token?: string } {
  if (token === undefined) return {};
  if (typeof token !== 'string' || token.length === 0) throw new UsageError('--token needs a PKCS#11 URI or token label');
  return { token };
}

function value(argv: string[], i: number, flag: string): string {
  const v = argv[i];
  if (v === undefined || v.startsWith('--')) throw new UsageError(`${flag} needs a value`);
  return v;
}

type Prepared = (t: AdminTransport, io: Io) => Promise<void>;

/**
 * Each operation reads and checks its local inputs first (prepare), then talks to keyd over
 * whichever transport. The few that exist only for a remote keyd (its provisioning key, its
 * TPM) take the connection options instead (`remote`).
 */
type Operation =
  | { prepare(args: string[], io: Io): Promise<Prepared> }
  | { remote(options: ReadonlyMap<string, string>, args: string[], io: Io): Promise<void> };

const OPERATIONS: Record<string, Operation> = {
  trust: {
    async remote(options, args, io) {
      const { values } = parse(args, { replace: 'boolean' });
      if (!options.has('--server')) throw new UsageError('trust needs --server HOST:PORT (it pins a remote keyd)');
      await trustKeyd(remoteOptions(options), values.replace === true, io);
    },
  },
  'attestation-policy': {
    async remote(options, args, io) {
      const { values, positionals } = parse(args, { pcrs: 'string' });
      const action = one(positionals, 'action (record or show)');
      if (action === 'show') return showAttestationPolicy(options.get('--attestation-policy'), io);
      if (action !== 'record') throw new UsageError('attestation-policy: record or show');
      if (typeof values.pcrs !== 'string') throw new UsageError('attestation-policy record needs --pcrs (e.g. sha256:0+7)');
      await recordAttestationPolicy(remoteOptions(options), values.pcrs, io);
    },
  },
  put: {
    async prepare(args, io) {
      const { values, positionals } = parse(args, { key: 'string', chain: 'string', 'passphrase-file': 'string', token: 'string' });
      const names = one(positionals, 'NAME[,NAME…]').split(',').map((n) => n.trim()).filter((n) => n.length > 0);
      if (!values.key || !values.chain) throw new UsageError('put needs --key KEY.pem and --chain CHAIN.pem');
      const keyPath = values.key as string;
      const passFile = values['passphrase-file'] as string | undefined;
      const privateKey = await readPrivateKeyFile(keyPath, {
        passphrase: async () => {
          if (passFile) return (await readFile(passFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
            throw new KeydError('KEYD_BAD_REQUEST', `cannot read passphrase file ${passFile}: ${e.code ?? e.message}`);
          })).replace(/\r?\n$/, '');
          return io.askPassphrase?.(`Passphrase for ${keyPath}: `);
        },
      });
      const chain = await readChainFile(values.chain as string);
      return async (t) => {
        const info = await t.put(names, privateKey, chain, tokenOption(values.token));
        io.out(`installed ${info.keyType} key ${info.keyRef} for ${info.names.join(', ')}: ${describe(info)}${info.location && info.location !== 'software' ? ` in ${info.location}` : ''}\n`);
        io.out(`keyd now holds this key sealed; the key file ${keyPath} can now be deleted (e.g. shred -u ${keyPath}).\n`);
      };
    },
  },
  gen: {
    async prepare(args, io) {
      const { values, positionals } = parse(args, { type: 'string', subject: 'string', csr: 'string', token: 'string' });
      const name = one(positionals, 'NAME');
      const type = values.type as string | undefined;
      if (!type || !(GENERATE_KEY_TYPES as readonly string[]).includes(type)) {
        throw new UsageError(`gen: --type must be one of ${GENERATE_KEY_TYPES.join(', ')}`);
      }
      if (!values.subject) throw new UsageError('gen needs --subject "CN=…"');
      if (!values.csr) throw new UsageError('gen needs --csr OUT.csr');
      return async (t) => {
        const { info, csrPem } = await t.generate(name, type as GenerateKeyType, values.subject as string, tokenOption(values.token));
        await writeFile(values.csr as string, csrPem);
        const where = info.location && info.location !== 'software' ? `inside the token (${info.location})` : 'inside keyd';
        io.out(`generated ${describe(info)} for ${info.names.join(', ')} ${where}; CSR written to ${values.csr}\n`);
        io.out(`have it signed, then: delegator admin chain ${name} CHAIN.pem\n`);
      };
    },
  },
  chain: {
    async prepare(args, io) {
      const { positionals } = parse(args, {});
      if (positionals.length !== 2) throw new UsageError('chain needs NAME CHAIN.pem');
      const chain = await readChainFile(positionals[1]!);
      return async (t) => {
        const info = await t.setChain(positionals[0]!, chain);
        io.out(`chain set for ${info.names.join(', ')}: ${describe(info)}\n`);
      };
    },
  },
  delete: {
    async prepare(args, io) {
      const name = one(parse(args, {}).positionals, 'NAME');
      return async (t) => {
        await t.delete(name);
        io.out(`deleted ${name}\n`);
      };
    },
  },
  list: {
    async prepare(args, io) {
      const { values } = parse(args, { json: 'boolean' });
      return async (t) => {
        const keys = await t.list();
        if (values.json) return io.out(JSON.stringify(keys, null, 2) + '\n');
        io.out(table(['NAMES', 'TYPE', 'SKI', 'NOT AFTER', 'ADDED', 'KEY IN'], keys.map((k) => [k.names.join(','), k.keyType, k.ski, k.notAfter ?? '(no chain)', k.addedAt, k.location ?? 'software'])));
      };
    },
  },
  show: {
    async prepare(args, io) {
      const { values, positionals } = parse(args, { json: 'boolean' });
      const name = one(positionals, 'NAME');
      return async (t) => {
        const info = await t.show(name);
        if (values.json) return io.out(JSON.stringify(info, null, 2) + '\n');
        const rows: Array<[string, string]> = [
          ['names', info.names.join(', ')],
          ['key type', info.keyType],
          ['key ref', info.keyRef],
          ['SKI', info.ski],
          ['subject', info.subject],
          ['not after', info.notAfter ?? '(no chain yet)'],
          ['added', info.addedAt],
          ['updated', info.updatedAt],
          ['version', String(info.version)],
        ];
        io.out(rows.map(([k, v]) => `${k.padEnd(10)} ${v}`).join('\n') + '\n');
      };
    },
  },
  audit: {
    async prepare(args, io) {
      const { values } = parse(args, { json: 'boolean', limit: 'string', since: 'string' });
      const limit = values.limit !== undefined ? Number(values.limit) : undefined;
      if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw new UsageError('--limit must be a positive integer');
      return async (t) => {
        const { entries, omitted } = await t.audit({ ...(limit ? { limit } : {}), ...(values.since ? { since: values.since as string } : {}) });
        if (omitted) {
          // On stderr: --json's stdout stays the list of entries it always was.
          io.err(
            `delegator admin: audit: the newest ${entries.length} entries; ${omitted} older one(s) matched but did not fit in one reply (1 MiB, docs/PROTOCOL.md): ` +
              'ask for fewer with --limit or a later --since, or read keyd\'s audit.log files (JSON lines) on its machine\n',
          );
        }
        if (values.json) return io.out(JSON.stringify(entries, null, 2) + '\n');
        io.out(
          table(
            ['TIME', 'OP', 'CALLER', 'NAMES', 'RESULT'],
            entries.map((e) => [e.time, e.op, `${e.caller.kind}:${e.caller.id}`, (e.names ?? []).join(','), e.ok ? 'ok' : `${e.code}: ${e.message ?? ''}`]),
          ),
        );
      };
    },
  },
  'export-ref': {
    async prepare(args, io) {
      const { values, positionals } = parse(args, { out: 'string', 'keyd-socket': 'string' });
      const name = one(positionals, 'NAME');
      if (!values.out) throw new UsageError('export-ref needs --out FILE');
      // Resolved here, from where the command runs, as any file argument: the reference file
      // must hold an absolute path (the server's working directory is not the admin's).
      const socketPath = resolvePath((values['keyd-socket'] as string | undefined) ?? DEFAULT_SOCKET);
      return async (t) => {
        if (!t.identity) throw new UsageError('export-ref needs the local admin socket (not --server)');
        const identity = await t.identity(name);
        if (!identity) throw new KeydError('KEYD_UNKNOWN_NAME', `no key with a certificate chain serves ${name}`);
        const pem = encodeKeyReferencePem(keyReferenceFor(socketPath, name, identity.keyRef, identity.certificateChain[0]!));
        // Not secret (a reference and a public key), but written like a key file: 0640.
        await writeFile(values.out as string, pem, { mode: 0o640 });
        io.out(`wrote a key reference for ${name} (${identity.keyType}, key ${identity.keyRef}, keyd ${socketPath}) to ${values.out}\n`);
      };
    },
  },
  stats: {
    async prepare(args, io) {
      const { values } = parse(args, { json: 'boolean' });
      return async (t) => {
        const clients = await t.stats();
        if (values.json) return io.out(JSON.stringify(clients, null, 2) + '\n');
        // One row per client and key (durable totals, docs/KEYD.md "Audit and counters").
        const rows = Object.entries(clients).flatMap(([c, s]) => {
          const keys = Object.entries(s.keys ?? {});
          return keys.length === 0 ? [[c, '-', String(s.signatures), String(s.refusals)]] : keys.map(([k, n]) => [c, k, String(n.signatures), String(n.refusals)]);
        });
        io.out(table(['CLIENT', 'KEY', 'SIGNATURES', 'REFUSALS'], rows));
      };
    },
  },
};

function parse(args: string[], options: Record<string, 'string' | 'boolean'>) {
  return parseArgs({
    args,
    options: Object.fromEntries(Object.entries(options).map(([k, type]) => [k, { type }])),
    allowPositionals: true,
    strict: true,
  });
}

function one(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected exactly one ${what}, got ${positionals.length}`);
  return positionals[0]!;
}

function describe(info: KeyInfo): string {
  return `${info.keyType} key, SKI ${info.ski}${info.notAfter ? `, leaf valid until ${info.notAfter}` : ', no chain yet'}`;
}

function table(header: string[], rows: string[][]): string {
  if (rows.length === 0) return '(none)\n';
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/** Reads a line from the terminal without echoing it. */
async function promptHidden(prompt: string): Promise<string | undefined> {
  if (!process.stdin.isTTY) return undefined;
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const out = rl as unknown as { _writeToOutput: (s: string) => void };
  process.stderr.write(prompt);
  out._writeToOutput = () => {}; // no echo
  try {
    return await new Promise<string>((resolve) => rl.question('', resolve));
  } finally {
    rl.close();
    process.stderr.write('\n');
  }
}
