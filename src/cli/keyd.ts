/**
 * `delegator keyd` — the trusted signer daemon (src/keyd/daemon.ts). Argument parsing,
 * signals and exit codes only.
 */
import { parseArgs } from 'node:util';
import { startKeyd, type KeydOptions } from '../keyd/daemon.js';
import { KeydError } from '../keyd/errors.js';
import { startProvisioningListener } from '../provision/listener.js';
import { holdReloadsDuringStart } from '../lib/reload-during-start.js';

export const summary = 'the trusted signer: holds the private keys sealed, signs CertificateVerify for edges';

export const DEFAULT_SOCKET = '/run/keyd/keyd.sock';
export const DEFAULT_ADMIN_SOCKET = '/run/keyd/admin.sock';

const USAGE = `Usage: delegator keyd --data DIR --root-key FILE|tpm[:OPTIONS] [options]

Runs keyd: the only process that holds private keys. Keys are sealed on disk (AES-256-GCM
under a key derived from the root key and /etc/machine-id); edges ask keyd for
certificate chains and CertificateVerify signatures. See docs/KEYD.md.

Options:
  --data DIR             sealed store directory (created 0700)
  --root-key FILE        machine root key in a file, 32 random bytes, created 0600 on
                         first run; must live outside --data. A copy of it and of --data
                         opens every key.
  --root-key tpm[:OPTIONS]
                         root key sealed by the TPM (tpm2-tools; TCTI from TPM2TOOLS_TCTI
                         or the config's "tpmTcti"), and a TPM NV counter against rollback.
                         OPTIONS, comma-separated: sealed=DIR (default DATA.tpm-root),
                         pcrs=sha256:0+7 (seal to a PCR policy), counter=0xINDEX|none
                         (default 0x01504b44). Default: the config's "rootKey".
  --socket PATH          signing socket of the local principal "local", mode 0660
                         (default ${DEFAULT_SOCKET})
  --admin-socket PATH    admin socket for \`delegator admin\`, mode 0600 (default ${DEFAULT_ADMIN_SOCKET})
  --config FILE          JSON config: "clients" (mTLS subject → names), "principals"
                         (local callers, one socket each), "limits", "maxPending",
                         "auditLog" (rotation), "metricsListen", "expiryWarningDays"
                         (default 30), "provisioning"
                         (see docs/KEYD.md and docs/PROVISIONING.md), "pkcs11" (tokens
                         keys may live in; see docs/KEYD.md, "Keys in a token")
  --listen HOST:PORT     also serve remote edges over TCP with mutual TLS; needs:
  --tls-cert FILE        keyd's TLS certificate chain (PEM)
  --tls-key FILE         its private key (PEM)
  --client-ca FILE       CA whose client certificates are accepted (PEM)
  --provision-listen HOST:PORT
                         operator provisioning listener (mutual TLS); needs:
  --operator-ca FILE     CA of operator certificates
  --metrics HOST:PORT    serve Prometheus metrics at http://HOST:PORT/metrics (docs/KEYD.md
                         "Metrics"; overrides the config's "metricsListen")
  --machine-id FILE      machine id to bind the store to (default /etc/machine-id)
  --log-level LEVEL      fatal|error|warn|info|debug|trace (default info); logs go to stderr
  -h, --help             this text

Stops cleanly on SIGTERM or SIGINT. SIGHUP re-reads the grants of --config ("clients",
the names of "principals"); a config with an error is refused and the running one kept.
`;

export async function main(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        data: { type: 'string' },
        'root-key': { type: 'string' },
        socket: { type: 'string' },
        'admin-socket': { type: 'string' },
        config: { type: 'string' },
        listen: { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'client-ca': { type: 'string' },
        'provision-listen': { type: 'string' },
        'operator-ca': { type: 'string' },
        'machine-id': { type: 'string' },
        metrics: { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`delegator keyd: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (!values.data || (!values['root-key'] && !values.config)) {
    process.stderr.write(`delegator keyd: --data and --root-key (or a --config with "rootKey") are required\n${USAGE}`);
    return 2;
  }
  const opts: KeydOptions = {
    data: values.data,
    ...(values['root-key'] ? { rootKey: values['root-key'] } : {}),
    socket: values.socket ?? DEFAULT_SOCKET,
    adminSocket: values['admin-socket'] ?? DEFAULT_ADMIN_SOCKET,
    ...(values.config ? { config: values.config } : {}),
    ...(values.listen ? { listen: values.listen } : {}),
    ...(values['tls-cert'] ? { tlsCert: values['tls-cert'] } : {}),
    ...(values['tls-key'] ? { tlsKey: values['tls-key'] } : {}),
    ...(values['client-ca'] ? { clientCa: values['client-ca'] } : {}),
    ...(values['provision-listen'] ? { provisionListen: values['provision-listen'], startProvisioning: startProvisioningListener } : {}),
    ...(values['operator-ca'] ? { operatorCa: values['operator-ca'] } : {}),
    ...(values['machine-id'] ? { machineIdPath: values['machine-id'] } : {}),
    ...(values.metrics ? { metrics: values.metrics } : {}),
    ...(values['log-level'] ? { logLevel: values['log-level'] } : {}),
  };
  // A SIGHUP while keyd starts (a TPM unseal takes seconds) is held, not fatal; it is
  // applied once keyd runs (src/lib/reload-during-start.ts).
  const heldReloads = holdReloadsDuringStart();
  let keyd;
  try {
    keyd = await startKeyd(opts);
  } catch (err) {
    heldReloads.release();
    const code = err instanceof KeydError || (err as { code?: unknown }).code ? ` [${String((err as { code: string }).code)}]` : '';
    process.stderr.write(`delegator keyd: ${(err as Error).message}${code}\n`);
    return 1;
  }
  const running = keyd;
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      running.logger.info({ signal }, `keyd stopping on ${signal}`);
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      running.close().then(
        () => resolve(0),
        (err: unknown) => {
          process.stderr.write(`delegator keyd: shutdown failed: ${(err as Error).message}\n`);
          resolve(1);
        },
      );
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    // SIGHUP: the config's grants again (docs/KEYD.md, "Reload"); a bad config is refused and logged.
    process.on('SIGHUP', () => void running.reloadGrants());
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
    if (heldReloads.release()) {
      running.logger.info('a SIGHUP arrived while keyd was starting: reloading the grants now');
      void running.reloadGrants();
    }
  });
}
