/**
 * `npm run bench:tpm` — what the TPM costs keyd, all of it off the handshake path:
 *
 *   start-up        startKeyd() until it serves, with a root key file / sealed by the TPM /
 *                   sealed to a PCR policy (unseal = createprimary + load + unseal, plus
 *                   reading the NV counter), a store of 10 keys
 *   admin put       one committed change: record + manifest (+ NV counter increment)
 *   provisioning    a remote put over the provisioning listener, without and with
 *                   attestation (EK chain, AK creation, MakeCredential/ActivateCredential,
 *                   quote, appraisal), on a fresh connection each time
 *
 * swtpm (a software TPM on a local socket, Debian swtpm + tpm2-tools) stands in for the
 * TPM: a hardware TPM is slower per command (tens of ms for RSA EK creation), so read
 * these as the tool and protocol overhead. Median and max of --runs (default 5).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { startKeyd } from '../src/keyd/daemon.js';
import { attestKeyd } from '../src/provision/attestation/attest-keyd.js';
import { parseCaBundle } from '../src/provision/attestation/ek-certificate.js';
import type { AttestationPolicy } from '../src/provision/attestation/policy.js';
import { makeIdentity } from '../test/keyd/fixtures.js';
import { startSoftTpm, swtpmMissing } from '../test/keyd/tpm/swtpm.js';
import { makePki, startKeydForTest } from '../test/provision/harness.js';
import { markdownTable } from './lib/format.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
const RUNS = Number(values.runs);
const LOCAL = { kind: 'local' as const, id: 'bench' };

async function time<T>(f: () => Promise<T>): Promise<[number, T]> {
  const t0 = process.hrtime.bigint();
  const r = await f();
  return [Number(process.hrtime.bigint() - t0) / 1e6, r];
}

function summary(samples: number[]): [string, string] {
  const sorted = [...samples].sort((a, b) => a - b);
  return [sorted[Math.floor(sorted.length / 2)]!.toFixed(1), sorted.at(-1)!.toFixed(1)];
}

const missing = await swtpmMissing();
if (missing) {
  process.stderr.write(`bench:tpm ${missing}\n`);
  process.exit(1);
}
const rows: string[][] = [];
const tpm = await startSoftTpm();
const dir = await mkdtemp(join(tmpdir(), 'bench-tpm-'));
try {
  const machineIdPath = join(dir, 'machine-id');
  await writeFile(machineIdPath, 'b'.repeat(32) + '\n');
  const identities = await Promise.all(Array.from({ length: 10 }, (_, i) => makeIdentity('ecdsa-p256', [`k${i}.bench.test`])));
  for (const [label, rootKey] of [
    ['root key file', (d: string) => join(d, 'root.key')],
    ['TPM-sealed + NV counter', (d: string) => `tpm:sealed=${join(d, 'root.tpm')}`],
    ['TPM-sealed, PCR policy sha256:0+7, + NV counter', (d: string) => `tpm:sealed=${join(d, 'root.tpm')},pcrs=sha256:0+7`],
  ] as const) {
    const d = join(dir, label.replace(/\W+/g, '-'));
    const opts = {
      data: join(d, 'data'),
      rootKey: rootKey(d),
      socket: join(d, 's.sock'),
      adminSocket: join(d, 'a.sock'),
      machineIdPath,
      config: { tpmTcti: tpm.tcti },
      logger: pino({ level: 'silent' }),
    };
    const first = await startKeyd(opts);
    const puts: number[] = [];
    for (const [i, id] of identities.entries()) puts.push((await time(() => first.adminService.put(LOCAL, [`k${i}.bench.test`], id.privateKey, id.chain)))[0]);
    await first.close();
    const starts: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const [ms, keyd] = await time(() => startKeyd(opts));
      starts.push(ms);
      if (keyd.keyring.size !== identities.length) throw new Error(`${label}: ${keyd.keyring.size} keys after start`);
      await keyd.close();
    }
    rows.push([`keyd start-up, ${label}, 10 keys`, ...summary(starts)]);
    rows.push([`admin put (one committed change), ${label}`, ...summary(puts)]);
  }

  // Provisioning over the listener: plain put vs attested put.
  const pki = await makePki();
  const keyd = await startKeydForTest(pki, { tpmTcti: tpm.tcti });
  const cas = parseCaBundle(
    (await readFile('/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem', 'utf8')) + (await readFile('/var/lib/swtpm-localca/issuercert.pem', 'utf8')),
    'swtpm local CA',
  );
  const id = await makeIdentity('ecdsa-p256', ['prov.bench.test']);
  const plain: number[] = [];
  const attested: number[] = [];
  const attestOnly: number[] = [];
  let policy: AttestationPolicy | undefined;
  for (let i = 0; i < RUNS; i++) {
    plain.push(
      (
        await time(async () => {
          const c = await keyd.connect(pki.alice);
          try {
            await c.verifyFingerprint(keyd.listener.fingerprint, 'bench');
            await c.put(['prov.bench.test'], id.privateKey, id.chain);
          } finally {
            c.close();
          }
        })
      )[0],
    );
    const [ms] = await time(async () => {
      const c = await keyd.connect(pki.alice);
      try {
        const [a, result] = await time(() => attestKeyd(c, { manufacturerCas: cas, policy, pcrs: 'sha256:0+7' }));
        attestOnly.push(a);
        await c.verifyFingerprint(keyd.listener.fingerprint, 'bench');
        policy ??= { format: 1 as const, pcrs: result.pcrs, values: result.pcrValues, recordedFrom: 'bench', recordedAt: '', ekCertificate: { issuer: result.ekIssuer, serialNumber: result.ekSerialNumber } };
        await c.put(['prov.bench.test'], id.privateKey, id.chain);
      } finally {
        c.close();
      }
    });
    attested.push(ms);
  }
  await keyd.close();
  rows.push(['remote put, no attestation (connect + TLS + put)', ...summary(plain)]);
  rows.push(['attestation alone (EK chain, AK, credential, quote, appraisal)', ...summary(attestOnly)]);
  rows.push(['remote put with attestation (connect + TLS + attest + put)', ...summary(attested)]);
} finally {
  await tpm.stop();
  await rm(dir, { recursive: true, force: true });
}
process.stdout.write(`bench:tpm — swtpm on a local socket, ${RUNS} runs per row, node ${process.version}\n\n`);
process.stdout.write(markdownTable(['operation', 'median ms', 'max ms'], rows) + '\n');
