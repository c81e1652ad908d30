import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../../../src/keyd/audit.js';
import { AuditChain, verifyAuditLog, type ChainHead } from '../../../src/keyd/root/audit-chain.js';

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

/** Lines of `text` re-chained from the genesis (or `head`) after `edit`: what anyone can compute, since the chain has no key. */
function forge(lines: string[], edit: (entry: Record<string, unknown>, i: number) => Record<string, unknown>, head?: ChainHead): string {
  const chain = new AuditChain(head);
  return lines
    .map((l, i) => {
      const { n: _n, chain: _c, ...entry } = JSON.parse(l) as Record<string, unknown>;
      return chain.line(edit(entry, i));
    })
    .join('');
}

const tampered = (pattern: RegExp, code = 'KEYD_AUDIT_TAMPERED') => (err: Error & { code?: string }) => {
  assert.equal(err.code, code);
  assert.match(err.message, pattern);
  return true;
};

test('audit chain: entry 1 edited (its chain field kept) is refused: it is checked against the genesis value, having no line before it', async () => {
  await withLog(async (path) => {
    await appendEntries(path, 3, 0);
    const head = await verifyAuditLog(path, null); // positive control
    assert.equal(head.entries, 3);
    const lines = (await readFile(path, 'utf8')).split('\n');
    lines[0] = lines[0]!.replace('"op":"put"', '"op":"list"');
    await writeFile(path, lines.join('\n'));
    await assert.rejects(verifyAuditLog(path, null), tampered(/line 1 \(entry 1\) breaks the hash chain: it was edited/));
  });
});

test('audit chain: a log rewritten with a recomputed chain is refused by the head the manifest committed', async () => {
  await withLog(async (path) => {
    await appendEntries(path, 3, 0);
    const committed = await verifyAuditLog(path, null);
    assert.deepEqual(await verifyAuditLog(path, committed), committed, 'positive control: the genuine log');
    const lines = (await readFile(path, 'utf8')).trimEnd().split('\n');
    // Entry 2 rewritten, every link after it recomputed: the chain itself is consistent.
    await writeFile(path, forge(lines, (e, i) => (i === 1 ? { ...e, op: 'list' } : e)));
    assert.equal((await verifyAuditLog(path, null)).entries, 3, 'the forged chain links up');
    await assert.rejects(verifyAuditLog(path, committed), tampered(/^audit entry 3 differs from the one the store manifest committed: the audit log was rewritten$/));
  });
});

test('audit chain: after a rotation (audit.log empty), a rotated file rewritten with a recomputed chain is refused by the committed head', async () => {
  await withLog(async (path) => {
    await appendEntries(path, 3, 0);
    const committed = await verifyAuditLog(path, null);
    const original = await readFile(path, 'utf8');
    await writeFile(`${path}.1`, original);
    await writeFile(path, '');
    assert.deepEqual(await verifyAuditLog(path, committed), committed, 'positive control: appends continue from the rotated file');
    await writeFile(`${path}.1`, forge(original.trimEnd().split('\n'), (e, i) => (i === 0 ? { ...e, op: 'list' } : e)));
    await assert.rejects(verifyAuditLog(path, committed), tampered(/^audit entry 3 differs from the one the store manifest committed/));
  });
});

test('audit chain: the first line of a file after a rotation is checked against the last line of the file before it', async () => {
  await withLog(async (path) => {
    await appendEntries(path, 3, 0);
    const atRotation = await verifyAuditLog(path, null);
    const rotated = await readFile(path, 'utf8');
    await writeFile(`${path}.1`, rotated);
    await writeFile(path, '');
    const log = await AuditLog.open(path, await verifyAuditLog(path, atRotation));
    for (let i = 3; i < 5; i++) await log.append({ caller, op: 'put', ok: true, names: [`n${i}.test`] });
    await log.close();
    const committed = await verifyAuditLog(path, atRotation);
    assert.equal(committed.entries, 5);
    assert.deepEqual(await verifyAuditLog(path, committed), committed, 'positive control: two files, one chain');
    const current = await readFile(path, 'utf8');

    // Entry 4, the first line of audit.log, edited with its chain field kept: nothing before it in its file.
    await writeFile(path, current.replace('"op":"put"', '"op":"list"'));
    await assert.rejects(verifyAuditLog(path, committed), tampered(/audit\.log line 1 \(entry 4\) breaks the hash chain/));
    await writeFile(path, current);

    // audit.log.1 rewritten with a recomputed chain: its own links hold, the link into audit.log does not.
    await writeFile(`${path}.1`, forge(rotated.trimEnd().split('\n'), (e, i) => (i === 1 ? { ...e, op: 'list' } : e)));
    await assert.rejects(verifyAuditLog(path, committed), tampered(/audit\.log line 1 \(entry 4\) breaks the hash chain/));
    await writeFile(`${path}.1`, rotated);

    // The rotated file gone (rotated away past "keep"): nothing to check against, still accepted.
    await rm(`${path}.1`);
    assert.deepEqual(await verifyAuditLog(path, committed), committed);
  });
});
