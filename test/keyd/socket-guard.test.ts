/**
 * SocketGuard (src/keyd/principals.ts, docs/KEYD.md "Local callers"): whoever can open a
 * principal's socket is that principal, so keyd re-checks the socket on every connection —
 * its owner, group and mode, and that it is still the socket keyd bound (same inode).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { chmod, lstat, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { SocketGuard } from '../../src/keyd/principals.js';
import { scratch } from './fixtures.js';

function listen(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}

const close = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));

test('socket guard: a socket owned by another uid than expected is reported (and the owner put back)', async () => {
  const s = await scratch();
  const path = join(s.dir, 'p.sock');
  const server = await listen(path);
  try {
    const me = process.getuid!();
    await chmod(path, 0o600);
    // Positive control: as keyd left it.
    assert.equal(await new SocketGuard(path, 0o600, me).check(), undefined);
    // A guard that expects another owner: the socket's owner is wrong.
    const other = me === 0 ? 4242 : me + 1;
    const problem = await new SocketGuard(path, 0o600, other).check();
    assert.equal(problem, `socket ${path} is owned by uid ${me}, expected ${other}`);
    if (me === 0) assert.equal((await lstat(path)).uid, other, 'repaired for the next caller');
  } finally {
    await close(server);
    await s.cleanup();
  }
});

test('socket guard: a socket replaced by another one at the same path (another inode) is reported, and not "repaired" into a principal\'s socket', async () => {
  const s = await scratch();
  const path = join(s.dir, 'p.sock');
  const server = await listen(path);
  try {
    const guard = new SocketGuard(path, 0o600);
    await guard.establish();
    assert.equal(await guard.check(), undefined, 'positive control: the socket keyd bound');
    // Someone with write access to the directory binds their own socket and renames it over
    // keyd's (bound while keyd's still exists, so it cannot reuse its inode number).
    const impostor = await listen(join(s.dir, 'impostor.sock'));
    await chmod(join(s.dir, 'impostor.sock'), 0o640);
    await rename(join(s.dir, 'impostor.sock'), path);
    try {
      assert.equal(await guard.check(), `socket ${path} was replaced by another file`);
      assert.equal((await lstat(path)).mode & 0o777, 0o640, 'a replaced socket is not chmod-ed as if it were keyd\'s');
    } finally {
      await close(impostor);
    }
  } finally {
    await close(server);
    await s.cleanup();
  }
});
