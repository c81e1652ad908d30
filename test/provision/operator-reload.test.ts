/**
 * keyd's SIGHUP reloads provisioning.operators: an operator taken out of the config loses
 * its open connection at once (audited) and cannot connect again, a changed role judges the
 * next request, and a "provisioning" section that only a restart can apply is refused with
 * nothing changed. Before, the section was read at start only: a revoked admin kept its
 * role, on open connections and new ones, until keyd restarted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makePki, startKeydForTest, SUBJECTS } from './harness.js';
import { ProvisionError } from '../../src/provision/errors.js';

const code = (err: unknown) => (err instanceof ProvisionError ? err.code : (err as Error).message);

test('SIGHUP reload of provisioning.operators: a removed operator is cut off and audited, a changed role applies to the next request, a restart-only change is refused', { timeout: 60_000 }, async () => {
  const pki = await makePki();
  const keyd = await startKeydForTest(pki, { configFile: true });
  try {
    const alice = await keyd.connect(pki.alice); // admin, to be removed
    const bob = await keyd.connect(pki.bob); // auditor, to become admin
    const dave = await keyd.connect(pki.dave); // admin, unchanged: the control
    await assert.rejects(bob.delete('nothing.test'), (err) => code(err) === 'PROVISION_FORBIDDEN', 'an auditor may not delete');
    assert.ok(Array.isArray(await alice.list()));

    await keyd.editConfig((c) => {
      const operators = c.provisioning.operators as Record<string, string>;
      delete operators[SUBJECTS.alice];
      operators[SUBJECTS.bob] = 'admin';
    });
    const reloaded = await keyd.running.reloadGrants();
    assert.deepEqual(reloaded, { ok: true });

    // alice: her open connection is closed, the cut audited, and she cannot come back.
    await assert.rejects(alice.list(), (err) => code(err) === 'PROVISION_CONNECTION_CLOSED', 'the removed operator\'s connection is closed');
    await assert.rejects(keyd.connect(pki.alice), (err) => code(err) === 'PROVISION_UNKNOWN_OPERATOR');
    const cut = (await keyd.audit()).filter((e) => e.code === 'PROVISION_UNKNOWN_OPERATOR' && e.caller.id === SUBJECTS.alice && /removed from provisioning\.operators by a reload/.test(e.message ?? ''));
    assert.equal(cut.length, 1, 'the cut connection is audited');
    // bob: the same connection now has the admin role (the unknown name is keyd's answer, not a refusal).
    await assert.rejects(bob.delete('nothing.test'), (err) => code(err) !== 'PROVISION_FORBIDDEN');
    // dave: untouched.
    assert.ok(Array.isArray(await dave.list()));

    // A change only a restart applies (the listener's certificate) is refused whole: alice,
    // put back in the same edit, stays out.
    await keyd.editConfig((c) => {
      (c.provisioning.operators as Record<string, string>)[SUBJECTS.alice] = 'admin';
      c.provisioning.tlsCert = `${c.provisioning.tlsCert as string}.renamed`;
    });
    const refused = await keyd.running.reloadGrants();
    assert.equal(refused.ok, false);
    assert.match((refused as { reason: string }).reason, /tlsCert, tlsKey, replayWindowSeconds or limits changed: a restart applies that \(only "operators" is reloaded\) \[PROVISION_USAGE\]/);
    await assert.rejects(keyd.connect(pki.alice), (err) => code(err) === 'PROVISION_UNKNOWN_OPERATOR');
    // So is a section that does not parse.
    await keyd.editConfig((c) => {
      c.provisioning.tlsCert = (c.provisioning.tlsCert as string).replace(/\.renamed$/, '');
      (c.provisioning.operators as Record<string, string>)[SUBJECTS.alice] = 'root';
    });
    const bad = await keyd.running.reloadGrants();
    assert.match((bad as { reason: string }).reason, /role of "CN=alice, O=Example Ops" must be "admin" or "auditor"/);
    bob.close();
    dave.close();
  } finally {
    await keyd.close();
  }
});
