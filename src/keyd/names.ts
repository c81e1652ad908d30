import { KeydError } from './errors.js';

/**
 * DNS names a key may serve: `example.com` or a one-label wildcard `*.example.com`
 * (RFC 6125 §6.4.3: the wildcard stands for exactly one left-most label).
 */
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

export function normaliseName(name: string): string {
  const lower = name.trim().toLowerCase().replace(/\.$/, '');
  const bare = lower.startsWith('*.') ? lower.slice(2) : lower;
  const labels = bare.split('.');
  if (lower.length === 0 || lower.length > 253 || labels.some((l) => !LABEL.test(l)) || (lower.startsWith('*.') && labels.length < 2)) {
    throw new KeydError('KEYD_BAD_NAME', `${JSON.stringify(name)} is not a DNS name or a *.domain wildcard`);
  }
  return lower;
}

/** Names to look up for a server name, most specific first: the name itself, then its one-label wildcard. */
export function lookupCandidates(serverName: string): string[] {
  const name = serverName.toLowerCase().replace(/\.$/, '');
  const dot = name.indexOf('.');
  return dot > 0 && dot < name.length - 1 ? [name, `*${name.slice(dot)}`] : [name];
}

/**
 * True when `pattern` (a configured permission, `name` or `*.domain`) covers the key
 * name `name` — the wildcard permission covers the wildcard key name itself and any
 * one-label name under it.
 */
export function patternCovers(pattern: string, name: string): boolean {
  if (pattern === '*') return true;
  if (pattern === name) return true;
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1);
    const bare = name.startsWith('*.') ? null : name;
    return bare !== null && bare.endsWith(suffix) && !bare.slice(0, -suffix.length).includes('.') && bare.length > suffix.length;
  }
  return false;
}
