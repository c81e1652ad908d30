import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { test } from 'node:test';
import { formatTokenUri, parseTokenConfigs, parseTokenUri, readPinFile, takeEnvironmentPin } from '../../../src/keyd/pkcs11/config.js';
import { ecdsaDerToRaw, ecdsaRawToDer, privateKeyAttributes, tokenKeyKind } from '../../../src/keyd/pkcs11/key-material.js';
import { CKA } from '../../../src/keyd/pkcs11/constants.js';
import { detachedPrivateKey } from '../../helpers/detached-keys.js';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

test('RFC 7512 URIs: token, object and a binary id; a bare label; malformed ones refused precisely', () => {
  assert.deepEqual(parseTokenUri('keyd'), { token: 'keyd' });
  const uri = parseTokenUri('pkcs11:token=My%20Token;object=www;id=%01%ff%20');
  assert.equal(uri.token, 'My Token');
  assert.equal(uri.object, 'www');
  assert.deepEqual(uri.id, Buffer.from([0x01, 0xff, 0x20]));
  const again = parseTokenUri(formatTokenUri(uri));
  assert.deepEqual(again, uri, 'format and parse round-trip');
  assert.throws(() => parseTokenUri('pkcs11:object=x'), /names no token/);
  assert.throws(() => parseTokenUri('pkcs11:token=a;token=b'), /token given twice/);
  assert.throws(() => parseTokenUri('pkcs11:token=%zz'), /bad percent-encoding in token/);
  assert.throws(() => parseTokenUri('x'.repeat(33)), /1 to 32 characters/);
});

test('a PKCS#11 URI with query attributes (pin-value) is refused without repeating the PIN; a path-only URI is taken (control)', () => {
  for (const text of ['pkcs11:token=keyd?pin-value=s3cret-pin', 'pkcs11:token=keyd;bogus?pin-value=s3cret-pin', 'pkcs11:token=keyd;object=a;object=b?pin-source=file:/x&pin-value=s3cret-pin']) {
    assert.throws(() => parseTokenUri(text), (err: Error & { code: string }) => {
      assert.equal(err.code, 'KEYD_BAD_REQUEST');
      assert.match(err.message, /query attributes/);
      assert.ok(!err.message.includes('s3cret-pin'), `the PIN is not in the message: ${err.message}`);
      return true;
    });
  }
  assert.deepEqual(parseTokenUri('pkcs11:token=keyd;object=www'), { token: 'keyd', object: 'www' });
});

test('config "pkcs11": absent means no token; a PIN only from a file or a variable; bad fields refused', () => {
  assert.equal(parseTokenConfigs(undefined), undefined);
  const [t] = parseTokenConfigs({ tokens: [{ token: 'pkcs11:token=keyd', module: '/usr/lib/x.so', pinEnv: 'KEYD_PIN' }] })!;
  assert.deepEqual(t, { label: 'keyd', module: '/usr/lib/x.so', pinEnv: 'KEYD_PIN', sessions: 4 });
  const bad = (tokens: unknown, re: RegExp) => assert.throws(() => parseTokenConfigs({ tokens }), (err: Error & { code: string }) => err.code === 'KEYD_CONFIG' && re.test(err.message));
  bad([{ token: 'k', module: '/m.so', pin: '1234' }], /unknown field "pin".*never written in the config/);
  bad([{ token: 'k', module: '/m.so' }], /exactly one of "pinFile" and "pinEnv"/);
  bad([{ token: 'k', module: '/m.so', pinFile: '/p', pinEnv: 'P' }], /exactly one of/);
  bad([{ token: 'k', module: 'relative.so', pinEnv: 'P' }], /absolute path/);
  bad([{ token: 'k', module: '/m.so', pinEnv: 'P', sessions: 0 }], /sessions must be an integer from 1 to 64/);
  assert.equal(parseTokenConfigs({ tokens: [{ token: 'k', module: '/m.so', pinEnv: 'P', signTimeoutMs: 2500 }] })![0]!.signTimeoutMs, 2500);
  for (const signTimeoutMs of [0, 99, 600_001, 1.5, '10000']) {
    bad([{ token: 'k', module: '/m.so', pinEnv: 'P', signTimeoutMs }], /signTimeoutMs must be an integer from 100 to 600000 \(milliseconds\)/);
  }
  // Key generation has its own timeout, in the same range (docs/KEYD.md: RSA generation is slow).
  assert.equal(parseTokenConfigs({ tokens: [{ token: 'k', module: '/m.so', pinEnv: 'P', generateTimeoutMs: 600_000 }] })![0]!.generateTimeoutMs, 600_000);
  for (const generateTimeoutMs of [0, 99, 600_001, 1.5, '120000']) {
    bad([{ token: 'k', module: '/m.so', pinEnv: 'P', generateTimeoutMs }], /generateTimeoutMs must be an integer from 100 to 600000 \(milliseconds\)/);
  }
  bad([{ token: 'k', module: '/m.so', pinEnv: 'P' }, { token: 'k', module: '/n.so', pinEnv: 'P' }], /configured twice/);
  bad([{ token: 'a', module: '/m.so', pinEnv: 'P' }, { token: 'b', module: '/m.so', pinEnv: 'P' }], /one token per module/);
  assert.throws(() => parseTokenConfigs({ token: 'k' }), /must be \{ "tokens"/);
  // Beside "tokens": a misplaced PIN or a misspelt key is refused, the value never repeated.
  for (const [key, hint] of [['pin', true], ['userPin', true], ['token', false], ['sesions', false]] as const) {
    assert.throws(
      () => parseTokenConfigs({ tokens: [{ token: 'k', module: '/m.so', pinEnv: 'P' }], [key]: 's3cret-pin' }),
      (err: Error & { code: string }) =>
        err.code === 'KEYD_CONFIG' &&
        err.message.startsWith(`config "pkcs11": unknown key "${key}" (allowed: tokens)`) &&
        err.message.includes('never written in the config') === hint &&
        !err.message.includes('s3cret-pin'),
      key,
    );
  }
});

test('ECDSA r ‖ s ↔ DER, checked against node:crypto\'s own two encodings', () => {
  for (const namedCurve of ['prime256v1', 'secp384r1']) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
    const n = namedCurve === 'prime256v1' ? 32 : 48;
    for (let i = 0; i < 50; i++) {
      const data = Buffer.from(`message ${i}`);
      const raw = sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' });
      const der = ecdsaRawToDer(raw);
      assert.ok(verify('sha256', data, publicKey, der), 'the DER form verifies as DER');
      assert.deepEqual(ecdsaDerToRaw(der, n), raw);
      const nodeDer = sign('sha256', data, privateKey);
      assert.ok(verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, ecdsaDerToRaw(nodeDer, n)));
    }
  }
});

