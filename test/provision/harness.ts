import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { AuditEntry } from '../../src/keyd/audit.js';
import { startKeyd, type RunningKeyd } from '../../src/keyd/daemon.js';
import type { Keyring } from '../../src/keyd/keyring.js';
import { RemoteAdminClient } from '../../src/provision/remote-client.js';
import { startProvisioningListener } from '../../src/provision/listener.js';
import { issue, makeCa, type Ca, type Issued } from './pki.js';

/**
 * A real keyd in a temp dir with its provisioning listener on 127.0.0.1:0, and a test PKI: operator CA, keyd's TLS CA, a
 * foreign CA, and operators with every status the refusal tests need.
 */

export const SUBJECTS = {
  alice: 'CN=alice, O=Example Ops', // admin
  dave: 'CN=dave, O=Example Ops', // admin
  bob: 'CN=bob, O=Example Ops', // auditor
  carol: 'CN=carol, O=Example Ops', // valid certificate, no role
  old: 'CN=old, O=Example Ops', // admin, certificate expired
} as const;

export interface Pki {
  operatorCa: Ca;
  keydCa: Ca;
  foreignCa: Ca;
  keydServer: Issued;
  alice: Issued;
  dave: Issued;
  bob: Issued;
  carol: Issued;
  old: Issued;
  /** Same subject as alice, issued by another CA. */
  mallory: Issued;
}

export async function makePki(): Promise<Pki> {
  const [operatorCa, keydCa, foreignCa] = await Promise.all([makeCa('CN=Example Operator CA'), makeCa('CN=keyd provisioning CA'), makeCa('CN=Foreign CA')]);
  const client = { usage: 'client' as const };
  return {
    operatorCa,
    keydCa,
    foreignCa,
    keydServer: await issue(keydCa, 'CN=keyd', { usage: 'server', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] }),
    alice: await issue(operatorCa, SUBJECTS.alice, client),
    dave: await issue(operatorCa, SUBJECTS.dave, client),
    bob: await issue(operatorCa, SUBJECTS.bob, client),
    carol: await issue(operatorCa, SUBJECTS.carol, client),
    old: await issue(operatorCa, SUBJECTS.old, { ...client, expired: true }),
    mallory: await issue(foreignCa, SUBJECTS.alice, client),
  };
}

export interface Keyd {
  dir: string;
  running: RunningKeyd;
  keyring: Keyring;
  listener: NonNullable<RunningKeyd['provisioning']>;
  /** Stops keyd and starts it again on the same data dir and root key. */
  restart(): Promise<void>;
  audit(): Promise<AuditEntry[]>;
  /** Connects as one of the operators (or with no certificate). */
  connect(who: Issued | undefined): Promise<RemoteAdminClient>;
  /** With `configFile`: rewrites keyd's config file (the object as started, changed by `edit`) for a reload. */
  editConfig(edit: (config: { provisioning: Record<string, unknown> } & Record<string, unknown>) => void): Promise<void>;
  close(): Promise<void>;
}

