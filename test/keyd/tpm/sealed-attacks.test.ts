import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadOrSealRootKey } from '../../../src/keyd/tpm/sealed-root.js';
import { parsePcrSelection } from '../../../src/keyd/tpm/pcr.js';
import { scratch } from '../fixtures.js';
import { startSoftTpm, swtpmMissing } from './swtpm.js';

// Attacks on the sealed root key by someone who can run tpm2-tools against keyd's TPM and
// read (or write) its sealed directory; docs/KEYD.md "Root of trust". The sealing code is
// driven directly (loadOrSealRootKey): what is checked is what the TPM lets through.
const skip = await swtpmMissing();

test('a root key sealed to a PCR policy has no password path: tpm2_unseal without the policy session is refused by the TPM, with it the key comes out (control)', { skip, timeout: 120_000 }, async () => {
  const s = await scratch();
  const tpm = await startSoftTpm();
  try {
    const sealedDir = join(s.dir, 'root.tpm');
    const pcrs = parsePcrSelection('sha256:16');
    const sealed = await loadOrSealRootKey({ tcti: tpm.tcti, sealedDir, pcrs });
    assert.equal(sealed.created, true);
    // keyd itself, started without pcrs=, unseals through the policy root.json names (the TPM
    // holds the policy digest: root.json only says which session to build).
    const reopened = await loadOrSealRootKey({ tcti: tpm.tcti, sealedDir });
    assert.equal(reopened.created, false);
    assert.deepEqual(reopened.pcrs, pcrs);
    assert.ok(reopened.rootKey.equals(sealed.rootKey));

    // The attacker loads the object under the owner primary (same seed and template as keyd).
    const primary = join(s.dir, 'primary.ctx');
    const object = join(s.dir, 'object.ctx');
    await tpm.tool('tpm2_createprimary', ['-Q', '-C', 'o', '-g', 'sha256', '-G', 'ecc', '-c', primary]);
    await tpm.tool('tpm2_load', ['-Q', '-C', primary, '-u', join(sealedDir, 'root.pub'), '-r', join(sealedDir, 'root.priv'), '-c', object]);
    // Without userWithAuth the (empty) password authorises nothing (TPM 2.0 Library Part 1, §19.7.1).
    await assert.rejects(tpm.tool('tpm2_unseal', ['-c', object]), (err: Error) => {
      assert.match(err.message, /tpm2_unseal/);
      return true;
    });
    await assert.rejects(tpm.tool('tpm2_unseal', ['-c', object, '-p', '']), /tpm2_unseal/);
    // Control: the PCR policy session (PCR 16 unchanged) unseals the same object.
    const out = join(s.dir, 'unsealed');
    await tpm.tool('tpm2_unseal', ['-c', object, '-p', 'pcr:sha256:16', '-o', out]);
    assert.ok((await readFile(out)).equals(sealed.rootKey), 'the policy path gives the root key keyd sealed');
    await tpm.tool('tpm2_flushcontext', ['-l']).catch(() => '');
  } finally {
    await tpm.stop();
    await s.cleanup();
  }
});

test('pcrs= asked for a root key sealed without a PCR policy is refused with KEYD_ROOT_KEY, not unsealed without one; without pcrs= it opens (control)', { skip, timeout: 120_000 }, async () => {
  const s = await scratch();
  const tpm = await startSoftTpm();
  try {
    const sealedDir = join(s.dir, 'root.tpm');
    const sealed = await loadOrSealRootKey({ tcti: tpm.tcti, sealedDir });
    await assert.rejects(loadOrSealRootKey({ tcti: tpm.tcti, sealedDir, pcrs: parsePcrSelection('sha256:16') }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /is sealed to PCR policy \(none\), not sha256:16/);
      return true;
    });
    const again = await loadOrSealRootKey({ tcti: tpm.tcti, sealedDir });
    assert.equal(again.created, false);
    assert.equal(again.pcrs, undefined);
    assert.ok(again.rootKey.equals(sealed.rootKey));
  } finally {
    await tpm.stop();
    await s.cleanup();
  }
});

test('a sealed object of another length planted in the sealed directory is refused with KEYD_ROOT_KEY, not taken as the root key; keyd\'s own opens (control)', { skip, timeout: 120_000 }, async () => {
  const s = await scratch();
  const tpm = await startSoftTpm();
  try {
    // Control: keyd's own sealed object gives back its 32 bytes.
    const own = join(s.dir, 'own.tpm');
    const sealed = await loadOrSealRootKey({ tcti: tpm.tcti, sealedDir: own });
    const reopened = await loadOrSealRootKey({ tcti: tpm.tcti, sealedDir: own });
    assert.ok(reopened.rootKey.equals(sealed.rootKey));

    // Someone with the TPM seals 16 bytes of their choosing and puts the object in place.
    const planted = join(s.dir, 'planted.tpm');
    await mkdir(planted, { mode: 0o700 });
    const secret = join(s.dir, 'short');
    await writeFile(secret, randomBytes(16));
    const primary = join(s.dir, 'primary.ctx');
    await tpm.tool('tpm2_createprimary', ['-Q', '-C', 'o', '-g', 'sha256', '-G', 'ecc', '-c', primary]);
    await tpm.tool('tpm2_create', ['-Q', '-C', primary, '-g', 'sha256', '-u', join(planted, 'root.pub'), '-r', join(planted, 'root.priv'), '-i', secret, '-a', 'fixedtpm|fixedparent|userwithauth']);
    await writeFile(join(planted, 'root.json'), JSON.stringify({ format: 1, pcrs: null, pcrValues: null, sealedAt: new Date().toISOString() }));
    await assert.rejects(loadOrSealRootKey({ tcti: tpm.tcti, sealedDir: planted }), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_ROOT_KEY');
      assert.match(err.message, /holds 16 bytes, expected 32/);
      return true;
    });
  } finally {
    await tpm.stop();
    await s.cleanup();
  }
});