test('PKCS#8 → token attributes: the components node:crypto reports, as views to wipe', () => {
  // Detached: exported as JWK below (test/helpers/detached-keys.ts).
  const ec = detachedPrivateKey(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey);
  const ecDer = ec.export({ format: 'der', type: 'pkcs8' });
  const ecAttrs = new Map(privateKeyAttributes(tokenKeyKind('ecdsa-p256'), ecDer).map((a) => [a.type, a.value as Buffer]));
  assert.deepEqual(ecAttrs.get(CKA.VALUE), Buffer.from(ec.export({ format: 'jwk' }).d!, 'base64url'));
  ecDer.fill(0);
  assert.ok(ecAttrs.get(CKA.VALUE)!.every((b) => b === 0), 'wiping the DER wipes the attribute');

  const ed = detachedPrivateKey(generateKeyPairSync('ed25519').privateKey);
  const edAttrs = new Map(privateKeyAttributes(tokenKeyKind('ed25519'), ed.export({ format: 'der', type: 'pkcs8' })).map((a) => [a.type, a.value as Buffer]));
  assert.deepEqual(edAttrs.get(CKA.VALUE), Buffer.from(ed.export({ format: 'jwk' }).d!, 'base64url'));

  const rsa = detachedPrivateKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
  const jwk = rsa.export({ format: 'jwk' });
  const rsaAttrs = new Map(privateKeyAttributes(tokenKeyKind('rsa'), rsa.export({ format: 'der', type: 'pkcs8' })).map((a) => [a.type, a.value as Buffer]));
  for (const [type, field] of [[CKA.MODULUS, 'n'], [CKA.PUBLIC_EXPONENT, 'e'], [CKA.PRIVATE_EXPONENT, 'd'], [CKA.PRIME_1, 'p'], [CKA.PRIME_2, 'q'], [CKA.EXPONENT_1, 'dp'], [CKA.EXPONENT_2, 'dq'], [CKA.COEFFICIENT, 'qi']] as const) {
    assert.deepEqual(rsaAttrs.get(type), Buffer.from(jwk[field]!, 'base64url'), field);
  }
  assert.ok(createPublicKey(rsa));
});

test('pin file: read when only its owner can access it; refused, without the PIN in the message, when group or others can', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pin-file-'));
  try {
    const path = join(dir, 'token.pin');
    const pin = `pin-${Date.now().toString(36)}`;
    await writeFile(path, `${pin}\n`, { mode: 0o600 });
    assert.equal(await readPinFile('keyd', path), pin, 'positive control: mode 0600, trailing newline ignored');
    for (const mode of [0o644, 0o640, 0o604]) {
      await chmod(path, mode);
      await assert.rejects(readPinFile('keyd', path), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'KEYD_TOKEN_PIN');
        assert.match(err.message, new RegExp(`pin file .* is accessible by group or others \\(mode ${mode.toString(8)}\\)`));
        assert.ok(!err.message.includes(pin), 'the PIN is never in a message');
        return true;
      });
    }
    await assert.rejects(readPinFile('keyd', join(dir, 'missing.pin')), /cannot read pin file .*ENOENT/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('pinEnv named like an Object.prototype member (constructor, toString, __proto__): unset is "not set", never an inherited member taken as the PIN; set, it is the PIN and leaves the environment', () => {
  for (const name of ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__']) {
    assert.equal(Object.hasOwn(process.env, name), false, `${name} is not set in this test's environment`);
    assert.equal(takeEnvironmentPin(name), undefined, `${name} unset: no PIN`);
  }
  // The same names, set: taken as any variable is (and taken out of the environment).
  (process.env as Record<string, string>)['constructor' as string] = 'pin-of-constructor';
  assert.equal(takeEnvironmentPin('constructor'), 'pin-of-constructor');
  assert.equal(Object.hasOwn(process.env, 'constructor'), false, 'taken out of the environment');
  assert.equal(takeEnvironmentPin('constructor'), 'pin-of-constructor', 'kept once taken');
  // Positive control: an ordinary name.
  const ordinary = `KEYD_TEST_PIN_${process.pid}`;
  assert.equal(takeEnvironmentPin(ordinary), undefined, 'unset: no PIN');
  process.env[ordinary] = '1234';
  assert.equal(takeEnvironmentPin(ordinary), '1234');
  assert.equal(process.env[ordinary], undefined, 'taken out of the environment');
});
