import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ExpiryWatch, expiryNotice, parseExpiryWarningDays } from '../../src/lib/expiry.js';

const DAY_MS = 86_400_000;
const NOT_AFTER = Date.parse('2030-06-01T00:00:00.000Z');

function recorder() {
  const logged: { level: 'warn' | 'error'; fields: Record<string, unknown>; message: string }[] = [];
  return {
    logged,
    log: {
      warn: (fields: object, message: string) => logged.push({ level: 'warn', fields: fields as Record<string, unknown>, message }),
      error: (fields: object, message: string) => logged.push({ level: 'error', fields: fields as Record<string, unknown>, message }),
    },
  };
}

test('expiryNotice: due within the window only; days left rounded down; expired at notAfter', () => {
  const cert = { names: ['a.test'], notAfter: new Date(NOT_AFTER).toISOString() };
  assert.equal(expiryNotice(cert, NOT_AFTER - 31 * DAY_MS, 30), undefined);
  assert.equal(expiryNotice(cert, NOT_AFTER - 30 * DAY_MS - 1, 30), undefined);
  assert.equal(expiryNotice(cert, NOT_AFTER - 30 * DAY_MS, 30)?.daysLeft, 30);
  assert.equal(expiryNotice(cert, NOT_AFTER - 29.5 * DAY_MS, 30)?.daysLeft, 29);
  assert.equal(expiryNotice(cert, NOT_AFTER - 1, 30)?.expired, false);
  assert.equal(expiryNotice(cert, NOT_AFTER, 30)?.expired, true);
  assert.equal(expiryNotice({ names: ['x'], notAfter: null }, NOT_AFTER, 30), undefined, 'no certificate yet: nothing to warn about');
});

test('ExpiryWatch: warns once a day per certificate, errors once expired, by the injected clock', () => {
  let now = NOT_AFTER - 40 * DAY_MS;
  const r = recorder();
  const watch = new ExpiryWatch(r.log, 30, () => now);
  const certs = [{ names: ['a.test'], keyRef: 'k1', notAfter: new Date(NOT_AFTER) }];
  assert.equal(watch.check(certs).length, 0);
  now = NOT_AFTER - 10 * DAY_MS;
  assert.equal(watch.check(certs).length, 1);
  assert.equal(watch.check(certs).length, 0, 'not twice the same day');
  assert.equal(r.logged.length, 1);
  assert.equal(r.logged[0]!.level, 'warn');
  assert.match(r.logged[0]!.message, /certificate for a\.test expires in 10 day\(s\), on 2030-06-01/);
  assert.equal(r.logged[0]!.fields.keyRef, 'k1');
  now += DAY_MS;
  assert.equal(watch.check(certs)[0]!.daysLeft, 9, 'again the next day');
  now = NOT_AFTER + 1;
  watch.check(certs);
  assert.equal(r.logged.at(-1)!.level, 'error');
  assert.match(r.logged.at(-1)!.message, /expired on 2030-06-01/);
});

test('ExpiryWatch: the window is configurable; a negative one is refused', () => {
  const r = recorder();
  const watch = new ExpiryWatch(r.log, 7, () => NOT_AFTER - 10 * DAY_MS);
  assert.equal(watch.check([{ names: ['a.test'], notAfter: new Date(NOT_AFTER) }]).length, 0);
  assert.throws(() => new ExpiryWatch(r.log, -1), /must be ≥ 0/);
});

test('ExpiryWatch: remembers at most maxRemembered certificates, forgetting the oldest (bounded memory)', () => {
  const now = NOT_AFTER - 10 * DAY_MS;
  const r = recorder();
  const remembered = new Map<string, number>();
  const watch = new ExpiryWatch(r.log, 30, () => now, 2, remembered);
  const cert = (name: string) => ({ names: [name], notAfter: new Date(NOT_AFTER) });
  assert.equal(watch.check([cert('a.test'), cert('b.test'), cert('c.test')]).length, 3);
  assert.equal(remembered.size, 2, 'the oldest was forgotten');
  // a.test was forgotten, so it is warned about again the same day; c.test was not.
  assert.deepEqual(watch.check([cert('a.test'), cert('c.test')]).map((n) => n.names[0]), ['a.test']);
  assert.equal(remembered.size, 2);
});

test('parseExpiryWarningDays: 0..3650 whole days; anything else is refused with the setting named', () => {
  assert.equal(parseExpiryWarningDays(undefined, 'expiryWarningDays'), 30);
  assert.equal(parseExpiryWarningDays(0, 'expiryWarningDays'), 0);
  assert.equal(parseExpiryWarningDays(3650, 'expiryWarningDays'), 3650);
  for (const bad of [3651, -1, 1.5, '30', Number.NaN, Infinity, null]) {
    assert.throws(() => parseExpiryWarningDays(bad, 'expiryWarningDays'), /expiryWarningDays must be an integer number of days from 0 to 3650/, String(bad));
  }
});
