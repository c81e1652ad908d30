import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startKeyd } from '../../src/keyd/daemon.js';
import { SealedStore } from '../../src/keyd/store.js';
import { makeIdentity, scratch } from './fixtures.js';

const CHILD = fileURLToPath(new URL('./put-loop-child.js', import.meta.url));
const RUNS = 10;

interface ChildRun {
  acked: string[];
  rotations: string[];
  stderr: string;
}

/** Runs the put loop and kills it with SIGKILL at a random moment after its first acknowledgement. */
function runAndKill(dir: string, machineIdPath: string, run: number): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, machineIdPath], {
      env: { ...process.env, KEYD_CRASH_CHILD: '1', KEYD_CRASH_RUN: String(run) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const result: ChildRun = { acked: [], rotations: [], stderr: '' };
    let buffered = '';
    let armed = false;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      buffered += text;
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith('ACK ')) result.acked.push(line.slice(4));
        if (line.startsWith('ROT ')) result.rotations.push(line.slice(4));
      }
      if (!armed) {
        armed = true;
        setTimeout(() => child.kill('SIGKILL'), 20 + Math.random() * 300);
      }
    });
    child.stderr.on('data', (d: Buffer) => (result.stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`child exited ${code} ${signal}: ${result.stderr}`));
      else resolve(result);
    });
  });
}

test('kill -9 during put, in a loop: the store is never corrupt and no acknowledged put is lost', async (t) => {
  const s = await scratch();
  try {
    const a = await makeIdentity('ecdsa-p256', ['rot.test']);
    const b = await makeIdentity('ecdsa-p256', ['rot.test']);
    for (const [n, id] of [['a', a], ['b', b]] as const) {
      await writeFile(join(s.dir, `${n}.key.pem`), id.privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
      await writeFile(join(s.dir, `${n}.cert.der`), id.chain[0]!);
    }
    const allAcked: string[] = [];
    let totalRotations = 0;
    for (let run = 0; run < RUNS; run++) {
      const { acked, rotations } = await runAndKill(s.dir, s.machineIdPath, run);
      allAcked.push(...acked);
      totalRotations += rotations.length;

      // Reopen exactly as keyd does (it also clears the stale sockets of the killed one).
      const keyd = await startKeyd({
        data: join(s.dir, 'data'),
        rootKey: join(s.dir, 'root.key'),
        socket: join(s.dir, 'sign.sock'),
        adminSocket: join(s.dir, 'admin.sock'),
        machineIdPath: s.machineIdPath,
        logger: pino({ level: 'silent' }),
      });
      try {
        const store = await SealedStore.open({ dataDir: join(s.dir, 'data'), rootKeyPath: join(s.dir, 'root.key'), machineIdPath: s.machineIdPath });
        const { failures } = await store.loadKeys();
        assert.deepEqual(failures.map((f) => f.message), [], `run ${run}: unreadable records`);
        for (const name of allAcked) assert.ok(keyd.keyring.owner(name), `run ${run}: acknowledged ${name} lost`);
        if (totalRotations > 0) {
          const rot = keyd.keyring.owner('rot.test');
          assert.ok(rot && rot.chain.length === 1, `run ${run}: rot.test lost`);
          // Exactly one record owns the rotated name, and it is one of the two keys.
          assert.equal(keyd.keyring.entries().filter((e) => e.names.includes('rot.test')).length, 1);
        }
        const leftovers = (await readdir(join(s.dir, 'data', 'keys'))).filter((f) => f.startsWith('.'));
        assert.deepEqual(leftovers, [], 'temporary files are cleared on open');
      } finally {
        await keyd.close();
      }
    }
    assert.ok(allAcked.length >= RUNS, `too few puts acknowledged (${allAcked.length}) for the test to mean anything`);
    t.diagnostic(`${RUNS} kills; ${allAcked.length} new-name puts and ${totalRotations} rotations acknowledged and all found after restart`);
  } finally {
    await s.cleanup();
  }
});
