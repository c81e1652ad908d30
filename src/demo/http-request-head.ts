/**
 * Incremental parser for an HTTP/1.x request head (RFC 9112 §2–§5), just enough for
 * the demo responder: request line, header fields, end of head. It never throws:
 * every input maps to "need more", a request, or a precise rejection.
 */

export interface RequestHead {
  readonly method: string;
  readonly target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  readonly minorVersion: number;
  /** Lower-cased field names; repeated fields joined with ", " (RFC 9110 §5.3). */
  readonly headers: ReadonlyMap<string, string>;
}

export type HeadParseResult =
  | { readonly kind: 'incomplete' }
  | { readonly kind: 'request'; readonly head: RequestHead }
  | { readonly kind: 'reject'; readonly status: 400 | 431 | 505; readonly reason: string };

/** RFC 9110 §5.6.2 token characters. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** RFC 9112 §3.2: origin-form, absolute-form, authority-form or asterisk-form; no spaces or controls. */
const REQUEST_TARGET = /^[\x21-\x7e]+$/;
/** Field values: visible ASCII, obs-text, spaces and tabs (RFC 9110 §5.5); no CR, LF or NUL. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Parses the head at the start of `buffer` (latin1 view: one char per byte).
 * A line ends with CRLF or, leniently, a bare LF (RFC 9112 §2.2 allows recipients to accept it).
 */
export function parseRequestHead(buffer: Buffer, maxHeadBytes: number): HeadParseResult {
  const text = buffer.toString('latin1');
  const firstLineEnd = text.indexOf('\n');
  if (firstLineEnd === -1) {
    // Reject garbage as soon as it cannot become a request line, rather than waiting for a newline.
    if (!couldStartRequestLine(text)) return { kind: 'reject', status: 400, reason: 'malformed request line' };
    if (buffer.length > maxHeadBytes) return { kind: 'reject', status: 431, reason: 'request line too long' };
    return { kind: 'incomplete' };
  }
  const requestLine = parseRequestLine(stripCr(text.slice(0, firstLineEnd)));
  if ('status' in requestLine) return { kind: 'reject', ...requestLine };

  const headEnd = findEndOfHead(text, firstLineEnd + 1);
  if (headEnd === -1) {
    if (buffer.length > maxHeadBytes) return { kind: 'reject', status: 431, reason: 'request head too large' };
    return { kind: 'incomplete' };
  }
  if (headEnd > maxHeadBytes) return { kind: 'reject', status: 431, reason: 'request head too large' };

  const headers = new Map<string, string>();
  const fieldLines = text.slice(firstLineEnd + 1, headEnd).split('\n').map(stripCr).filter((line) => line !== '');
  for (const line of fieldLines) {
    const colon = line.indexOf(':');
    if (colon <= 0) return { kind: 'reject', status: 400, reason: 'header line without a field name' };
    const name = line.slice(0, colon);
    // RFC 9112 §5.1: no whitespace between field name and colon; obs-fold (§5.2) is rejected.
    if (!TOKEN.test(name)) return { kind: 'reject', status: 400, reason: 'invalid header field name' };
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!FIELD_VALUE.test(value)) return { kind: 'reject', status: 400, reason: 'invalid header field value' };
    const key = name.toLowerCase();
    const previous = headers.get(key);
    headers.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }
  // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without exactly one Host field.
  if (requestLine.minorVersion === 1) {
    const host = headers.get('host');
    if (host === undefined || host.includes(',')) return { kind: 'reject', status: 400, reason: 'HTTP/1.1 request needs one Host header' };
  }
  return { kind: 'request', head: { ...requestLine, headers } };
}

function parseRequestLine(line: string): Omit<RequestHead, 'headers'> | { status: 400 | 505; reason: string } {
  const parts = line.split(' ');
  if (parts.length !== 3) return { status: 400, reason: 'malformed request line' };
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN.test(method)) return { status: 400, reason: 'invalid method' };
  if (!REQUEST_TARGET.test(target)) return { status: 400, reason: 'invalid request target' };
  const match = /^HTTP\/(\d)\.(\d)$/.exec(version);
  if (!match) return { status: 400, reason: 'invalid HTTP version' };
  if (match[1] !== '1') return { status: 505, reason: `HTTP/${match[1]}.${match[2]} not supported` };
  return { method, target, minorVersion: match[2] === '0' ? 0 : 1 };
}

/** True while `partial` (no newline yet) is still a prefix of some valid request line. */
function couldStartRequestLine(partial: string): boolean {
  const line = stripCr(partial);
  if (partial.includes('\r') && partial.indexOf('\r') !== partial.length - 1) return false;
  const parts = line.split(' ');
  if (parts.length > 3) return false;
  const [method = '', target, version] = parts;
  if (method !== '' && !TOKEN.test(method)) return false;
  if (target !== undefined && target !== '' && !REQUEST_TARGET.test(target)) return false;
  if (version !== undefined && !'HTTP/'.startsWith(version.slice(0, 5)) ) return false;
  return true;
}

/** Index just past the empty line that ends the head, or -1. `from` is the start of the second line. */
function findEndOfHead(text: string, from: number): number {
  let lineStart = from;
  for (;;) {
    const lineEnd = text.indexOf('\n', lineStart);
    if (lineEnd === -1) return -1;
    if (stripCr(text.slice(lineStart, lineEnd)) === '') return lineEnd + 1;
    lineStart = lineEnd + 1;
  }
}

function stripCr(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}
