/** keyd's payload decoders report malformed bytes as keyd errors, not as TLS alerts. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeydError } from '../../src/keyd/errors.js';
import { decodeIdentityRequest } from '../../src/keyd/protocol.js';

test('a truncated keyd payload is KEYD_BAD_REQUEST naming the field, with no TLS alert in it', () => {
  let thrown: unknown;
  try {
    decodeIdentityRequest(Buffer.of(5, 0x61)); // server_name says 5 bytes, 1 follows
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof KeydError, String(thrown));
  assert.equal(thrown.code, 'KEYD_BAD_REQUEST');
  assert.equal(thrown.message, 'identity: truncated server_name');
});
