/**
 * Admin replies and the protocol's frame maximum (docs/PROTOCOL.md, 1 MiB). `admin audit`
 * answers with the newest entries that fit one frame, whole, and says how many older ones
 * it left out; any other reply that would not fit is that request's error, and keyd keeps
 * serving (it must not end the process).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalAdminTransport } from '../../src/keyd/admin-client.js';
import { KeydClient } from '../../src/keyd/client.js';
import type { AuditEntry } from '../../src/keyd/audit.js';
import { newestEntriesWithin } from '../../src/keyd/audit-reader.js';
import { main } from '../../src/cli/admin.js';
import { MAX_ADMIN_REPLY_JSON } from '../../src/keyd/protocol.js';
import { assertNewestWhole, fillAuditLog, LONG_AUDIT_MESSAGE, scratch, startTestKeyd } from './fixtures.js';

const LONG_MESSAGE = LONG_AUDIT_MESSAGE;

test('admin audit larger than one frame: the newest entries that fit, whole, marked as truncated; a small one whole', { timeout: 60_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath);
  try {
    await fillAuditLog(keyd.adminService, 600);
    const admin = await LocalAdminTransport.connect(keyd.adminSocketPath, 10_000);
    try {
      const reply = await admin.audit({ limit: 600 });
      assertNewestWhole(reply, 600);
      const { entries } = reply;
      // And as many as fit: one more entry would not.
      const size = Buffer.byteLength(JSON.stringify(reply));
      assert.ok(size <= MAX_ADMIN_REPLY_JSON && size + Buffer.byteLength(JSON.stringify(entries[0])) + 1 > MAX_ADMIN_REPLY_JSON, `${size} bytes`);

      // Control: a reply that fits is the whole answer, unmarked; the newest entry is the audit just made.
      const recent = await admin.audit({ limit: 10 });
      assert.equal(recent.entries.length, 10);
      assert.equal(recent.truncated, undefined);
      assert.equal(recent.omitted, undefined);
      assert.equal(recent.entries.at(-1)!.op, 'audit');

      // The CLI prints what came, and says on stderr that older entries were left out.
      let out = '';
      let err = '';
      const io = { out: (t: string) => void (out += t), err: (t: string) => void (err += t) };
      assert.equal(await main(['--socket', keyd.adminSocketPath, 'audit', '--json', '--limit', '600'], io), 0, err);
      const printed = JSON.parse(out) as AuditEntry[];
      assert.ok(printed.length > 300 && printed.some((e) => e.caller.id === 'peer-599'), `${printed.length} printed`);
      for (const e of printed) if (e.op === 'refused') assert.equal(e.message, LONG_MESSAGE);
      assert.match(err, new RegExp(`^delegator admin: audit: the newest ${printed.length} entries; ${600 - printed.length} older one\\(s\\) matched but did not fit in one reply \\(1 MiB`));
      out = '';
      err = '';
      assert.equal(await main(['--socket', keyd.adminSocketPath, 'audit', '--limit', '5'], io), 0, err);
      assert.equal(err, '', 'nothing said when nothing was left out');
      assert.equal(out.trim().split('\n').length, 6, 'a header and five entries');
    } finally {
      admin.close();
    }
  } finally {
    await keyd.close();
    await s.cleanup();
  }
});

test('newestEntriesWithin: keeps the newest entries within the budget, counts the marker, never cuts one', () => {
  const entry = (i: number): AuditEntry => ({ time: `2026-01-01T00:00:${String(i).padStart(2, '0')}.000Z`, op: 'x', caller: { kind: 'client', id: `c${i}` }, ok: true });
  const all = [0, 1, 2, 3, 4].map(entry);
  const whole = Buffer.byteLength(JSON.stringify({ entries: all }));
  // Exactly the whole reply's size: all of it, unmarked (control).
  assert.deepEqual(newestEntriesWithin(all, whole), { entries: all });
  // One byte less: the oldest go, the marker counted in the budget.
  const cut = newestEntriesWithin(all, whole - 1);
  assert.equal(cut.truncated, true);
  assert.ok(Buffer.byteLength(JSON.stringify(cut)) <= whole - 1);
  assert.deepEqual(cut.entries, all.slice(cut.omitted));
  assert.ok(cut.omitted! >= 1);
  // A budget below one entry: none, all counted as omitted.
  assert.deepEqual(newestEntriesWithin(all, 20), { entries: [], truncated: true, omitted: 5 });
  // Every budget up to the whole: the reply (marker included) fits it, holds the newest
  // entries, counts the rest, and one more entry would not have fitted.
  for (let budget = 0; budget <= whole; budget++) {
    const reply = newestEntriesWithin(all, budget);
    const size = Buffer.byteLength(JSON.stringify(reply));
    assert.ok(size <= budget || reply.entries.length === 0, `budget ${budget}: reply of ${size} bytes`);
    const omitted = reply.omitted ?? 0;
    assert.deepEqual(reply.entries, all.slice(omitted), `budget ${budget}`);
    if (omitted > 0) {
      const more = { entries: all.slice(omitted - 1), truncated: true, omitted: omitted - 1 };
      assert.ok(Buffer.byteLength(JSON.stringify(omitted - 1 === 0 ? { entries: all } : more)) > budget, `budget ${budget}: one more entry would have fitted`);
    }
  }
});

test('an admin reply that would pass the 1 MiB frame maximum: refused with a reason, keyd keeps serving', { timeout: 60_000 }, async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath);
  try {
    // keyd has no other reply that large for a test to cause cheaply: stats is made to answer 1.3 MB.
    const stats = keyd.adminService.stats.bind(keyd.adminService);
    keyd.adminService.stats = async () => Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`${LONG_MESSAGE}-${i}`, { signatures: 0, refusals: 0, keys: {} }]));
    const admin = await LocalAdminTransport.connect(keyd.adminSocketPath, 10_000);
    try {
      await assert.rejects(admin.stats(), { code: 'KEYD_BAD_REQUEST', message: /^the reply would be \d+ bytes, over the 1048576-byte frame maximum/ });
      // Control: the same connection and keyd still answer, and a reply that fits is served.
      keyd.adminService.stats = stats;
      assert.equal(typeof (await admin.stats()), 'object');
      assert.ok((await admin.audit({ limit: 10 })).entries.length >= 1);
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
