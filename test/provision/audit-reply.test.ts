/**
 * `delegator admin --server … audit` larger than one provisioning frame (1 MiB,
 * docs/PROVISIONING.md): keyd answers with the newest entries that fit, whole, and says beside
 * its result how many older ones it left out, as the admin socket does (docs/KEYD.md,
 * "Limits"); the CLI prints them with the same note on stderr. A reply that fits is whole and
 * unmarked.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { main } from '../../src/cli/admin.js';
import type { AuditEntry } from '../../src/keyd/audit.js';
import { assertNewestWhole, fillAuditLog, LONG_AUDIT_MESSAGE } from '../keyd/fixtures.js';
import { encodeFrame, MAX_FRAME_BYTES } from '../../src/provision/frames.js';
import { auditResponse } from '../../src/provision/protocol.js';
import { makePki, operatorFlags, startKeydForTest } from './harness.js';

const LONG_MESSAGE = LONG_AUDIT_MESSAGE;

test('admin audit over --server larger than one frame: the newest entries that fit, whole, marked; a small one whole', { timeout: 120_000 }, async () => {
  const pki = await makePki();
  const keyd = await startKeydForTest(pki);
  try {
    await fillAuditLog(keyd.running.adminService, 600);
    const client = await keyd.connect(pki.bob); // an auditor may read the audit log
    try {
      const reply = await client.auditReply({ limit: 600 });
      assertNewestWhole(reply, 600);
      const { entries, omitted } = reply;
      // As many as fit one frame (request id 1: the connection's first request): one more would not.
      const frame = (list: AuditEntry[], left: number) => Buffer.byteLength(JSON.stringify({ id: 1, ok: true, result: list, truncated: true, omitted: left }));
      assert.ok(frame(entries, omitted!) <= MAX_FRAME_BYTES, `${frame(entries, omitted!)} bytes`);
      const older = (await keyd.running.adminService.audit({ kind: 'local', id: 'test' }, { limit: 1000 })).find((e) => e.caller.id === `peer-${omitted! - 1}`)!;
      assert.ok(frame([older, ...entries], omitted! - 1) > MAX_FRAME_BYTES, 'one more entry would not fit');

      // Control: a reply that fits is the whole answer, unmarked; the list a version-1 CLI reads is unchanged.
      const recent = await client.auditReply({ limit: 10 });
      assert.equal(recent.entries.length, 10);
      assert.equal(recent.truncated, undefined);
      assert.equal(recent.omitted, undefined);
      assert.equal(((await client.audit({ limit: 3 })) as AuditEntry[]).length, 3);
    } finally {
      client.close();
    }

    // The CLI prints what came, and says on stderr that older entries were left out.
    const remote = await operatorFlags(keyd, pki, 'bob', ['--keyd-fingerprint', keyd.listener.fingerprint]);
    let out = '';
    let err = '';
    const io = { out: (t: string) => void (out += t), err: (t: string) => void (err += t) };
    assert.equal(await main([...remote, 'audit', '--json', '--limit', '600'], io), 0, err);
    const printed = JSON.parse(out) as AuditEntry[];
    assert.ok(printed.length > 300 && printed.some((e) => e.caller.id === 'peer-599'), `${printed.length} printed`);
    for (const e of printed) if (e.op === 'refused') assert.equal(e.message, LONG_MESSAGE);
    assert.match(err, new RegExp(`^delegator admin: audit: the newest ${printed.length} entries; ${600 - printed.length} older one\\(s\\) matched but did not fit in one reply \\(1 MiB`));
    // Control: nothing left out, nothing said.
    out = '';
    err = '';
    assert.equal(await main([...remote, 'audit', '--limit', '5'], io), 0, err);
    assert.equal(err, '', 'nothing said when nothing was left out');
    assert.equal(out.trim().split('\n').length, 6, 'a header and five entries');
  } finally {
    await keyd.close();
  }
});

test('auditResponse: entries whose response is exactly one frame are sent whole; one byte more, the oldest goes and the response still fits', () => {
  const entry = (i: number, message: string): AuditEntry => ({ time: '2026-01-01T00:00:00.000Z', op: 'refused', caller: { kind: 'client', id: `peer-${i}` }, ok: false, code: 'KEYD_TEST', message });
  for (const id of [1, 4_294_967_295]) {
    // Entries of about 2 KB, a few fewer than one frame holds, the newest padded so that the
    // whole response is exactly MAX_FRAME_BYTES.
    const size = (list: AuditEntry[]) => Buffer.byteLength(JSON.stringify({ id, ok: true, result: list }));
    const n = Math.floor(MAX_FRAME_BYTES / size([entry(0, LONG_MESSAGE)])) - 5;
    const entries = Array.from({ length: n }, (_, i) => entry(i, LONG_MESSAGE));
    const deficit = MAX_FRAME_BYTES - size(entries);
    assert.ok(deficit > 0 && deficit < 100_000, `${deficit}`);
    entries[n - 1] = entry(n - 1, 'x'.repeat(deficit + LONG_MESSAGE.length));
    assert.equal(size(entries), MAX_FRAME_BYTES);
    const whole = auditResponse(id, entries);
    assert.deepEqual(whole, { id, ok: true, result: entries });
    assert.equal(encodeFrame(whole).length, 4 + MAX_FRAME_BYTES);
    // One byte more: trimmed, marked, within the frame; the newest kept, the rest counted.
    entries[n - 1] = entry(n - 1, 'x'.repeat(deficit + LONG_MESSAGE.length + 1));
    const cut = auditResponse(id, entries) as { result: AuditEntry[]; truncated?: true; omitted?: number };
    assert.equal(cut.truncated, true);
    assert.ok(cut.omitted! >= 1);
    assert.deepEqual(cut.result, entries.slice(cut.omitted));
    assert.ok(encodeFrame(cut).length <= 4 + MAX_FRAME_BYTES);
    const more = { id, ok: true, result: entries.slice(cut.omitted! - 1), truncated: true, omitted: cut.omitted! - 1 };
    assert.ok(Buffer.byteLength(JSON.stringify(more)) > MAX_FRAME_BYTES, 'one more entry would not fit');
  }
});
