/**
 * Runs keyd (startKeyd) as a child process for the edge's end-to-end tests, so a test can
 * kill -9 it and start it again on the same store. argv[2]: JSON KeydOptions.
 * Prints "keyd ready" on stdout once both sockets listen; SIGTERM closes it.
 */
import { startKeyd, type KeydOptions } from '../../src/keyd/daemon.js';
import { pino } from 'pino';

const opts = JSON.parse(process.argv[2] ?? '{}') as KeydOptions;
const keyd = await startKeyd({ ...opts, logger: pino({ level: 'warn' }, pino.destination(2)) });
process.stdout.write('keyd ready\n');
process.on('SIGTERM', () => {
  void keyd.close().then(() => process.exit(0));
});
