/**
 * keyd's signing ledger (docs/KEYD.md "Audit log"): counts per (client, key) for one window,
 * then one audit entry per pair and the totals rewritten durably; `admin stats` (snapshot)
 * shows the totals plus the current window, and the totals survive a restart. Windows are
 * flushed by hand here (no timers), so nothing depends on timing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { AuditEntry } from '../../src/keyd/audit.js';
import { SigningLedger } from '../../src/keyd/signing-ledger.js';
import { KeydMetrics } from '../../src/keyd/metrics.js';

type Entry = Omit<AuditEntry, 'time'>;

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'keyd-ledger-'));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** client → key → [signatures, refusals], and the per-client totals checked against the keys. */
function counts(ledger: SigningLedger): Record<string, Record<string, [number, number]>> {
  // Object.fromEntries: a client named `__proto__` is an own key here too.
  const out: Array<[string, Record<string, [number, number]>]> = [];
  for (const [client, row] of Object.entries(ledger.snapshot().clients)) {
    const keys = Object.values(row.keys);
    assert.equal(row.signatures, keys.reduce((n, k) => n + k.signatures, 0), `${client}: signatures are the sum over its keys`);
    assert.equal(row.refusals, keys.reduce((n, k) => n + k.refusals, 0), `${client}: refusals are the sum over its keys`);
    out.push([client, Object.fromEntries(Object.entries(row.keys).map(([k, c]) => [k, [c.signatures, c.refusals]]))]);
  }
  return Object.fromEntries(out);
}

test('counts per client and key: the current window is shown, a flushed window is counted once, and the totals survive a restart', { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    const totalsPath = join(dir, 'signing-totals.json');
    const entries: Entry[] = [];
    let now = Date.parse('2026-01-01T00:00:00Z');
    const ledger = await SigningLedger.open({ totalsPath, intervalMs: 60_000, audit: async (e) => void entries.push(e), now: () => now });
    ledger.signed('edge-a', 'k1');
    ledger.signed('edge-a', 'k1');
    ledger.signed('edge-b', 'k2');
    ledger.refused('edge-a', undefined, 'KEYD_NOT_AUTHORISED');
    // Before any flush, admin stats already shows the window.
    assert.deepEqual(counts(ledger), { 'edge-a': { k1: [2, 0], '(none)': [0, 1] }, 'edge-b': { k2: [1, 0] } });

    now += 60_000;
    await ledger.flush();
    assert.deepEqual(counts(ledger), { 'edge-a': { k1: [2, 0], '(none)': [0, 1] }, 'edge-b': { k2: [1, 0] } }, 'the same after the flush');
    assert.equal(entries.length, 3, 'one audit entry per (client, key)');

    // A second window: only its own counts are added.
    ledger.signed('edge-a', 'k1');
    assert.deepEqual(counts(ledger)['edge-a'], { k1: [3, 0], '(none)': [0, 1] }, 'a flushed window is not counted again');
    now += 60_000;
    await ledger.flush();
    assert.deepEqual(counts(ledger)['edge-a'], { k1: [3, 0], '(none)': [0, 1] });
    assert.equal(entries.length, 4, 'the second window has one pair');
    assert.deepEqual([entries[3]!.caller.id, entries[3]!.keyRef, entries[3]!.count], ['edge-a', 'k1', 1]);
    // An empty window writes nothing.
    await ledger.flush();
    assert.equal(entries.length, 4);
    await ledger.stop();

    // What is on disk is the totals, and a new ledger (a restarted keyd) starts from them.
    const onDisk = JSON.parse(await readFile(totalsPath, 'utf8')) as { since: string; clients: Record<string, Record<string, { signatures: number; refusals: number }>> };
    assert.deepEqual(onDisk.clients, {
      'edge-a': { k1: { signatures: 3, refusals: 0 }, '(none)': { signatures: 0, refusals: 1 } },
      'edge-b': { k2: { signatures: 1, refusals: 0 } },
    });
    const restarted = await SigningLedger.open({ totalsPath, intervalMs: 60_000, audit: async (e) => void entries.push(e), now: () => now });
    assert.equal(restarted.snapshot().since, '2026-01-01T00:00:00.000Z', 'the totals keep the time they count from');
    assert.deepEqual(counts(restarted), { 'edge-a': { k1: [3, 0], '(none)': [0, 1] }, 'edge-b': { k2: [1, 0] } });
    restarted.signed('edge-b', 'k2');
    await restarted.stop();
    const again = await SigningLedger.open({ totalsPath, intervalMs: 60_000, audit: async () => undefined });
    assert.deepEqual(counts(again)['edge-b'], { k2: [2, 0] }, 'counting goes on after the restart');
  });
});

