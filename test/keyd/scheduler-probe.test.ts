/**
 * keyd's fair scheduler (docs/KEYD.md "Limits", fair service): one request per connection per
 * round, whatever the number of reads that woke it, and a connection closed between turns is
 * never served again. Turns are run by hand (the deferral is injected).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FairScheduler, type Queue } from '../../src/keyd/fair-scheduler.js';

function setup(batch: number) {
  const served: string[] = [];
  const turns: Array<() => void> = [];
  const scheduler = new FairScheduler(batch, (run) => turns.push(run));
  const queue = (name: string, n: number): Queue & { n: number } => ({
    n,
    get queued() {
      return this.n;
    },
    serveOne() {
      if (this.n <= 0) throw new Error(`${name} served with nothing queued`);
      this.n--;
      served.push(name);
    },
    endTurn() {},
  });
  const runTurns = () => {
    while (turns.length) turns.shift()!();
  };
  return { served, turns, scheduler, queue, runTurns };
}

test('a connection woken by several reads is still served once per round', { timeout: 20_000 }, () => {
  const { served, turns, scheduler, queue, runTurns } = setup(4);
  const flood = queue('flood', 100);
  scheduler.wake(flood); // first turn at once: 4 of the flood's requests
  assert.deepEqual(served, ['flood', 'flood', 'flood', 'flood']);
  // Two more reads on the flooding connection before the next turn, then another client.
  flood.n += 10;
  scheduler.wake(flood);
  flood.n += 10;
  scheduler.wake(flood);
  const normal = queue('normal', 4);
  scheduler.wake(normal);
  assert.equal(turns.length, 1, 'one turn pending, not one per wake');
  turns.shift()!();
  assert.deepEqual(served.slice(4), ['flood', 'normal', 'flood', 'normal'], 'one request per connection per round');
  runTurns();
  assert.equal(served.filter((n) => n === 'normal').length, 4, 'positive control: every request is served');
  assert.equal(served.filter((n) => n === 'flood').length, 120);
});

test('a connection closed between turns is not served again; the others are served to the end', { timeout: 20_000 }, () => {
  const { served, turns, scheduler, queue, runTurns } = setup(4);
  const closing = queue('closing', 100);
  scheduler.wake(closing);
  const other = queue('other', 6);
  scheduler.wake(other);
  assert.equal(turns.length, 1);
  const before = served.filter((n) => n === 'closing').length;
  scheduler.forget(closing); // the connection closes while a turn is pending; its queue is not emptied
  runTurns();
  assert.equal(served.filter((n) => n === 'closing').length, before, 'nothing more is served for the closed connection');
  assert.equal(served.filter((n) => n === 'other').length, 6, 'positive control: the other connection is served to the end');
  // A new connection after that is served as usual.
  const next = queue('next', 2);
  scheduler.wake(next);
  runTurns();
  assert.equal(served.filter((n) => n === 'next').length, 2);
});

test('a connection that ran dry is served again when its next read brings work', { timeout: 20_000 }, () => {
  const { served, scheduler, queue, runTurns } = setup(4);
  const conn = queue('conn', 2);
  scheduler.wake(conn);
  runTurns();
  assert.deepEqual(served, ['conn', 'conn'], 'positive control: the first read is served');
  conn.n += 3; // the next read, after the queue ran dry
  scheduler.wake(conn);
  runTurns();
  assert.deepEqual(served, ['conn', 'conn', 'conn', 'conn', 'conn'], 'the next read is served too');
});
