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
