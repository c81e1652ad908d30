import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import { escapeHtml } from '../demo/http-responder.js';
import { PROXY_V2_SIGNATURE, Pp2Type, decodeHandshakeDetails, decodeProxyV2, type DecodedProxyV2 } from './proxy-protocol.js';

/**
 * The demo's upstream application: plain HTTP on loopback, behind the edge. It reads the
 * edge's PROXY v2 header (when sent) so the page can show what only the edge knew: the
 * client's address, the server name and the TLS parameters.
 */

const proxyInfo = new WeakMap<Socket, DecodedProxyV2>();

function page(req: IncomingMessage, res: ServerResponse): void {
  const info = proxyInfo.get(req.socket);
  const ssl = info?.tlvs.get(Pp2Type.SSL);
  let cipher: string | undefined;
  let version: string | undefined;
  let clientCn: string | undefined;
  if (ssl) {
    // PP2_TYPE_SSL: client(1) verify(4) then sub-TLVs: PP2_SUBTYPE_SSL_VERSION, _CN, _CIPHER, …
    for (let o = 5; o + 3 <= ssl.length; ) {
      const len = ssl.readUInt16BE(o + 1);
      const value = ssl.subarray(o + 3, o + 3 + len).toString('latin1');
      if (ssl[o] === Pp2Type.SUBTYPE_SSL_CIPHER) cipher = value;
      if (ssl[o] === Pp2Type.SUBTYPE_SSL_VERSION) version = value;
      if (ssl[o] === Pp2Type.SUBTYPE_SSL_CN) clientCn = Buffer.from(value, 'latin1').toString('utf8');
      o += 3 + len;
    }
  }
  const details = decodeHandshakeDetails(info?.tlvs.get(Pp2Type.HANDSHAKE_DETAILS));
  const rows: [string, string | undefined][] = [
    ['client address (PROXY v2)', info?.sourceAddress && `${info.sourceAddress}:${info.sourcePort}`],
    ['server name (SNI)', info?.tlvs.get(Pp2Type.AUTHORITY)?.toString('utf8') ?? '(none: default identity)'],
    ['ALPN', info?.tlvs.get(Pp2Type.ALPN)?.toString('latin1')],
    ['TLS version', version],
    ['cipher suite', cipher],
    ['key exchange group', details.get('group')],
    ['HelloRetryRequest', details.get('hrr')],
    ['resumed', details.get('resumed')],
    ['handshake signed', details.get('signature')],
    ['client certificate CN', ssl ? (clientCn ?? (ssl[0]! & 0x06 ? '(certificate without CN)' : 'none')) : undefined],
    ['request', `${req.method} ${req.url} HTTP/${req.httpVersion}`],
  ];
  const text = rows.map(([k, v]) => `${k}: ${v ?? '-'}`).join('\n');
  const wantsText = /curl|wget/i.test(req.headers['user-agent'] ?? '');
  const body = wantsText
    ? `Hello from the upstream app, through the TLS sign delegator.\nThe edge terminated TLS; keyd signs full handshakes; the edge never saw the key.\n\n${text}\n`
    : `<!doctype html><meta charset="utf-8"><title>TLS sign delegator demo</title>
<h1>Hello through the TLS sign delegator</h1>
<p>The edge terminated TLS and keyd signs every full handshake: the private key never left keyd.</p>
<table>${rows.map(([k, v]) => `<tr><th align="left">${escapeHtml(k)}</th><td>${escapeHtml(v ?? '-')}</td></tr>`).join('')}</table>\n`;
  res.writeHead(200, { 'content-type': wantsText ? 'text/plain; charset=utf-8' : 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * How long a connection has, from accept, to send its whole PROXY v2 header (or the first
 * byte of plain HTTP). Node's HTTP timeouts (headersTimeout, keepAliveTimeout) start only
 * once the socket is handed to the HTTP server; before that, a client that sent part of a
 * header and stopped would hold its socket open for as long as it liked. The edge sends
 * the header in one write on a loopback connection, so seconds are plenty.
 */
export const PROXY_HEADER_TIMEOUT_MS = 5_000;

/** Starts the upstream on 127.0.0.1 (port 0 = any); resolves with the server and its port. */
export async function startDemoUpstream(port = 0): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const http = createHttpServer({ keepAliveTimeout: 5000 }, page);
  const sockets = new Set<Socket>();
  const front = createNetServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    const headerTimer = setTimeout(() => socket.destroy(), PROXY_HEADER_TIMEOUT_MS);
    socket.once('close', () => clearTimeout(headerTimer));
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const probe = head.subarray(0, PROXY_V2_SIGNATURE.length);
      if (!probe.equals(PROXY_V2_SIGNATURE.subarray(0, probe.length))) return handOver(head); // plain HTTP
      let info: DecodedProxyV2 | undefined;
      try {
        info = decodeProxyV2(head);
      } catch {
        socket.destroy();
        return;
      }
      if (!info) {
        if (head.length > 65_551) socket.destroy();
        return;
      }
      proxyInfo.set(socket, info);
      handOver(head.subarray(info.length));
    };
    const handOver = (rest: Buffer) => {
      clearTimeout(headerTimer); // node's HTTP timeouts take over from here
      socket.off('data', onData);
      socket.pause();
      if (rest.length) socket.unshift(rest);
      http.emit('connection', socket);
      socket.resume();
    };
    socket.on('data', onData);
  });
  await new Promise<void>((resolve, reject) => {
    front.once('error', reject);
    front.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    server: front,
    port: (front.address() as { port: number }).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        front.close(() => resolve());
      }),
  };
}
