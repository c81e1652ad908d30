import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AUDIT_FIELD_LIMITS, AuditLog } from '../../src/keyd/audit.js';
import { MAX_AUDIT_LINE, MAX_AUDIT_QUERY, readAuditFiles } from '../../src/keyd/audit-reader.js';
import { scratch, startTestKeyd } from './fixtures.js';
import { KeydClient } from '../../src/keyd/client.js';
import { Opcode } from '../../src/keyd/protocol.js';

test('audit log rotates past maxBytes without losing an entry; reads span the rotated files, oldest first', async () => {
  const s = await scratch();
  const path = join(s.dir, 'audit.log');
  const log = await AuditLog.open(path, undefined, { maxBytes: 4096, keep: 100 });
  const total = 300;
  // Concurrent appends (as keyd makes them): rotation happens inside the append queue.
  await Promise.all(Array.from({ length: total }, (_, i) => log.append({ op: 'test', caller: { kind: 'local', id: `n${i}` }, ok: true })));
  const files = (await readdir(s.dir)).filter((f) => f.startsWith('audit.log'));
  assert.ok(files.length > 5, `rotated into ${files.length} files`);
  for (const f of files) assert.ok((await readFile(join(s.dir, f))).length < 4096 + 200, `${f} bounded`);
  const all = await log.read({ limit: 10_000 });
  assert.deepEqual(all.map((e) => e.caller.id), Array.from({ length: total }, (_, i) => `n${i}`));
  await log.close();
  // With keep = 2 only the newest files survive, and rotation still never splits an entry.
  const small = await AuditLog.open(join(s.dir, 'small.log'), undefined, { maxBytes: 4096, keep: 2 });
  for (let i = 0; i < 200; i++) await small.append({ op: 'test', caller: { kind: 'local', id: `m${i}` }, ok: true });
  const kept = await small.read({ limit: 10_000 });
  assert.equal(kept.at(-1)!.caller.id, 'm199');
  const ids = kept.map((e) => Number(e.caller.id.slice(1)));
  assert.deepEqual(ids, Array.from({ length: ids.length }, (_, i) => ids[0]! + i), 'a contiguous run up to the newest');
  await small.close();
  await s.cleanup();
});

test('audit reads are incremental: a large log and an oversized line never get buffered whole', async () => {
  const s = await scratch();
  const path = join(s.dir, 'audit.log');
  const fh = await open(path, 'w', 0o600);
  // 8 MiB of entries, with one 2 MiB line (not an entry keyd writes) in the middle.
  const line = (i: number) => JSON.stringify({ time: `2026-01-01T00:00:${String(i % 60).padStart(2, '0')}Z`, op: 'test', caller: { kind: 'local', id: `e${i}` }, ok: true }) + '\n';
  let i = 0;
  let written = 0;
  while (written < 4 * 1024 * 1024) {
    const l = line(i++);
    await fh.write(l);
    written += l.length;
  }
  await fh.write('{"junk":"' + 'z'.repeat(2 * 1024 * 1024) + '"}\n');
  while (written < 8 * 1024 * 1024) {
    const l = line(i++);
    await fh.write(l);
    written += l.length;
  }
  await fh.close();
  const log = await AuditLog.open(path);
  const stats = { peakLineBytes: 0, bytesRead: 0 };
  const newest = await log.read({ limit: 3 }, stats);
  await log.close();
  assert.deepEqual(newest.map((e) => e.caller.id), [`e${i - 3}`, `e${i - 2}`, `e${i - 1}`]);
  assert.ok(stats.bytesRead > 8 * 1024 * 1024, 'the whole log was scanned');
  assert.ok(stats.peakLineBytes > 0 && stats.peakLineBytes <= MAX_AUDIT_LINE + 64 * 1024, `held at most ${stats.peakLineBytes} bytes of one line`);
  await s.cleanup();
});

test('keyd rotates its audit log at config "auditLog".maxBytes and `admin audit` still sees every entry', async () => {
  const s = await scratch();
  const keyd = await startTestKeyd(s.dir, s.machineIdPath, { config: { auditLog: { maxBytes: 4096, keep: 50 } } });
  try {
    const c = await KeydClient.connect({ socketPath: keyd.adminSocketPath });
    for (let i = 0; i < 60; i++) await c.admin(Opcode.list, {});
    const { json } = await c.admin(Opcode.audit, { limit: 1000 });
    c.close();
    const entries = json.entries as Array<{ op: string }>;
    assert.equal(entries.filter((e) => e.op === 'list').length, 60);
    assert.ok((await readdir(join(s.dir, 'data'))).includes('audit.log.1'));
  } finally {
    await keyd.close();
  }
  // The hash chain runs on across rotated files: a restart verifies it and continues.
  const again = await startTestKeyd(s.dir, s.machineIdPath, { config: { auditLog: { maxBytes: 4096, keep: 50 } } });
  try {
    const c = await KeydClient.connect({ socketPath: again.adminSocketPath });
    await c.admin(Opcode.list, {});
    const { json } = await c.admin(Opcode.audit, { limit: 1000 });
    c.close();
    assert.equal((json.entries as Array<{ op: string }>).filter((e) => e.op === 'list').length, 61);
  } finally {
    await again.close();
    await s.cleanup();
  }
});

