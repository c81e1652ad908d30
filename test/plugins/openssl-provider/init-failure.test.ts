/**
 * The provider's initialisation (plugins/openssl-provider/provider.c, OSSL_provider_init)
 * when a step of it fails, as allocations can in a server short of memory: the load must
 * fail with the provider's error on OpenSSL's error queue, not succeed with a provider that
 * has no library context (every key file then reads as "not ours") or an uninitialised
 * lock. init-fail.c makes the step fail by defining the function itself (fault injection
 * by symbol interposition; every other call goes to the real one).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireTool, runTool } from '../../helpers/tools.js';
import { scratchDir } from '../../edge/system.js';
import { buildProvider, compileTestProgram, PROVIDER_SO } from './harness.js';
import { signer } from './fake-keyd.js';

test('a failed OSSL_LIB_CTX_new_from_dispatch or pthread_mutex_init fails the provider\'s load with its error; loaded again, it works', { timeout: 60_000 }, async (t) => {
  if (!buildProvider(t) || !requireTool(t, 'gcc', 'gcc')) return;
  const scratch = scratchDir('provider-init-');
  t.after(() => scratch.remove());
  // -rdynamic: the provider's calls to the two functions resolve to the program's definitions.
  const program = compileTestProgram('init-fail', scratch.dir, ['-rdynamic']);
  const s = signer(scratch.dir, join(scratch.dir, 'fake.sock'));
  // The program loads the providers itself: no openssl.cnf.
  const env = { ...process.env, OPENSSL_CONF: '/dev/null' };
  const run = (mode: string) => runTool(program, [mode, PROVIDER_SO, s.refFile], '', { env, timeoutMs: 30_000 });

  // Control: nothing made to fail, the provider loads and reads the reference file.
  const none = await run('none');
  assert.equal(none.code, 0, none.stderr);
  assert.equal(none.stdout, 'provider loaded\nkey loaded\n');

  for (const [mode, message] of [
    ['libctx', /OSSL_provider_init:.*:provider\.c:\d+:OSSL_LIB_CTX_new_from_dispatch failed/],
    ['mutex', /OSSL_provider_init:.*:provider\.c:\d+:pthread_mutex_init: Cannot allocate memory/],
  ] as const) {
    const r = await run(mode);
    assert.equal(r.signal, null, `${mode}: killed by ${r.signal}: ${r.stderr}`);
    // Before, the load succeeded ("provider loaded"), without a library context or with the lock's init ignored.
    assert.equal(r.stdout, 'provider not loaded\nkey loaded\n', `${mode}: ${r.stderr}`);
    assert.match(r.stderr, message, mode);
    assert.match(r.stderr, /provider_init:init fail/, `${mode}: OpenSSL reports the module's failure too`);
    assert.equal(r.code, 0, `${mode}: loaded again without the failure, the provider reads the key: ${r.stderr}`);
  }
});
