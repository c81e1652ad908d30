/**
 * The TLS 1.3 key schedule (src/tls/handshake/key-schedule.ts) where RFC 8448's traces do not
 * reach: SHA-384 (RFC 8448 has SHA-256 only), the per-hash cache of the no-PSK early secret,
 * and KeyUpdate's "traffic upd" (RFC 8446 §7.2). Expected values from OpenSSL's HKDF:
 *
 *   openssl kdf -keylen 48 -kdfopt digest:SHA384 -kdfopt mode:EXTRACT_ONLY \
 *     -kdfopt hexkey:<48 zero bytes> -kdfopt hexsalt:<48 zero bytes> HKDF
 *   openssl kdf -keylen L -kdfopt digest:SHA256|SHA384 -kdfopt mode:EXPAND_ONLY \
 *     -kdfopt hexkey:SECRET -kdfopt hexinfo:HkdfLabel HKDF
 *
 * HkdfLabel (§7.1): uint16 length, "tls13 " + label (one length byte first), context (one
 * length byte first).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EarlySecrets, nextTrafficSecret, resumptionPsk } from '../../src/tls/handshake/key-schedule.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
/** RFC 8448 §3: the early secret without a PSK, SHA-256. */
const EARLY_SHA256 = '33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a';
/** HKDF-Extract(48 zero bytes, 48 zero bytes), SHA-384 (§7.1: Hash.length zeros for both). */
const EARLY_SHA384 = '7ee8206f5570023e6dc7519eb1073bc4e791ad37b5c382aa10ba18e2357e716971f9362f2c2fe2a76bfd78dfec4ea9b5';

test('no-PSK early secret per hash: SHA-384 after SHA-256 and SHA-256 after SHA-384 each get their own (the cache is keyed by the hash)', () => {
  assert.equal(hex(new EarlySecrets('sha256').earlySecret), EARLY_SHA256);
  assert.equal(hex(new EarlySecrets('sha384').earlySecret), EARLY_SHA384);
  assert.equal(hex(new EarlySecrets('sha256').earlySecret), EARLY_SHA256);
  assert.equal(hex(new EarlySecrets('sha384').earlySecret), EARLY_SHA384);
  // Control: a PSK of Hash.length zero bytes is the same extract, computed without the cache.
  assert.equal(hex(new EarlySecrets('sha384', Buffer.alloc(48)).earlySecret), EARLY_SHA384);
});

test('application_traffic_secret_N+1 = HKDF-Expand-Label(secret, "traffic upd", "", Hash.length) (RFC 8446 §7.2), SHA-256 and SHA-384', () => {
  assert.equal(hex(nextTrafficSecret('sha256', Buffer.alloc(32, 0x11))), '1c8c2735761dcde34e19a6bba9bb25e96c08c452ed4bcd47ce206cab528016ca');
  assert.equal(
    hex(nextTrafficSecret('sha384', Buffer.alloc(48, 0x11))),
    'caf763e646079ff797f047ef517e3fa5a38892716d90de9e4295e8abb8f92e47565702bb0902d4589dd691adf4df9de7',
  );
});

test('resumption PSK for SHA-384 is Hash.length (48) bytes of HKDF-Expand-Label(res master, "resumption", nonce) (RFC 8446 §4.6.1)', () => {
  const psk = resumptionPsk('sha384', Buffer.alloc(48, 0x11), Buffer.from([0, 0]));
  assert.equal(psk.length, 48);
  assert.equal(hex(psk), 'ab5f6671ad6a6fac720c3e5be2801f4704a4de6a1527b93f61a8f9a4d5b0608bb5534847bb0c3c63866875ca883cfa08');
});
