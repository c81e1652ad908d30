/**
 * A benchmark server in its own process, so its CPU time can be read from
 * /proc/PID/stat alone: `node tls-server-process.js --impl engine|node --cert chain.pem
 * --key key.pem [--port 0]`. Prints `listening PORT` once ready; SIGTERM stops it.
 *
 * With `--upstream PORT [--proxy-protocol]` the server is a proxy instead: each
 * connection is piped both ways to 127.0.0.1:PORT (after a PROXY v2 header), the way a
 * short node:tls proxy does it; bench:bulk and bench compare the edge with it.
 *
 * Both implementations run the same application: the first data chunk gets a small
 * HTTP response and the server ends the connection; a client that only handshakes and
 * closes gets nothing. Tickets are left at each server's default (2 NewSessionTickets
 * for the engine and for OpenSSL), as deployed servers send them.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createServer as createNodeTlsServer } from 'node:tls';
import { connect, type Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { createServer as createEngineServer, LocalSigner } from '../../src/tls/index.js';
import { encodeProxyV2 } from '../../src/edge/proxy-protocol.js';

const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n');

function serve(socket: Duplex): void {
  socket.on('error', () => {});
  socket.once('data', () => socket.end(RESPONSE));
  socket.on('end', () => socket.end());
}

/** Pipes the decrypted stream to the upstream and back; either side ending or failing ends the other. */
function pipeTo(upstreamPort: number, proxyProtocol: boolean) {
  return (socket: Duplex & { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): void => {
    const upstream = connect({ host: '127.0.0.1', port: upstreamPort, noDelay: true });
    if (proxyProtocol) {
      upstream.write(
        encodeProxyV2({
          sourceAddress: socket.remoteAddress,
          sourcePort: socket.remotePort,
          destinationAddress: socket.localAddress,
          destinationPort: socket.localPort,
          tlsVersion: 'TLSv1.3',
        }),
      );
    }
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
    socket.pipe(upstream);
    upstream.pipe(socket);
  };
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
      upstream: { type: 'string' },
      'proxy-protocol': { type: 'boolean', default: false },
    },
  });
  if (!values.cert || !values.key || (values.impl !== 'engine' && values.impl !== 'node')) {
    process.stderr.write('usage: tls-server-process --impl engine|node --cert chain.pem --key key.pem [--port N]\n');
    process.exit(2);
  }
  const chainPem = readFileSync(values.cert, 'latin1');
  const keyPem = readFileSync(values.key, 'latin1');
  let server: Server;
  const app = values.upstream ? pipeTo(Number(values.upstream), values['proxy-protocol']!) : serve;
  if (values.impl === 'engine') {
    const identity = {
      certificateChain: pemBlocks(chainPem).map((block) => new Uint8Array(new X509Certificate(block).raw)),
      signer: new LocalSigner(createPrivateKey(keyPem)),
    };
    server = createEngineServer({ resolveIdentity: () => identity }, app);
  } else {
    server = createNodeTlsServer({ key: keyPem, cert: chainPem, minVersion: 'TLSv1.2' }, app);
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
