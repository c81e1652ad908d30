/**
 * Grant matching (src/keyd/names.ts, docs/KEYD.md "Grants are by name"): a grant
 * `*.example.com` stands for exactly one left-most label (RFC 6125 §6.4.3), so it covers
 * `a.example.com` and the wildcard key name itself, never the apex `example.com` nor
 * `a.b.example.com`. keyd lower-cases the requested server name before it asks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lookupCandidates, normaliseName, patternCovers } from '../../src/keyd/names.js';

test('grants: *.example.com covers one label under it and the wildcard name, nothing else', () => {
  // Positive controls.
  for (const name of ['a.example.com', 'xn--bcher-kva.example.com', 'a-b.example.com', '*.example.com']) {
    assert.equal(patternCovers('*.example.com', name), true, name);
  }
  for (const name of ['example.com', 'a.b.example.com', 'x.a.example.com', '.example.com', 'aexample.com', 'a.example.com.evil', 'a.example.comx', '*.a.example.com', '*.com', 'a.example.org']) {
    assert.equal(patternCovers('*.example.com', name), false, name);
  }
});

test('grants: an exact name covers only itself; * covers everything', () => {
  assert.equal(patternCovers('example.com', 'example.com'), true);
  for (const name of ['a.example.com', '*.example.com', 'example.com.', 'example.co']) {
    assert.equal(patternCovers('example.com', name), false, name);
  }
  for (const name of ['example.com', 'a.b.example.com', '*.example.com']) assert.equal(patternCovers('*', name), true, name);
});

test('names: configured names are lower-cased without the trailing dot; a wildcard needs a domain', () => {
  assert.equal(normaliseName('A.Example.COM.'), 'a.example.com');
  assert.equal(normaliseName('*.Example.com'), '*.example.com');
  for (const bad of ['*.com.', '*', 'a.*.example.com', 'a..example.com', '-a.example.com', 'bücher.example.com', '']) {
    assert.throws(() => normaliseName(bad), { code: 'KEYD_BAD_NAME' }, JSON.stringify(bad));
  }
  assert.deepEqual(lookupCandidates('A.Example.com.'), ['a.example.com', '*.example.com']);
  assert.deepEqual(lookupCandidates('localhost'), ['localhost']);
});

test('names: a label may not end with "-" (RFC 952/1123 host names); one in the middle is fine', () => {
  assert.equal(normaliseName('a-b.example.com'), 'a-b.example.com'); // positive control
  for (const bad of ['a-.example.com', 'a.example-.com', '*.example-.com']) {
    assert.throws(() => normaliseName(bad), { code: 'KEYD_BAD_NAME' }, bad);
  }
});

test('names: at most 253 characters without the trailing dot (RFC 1035 §2.3.4: 255 octets on the wire)', () => {
  // Four labels of 63, 63, 63 and 61 characters with their dots: 253.
  const longest = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
  assert.equal(longest.length, 253);
  assert.equal(normaliseName(longest), longest);
  assert.equal(normaliseName(`${longest}.`), longest, 'the root dot is not counted');
  const over = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(62)}`;
  assert.throws(() => normaliseName(over), { code: 'KEYD_BAD_NAME' });
});

test('lookup: a server name with an empty first label is not looked up under the wildcard (a wildcard stands for one label, never for none)', () => {
  assert.deepEqual(lookupCandidates('a.example.com'), ['a.example.com', '*.example.com']); // positive control
  assert.deepEqual(lookupCandidates('.example.com'), ['.example.com']);
  assert.deepEqual(lookupCandidates('example.'), ['example']);
});
