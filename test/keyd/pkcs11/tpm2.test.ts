/**
 * keyd with a key inside a TPM, through tpm2-pkcs11 on a software TPM (swtpm): generated
 * in the TPM, CSR → chain → a TLS 1.3 handshake through the edge (openssl s_client); the
 * PKCS#11 API reports the object sensitive and not extractable. Skips, naming the Debian
 * packages, when tpm2-pkcs11 or swtpm is not installed.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { LocalAdminTransport } from '../../../src/keyd/admin-client.js';
import { parseTokenUri } from '../../../src/keyd/pkcs11/config.js';
import { describeResult, requireTool, runTool } from '../../helpers/tools.js';
import { KeydProcess, scratchDir, startEdgeProcess, startHttpUpstream } from '../../edge/system.js';
import { issueFromCsr, makeIdentity, pem } from '../fixtures.js';
import { inspectToken } from './softhsm.js';
import { makeTpm2Token, requireTpm2 } from './tpm2-token.js';

test('a key generated inside a TPM (tpm2-pkcs11 on swtpm) serves TLS 1.3 through the edge and is not extractable', { timeout: 240_000 }, async (t) => {
  if (!requireTpm2(t) || !requireTool(t, 'openssl', 'openssl')) return;
  const token = await makeTpm2Token();
  const scratch = scratchDir('keyd-tpm2-');
  t.after(() => {
    scratch.remove();
    token.cleanup();
  });
  const keyd = new KeydProcess(scratch.dir);
  await keyd.start({ config: token.config, env: token.env, cwd: scratch.dir });
  t.after(() => keyd.kill());
  const ca = await makeIdentity('ecdsa-p256', [], undefined, { ca: true, subject: 'CN=TPM Test CA' });
  const caFile = join(scratch.dir, 'ca.pem');
  writeFileSync(caFile, pem(ca.chain[0]!));
  const admin = await LocalAdminTransport.connect(keyd.adminSocket);
  const name = 'tpm.token.test';
  const { info, csrPem } = await admin.generate(name, 'ecdsa-p256', `CN=${name}`, { token: token.uri });
  assert.match(info.location, /^pkcs11:token=keyd-tpm;object=/);
  await admin.setChain(name, await issueFromCsr(csrPem, ca));
  admin.close();

  const upstream = await startHttpUpstream('TPM');
  t.after(() => upstream.close());
  const edge = await startEdgeProcess(['--keyd', keyd.socket, '--route', `${name}=127.0.0.1:${upstream.port}`, '--log-level', 'warn']);
  t.after(() => edge.stop('SIGKILL'));
  const r = await runTool('openssl', ['s_client', '-connect', `127.0.0.1:${edge.port}`, '-tls1_3', '-ign_eof', '-servername', name, '-CAfile', caFile, '-verify_return_error'], 'GET / HTTP/1.0\r\n\r\n', { timeoutMs: 60_000 });
  assert.match(r.stdout, /Verify return code: 0 \(ok\)/, describeResult(r));
  assert.match(r.stdout, /Peer signature type: ECDSA/, describeResult(r));
  assert.match(r.stdout, /upstream TPM/, describeResult(r));

  // The software TPM serves one client at a time and has no resource manager: ask the
  // PKCS#11 API once keyd has stopped cleanly (C_Finalize flushes its TPM sessions).
  await edge.stop('SIGKILL');
  const exited = once(keyd.child!, 'exit');
  keyd.child!.kill('SIGTERM');
  await exited;
  const seen = inspectToken(token, parseTokenUri(info.location).id!.toString('hex'));
  assert.equal(seen.sensitive, true, 'CKA_SENSITIVE');
  assert.equal(seen.extractable, false, 'CKA_EXTRACTABLE');
  assert.doesNotMatch(seen.secretRead, /^read /, 'the private value cannot be read');
});