test('flushes are serialised: the next window is audited only after the previous one is written', { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    const totalsPath = join(dir, 'signing-totals.json');
    const audited: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const firstStarted = new Promise<void>((resolve) => (started = resolve));
    const ledger = await SigningLedger.open({
      totalsPath,
      intervalMs: 60_000,
      audit: async (e) => {
        audited.push(e.caller.id);
        if (e.caller.id === 'w1') {
          started();
          await gate; // the first window's audit write is slow (a busy disk)
        }
      },
    });
    ledger.signed('w1', 'k');
    const first = ledger.flush();
    await firstStarted;
    ledger.signed('w2', 'k');
    const second = ledger.flush();
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(audited, ['w1'], 'the second window waits for the first');
    release();
    await Promise.all([first, second]);
    assert.deepEqual(audited, ['w1', 'w2'], 'positive control: then it is written, in window order');
    const onDisk = JSON.parse(await readFile(totalsPath, 'utf8')) as { clients: Record<string, unknown> };
    assert.deepEqual(Object.keys(onDisk.clients).sort(), ['w1', 'w2']);
  });
});

test('a signing-totals.json that is not a totals file is logged and not used: counting starts from zero, and admin stats and flushes keep working', { timeout: 20_000 }, async () => {
  const malformed: Record<string, unknown> = {
    'clients null': { since: '2020-01-01T00:00:00.000Z', clients: null },
    'clients an array': { since: '2020-01-01T00:00:00.000Z', clients: [] },
    'a client that is a number': { since: '2020-01-01T00:00:00.000Z', clients: { 'edge-a': 5 } },
    'a count that is null': { since: '2020-01-01T00:00:00.000Z', clients: { 'edge-a': { k1: null } } },
    'a count that is a string': { since: '2020-01-01T00:00:00.000Z', clients: { 'edge-a': { k1: { signatures: '5', refusals: 0 } } } },
    'a negative count': { since: '2020-01-01T00:00:00.000Z', clients: { 'edge-a': { k1: { signatures: -1, refusals: 0 } } } },
    'no since': { clients: {} },
  };
  for (const [what, content] of Object.entries(malformed)) {
    await withDir(async (dir) => {
      const totalsPath = join(dir, 'signing-totals.json');
      await writeFile(totalsPath, JSON.stringify(content));
      const errors: string[] = [];
      const logger = { error: (_obj: unknown, msg?: string) => void errors.push(String(msg ?? _obj)) } as unknown as Logger;
      const ledger = await SigningLedger.open({ totalsPath, logger, intervalMs: 60_000, audit: async () => undefined, now: () => Date.parse('2026-01-01T00:00:00Z') });
      assert.equal(ledger.snapshot().since, '2026-01-01T00:00:00.000Z', what);
      assert.deepEqual(Object.keys(ledger.snapshot().clients), [], what);
      assert.equal(errors.length, 1, `${what}: logged`);
      assert.match(errors[0]!, /is not a totals file/, what);
      ledger.signed('edge-a', 'k1');
      assert.deepEqual(counts(ledger), { 'edge-a': { k1: [1, 0] } }, what);
      await ledger.stop();
      const reopened = await SigningLedger.open({ totalsPath, logger, intervalMs: 60_000, audit: async () => undefined });
      assert.deepEqual(counts(reopened), { 'edge-a': { k1: [1, 0] } }, `${what}: the rewritten file is read back`);
      assert.equal(errors.length, 1, `${what}: the rewritten file is a totals file`);
    });
  }
  // Positive control: a well-formed file, with zero counts and several clients, is used as it is.
  await withDir(async (dir) => {
    const totalsPath = join(dir, 'signing-totals.json');
    const good = { since: '2020-01-01T00:00:00.000Z', clients: { 'edge-a': { k1: { signatures: 7, refusals: 0 } }, 'CN=edge b': { '(none)': { signatures: 0, refusals: 2 } } } };
    await writeFile(totalsPath, JSON.stringify(good));
    const errors: string[] = [];
    const logger = { error: (_obj: unknown, msg?: string) => void errors.push(String(msg ?? _obj)) } as unknown as Logger;
    const ledger = await SigningLedger.open({ totalsPath, logger, intervalMs: 60_000, audit: async () => undefined });
    assert.equal(ledger.snapshot().since, '2020-01-01T00:00:00.000Z');
    assert.deepEqual(counts(ledger), { 'edge-a': { k1: [7, 0] }, 'CN=edge b': { '(none)': [0, 2] } });
    assert.deepEqual(errors, []);
  });
});

/** The disk-full error the audit log's append rejects with (its fdatasync or write). */
const diskFull = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

/** A pino logger whose destination is gone (stderr closed: its synchronous write throws EPIPE). */
const brokenLogger = { error: () => { throw Object.assign(new Error('EPIPE: broken pipe, write'), { code: 'EPIPE' }); } } as unknown as Logger;

