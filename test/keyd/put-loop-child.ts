/**
 * Child process for crash.test.ts: starts keyd on the given directory and puts keys in
 * a loop, printing a line after each acknowledged put, until it is killed with SIGKILL.
 * Does nothing unless started by that test (node --test also loads every file here).
 */
import { createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { startKeyd } from '../../src/keyd/daemon.js';

async function main(dir: string, machineIdPath: string): Promise<void> {
  const keyd = await startKeyd({
    data: join(dir, 'data'),
    rootKey: join(dir, 'root.key'),
    socket: join(dir, 'sign.sock'),
    adminSocket: join(dir, 'admin.sock'),
    machineIdPath,
    logger: pino({ level: 'silent' }),
  });
  const material = await Promise.all(
    ['a', 'b'].map(async (n) => ({
      key: createPrivateKey(await readFile(join(dir, `${n}.key.pem`))),
      chain: [new Uint8Array(await readFile(join(dir, `${n}.cert.der`)))],
      ski: n,
    })),
  );
  const caller = { kind: 'local' as const, id: 'crash-test' };
  const run = process.env.KEYD_CRASH_RUN ?? '0';
  for (let i = 0; ; i++) {
    const m = material[i % 2]!;
    // A new name (creates a record) and a rotation of a shared name (replaces one).
    await keyd.adminService.put(caller, [`r${run}-n${i}.test`], m.key, m.chain);
    process.stdout.write(`ACK r${run}-n${i}.test\n`);
    const info = await keyd.adminService.put(caller, ['rot.test'], m.key, m.chain);
    process.stdout.write(`ROT ${info.ski}\n`);
  }
}

if (process.env.KEYD_CRASH_CHILD === '1') {
  main(process.argv[2]!, process.argv[3]!).catch((err: unknown) => {
    process.stderr.write(`child failed: ${String(err)}\n`);
    process.exit(1);
  });
}
