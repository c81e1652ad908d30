/**
 * `delegator demo` (npm start) as a user runs it: start, run the printed curl command,
 * Ctrl-C, start again (the store is reused), Ctrl-C.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { KeydClient } from '../../src/keyd/client.js';
import { Opcode } from '../../src/keyd/protocol.js';
import { freePort } from '../helpers/ports.js';
import { describeResult, hasTool, requireTool, runTool, startTool } from '../helpers/tools.js';
import { MAIN, scratchDir } from './system.js';

/** keyd's signature count in the demo (its admin socket under the state directory). */
async function demoKeydSignatures(home: string): Promise<number> {
  const admin = await KeydClient.connect({ socketPath: join(home, 'run', 'keyd-admin.sock') });
  try {
    const clients = (await admin.admin(Opcode.stats, {})).json.clients as Record<string, { signatures: number }>;
    return Object.values(clients).reduce((n, c) => n + c.signatures, 0);
  } finally {
    admin.close();
  }
}

/** NSS tstclnt -B against the demo: the handshake succeeds and keyd signs nothing for it; without -B keyd signs. */
async function tstclntUsesCredential(home: string, port: number, caFile: string): Promise<void> {
  const db = mkdtempSync(join(tmpdir(), 'delegator-demo-nss-'));
  try {
    for (const args of [
      ['-N', '-d', `sql:${db}`, '--empty-password'],
      ['-A', '-d', `sql:${db}`, '-n', 'demo-ca', '-t', 'C,,', '-i', caFile],
    ]) {
      const r = await runTool('certutil', args);
      assert.equal(r.code, 0, describeResult(r));
    }
    writeFileSync(join(db, 'request.txt'), 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n');
    const tstclnt = (extra: string[]) =>
      runTool('tstclnt', ['-h', '127.0.0.1', '-p', String(port), '-a', 'localhost', '-d', `sql:${db}`, '-V', 'tls1.3:tls1.3', '-A', join(db, 'request.txt'), ...extra], '', { timeoutMs: 15_000 });
    const before = await demoKeydSignatures(home);
    const delegated = await tstclnt(['-B']);
    assert.equal(delegated.code, 0, describeResult(delegated));
    assert.match(delegated.stdout, /handshake signed<\/th><td>ecdsa_secp256r1_sha256 by the edge with a delegated credential/);
    assert.equal(await demoKeydSignatures(home), before, 'keyd signed nothing for the -B handshake');
    const plain = await tstclnt([]);
    assert.equal(plain.code, 0, describeResult(plain));
    assert.match(plain.stdout, /handshake signed<\/th><td>ecdsa_secp256r1_sha256 by keyd</);
    assert.equal(await demoKeydSignatures(home), before + 1, 'control: keyd signs a handshake without -B');
  } finally {
    rmSync(db, { recursive: true, force: true });
  }
}

test('npm start: the printed curl command gets the upstream page through edge and keyd; a second start reuses the key', { timeout: 90_000 }, async (t) => {
  if (!requireTool(t, 'curl', 'curl')) return;
  const scratch = scratchDir('edge-demo-');
  t.after(() => scratch.remove());
  const port = await freePort();
  const env = { ...process.env, DELEGATOR_HOME: scratch.dir };

  const first = startTool(t, process.execPath, [MAIN, 'demo', '--port', String(port)], { env, timeoutMs: 60_000 });
  await first.waitFor('Ctrl-C stops everything', 30_000);
  assert.match(first.stdout, /keyd generated a new ecdsa-p256 key for localhost/);
  const command = /^\s*(curl --cacert \S+ https:\/\/localhost:\d+\/)$/m.exec(first.stdout)?.[1];
  assert.ok(command, first.stdout);
  const curl = await runTool('sh', ['-c', `${command} -sS`]);
  assert.equal(curl.code, 0, describeResult(curl));
  assert.match(curl.stdout, /Hello from the upstream app/);
  assert.match(curl.stdout, /server name \(SNI\): localhost/);
  assert.match(first.stdout, /delegated credentials \(RFC 9345\) served/);
  if (hasTool('tstclnt') && hasTool('certutil')) await tstclntUsesCredential(scratch.dir, port, /^demo CA:\s+(\S+)$/m.exec(first.stdout)![1]!);
  else t.diagnostic('tstclnt/certutil not installed (apt-get install libnss3-tools): NSS -B check skipped');
  first.child.kill('SIGINT');
  const [code] = await once(first.child, 'exit');
  assert.equal(code, 0, first.stderr);

  const second = startTool(t, process.execPath, [MAIN, 'demo', '--port', String(port)], { env, timeoutMs: 60_000 });
  await second.waitFor('Ctrl-C stops everything', 30_000);
  assert.match(second.stdout, /already holds the ecdsa-p256 key for localhost; reusing it/);
  const again = await runTool('sh', ['-c', `${command} -sS`]);
  assert.equal(again.code, 0, describeResult(again));
  second.child.kill('SIGTERM');
  const [code2] = await once(second.child, 'exit');
  assert.equal(code2, 0, second.stderr);
});