async function ledgerFailures(metrics: KeydMetrics): Promise<number> {
  return (await metrics.ledgerFailures.get()).values[0]?.value ?? 0;
}

async function totalsOnDisk(totalsPath: string): Promise<Record<string, Record<string, { signatures: number; refusals: number }>>> {
  return (JSON.parse(await readFile(totalsPath, 'utf8')) as { clients: Record<string, Record<string, { signatures: number; refusals: number }>> }).clients;
}

test('a window that fails beyond its own error handling (audit write fails, and so does the log line about it) does not stop later flushes: they persist every count, and flush never rejects', { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    const totalsPath = join(dir, 'signing-totals.json');
    const entries: Entry[] = [];
    let failing = true;
    const metrics = new KeydMetrics();
    const ledger = await SigningLedger.open({
      totalsPath,
      logger: brokenLogger,
      metrics,
      intervalMs: 60_000,
      audit: async (e) => {
        if (failing) throw diskFull();
        entries.push(e);
      },
    });
    ledger.signed('edge-a', 'k1');
    await assert.doesNotReject(ledger.flush(), 'the failing window is handled inside the flush chain');
    assert.equal(await ledgerFailures(metrics), 1, 'the failed window is counted');
    assert.deepEqual(counts(ledger), { 'edge-a': { k1: [1, 0] } }, 'its counts are kept');

    // The disk has room again: the next window is audited, and the totals written hold both.
    failing = false;
    ledger.signed('edge-a', 'k1');
    ledger.refused('edge-b', undefined, 'KEYD_NOT_AUTHORISED');
    await assert.doesNotReject(ledger.flush());
    assert.deepEqual(entries.map((e) => [e.caller.id, e.count, e.refusals]), [['edge-a', 1, 0], ['edge-b', 0, 1]], 'the later window is audited');
    assert.deepEqual(await totalsOnDisk(totalsPath), { 'edge-a': { k1: { signatures: 2, refusals: 0 } }, 'edge-b': { '(none)': { signatures: 0, refusals: 1 } } });
    assert.equal(await ledgerFailures(metrics), 1, 'positive control: a window that is written is not counted as failed');
    await ledger.stop();
  });
});

test('a window whose audit write rejects with something that is not an Error is logged without it, and the chain goes on', { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    const totalsPath = join(dir, 'signing-totals.json');
    const logged: unknown[] = [];
    const logger = { error: (obj: unknown, msg?: string) => void logged.push([obj, msg]) } as unknown as Logger;
    let reject = true;
    const ledger = await SigningLedger.open({ totalsPath, logger, intervalMs: 60_000, audit: async () => (reject ? Promise.reject(undefined) : undefined) });
    ledger.signed('edge-a', 'k1');
    await assert.doesNotReject(ledger.flush());
    assert.deepEqual(logged, [[{ err: 'a thrown undefined' }, 'could not persist signing counts (the totals are written with the next window)']]);
    reject = false;
    // Nothing new was counted: stop's flush still writes the totals the failed window left unwritten.
    await ledger.stop();
    assert.deepEqual(await totalsOnDisk(totalsPath), { 'edge-a': { k1: { signatures: 1, refusals: 0 } } });
  });
});

