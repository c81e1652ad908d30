/**
 * `node dist/bench/profile-summary.js FILE.cpuprofile [--top N]` — what a V8 CPU profile
 * (`node --cpu-prof`) says, as two markdown tables: self time by category (the buckets
 * docs/BENCHMARKS.md reports: socket writes, node:crypto, Error construction, GC, stream
 * machinery, our engine, the edge) and the top functions by self time. Idle time is left
 * out: percentages are of busy time. `--skip-ms N` leaves out the first N ms of the profile
 * (a daemon's start-up: module loading, key store) so that only the load is summarised.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { markdownTable } from './lib/format.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Category of a frame, from its function name and script; first match wins, walking up the stack. */
const CATEGORIES: readonly { name: string; test: (fn: string, url: string) => boolean }[] = [
  { name: 'GC', test: (fn) => fn === '(garbage collector)' },
  { name: 'socket write syscalls', test: (fn) => fn === 'writeBuffer' || fn === 'writev' || fn === 'writeUtf8String' || fn === 'writevGeneric' || fn === 'writeGeneric' },
  { name: 'Error construction (stack traces)', test: (fn, url) => url === 'node:internal/errors' || fn === 'get stack' || (fn === 'Error' && url === '') },
  {
    name: 'node:crypto calls',
    test: (_fn, url) => url.startsWith('node:internal/crypto') || url === 'node:crypto',
  },
  { name: 'edge (src/edge)', test: (_fn, url) => url.includes('/src/edge/') },
  { name: 'engine (src/tls, src/lib)', test: (_fn, url) => url.includes('/src/tls/') || url.includes('/src/lib/') },
  { name: 'streams and net (node:internal/streams, net)', test: (_fn, url) => url.startsWith('node:internal/streams') || url === 'node:net' || url.startsWith('node:internal/stream_base') || url.startsWith('node:internal/net') },
  { name: 'timers, events, promises', test: (_fn, url) => url.startsWith('node:internal/timers') || url === 'node:events' || url.startsWith('node:internal/process/task_queues') },
  { name: 'pino / prom-client', test: (_fn, url) => url.includes('node_modules/pino') || url.includes('node_modules/prom-client') },
];

function main(): void {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, 'skip-ms': { type: 'string', default: '0' } } });
  const file = positionals[0];
  if (!file) {
    process.stderr.write('usage: profile-summary FILE.cpuprofile [--top N]\n');
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const selfMicros = new Map<number, number>();
  const skipMicros = Number(values['skip-ms']) * 1000;
  let elapsed = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    elapsed += profile.timeDeltas[i] ?? 0;
    if (elapsed < skipMicros) continue;
    selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0));
  }
  const category = (id: number): string => {
    // Native frames (no url) take the category of the nearest JavaScript caller that has one,
    // unless the frame's own name decides (GC, write syscalls, Error construction).
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const frame = byId.get(cur)!.callFrame;
      for (const c of CATEGORIES) if (c.test(frame.functionName, frame.url)) return c.name;
    }
    return 'other (Node internals, V8)';
  };
  let busy = 0;
  const categories = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, micros] of selfMicros) {
    const frame = byId.get(id)!.callFrame;
    if (frame.functionName === '(idle)') continue;
    busy += micros;
    const cat = category(id);
    categories.set(cat, (categories.get(cat) ?? 0) + micros);
    const url = frame.url.replace(/^.*\/(dist\/)?/, '');
    const key = `${frame.functionName || '(anonymous)'} ${url}${frame.url ? `:${frame.lineNumber + 1}` : ''}`;
    functions.set(key, (functions.get(key) ?? 0) + micros);
  }
  const pct = (m: number) => `${((100 * m) / busy).toFixed(1)} %`;
  const catRows = [...categories].sort((a, b) => b[1] - a[1]).map(([name, m]) => [name, pct(m)]);
  process.stdout.write(`busy time: ${(busy / 1e6).toFixed(2)} s\n\n`);
  process.stdout.write(markdownTable(['category (self time, incl. native callees)', 'share of busy'], catRows) + '\n\n');
  const top = Number(values.top);
  const fnRows = [...functions].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, m]) => [name, pct(m)]);
  process.stdout.write(markdownTable(['function (self time)', 'share of busy'], fnRows) + '\n');
}

main();