test('a failed audit write (disk full) leaves neither a torn line nor a gap in the hash chain: the log still verifies at the next start', async () => {
  const { verifyAuditLog } = await import('../../src/keyd/root/audit-chain.js');
  const s = await scratch();
  const path = join(s.dir, 'audit.log');
  const log = await AuditLog.open(path);
  await log.append({ op: 'first', caller: { kind: 'local', id: 'a' }, ok: true });
  // The next write reaches the disk only in part, then fails, as a full disk does.
  const fh = (log as unknown as { fh: { write: (data: string) => Promise<unknown> } }).fh;
  const realWrite = fh.write.bind(fh);
  fh.write = async (data: string) => {
    fh.write = realWrite;
    await realWrite(data.slice(0, 20));
    throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
  };
  await assert.rejects(log.append({ op: 'lost', caller: { kind: 'local', id: 'b' }, ok: true }), /ENOSPC/);
  await log.append({ op: 'third', caller: { kind: 'local', id: 'c' }, ok: true });
  const head = log.head;
  await log.close();
  const text = await readFile(path, 'utf8');
  assert.equal(text.split('\n').filter(Boolean).length, 2, 'the torn piece of the failed line is gone');
  assert.doesNotMatch(text, /"op":"lost"/);
  // Positive control of the chain check itself: the log verifies up to the head keyd committed.
  assert.deepEqual(await verifyAuditLog(path, head), head);
  assert.equal(head.entries, 2, 'the failed entry took no place in the chain');
  await s.cleanup();
});

test('an entry carrying a request\'s huge strings is written bounded, so `admin audit` still reads it; an ordinary entry is written as given', async () => {
  const s = await scratch();
  const log = await AuditLog.open(join(s.dir, 'audit.log'));
  // What an operator controls in a refused request: the op, the names, a message quoting them.
  const huge = 'x'.repeat(300_000);
  await log.append({ op: huge, caller: { kind: 'operator', id: 'CN=op' }, names: Array.from({ length: 300 }, (_, i) => `${i}.${'n'.repeat(10_000)}`), ok: false, code: 'PROVISION_BAD_REQUEST', message: `unknown operation "${huge}"` });
  const ordinary = { op: 'put', caller: { kind: 'operator' as const, id: 'CN=op' }, names: ['a.example', 'b.example'], ok: false, code: 'PROVISION_REPLAY', message: 'payload with nonce abc was already used' };
  await log.append(ordinary);
  const lines = (await readFile(join(s.dir, 'audit.log'), 'utf8')).split('\n').filter(Boolean);
  assert.ok(lines.every((l) => l.length < MAX_AUDIT_LINE / 2), `line lengths ${lines.map((l) => l.length)}`);
  const [bounded, kept] = await log.read({ limit: 10 });
  assert.ok(bounded, 'the bounded entry is read back (a line past MAX_AUDIT_LINE would be skipped)');
  assert.ok(bounded.op.startsWith('xxx') && bounded.op.endsWith(`…(${300_000 - AUDIT_FIELD_LIMITS.text} more characters)`));
  assert.equal(bounded.names!.length, AUDIT_FIELD_LIMITS.names + 1);
  assert.equal(bounded.names!.at(-1), `…(${300 - AUDIT_FIELD_LIMITS.names} more names)`);
  assert.ok(bounded.names!.slice(0, -1).every((n, i) => n.startsWith(`${i}.nnn`)));
  assert.ok(bounded.message!.length < AUDIT_FIELD_LIMITS.message + 50);
  assert.equal(bounded.code, 'PROVISION_BAD_REQUEST');
  // Positive control: an ordinary entry is exactly what was appended.
  const { time, chain, n, ...rest } = kept! as typeof kept & { chain?: string; n?: number };
  assert.ok(time && chain && n === 2, 'time and the hash chain are added');
  assert.deepEqual(rest, ordinary);
  await log.close();
  await s.cleanup();
});

test('audit query: "since" keeps entries at exactly that time; "limit" is clamped to MAX_AUDIT_QUERY, the newest kept', async () => {
  const s = await scratch();
  try {
    const path = join(s.dir, 'audit.log');
    const fh = await open(path, 'w', 0o600);
    const total = MAX_AUDIT_QUERY + 5;
    const time = (i: number) => new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString();
    let text = '';
    for (let i = 0; i < total; i++) text += JSON.stringify({ time: time(i), op: 'test', caller: { kind: 'local', id: `e${i}` }, ok: true }) + '\n';
    await fh.write(text);
    await fh.close();
    const since = await readAuditFiles([path], { since: time(total - 3), limit: 100 });
    assert.deepEqual(since.map((e) => e.caller.id), [`e${total - 3}`, `e${total - 2}`, `e${total - 1}`], 'at or after "since"');
    const all = await readAuditFiles([path], { limit: 1_000_000 });
    assert.equal(all.length, MAX_AUDIT_QUERY);
    assert.equal(all[0]!.caller.id, `e${total - MAX_AUDIT_QUERY}`);
    assert.equal(all.at(-1)!.caller.id, `e${total - 1}`);
    assert.equal((await readAuditFiles([path], { limit: 7 })).length, 7, 'positive control: a limit below the maximum is kept');
  } finally {
    await s.cleanup();
  }
});
