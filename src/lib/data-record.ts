/**
 * Records keyed by names that come from config, the network or files (client names, key
 * references, server names). An object literal inherits Object.prototype, so such a name
 * can hit one of its members: `obj['constructor']` is the Object function, `'toString' in obj`
 * is true, and `obj['__proto__']` is Object.prototype itself, so `obj[name] ??= {}` followed by
 * a write through it changes every object in the process. A null-prototype object has no
 * members to hit: every string is an ordinary own key, assignment to `__proto__` makes an own
 * property, and JSON.stringify writes it like any other (so files and replies keep their format).
 */
export function dataRecord<T>(entries: Iterable<readonly [string, T]> = []): Record<string, T> {
  const out = Object.create(null) as Record<string, T>;
  for (const [key, value] of entries) out[key] = value;
  return out;
}