/** A real keyd (startKeyd, unix sockets in a temp dir) with --provision-listen 127.0.0.1:0. */
export async function startKeydForTest(pki: Pki, opts: { replayWindowSeconds?: number; tpmTcti?: string; limits?: object; refusalWindowMs?: number; operators?: Record<string, 'admin' | 'auditor'>; logger?: import('pino').Logger; configFile?: boolean } = {}): Promise<Keyd> {
  const dir = await mkdtemp(join(tmpdir(), 'provision-'));
  const machineIdPath = join(dir, 'machine-id');
  await writeFile(machineIdPath, 'a'.repeat(32) + '\n');
  const operatorCaPath = join(dir, 'operator-ca.pem');
  await writeFile(operatorCaPath, pki.operatorCa.certPem);
  await writeFile(join(dir, 'keyd.pem'), pki.keydServer.certPem);
  await writeFile(join(dir, 'keyd.key'), pki.keydServer.keyPem, { mode: 0o600 });
  const config = {
    ...(opts.tpmTcti !== undefined ? { tpmTcti: opts.tpmTcti } : {}),
    provisioning: {
      operators: { [SUBJECTS.alice]: 'admin', [SUBJECTS.dave]: 'admin', [SUBJECTS.bob]: 'auditor', [SUBJECTS.old]: 'admin', ...opts.operators },
      tlsCert: join(dir, 'keyd.pem'),
      tlsKey: join(dir, 'keyd.key'),
      ...(opts.replayWindowSeconds !== undefined ? { replayWindowSeconds: opts.replayWindowSeconds } : {}),
      ...(opts.limits ? { limits: opts.limits } : {}),
    },
  };
  // With `configFile` keyd reads its config from a file, so a reload (reloadGrants) reads edits.
  const configPath = join(dir, 'keyd.json');
  if (opts.configFile) await writeFile(configPath, JSON.stringify(config));
  const start = () =>
    startKeyd({
      data: join(dir, 'data'),
      // With a TPM: the root key sealed by it (beside the data directory), else a file.
      rootKey: opts.tpmTcti !== undefined ? `tpm:sealed=${join(dir, 'root.tpm')}` : join(dir, 'root.key'),
      socket: join(dir, 'keyd.sock'),
      adminSocket: join(dir, 'admin.sock'),
      config: opts.configFile ? configPath : config,
      provisionListen: '127.0.0.1:0',
      startProvisioning: startProvisioningListener,
      operatorCa: operatorCaPath,
      machineIdPath,
      logger: opts.logger ?? pino({ level: 'silent' }),
    });
  const local = { kind: 'local' as const, id: 'test' };
  const keyd = { dir } as Keyd;
  const adopt = (running: RunningKeyd): void => {
    if (!running.provisioning) throw new Error('keyd started without its provisioning listener');
    Object.assign(keyd, { running, keyring: running.keyring, listener: running.provisioning });
  };
  adopt(await start());
  Object.assign(keyd, {
    restart: async () => {
      await keyd.running.close();
      adopt(await start());
    },
    audit: () => keyd.running.adminService.audit(local, { limit: 1000 }),
    connect: (who: Issued | undefined) =>
      RemoteAdminClient.connect({
        host: '127.0.0.1',
        port: keyd.listener.port,
        ca: pki.keydCa.certPem,
        ...(who ? { cert: who.certPem, key: who.keyPem } : {}),
        timeoutMs: 10_000,
      }),
    editConfig: async (edit: (c: typeof config) => void) => {
      if (!opts.configFile) throw new Error('editConfig needs startKeydForTest(…, { configFile: true })');
      edit(config);
      await writeFile(configPath, JSON.stringify(config));
    },
    close: async () => {
      await keyd.running.close();
      await rm(dir, { recursive: true, force: true });
    },
  });
  return keyd;
}

/**
 * Writes an operator's certificate and key, and keyd's CA, into keyd's temp dir for the
 * admin CLI, and returns the connection flags (with --known-keyd in that dir) plus `extra`.
 */
export async function operatorFlags(keyd: Keyd, pki: Pki, who: keyof Pki & string, extra: string[] = []): Promise<string[]> {
  const issued = pki[who] as Issued;
  const cert = join(keyd.dir, `${who}.pem`);
  const key = join(keyd.dir, `${who}.key`);
  const ca = join(keyd.dir, 'keyd-ca.pem');
  await writeFile(cert, issued.certPem);
  await writeFile(key, issued.keyPem, { mode: 0o600 });
  await writeFile(ca, pki.keydCa.certPem);
  return ['--server', `127.0.0.1:${keyd.listener.port}`, '--cert', cert, '--key', key, '--ca', ca, '--known-keyd', join(keyd.dir, 'known_keyd'), ...extra];
}
