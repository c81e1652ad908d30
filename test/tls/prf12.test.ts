/**
 * The TLS 1.2 PRF (RFC 5246 §5) and the secrets built on it, against vectors made
 * independently of this code: the PRF test vectors published on the IETF TLS list
 * (SHA-256 and SHA-384, label "test label"), and master secret / extended master secret
 * (RFC 7627 §4) values computed with OpenSSL's TLS1-PRF KDF:
 *
 *   openssl kdf -keylen 48 -kdfopt digest:SHA256 -kdfopt hexsecret:PMS \
 *     -kdfopt seed:"extended master secret" -kdfopt hexseed:SESSION_HASH TLS1-PRF
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { extendedMasterSecret, finishedVerifyData12, keyBlock12, masterSecret, prf12 } from '../../src/tls/crypto/prf12.js';

const hex = (s: string) => Buffer.from(s.replace(/[\s:]/g, ''), 'hex');

test('PRF SHA-256: published test vector (100 bytes)', () => {
  const out = prf12('sha256', hex('9bbe436ba940f017b17652849a71db35'), 'test label', hex('a0ba9f936cda311827a6f796ffd5198c'), 100);
  assert.equal(
    out.toString('hex'),
    'e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff70187347b66',
  );
});

test('PRF SHA-384: published test vector (148 bytes)', () => {
  const out = prf12('sha384', hex('b80b733d6ceefcdc71566ea48e5567df'), 'test label', hex('cd665cf6a8447dd6ff8b27555edb7465'), 148);
  assert.equal(
    out.toString('hex'),
    '7b0c18e9ced410ed1804f2cfa34a336a1c14dffb4900bb5fd7942107e81c83cde9ca0faa60be9fe34f82b1233c9146a0e534cb400fed2700884f9dc236f80edd8bfa961144c9e8d792eca722a7b32fc3d416d473ebc2c5fd4abfdad05d9184259b5bf8cd4d90fa0d31e2dec479e4f1a26066f2eea9a69236a3e52655c9e9aee691c8f3a26854308d5eaa3be85e0990703d73e56f',
  );
});

test('PRF output is a prefix of a longer output (P_hash is a stream)', () => {
  const secret = hex('00112233');
  const long = prf12('sha256', secret, 'x', hex('aa'), 80);
  for (const n of [1, 12, 32, 33, 64, 79]) assert.deepEqual(prf12('sha256', secret, 'x', hex('aa'), n), long.subarray(0, n));
});

const PMS = Buffer.alloc(32, 0x42);

test('master secret (RFC 5246 §8.1) matches OpenSSL TLS1-PRF', () => {
  const out = masterSecret('sha256', PMS, Buffer.alloc(32, 1), Buffer.alloc(32, 2));
  assert.equal(out.toString('hex'), 'bf1cee5c076dbaf8b8ff852abf6ce328334a39a8dc772a95110e9bcdb7315be17dcd3ce00ed5abf656783c033b1d62fc');
});

test('extended master secret (RFC 7627 §4) matches OpenSSL TLS1-PRF, SHA-256 and SHA-384', () => {
  const sessionHash256 = createHash('sha256').update('handshake\n').digest();
  assert.equal(sessionHash256.toString('hex'), 'a39c5d2a6b9234f9cd04904d20dd6bdf6f9a7466482dd33eeea65eb98b0a721c');
  assert.equal(
    extendedMasterSecret('sha256', PMS, sessionHash256).toString('hex'),
    '336daf19b0272f6e166af302dd9411829da0bc7d4c216137d9eb3bf11f86e57ff22e3ffa3a15b787a088f1373b593b38',
  );
  const sessionHash384 = createHash('sha384').update('handshake\n').digest();
  assert.equal(
    extendedMasterSecret('sha384', PMS, sessionHash384).toString('hex'),
    '89649a1af5ed79b27763acd95b787ef246308b35e06bfa52b798740003a54e6f0a112f7907d28e630ddceecd66f3977f',
  );
});

test('EMS differs from the classic master secret for the same premaster secret', () => {
  const classic = masterSecret('sha256', PMS, Buffer.alloc(32, 1), Buffer.alloc(32, 2));
  const ems = extendedMasterSecret('sha256', PMS, createHash('sha256').update('handshake\n').digest());
  assert.notDeepEqual(classic, ems);
});

test('key block (§6.3) is the PRF over server_random + client_random, cut in order', () => {
  const master = Buffer.alloc(48, 7);
  const cr = Buffer.alloc(32, 1);
  const sr = Buffer.alloc(32, 2);
  const block = prf12('sha256', master, 'key expansion', Buffer.concat([sr, cr]), 2 * 16 + 2 * 4);
  const keys = keyBlock12('sha256', master, cr, sr, 16, 4);
  assert.deepEqual(Buffer.concat([keys.clientWriteKey, keys.serverWriteKey, keys.clientWriteIv, keys.serverWriteIv]), block);
  assert.equal(keys.clientWriteIv.length, 4);
});

test('Finished verify_data (§7.4.9) is 12 bytes and depends on the sender label', () => {
  const master = Buffer.alloc(48, 9);
  const hash = createHash('sha256').update('t').digest();
  const client = finishedVerifyData12('sha256', master, 'client', hash);
  const server = finishedVerifyData12('sha256', master, 'server', hash);
  assert.equal(client.length, 12);
  assert.deepEqual(client, prf12('sha256', master, 'client finished', hash, 12));
  assert.notDeepEqual(client, server);
});
