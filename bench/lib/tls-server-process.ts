/**
 * A benchmark server in its own process, so its CPU time can be read from
 * /proc/PID/stat alone: `node tls-server-process.js --impl engine|node --cert chain.pem
 * --key key.pem [--port 0]`. Prints `listening PORT` once ready; SIGTERM stops it.
 *
 * Both implementations run the same application: the first data chunk gets a small
 * HTTP response and the server ends the connection; a client that only handshakes and
 * closes gets nothing. Tickets are left at each server's default (2 NewSessionTickets
 * for the engine and for OpenSSL), as deployed servers send them.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createServer as createNodeTlsServer } from 'node:tls';
import type { Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { createServer as createEngineServer, LocalSigner } from '../../src/tls/index.js';

const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n');

function serve(socket: Duplex): void {
  socket.on('error', () => {});
  socket.once('data', () => socket.end(RESPONSE));
  socket.on('end', () => socket.end());
}

function pemBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function main(): void {
  const { values } = parseArgs({
    options: {
      impl: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      port: { type: 'string', default: '0' },
    },
  });
  if (!values.cert || !values.key || (values.impl !== 'engine' && values.impl !== 'node')) {
    process.stderr.write('usage: tls-server-process --impl engine|node --cert chain.pem --key key.pem [--port N]\n');
    process.exit(2);
  }
  const chainPem = readFileSync(values.cert, 'latin1');
  const keyPem = readFileSync(values.key, 'latin1');
  let server: Server;
  if (values.impl === 'engine') {
    const identity = {
      certificateChain: pemBlocks(chainPem).map((block) => new Uint8Array(new X509Certificate(block).raw)),
      signer: new LocalSigner(createPrivateKey(keyPem)),
    };
    server = createEngineServer({ resolveIdentity: () => identity }, serve);
  } else {
    server = createNodeTlsServer({ key: keyPem, cert: chainPem, minVersion: 'TLSv1.3' }, serve);
  }
  server.on('tlsClientError', () => {});
  server.listen(Number(values.port), '127.0.0.1', () => {
    const address = server.address();
    process.stdout.write(`listening ${typeof address === 'object' && address ? address.port : '?'}\n`);
  });
  process.on('SIGTERM', () => {
    server.close();
    process.exit(0);
  });
}

main();
