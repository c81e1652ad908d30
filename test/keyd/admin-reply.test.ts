/**
 * An admin reply larger than the protocol's frame maximum (docs/PROTOCOL.md): keyd answers
 * that request with an error and keeps serving; it must not end the process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalAdminTransport } from '../../src/keyd/admin-client.js';
import { KeydClient } from '../../src/keyd/client.js';
import { AUDIT_FIELD_LIMITS } from '../../src/keyd/audit.js';
import { scratch, startTestKeyd } from './fixtures.js';

test('admin audit whose reply would pass the 1 MiB frame maximum: refused with a reason, keyd keeps serving', { timeout: 60_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath);
  try {
    // 600 entries with the longest message an entry keeps: about 1.3 MB of JSON, beyond one frame.
    for (let i = 0; i < 600; i++) {
      await keyd.adminService.recordAudit({ op: 'refused', caller: { kind: 'client', id: `peer-${i}` }, ok: false, code: 'KEYD_TEST', message: 'm'.repeat(AUDIT_FIELD_LIMITS.message) });
    }
    const admin = await LocalAdminTransport.connect(keyd.adminSocketPath, 10_000);
    try {
      await assert.rejects(admin.audit({ limit: 600 }), { code: 'KEYD_BAD_REQUEST', message: /^the reply would be \d+ bytes, over the 1048576-byte frame maximum/ });
      // Control: the same connection and keyd still answer, and a reply that fits is served.
      const recent = await admin.audit({ limit: 10 });
      assert.equal(recent.length, 10);
      assert.equal(recent.at(-1)!.op, 'audit');
    } finally {
      admin.close();
    }
    const edge = await KeydClient.connect({ socketPath: keyd.socketPath });
    assert.equal(await edge.identity('none.test'), undefined);
    edge.close();
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});
