/**
 * A relative "pinFile" in keyd's config is read from the config file's directory, not
 * keyd's working directory ("/" under systemd), like the config's other paths (docs/KEYD.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseTokenConfigs } from '../../../src/keyd/pkcs11/config.js';
import { LOCAL, scratch, startTestKeyd } from '../fixtures.js';
import { makeSoftHsmToken, requireSoftHsm } from './softhsm.js';

test('config "pkcs11": a relative "pinFile" is from the config file\'s directory; keyd logs in to the token with it while its working directory is elsewhere', { timeout: 60_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const token = makeSoftHsmToken('keyd-pin-dir');
  const s = await scratch();
  const cwd = process.cwd();
  const conf = process.env.SOFTHSM2_CONF;
  t.after(async () => {
    process.chdir(cwd);
    if (conf === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = conf;
    await s.cleanup();
    token.cleanup();
  });
  // The PIN file lies beside the config (token.dir/token.pin); the config names it relatively.
  const configPath = join(token.dir, 'keyd.json');
  await writeFile(configPath, JSON.stringify({ pkcs11: { tokens: [{ token: token.uri, module: token.module, pinFile: 'token.pin', sessions: 1 }] } }));
  process.env.SOFTHSM2_CONF = token.env.SOFTHSM2_CONF;
  process.chdir(s.dir);
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: configPath });
  try {
    const { info } = await keyd.adminService.generate(LOCAL, 'pin.test', 'ecdsa-p256', 'CN=pin.test', token.uri);
    assert.match(info.location ?? '', /^pkcs11:token=keyd-pin-dir;object=/, 'the key was generated in the token: keyd read the PIN file beside its config');
  } finally {
    await keyd.close();
  }
  // Control: an absolute pinFile is kept as written; without a config file, as written too.
  assert.equal(parseTokenConfigs({ tokens: [{ token: 'k', module: '/m.so', pinFile: '/etc/keyd/token.pin' }] }, '/elsewhere')![0]!.pinFile, '/etc/keyd/token.pin');
  assert.equal(parseTokenConfigs({ tokens: [{ token: 'k', module: '/m.so', pinFile: 'token.pin' }] })![0]!.pinFile, 'token.pin');
});
