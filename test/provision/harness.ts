import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminService } from '../../src/keyd/admin-service.js';
import { AuditLog, SigningCounters, type AuditEntry } from '../../src/keyd/audit.js';
import { Keyring } from '../../src/keyd/keyring.js';
import { SealedStore } from '../../src/keyd/store.js';
import { startProvisioningListener, type ProvisioningListener } from '../../src/provision/listener.js';
import { RemoteAdminClient } from '../../src/provision/remote-client.js';
import { issue, makeCa, type Ca, type Issued } from './pki.js';

/**
 * A real keyd admin core (sealed store, keyring, audit log, AdminService) in a temp dir with
 * the provisioning listener on 127.0.0.1:0, and a test PKI: operator CA, keyd's TLS CA, a
 * foreign CA, and operators with every status the refusal tests need.
 */

export const SUBJECTS = {
  alice: 'O=Example Ops, CN=alice', // admin
  dave: 'O=Example Ops, CN=dave', // admin
  bob: 'O=Example Ops, CN=bob', // auditor
  carol: 'O=Example Ops, CN=carol', // valid certificate, no role
  old: 'O=Example Ops, CN=old', // admin, certificate expired
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
  store: SealedStore;
  keyring: Keyring;
  auditLog: AuditLog;
  adminService: AdminService;
  listener: ProvisioningListener;
  /** Re-opens store and listener on the same data dir (a keyd restart). */
  restart(): Promise<void>;
  audit(): Promise<AuditEntry[]>;
  /** Connects as one of the operators (or with no certificate). */
  connect(who: Issued | undefined): Promise<RemoteAdminClient>;
  close(): Promise<void>;
}

export async function startKeydForTest(pki: Pki, opts: { replayWindowSeconds?: number } = {}): Promise<Keyd> {
  const dir = await mkdtemp(join(tmpdir(), 'provision-'));
  const machineIdPath = join(dir, 'machine-id');
  await writeFile(machineIdPath, 'a'.repeat(32) + '\n');
  const operatorCaPath = join(dir, 'operator-ca.pem');
  await writeFile(operatorCaPath, pki.operatorCa.certPem);
  await writeFile(join(dir, 'keyd.pem'), pki.keydServer.certPem);
  await writeFile(join(dir, 'keyd.key'), pki.keydServer.keyPem, { mode: 0o600 });
  const config = {
    provisioning: {
      operators: { [SUBJECTS.alice]: 'admin', [SUBJECTS.dave]: 'admin', [SUBJECTS.bob]: 'auditor', [SUBJECTS.old]: 'admin' },
      tlsCert: join(dir, 'keyd.pem'),
      tlsKey: join(dir, 'keyd.key'),
      ...(opts.replayWindowSeconds !== undefined ? { replayWindowSeconds: opts.replayWindowSeconds } : {}),
    },
  };

  const keyd = {} as Keyd;
  async function open(): Promise<void> {
    const store = await SealedStore.open({ dataDir: join(dir, 'data'), rootKeyPath: join(dir, 'root.key'), machineIdPath });
    const keyring = new Keyring();
    const auditLog = await AuditLog.open(join(dir, 'audit.log'));
    const adminService = new AdminService(store, keyring, auditLog, new SigningCounters());
    const listener = await startProvisioningListener({
      listen: '127.0.0.1:0',
      operatorCa: operatorCaPath,
      config,
      adminService,
      store,
      audit: (event) => auditLog.append(event),
    });
    Object.assign(keyd, { store, keyring, auditLog, adminService, listener });
  }
  await open();
  Object.assign(keyd, {
    dir,
    restart: async () => {
      await keyd.listener.close();
      await keyd.auditLog.close();
      await open();
    },
    audit: () => keyd.auditLog.read({ limit: 1000 }),
    connect: (who: Issued | undefined) =>
      RemoteAdminClient.connect({
        host: '127.0.0.1',
        port: keyd.listener.port,
        ca: pki.keydCa.certPem,
        ...(who ? { cert: who.certPem, key: who.keyPem } : {}),
        timeoutMs: 10_000,
      }),
    close: async () => {
      await keyd.listener.close();
      await keyd.auditLog.close();
      await rm(dir, { recursive: true, force: true });
    },
  });
  return keyd;
}