test('a timer-driven flush whose window fails produces no unhandled rejection, and later timer flushes persist the counts', { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    const totalsPath = join(dir, 'signing-totals.json');
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      let failing = true;
      let audits = 0;
      const ledger = await SigningLedger.open({
        totalsPath,
        logger: brokenLogger,
        intervalMs: 5,
        audit: async () => {
          audits++;
          if (failing) throw diskFull();
        },
      });
      ledger.signed('edge-a', 'k1');
      ledger.start();
      while (audits === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      // Several more timer ticks, then the turns an unhandled rejection is reported in.
      await new Promise((resolve) => setTimeout(resolve, 50));
      for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(unhandled, [], 'no unhandled rejection from the timer');
      failing = false;
      ledger.signed('edge-a', 'k1');
      const deadline = Date.now() + 10_000;
      for (;;) {
        const onDisk = await totalsOnDisk(totalsPath).catch(() => undefined);
        if (onDisk?.['edge-a']?.k1?.signatures === 2) break;
        assert.ok(Date.now() < deadline, `the timer's later flush persists both windows (on disk: ${JSON.stringify(onDisk)})`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await ledger.stop();
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

test('totals that could not be written (their directory missing) are written by the next flush, even one with nothing new', { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    const totalsPath = join(dir, 'state', 'signing-totals.json');
    const metrics = new KeydMetrics();
    const ledger = await SigningLedger.open({ totalsPath, metrics, intervalMs: 60_000, audit: async () => undefined });
    ledger.signed('edge-a', 'k1');
    await ledger.flush();
    assert.equal(await ledgerFailures(metrics), 1, 'ENOENT writing the totals is a failed window');
    await mkdir(join(dir, 'state'));
    await ledger.flush();
    assert.deepEqual(await totalsOnDisk(totalsPath), { 'edge-a': { k1: { signatures: 1, refusals: 0 } } });
    assert.equal(await ledgerFailures(metrics), 1);
  });
});

/** Object.prototype's own property names, and what `({})` shows for the names used below. */
function prototypeState(names: string[]): unknown {
  const probe: Record<string, unknown> = {};
  return { own: Object.getOwnPropertyNames(Object.prototype).sort(), seen: names.map((n) => typeof probe[n]), objectKeys: Object.getOwnPropertyNames(Object).sort() };
}

test('clients and keys named like Object.prototype members (__proto__, constructor, toString) are counted like any other name, on disk and in admin stats, and no object is changed', { timeout: 20_000 }, async () => {
  await withDir(async (dir) => {
    const totalsPath = join(dir, 'signing-totals.json');
    const probeNames = ['kid1', 'kid2', 'kid3', 'signatures', 'refusals', 'hasOwnProperty'];
    const before = prototypeState(probeNames);
    const entries: Entry[] = [];
    const ledger = await SigningLedger.open({ totalsPath, intervalMs: 60_000, audit: async (e) => void entries.push(e) });
    ledger.signed('__proto__', 'kid1');
    ledger.signed('__proto__', 'kid1');
    ledger.signed('constructor', 'kid2');
    ledger.refused('toString', undefined, 'KEYD_NOT_AUTHORISED');
    ledger.signed('edge-a', '__proto__');
    ledger.signed('edge-a', 'hasOwnProperty');
    ledger.signed('edge-a', 'kid3'); // positive control: an ordinary name
    const expected = [
      ['__proto__', [['kid1', 2, 0]]],
      ['constructor', [['kid2', 1, 0]]],
      ['toString', [['(none)', 0, 1]]],
      ['edge-a', [['__proto__', 1, 0], ['hasOwnProperty', 1, 0], ['kid3', 1, 0]]],
    ];
    const shown = (clients: Record<string, { signatures: number; refusals: number; keys?: Record<string, { signatures: number; refusals: number }> }>) =>
      Object.entries(clients).map(([client, row]) => [client, Object.entries(row.keys ?? row).map(([k, c]) => [k, c.signatures, c.refusals])]);
    assert.deepEqual(shown(ledger.snapshot().clients), expected, 'admin stats before the flush');
    await ledger.flush();
    assert.deepEqual(prototypeState(probeNames), before, 'Object.prototype and Object are unchanged');
    assert.equal(({} as Record<string, unknown>).kid1, undefined);
    assert.deepEqual(shown(ledger.snapshot().clients), expected, 'admin stats after the flush');
    const byName = (name: string) => ledger.snapshot().clients[name];
    assert.equal(byName('constructor')?.signatures, 1, 'a lookup by name finds the client, not Object');
    assert.equal(byName('hasOwnProperty'), undefined, 'no client of that name: nothing is found');
    assert.deepEqual(entries.map((e) => [e.caller.id, e.keyRef, e.count, e.refusals]), [['__proto__', 'kid1', 2, 0], ['constructor', 'kid2', 1, 0], ['toString', undefined, 0, 1], ['edge-a', '__proto__', 1, 0], ['edge-a', 'hasOwnProperty', 1, 0], ['edge-a', 'kid3', 1, 0]]);
    // On disk: the same format as ever, with every name as an ordinary key.
    const text = await readFile(totalsPath, 'utf8');
    const onDisk = JSON.parse(text) as { clients: Record<string, Record<string, { signatures: number; refusals: number }>> };
    assert.deepEqual(Object.entries(onDisk.clients).map(([c, keys]) => [c, Object.entries(keys).map(([k, n]) => [k, n.signatures, n.refusals])]), expected, `the totals file: ${text}`);
    await ledger.stop();

    // Restarted: the file is read back (JSON.parse's own `__proto__` keys included) and counting goes on.
    const restarted = await SigningLedger.open({ totalsPath, intervalMs: 60_000, audit: async () => undefined });
    assert.deepEqual(shown(restarted.snapshot().clients), expected, 'admin stats after a restart');
    restarted.signed('__proto__', 'kid1');
    restarted.signed('constructor', 'kid2');
    await restarted.stop();
    const again = JSON.parse(await readFile(totalsPath, 'utf8')) as { clients: Record<string, Record<string, { signatures: number }>> };
    assert.equal(Object.getOwnPropertyDescriptor(again.clients, '__proto__')?.value?.kid1?.signatures, 3);
    assert.equal(Object.getOwnPropertyDescriptor(again.clients, 'constructor')?.value?.kid2?.signatures, 2);
    assert.deepEqual(prototypeState(probeNames), before, 'still unchanged');
  });
});
