/**
 * parseHostPort: the one parser of `HOST:PORT` for the edge's listen and upstream
 * addresses, keyd's and provisioning's listeners and the CLIs. A bare `PORT` is accepted
 * only where the caller gives a default host: elsewhere it would come back with no host,
 * which node:net reads as "every interface" (a listener meant for one address exposed on
 * all of them).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HostPortError, parseHostPort } from '../../src/lib/host-port.js';

test('parseHostPort: name, IPv4 and bracketed IPv6 with a port', () => {
  assert.deepEqual(parseHostPort('localhost:8443', 'listen'), { host: 'localhost', port: 8443 });
  assert.deepEqual(parseHostPort('127.0.0.1:0', 'listen'), { host: '127.0.0.1', port: 0 });
  assert.deepEqual(parseHostPort('[::1]:65535', 'listen'), { host: '::1', port: 65535 });
});

test('parseHostPort: a bare port needs a default host (refused without one, the default used with one)', () => {
  assert.throws(
    () => parseHostPort('8443', 'listen[0]'),
    (err: unknown) => err instanceof HostPortError && err.code === 'BAD_HOST_PORT' && err.message === "listen[0]: '8443' is not HOST:PORT",
  );
  // Control: the same text where the caller names a default host.
  assert.deepEqual(parseHostPort('8443', '--metrics', '127.0.0.1'), { host: '127.0.0.1', port: 8443 });
});

test('parseHostPort: ports above 65535, unbracketed IPv6 and empty parts are refused, naming the flag', () => {
  assert.throws(
    () => parseHostPort('a.test:65536', '--server'),
    (err: unknown) => err instanceof HostPortError && err.message === '--server: port 65536 is out of range',
  );
  for (const bad of ['::1:8443', 'a.test:', ':8443', 'a.test:84a3', '[::1]8443', '']) {
    assert.throws(() => parseHostPort(bad, '--server'), (err: unknown) => err instanceof HostPortError && err.message.startsWith('--server: '), bad);
  }
});
