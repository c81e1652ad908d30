/**
 * deploy/systemd/: `systemd-analyze verify` accepts the units with no warning, the
 * sandboxing the deployment promises is in them, and `systemd-analyze security` scores them
 * as docs/DEPLOY.md says. systemd-analyze works on unit files offline: no running systemd.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeResult, requireTool, runTool } from '../helpers/tools.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const UNITS = ['delegator-keyd.service', 'delegator-edge.service'];

/** The unit as installed; where node is not /usr/bin/node here, the copy names this node (verify checks the executable exists). */
function unitCopy(t: TestContext, unit: string, edit: (text: string) => string = (x) => x): string {
  const dir = mkdtempSync(join(tmpdir(), 'delegator-units-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let text = readFileSync(join(ROOT, 'deploy/systemd', unit), 'utf8');
  if (!existsSync('/usr/bin/node')) text = text.replaceAll('/usr/bin/node', process.execPath);
  const path = join(dir, unit);
  writeFileSync(path, edit(text));
  return path;
}

/** `Key=value` lines of the [Service] section (continuations joined), in order. */
function serviceSettings(unit: string): [string, string][] {
  const text = readFileSync(join(ROOT, 'deploy/systemd', unit), 'utf8').replace(/\\\n\s*/g, ' ');
  const service = text.slice(text.indexOf('[Service]'), text.indexOf('[Install]'));
  return service
    .split('\n')
    .filter((l) => /^[A-Za-z]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).trim()]);
}

function documentedScores(): Map<string, number> {
  const doc = readFileSync(join(ROOT, 'docs/DEPLOY.md'), 'utf8');
  return new Map([...doc.matchAll(/^\| (delegator-\w+\.service) \| (\d+\.\d) OK \|/gm)].map((m) => [m[1]!, Number(m[2])]));
}

for (const unit of UNITS) {
  test(`systemd-analyze verify ${unit}: no error, no warning`, async (t) => {
    if (!requireTool(t, 'systemd-analyze', 'systemd')) return;
    const result = await runTool('systemd-analyze', ['verify', unitCopy(t, unit)]);
    assert.equal(result.code, 0, describeResult(result));
    assert.equal(result.stderr.trim(), '', describeResult(result));
  });

  test(`systemd-analyze security ${unit}: the exposure score docs/DEPLOY.md records`, async (t) => {
    if (!requireTool(t, 'systemd-analyze', 'systemd')) return;
    const result = await runTool('systemd-analyze', ['security', '--offline=true', unitCopy(t, unit)]);
    assert.equal(result.code, 0, describeResult(result));
    const score = Number(/Overall exposure level for \S+: (\d+\.\d)/.exec(result.stdout)?.[1]);
    t.diagnostic(`${unit}: exposure ${score}`);
    assert.equal(score, documentedScores().get(unit), `docs/DEPLOY.md must record ${unit}'s score (${score})`);
    assert.ok(score < 2, 'OK (below 2)');
  });
}

test('the check itself: verify reports a misspelt directive, and the score of an unsandboxed copy is high', async (t) => {
  if (!requireTool(t, 'systemd-analyze', 'systemd')) return;
  const typo = await runTool('systemd-analyze', ['verify', unitCopy(t, 'delegator-edge.service', (x) => x.replace('ProtectSystem=strict', 'ProtectSytem=strict'))]);
  assert.match(typo.stderr, /Unknown key.*ProtectSytem/);
  const bare = unitCopy(t, 'delegator-keyd.service', (x) => x.replace(/\n(?:NoNewPrivileges|Protect|Private|Restrict|SystemCall|Capability|Lock|Remove|Device|UMask)[^\n]*/g, ''));
  const result = await runTool('systemd-analyze', ['security', '--offline=true', bare]);
  assert.ok(Number(/Overall exposure level for \S+: (\d+\.\d)/.exec(result.stdout)?.[1]) > 5, result.stdout.slice(-200));
});

test('the units run keyd and the edge as the deployment says', () => {
  const keyd = serviceSettings('delegator-keyd.service');
  const edge = serviceSettings('delegator-edge.service');
  const get = (s: [string, string][], key: string) => s.filter(([k]) => k === key).map(([, v]) => v);
  for (const [name, s] of [
    ['keyd', keyd],
    ['edge', edge],
  ] as const) {
    for (const [key, value] of [
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['NoNewPrivileges', 'yes'],
      ['RestrictAddressFamilies', 'AF_UNIX AF_INET AF_INET6'],
      ['SystemCallFilter', '@system-service'],
    ]) {
      assert.ok(get(s, key).includes(value), `${name}: ${key}=${value}`);
    }
  }
  // keyd: its own user, state in /var/lib (0700), sockets in /run with the edges' group; no capability.
  assert.deepEqual(get(keyd, 'User'), ['keyd']);
  assert.deepEqual(get(keyd, 'Group'), ['delegator']);
  assert.deepEqual(get(keyd, 'StateDirectory'), ['keyd']);
  assert.deepEqual(get(keyd, 'StateDirectoryMode'), ['0700']);
  assert.deepEqual(get(keyd, 'RuntimeDirectory'), ['keyd']);
  assert.deepEqual(get(keyd, 'CapabilityBoundingSet'), ['']);
  const keydStart = get(keyd, 'ExecStart')[0]!;
  assert.match(keydStart, / keyd .*--data \/var\/lib\/keyd\/store --root-key \/var\/lib\/keyd\/root\.key/);
  assert.match(keydStart, /--socket \/run\/keyd\/keyd\.sock --admin-socket \/run\/keyd\/admin\.sock/);
  // The edge: another user, in the socket's group, only CAP_NET_BIND_SERVICE.
  assert.deepEqual(get(edge, 'User'), ['delegator-edge']);
  assert.deepEqual(get(edge, 'SupplementaryGroups'), ['delegator']);
  assert.deepEqual(get(edge, 'CapabilityBoundingSet'), ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(get(edge, 'AmbientCapabilities'), ['CAP_NET_BIND_SERVICE']);
  assert.equal(get(edge, 'StateDirectory').length, 0);
  // sysusers: keyd and the edge are both in "delegator", the edge is not in keyd's group.
  const sysusers = readFileSync(join(ROOT, 'deploy/systemd/delegator.sysusers.conf'), 'utf8');
  assert.match(sysusers, /^m keyd +delegator$/m);
  assert.match(sysusers, /^m delegator-edge +delegator$/m);
  assert.doesNotMatch(sysusers, /^m delegator-edge +keyd$/m);
});
