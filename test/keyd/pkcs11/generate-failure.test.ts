/**
 * A key keyd makes in a token and then fails to record must not stay in the token: the
 * operator is told the change failed, and keyd never knows that private key. Two places:
 *  - Pkcs11Token.generateKeyPair: C_GenerateKeyPair succeeded, then reading the public
 *    key object (C_GetAttributeValue) or decoding it (a malformed EC point, a modulus of
 *    another size) fails: the pair is destroyed, the error says so, and it is not retried
 *    (a retry would make a second pair under the same CKA_ID).
 *  - AdminService gen/put --token: the key is in the token, then the CSR cannot be signed
 *    or the store write fails before the record is on disk: the token objects are
 *    destroyed. A record that is on disk (served, or adopted at the next start) keeps its key.
 *
 * SoftHSM behind its real pkcs11js object, whose answers the test alters (TokenKeys and
 * Pkcs11Token take the binding object as an option; keyd itself passes none).
 */
import assert from 'node:assert/strict';
import { randomBytes, verify } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import type { Logger } from 'pino';
import pkcs11js from 'pkcs11js';
import { AdminService } from '../../../src/keyd/admin-service.js';
import { AuditLog } from '../../../src/keyd/audit.js';
import { KeydError } from '../../../src/keyd/errors.js';
import { Keyring } from '../../../src/keyd/keyring.js';
import { CKA, CKF_SERIAL_SESSION } from '../../../src/keyd/pkcs11/constants.js';
import { TokenKeys, type TokenKeyHandle } from '../../../src/keyd/pkcs11/token-keys.js';
import type { LoadedRoot } from '../../../src/keyd/root/root-key.js';
import type { SigningLedger } from '../../../src/keyd/signing-ledger.js';
import { SealedStore } from '../../../src/keyd/store.js';
import { SignatureScheme } from '../../../src/tls/wire/codepoints.js';
import { LOCAL, makeIdentity, scratch } from '../fixtures.js';
import { makeSoftHsmToken, requireSoftHsm, type SoftHsmToken } from './softhsm.js';

const content = Buffer.from('content keyd built');

/** How the wrapped binding misbehaves for the next generation (each fault is used once, but destroyFails). */
interface Faults {
  /** C_GetAttributeValue throws this CKR (name:value, as pkcs11js reports it). */
  readFails?: string;
  /** C_GetAttributeValue's values are altered. */
  alter?: (value: Buffer) => Buffer;
  /** C_DestroyObject throws CKR_ACTION_PROHIBITED. */
  destroyFails?: boolean;
}

