import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RouteTable, validateRouteName, type Route } from '../../src/edge/routes.js';

const up = (port: number): Route['upstream'] => ({ host: '127.0.0.1', port });
const route = (names: string[], port: number): Route => ({ names, upstream: up(port), proxyProtocol: false, alpn: [] });

test('exact names and one-label wildcards', () => {
  const table = new RouteTable([route(['example.com'], 1), route(['*.example.com'], 2), route(['api.example.com'], 3)]);
  assert.equal(table.lookup('example.com')?.upstream.port, 1);
  assert.equal(table.lookup('www.example.com')?.upstream.port, 2);
  assert.equal(table.lookup('api.example.com')?.upstream.port, 3, 'exact wins over wildcard');
  assert.equal(table.lookup('a.b.example.com'), undefined, 'wildcard covers one label only');
  assert.equal(table.lookup('example.org'), undefined);
  assert.equal(table.lookup('com'), undefined);
  assert.equal(table.lookup('.example.com'), undefined, 'empty label does not match the wildcard');
});

test('a wildcard covers only a DNS host name: no 64 KiB label, no literal *, nothing past 253 characters', () => {
  const table = new RouteTable([route(['*.example.com'], 2)]);
  const parent = '.example.com';
  // The attack: names the engine accepts (ASCII, up to 65535 bytes) that are not host names.
  for (const bad of ['x'.repeat(64) + parent, 'x'.repeat(65_000) + parent, '*' + parent, 'a*b' + parent, 'x'.repeat(242) + parent]) {
    assert.equal(table.lookup(bad), undefined, `${bad.slice(0, 20)}… (${bad.length})`);
  }
  // The control: the longest label and the longest name still match.
  for (const good of ['x'.repeat(63) + parent, 'a_b' + parent, 'x-1' + parent]) {
    assert.equal(table.lookup(good)?.upstream.port, 2, good);
  }
  const long = new RouteTable([route([`*.${'y'.repeat(63)}.${'z'.repeat(63)}.${'w'.repeat(60)}.com`], 3)]);
  const longName = `${'x'.repeat(60)}.${'y'.repeat(63)}.${'z'.repeat(63)}.${'w'.repeat(60)}.com`;
  assert.equal(longName.length, 253);
  assert.equal(long.lookup(longName)?.upstream.port, 3, '253 characters');
  assert.equal(long.lookup(`x${longName}`), undefined, '254 characters');
});

test('lookup is case-insensitive and ignores one trailing dot', () => {
  const table = new RouteTable([route(['Example.COM.'], 1)]);
  assert.equal(table.lookup('EXAMPLE.com')?.upstream.port, 1);
  assert.equal(table.lookup('example.com.')?.upstream.port, 1);
});

test('invalid and duplicate names are refused with EDGE_BAD_ROUTE', () => {
  for (const bad of ['*.com', '*', 'a..b', '-a.example.com', 'a_b.example.com', 'x.*.example.com', '']) {
    assert.throws(() => validateRouteName(bad), { code: 'EDGE_BAD_ROUTE' }, bad);
  }
  assert.throws(() => new RouteTable([route(['a.example'], 1), route(['A.example'], 2)]), /configured twice/);
});

test('configured labels: 1 to 63 characters, not starting or ending with - (RFC 1123 §2.1); the legal neighbours are accepted', () => {
  for (const bad of [`${'a'.repeat(64)}.example.com`, 'a-.example.com', '*.a-.example.com', `*.${'a'.repeat(64)}.com`]) {
    assert.throws(() => validateRouteName(bad), { code: 'EDGE_BAD_ROUTE', message: new RegExp(`^route name '.*' has an invalid label '`) }, bad);
  }
  for (const good of [`${'a'.repeat(63)}.example.com`, 'a-b.example.com', 'a1.example.com', `*.${'a'.repeat(63)}.com`]) {
    assert.equal(validateRouteName(good), good);
  }
  assert.equal(validateRouteName('Mixed.Example.COM.'), 'mixed.example.com', 'stored lower case, one trailing dot dropped');
});

test('a wildcard configured in two routes is refused like an exact name; a wildcard and an exact name under it may coexist', () => {
  assert.throws(() => new RouteTable([route(['*.example.com'], 1), route(['*.EXAMPLE.com'], 2)]), { code: 'EDGE_BAD_ROUTE', message: "route name '*.example.com' is configured twice" });
  const table = new RouteTable([route(['*.example.com'], 1), route(['x.example.com'], 2)]);
  assert.equal(table.lookup('x.example.com')?.upstream.port, 2);
  assert.equal(table.lookup('y.example.com')?.upstream.port, 1);
});
