import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../../../src/keyd/audit.js';
import { verifyAuditLog } from '../../../src/keyd/root/audit-chain.js';

const caller = { kind: 'local' as const, id: 'uid 0' };

async function withLog(body: (path: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'audit-chain-'));
  try {
    await body(join(dir, 'audit.log'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Appends `count` entries through keyd's AuditLog, continuing the chain from what verifyAuditLog found. */
async function appendEntries(path: string, count: number, from: number): Promise<void> {
  const log = await AuditLog.open(path, await verifyAuditLog(path, null));
  for (let i = 0; i < count; i++) {
    await log.append({ caller, op: 'put', ok: true, names: [`n${from + i}.test`] });
  }
  await log.close();
}

test('audit chain: a line torn by a crash mid-append is cut, and the log keeps verifying after later appends', async () => {
  await withLog(async (path) => {
    await appendEntries(path, 3, 0);
    const good = await verifyAuditLog(path, null);
    assert.equal(good.entries, 3);
    // A crash mid-append: half of a fourth line, no newline (never acknowledged).
    const fourth = (await readFile(path, 'utf8')).split('\n')[2]!;
    await appendFile(path, fourth.slice(0, 40));

    const afterCrash = await verifyAuditLog(path, good);
    assert.deepEqual(afterCrash, good, 'the torn line is not an entry');
    assert.ok((await readFile(path, 'utf8')).endsWith('\n'), 'the torn tail was cut');
    await appendEntries(path, 2, 3);
    // Before the fix the next entry was glued onto the torn line and this start failed.
    const later = await verifyAuditLog(path, afterCrash);
    assert.equal(later.entries, 5);
  });
});

test('audit chain: a whole last line that only lacks its newline is kept and terminated', async () => {
  await withLog(async (path) => {
    await appendEntries(path, 2, 0);
    const text = await readFile(path, 'utf8');
    await writeFile(path, text.slice(0, -1));
    const head = await verifyAuditLog(path, null);
    assert.equal(head.entries, 2);
    await appendEntries(path, 1, 2);
    assert.equal((await verifyAuditLog(path, head)).entries, 3);
  });
});

test('audit chain: an unchained line inserted after chained entries is refused; unchained lines before them are older entries', async () => {
  await withLog(async (path) => {
    // Positive control: lines from before the log was chained, then chained entries.
    await writeFile(path, `${JSON.stringify({ time: '2026-01-01T00:00:00.000Z', op: 'put', outcome: 'ok' })}\n`);
    await appendEntries(path, 2, 0);
    assert.equal((await verifyAuditLog(path, null)).entries, 2);
    // The attack: a forged entry without a link, placed among the chained ones.
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines.splice(2, 0, JSON.stringify({ time: '2026-01-02T00:00:00.000Z', op: 'delete', outcome: 'ok', names: ['b.test'] }));
    await writeFile(path, lines.join('\n'));
    await assert.rejects(verifyAuditLog(path, null), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KEYD_AUDIT_TAMPERED');
      assert.match(err.message, /line 3 has no hash-chain link but follows chained entries/);
      return true;
    });
  });
});