function wrappedBinding() {
  const real = new pkcs11js.PKCS11();
  const faults: Faults = {};
  let generations = 0;
  const lib = new Proxy(real, {
    get(target, prop) {
      if (prop === 'C_GenerateKeyPairAsync') {
        return (...args: Parameters<pkcs11js.PKCS11['C_GenerateKeyPairAsync']>) => {
          generations++;
          return target.C_GenerateKeyPairAsync(...args);
        };
      }
      if (prop === 'C_GetAttributeValue') {
        return (session: Buffer, object: Buffer, template: pkcs11js.Template) => {
          if (faults.readFails) {
            const ckr = faults.readFails;
            faults.readFails = undefined;
            throw new pkcs11js.Pkcs11Error(ckr, 0, 'C_GetAttributeValue');
          }
          const attrs = target.C_GetAttributeValue(session, object, template);
          const alter = faults.alter;
          faults.alter = undefined;
          return alter ? attrs.map((a) => ({ ...a, value: alter(a.value as Buffer) })) : attrs;
        };
      }
      if (prop === 'C_DestroyObject') {
        return (session: Buffer, object: Buffer) => {
          if (faults.destroyFails) throw new pkcs11js.Pkcs11Error('CKR_ACTION_PROHIBITED:27', 0, 'C_DestroyObject');
          target.C_DestroyObject(session, object);
        };
      }
      const value = Reflect.get(target, prop) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { real, lib, faults, generations: () => generations };
}

/** Log lines Pkcs11Token writes (info, warn), for the assertions on what it reported. */
function recordingLogger() {
  const lines: { level: string; message: string }[] = [];
  const logger = {
    info: (_: object, message: string) => lines.push({ level: 'info', message }),
    warn: (_: object, message: string) => lines.push({ level: 'warn', message }),
    error: (_: object, message: string) => lines.push({ level: 'error', message }),
    debug: () => {},
  } as unknown as Logger;
  return { lines, logger };
}

/**
 * Objects with this CKA_ID in the token, counted in a session of the test's own on the
 * module keyd initialised and logged in (C_Login holds for every session of the process):
 * private objects included.
 */
function objectsWithId(real: pkcs11js.PKCS11, label: string, id: Buffer): number {
  const slot = real.C_GetSlotList(true).find((s) => real.C_GetTokenInfo(s).label.trimEnd() === label)!;
  const session = real.C_OpenSession(slot, CKF_SERIAL_SESSION);
  try {
    real.C_FindObjectsInit(session, [{ type: CKA.ID, value: id }]);
    try {
      return real.C_FindObjects(session, 16).length;
    } finally {
      real.C_FindObjectsFinal(session);
    }
  } finally {
    real.C_CloseSession(session);
  }
}

async function setupTokens(label: string) {
  const softhsm = makeSoftHsmToken(label);
  process.env.SOFTHSM2_CONF = softhsm.env.SOFTHSM2_CONF;
  const binding = wrappedBinding();
  const log = recordingLogger();
  const tokens = new TokenKeys([{ label: softhsm.label, module: softhsm.module, pinFile: softhsm.pinFile, sessions: 2 }], log.logger, { lib: binding.lib });
  const has = async (id: Buffer) => (await tokens.token(softhsm.label)).hasObjectWithId(id);
  return { softhsm, binding, log, tokens, has };
}

function uriWithId(softhsm: SoftHsmToken, id: Buffer): string {
  return `${softhsm.uri};id=${[...id].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')}`;
}

async function signs(key: TokenKeyHandle): Promise<boolean> {
  const scheme = key.keyType === 'rsa' ? SignatureScheme.rsa_pss_rsae_sha256 : SignatureScheme.ecdsa_secp256r1_sha256;
  const signature = await key.sign(scheme, content);
  const padding = key.keyType === 'rsa' ? { padding: 6, saltLength: 32 } : {};
  return verify('sha256', content, { key: key.publicKey, ...padding }, signature);
}

test('a key pair whose public key cannot be read or decoded after C_GenerateKeyPair is destroyed, the request fails naming why, and is not retried', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const { softhsm, binding, log, tokens, has } = await setupTokens('keyd-gen-fail');
  try {
    // Control: a generation the token answers leaves exactly one pair (two objects) under its id, and it signs.
    const keptId = randomBytes(16);
    const kept = await tokens.generate(uriWithId(softhsm, keptId), 'ecdsa-p256', 'kept');
    assert.equal(objectsWithId(binding.real, softhsm.label, keptId), 2, 'one private and one public object');
    assert.ok(await signs(kept), 'control: the generated key signs');

    const cases: { what: string; keyType: 'ecdsa-p256' | 'rsa2048'; fault: Faults; code: string; message: RegExp }[] = [
      {
        what: 'the token refuses the read, with a CKR that drops the connection',
        keyType: 'ecdsa-p256',
        fault: { readFails: 'CKR_DEVICE_ERROR:48' },
        code: 'KEYD_TOKEN_ERROR',
        message: /^token "keyd-gen-fail": C_GetAttributeValue \(the public key of the key pair just generated\) returned CKR_DEVICE_ERROR \(0x00000030\); the key pair \(CKA_ID ([0-9a-f]+)\) was destroyed$/,
      },
      {
        what: 'the token refuses the read (attribute sensitive)',
        keyType: 'ecdsa-p256',
        fault: { readFails: 'CKR_ATTRIBUTE_SENSITIVE:17' },
        code: 'KEYD_TOKEN_SENSITIVE',
        message: /^token "keyd-gen-fail": C_GetAttributeValue \(the public key of the key pair just generated\) returned CKR_ATTRIBUTE_SENSITIVE \(0x00000011\); the key pair \(CKA_ID ([0-9a-f]+)\) was destroyed$/,
      },
      {
        what: 'a malformed EC point',
        keyType: 'ecdsa-p256',
        fault: { alter: (v) => v.subarray(0, v.length - 1) },
        code: 'KEYD_TOKEN_ERROR',
        message: /^token "keyd-gen-fail": C_GenerateKeyPair \(CKM_EC_KEY_PAIR_GEN\) gave a public key keyd cannot use \(it does not decode: .+\); the key pair \(CKA_ID ([0-9a-f]+)\) was destroyed$/,
      },
      {
        what: 'an RSA modulus shorter than asked for',
        keyType: 'rsa2048',
        fault: { alter: (v) => (v.length > 8 ? v.subarray(1) : v) },
        code: 'KEYD_TOKEN_ERROR',
        message: /^token "keyd-gen-fail": C_GenerateKeyPair \(CKM_RSA_PKCS_KEY_PAIR_GEN\) gave a public key keyd cannot use \(it does not decode: CKA_MODULUS of 20[0-9]{2} bits, not the 2048 asked for\); the key pair \(CKA_ID ([0-9a-f]+)\) was destroyed$/,
      },
    ];
    for (const { what, keyType, fault, code, message } of cases) {
      const id = randomBytes(16);
      const before = binding.generations();
      Object.assign(binding.faults, fault);
      await assert.rejects(tokens.generate(uriWithId(softhsm, id), keyType, what), (err: unknown) => {
        assert.ok(err instanceof KeydError, `${what}: ${String(err)}`);
        assert.equal(err.code, code, `${what}: ${err.message}`);
        const m = message.exec(err.message);
        assert.ok(m, `${what}: ${err.message}`);
        assert.equal(m[1], id.toString('hex'), `${what}: the error names the CKA_ID`);
        return true;
      });
      assert.equal(binding.generations() - before, 1, `${what}: generated once, not retried`);
      assert.equal(await has(id), false, `${what}: no object with CKA_ID ${id.toString('hex')} is left in the token`);
      assert.ok(
        log.lines.some((l) => l.level === 'info' && l.message.includes(`the key pair with CKA_ID ${id.toString('hex')}, generated for a request that failed, was destroyed`)),
        `${what}: the destruction is logged`,
      );
    }

    // The token refuses to destroy the pair: the error and a warning name its CKA_ID for
    // removal by hand; still no retry (a second pair under the same CKA_ID would make
    // both unusable to keyd, which needs exactly one object per id).
    const stuck = randomBytes(16);
    const before = binding.generations();
    Object.assign(binding.faults, { readFails: 'CKR_DEVICE_ERROR:48', destroyFails: true });
    await assert.rejects(tokens.generate(uriWithId(softhsm, stuck), 'ecdsa-p256', 'stuck'), (err: unknown) => {
      assert.ok(err instanceof KeydError, String(err));
      assert.match(err.message, new RegExp(`; the key pair \\(CKA_ID ${stuck.toString('hex')}\\) could not be destroyed \\(CKR_ACTION_PROHIBITED\\): remove it with the token's own tools$`));
      return true;
    });
    binding.faults.destroyFails = false;
    assert.equal(binding.generations() - before, 1, 'not retried');
    assert.ok(log.lines.some((l) => l.level === 'warn' && l.message.includes(`CKA_ID ${stuck.toString('hex')}`) && l.message.includes('could not be destroyed (CKR_ACTION_PROHIBITED)')));
    assert.equal(objectsWithId(binding.real, softhsm.label, stuck), 2, 'the pair the token kept, one, as the warning says');

    // The key generated first is untouched by all this.
    assert.equal(objectsWithId(binding.real, softhsm.label, keptId), 2);
    assert.ok(await signs(kept));
  } finally {
    await tokens.close();
    softhsm.cleanup();
  }
});

test('gen and put --token: a key made in the token whose record is not written (store failure, CSR refused) is destroyed; a record on disk keeps its key', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  const { softhsm, binding, log, tokens, has } = await setupTokens('keyd-gen-record');
  const s = await scratch();
  const dataDir = join(s.dir, 'data');
  const rootKey = randomBytes(32);
  const root = (): LoadedRoot => ({ rootKey: Buffer.from(rootKey), kind: 'file', binding: 'test root', location: 'test', counter: undefined, created: false, tpm: undefined });
  const store = await SealedStore.open({ dataDir, machineIdPath: s.machineIdPath, root: root() });
  const auditLog = await AuditLog.open(join(s.dir, 'audit.log'));
  const keyring = new Keyring();
  const service = new AdminService(store, keyring, auditLog, undefined as unknown as SigningLedger, undefined, tokens);
  const manifest = join(dataDir, 'manifest.json');
  /** The manifest made unwritable (a directory in its place: rename(2) onto it fails, also for root). */
  const breakManifest = async () => {
    const saved = await readFile(manifest);
    await rm(manifest);
    await mkdir(manifest);
    return async () => {
      await rm(manifest, { recursive: true });
      await writeFile(manifest, saved);
    };
  };
  const destroyed = (id: Buffer) => new RegExp(`; the key made in token "keyd-gen-record" \\(CKA_ID ${id.toString('hex')}\\) was destroyed$`);
  try {
    // Control: gen --token records the key; its pair is in the token and signs.
    const goodId = randomBytes(16);
    const good = await service.generate(LOCAL, 'good.example', 'ecdsa-p256', 'CN=good.example', uriWithId(softhsm, goodId));
    assert.match(good.csrPem, /BEGIN CERTIFICATE REQUEST/);
    const goodEntry = keyring.owner('good.example')!;
    assert.ok(goodEntry, 'control: the name has its key');
    assert.equal(objectsWithId(binding.real, softhsm.label, goodId), 2);
    assert.ok(await signs(goodEntry.key as TokenKeyHandle));

    // gen --token, the store write fails (manifest commit refused, record put back): destroyed.
    const genId = randomBytes(16);
    let restore = await breakManifest();
    await assert.rejects(service.generate(LOCAL, 'gen.example', 'ecdsa-p256', 'CN=gen.example', uriWithId(softhsm, genId)), (err: unknown) => {
      assert.ok(err instanceof KeydError, String(err));
      assert.equal(err.code, 'KEYD_STORE_IO', err.message);
      assert.match(err.message, /^EISDIR: .*manifest\.json'; /);
      assert.match(err.message, destroyed(genId));
      return true;
    });
    await restore();
    assert.equal(keyring.owner('gen.example'), undefined);
    assert.equal(await has(genId), false, 'no object with the generated key\'s CKA_ID is left');
    assert.ok(log.lines.some((l) => l.level === 'info' && l.message.includes(`the objects with CKA_ID ${genId.toString('hex')}`) && l.message.includes('were destroyed')));

    // put --token, the same store failure: the imported key is destroyed too.
    const putId = randomBytes(16);
    const identity = await makeIdentity('ecdsa-p256', ['put.example']);
    restore = await breakManifest();
    await assert.rejects(service.put(LOCAL, ['put.example'], identity.privateKey, identity.chain, uriWithId(softhsm, putId)), (err: unknown) => {
      assert.ok(err instanceof KeydError, String(err));
      assert.match(err.message, destroyed(putId));
      return true;
    });
    await restore();
    assert.equal(await has(putId), false, 'no object with the imported key\'s CKA_ID is left');

    // gen --token, the token key cannot sign the CSR: destroyed.
    const csrId = randomBytes(16);
    const generate = tokens.generate.bind(tokens);
    tokens.generate = async (...args) => {
      const key = await generate(...args);
      key.sign = async () => {
        throw new KeydError('KEYD_TOKEN_ERROR', 'token "keyd-gen-record": C_Sign (CKM_ECDSA) returned CKR_FUNCTION_FAILED (0x00000006)');
      };
      return key;
    };
    await assert.rejects(service.generate(LOCAL, 'csr.example', 'ecdsa-p256', 'CN=csr.example', uriWithId(softhsm, csrId)), (err: unknown) => {
      assert.ok(err instanceof KeydError, String(err));
      assert.equal(err.code, 'KEYD_TOKEN_ERROR');
      assert.match(err.message, /^token "keyd-gen-record": C_Sign \(CKM_ECDSA\) returned CKR_FUNCTION_FAILED/);
      assert.match(err.message, destroyed(csrId));
      return true;
    });
    tokens.generate = generate;
    assert.equal(await has(csrId), false);

    // Control: the record reached the disk, then the write reported failure (what a commit
    // that moved the manifest, or could not be undone, leaves): keyd serves it from the next
    // start, so its key stays in the token and the error is the store's own.
    const onDiskId = randomBytes(16);
    const putKey = store.putKey.bind(store);
    store.putKey = async (key) => {
      await putKey(key);
      throw new KeydError('KEYD_STORE_IO', 'the commit could not be undone');
    };
    await assert.rejects(service.generate(LOCAL, 'ondisk.example', 'ecdsa-p256', 'CN=ondisk.example', uriWithId(softhsm, onDiskId)), (err: unknown) => {
      assert.ok(err instanceof KeydError, String(err));
      assert.equal(err.message, 'the commit could not be undone');
      return true;
    });
    store.putKey = putKey;
    assert.equal(objectsWithId(binding.real, softhsm.label, onDiskId), 2, 'the recorded key\'s pair is kept');

    // And the first key still signs.
    assert.ok(await signs(goodEntry.key as TokenKeyHandle));
  } finally {
    await tokens.close();
    await auditLog.close();
    softhsm.cleanup();
    await s.cleanup();
  }
});
