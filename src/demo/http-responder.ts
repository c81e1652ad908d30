import type { Duplex } from 'node:stream';
import { parseRequestHead, type RequestHead } from './http-request-head.js';

/**
 * A one-request HTTP/1.x responder over any Duplex (the engine's TlsSocket in practice):
 * reads one request head, answers GET/HEAD with a small HTML page showing the
 * negotiated TLS parameters, anything else with an error status, then ends the stream
 * (on a TlsSocket, `end()` sends close_notify). It never throws and never waits forever.
 */

/** Values shown on the page, in order: e.g. { 'TLS version': 'TLS 1.3', 'cipher suite': … }. */
export type PageDetails = Readonly<Record<string, string | number | boolean | undefined>>;

export interface HttpResponderOptions {
  /** Largest request head accepted, in bytes. Default 8 KiB (a common server default). */
  readonly maxHeadBytes?: number;
  /** Time allowed for the whole head after attach. Default 30 s; then 408. */
  readonly headTimeoutMs?: number;
  /** Page title. */
  readonly title?: string;
  /** Called once with the status sent (for logs/metrics). */
  readonly onResponse?: (status: number, head: RequestHead | undefined, reason?: string) => void;
  /** Stream errors (reset by the peer, TLS alerts) land here instead of crashing the process. */
  readonly onError?: (err: Error) => void;
}

const REASON_PHRASES: Readonly<Record<number, string>> = {
  200: 'OK',
  400: 'Bad Request',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  505: 'HTTP Version Not Supported',
};

export function attachHttpResponder(stream: Duplex, details: PageDetails | (() => PageDetails), options: HttpResponderOptions = {}): void {
  const maxHeadBytes = options.maxHeadBytes ?? 8192;
  let received: Buffer = Buffer.alloc(0);
  let answered = false;

  const respond = (status: number, head: RequestHead | undefined, reason?: string): void => {
    if (answered) return;
    answered = true;
    clearTimeout(timer);
    stream.off('data', onData);
    stream.off('end', onEnd);
    // Keep draining whatever the peer still sends, so backpressure cannot stall the close.
    stream.resume();
    try {
      options.onResponse?.(status, head, reason);
    } catch {
      // a logging callback must not break the response
    }
    if (stream.destroyed || stream.writableEnded) return;
    const pageDetails = typeof details === 'function' ? safeDetails(details) : details;
    stream.end(buildResponse(status, head, pageDetails, options.title ?? 'TLS sign delegator', reason));
  };

  const onData = (chunk: Buffer | string): void => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk;
    received = received.length === 0 ? bytes : Buffer.concat([received, bytes]);
    const result = parseRequestHead(received, maxHeadBytes);
    if (result.kind === 'incomplete') return;
    if (result.kind === 'reject') return respond(result.status, undefined, result.reason);
    const { head } = result;
    if (head.method === 'GET' || head.method === 'HEAD') return respond(200, head);
    respond(405, head, `method ${head.method} not allowed`);
  };

  const onEnd = (): void => {
    // The peer finished sending (close_notify) before a complete head.
    if (received.length > 0) return respond(400, undefined, 'connection closed before the end of the request head');
    answered = true;
    clearTimeout(timer);
    if (!stream.destroyed && !stream.writableEnded) stream.end();
  };

  // Not unref'd: it is cleared on response, error and close, and a live connection holds the loop anyway.
  const timer = setTimeout(() => respond(408, undefined, 'request head not received in time'), options.headTimeoutMs ?? 30_000);

  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('error', (err: Error) => {
    clearTimeout(timer);
    answered = true;
    options.onError?.(err);
  });
  stream.on('close', () => clearTimeout(timer));
}

function safeDetails(details: () => PageDetails): PageDetails {
  try {
    return details();
  } catch {
    return {};
  }
}

/** The whole response as one buffer: one write, one record where it fits. */
export function buildResponse(status: number, head: RequestHead | undefined, details: PageDetails, title: string, reason?: string): Buffer {
  const phrase = REASON_PHRASES[status] ?? 'Error';
  const body = Buffer.from(status === 200 ? renderPage(title, details, head) : `${status} ${phrase}${reason ? `: ${reason}` : ''}\n`, 'utf8');
  const lines = [
    `HTTP/1.1 ${status} ${phrase}`,
    status === 200 ? 'Content-Type: text/html; charset=utf-8' : 'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${body.length}`,
    'Cache-Control: no-store',
    'Connection: close',
  ];
  if (status === 405) lines.push('Allow: GET, HEAD');
  const headBytes = Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
  // RFC 9110 §9.3.2: HEAD gets the GET headers (Content-Length included) and no body.
  return head?.method === 'HEAD' ? headBytes : Buffer.concat([headBytes, body]);
}

function renderPage(title: string, details: PageDetails, head: RequestHead | undefined): string {
  const rows = Object.entries(details)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `<tr><th>${escapeHtml(key)}</th><td>${escapeHtml(String(value))}</td></tr>`)
    .join('\n');
  const request = head ? `<p>You asked for <code>${escapeHtml(head.method)} ${escapeHtml(head.target)}</code> over HTTP/1.${head.minorVersion}.</p>\n` : '';
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${request}<table>
${rows}
</table>
</body>
</html>
`;
}

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
