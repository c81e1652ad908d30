import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import fc from 'fast-check';
import { attachHttpResponder, escapeHtml, type HttpResponderOptions } from '../../src/demo/http-responder.js';
import { parseRequestHead } from '../../src/demo/http-request-head.js';

/** An in-memory Duplex: what the responder writes is collected; `feed` plays the peer. */
function harness(options: HttpResponderOptions = {}) {
  const written: Buffer[] = [];
  let ended = false;
  let endedResolve!: () => void;
  const endedPromise = new Promise<void>((resolve) => (endedResolve = resolve));
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(Buffer.from(chunk));
      callback();
    },
    final(callback) {
      ended = true;
      endedResolve();
      callback();
    },
  });
  const statuses: number[] = [];
  attachHttpResponder(
    stream,
    { 'TLS version': 'TLS 1.3', 'cipher suite': 'TLS_AES_128_GCM_SHA256', 'server name': '<script>' },
    {
      headTimeoutMs: 2000,
      ...options,
      onResponse: (status, head, reason) => {
        statuses.push(status);
        options.onResponse?.(status, head, reason);
      },
    },
  );
  return {
    stream,
    statuses,
    feed(chunks: readonly (string | Uint8Array)[], endInput = false) {
      for (const chunk of chunks) stream.push(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : Buffer.from(chunk));
      if (endInput) stream.push(null);
    },
    async response(): Promise<string> {
      await endedPromise;
      return Buffer.concat(written).toString('latin1');
    },
    get ended() {
      return ended;
    },
  };
}

function statusOf(response: string): number {
  const match = /^HTTP\/1\.1 (\d{3}) /.exec(response);
  assert.ok(match, `not an HTTP/1.1 status line: ${JSON.stringify(response.slice(0, 40))}`);
  return Number(match[1]);
}

function splitAt(text: string, cuts: number[]): string[] {
  const points = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
  const chunks: string[] = [];
  let start = 0;
  for (const point of points) {
    chunks.push(text.slice(start, point));
    start = point;
  }
  chunks.push(text.slice(start));
  return chunks.filter((chunk) => chunk.length > 0);
}

test('HTTP/1.0 GET as tlsfuzzer sends it gets 200 with the page, Content-Length, Connection: close, then end', async () => {
  const h = harness();
  h.feed(['GET / HTTP/1.0\r\n\r\n']);
  const response = await h.response();
  assert.equal(statusOf(response), 200);
  const [head, body] = response.split('\r\n\r\n', 2) as [string, string];
  assert.match(head, /\r\nConnection: close(\r\n|$)/);
  assert.match(head, /\r\nContent-Type: text\/html; charset=utf-8/);
  const length = Number(/\r\nContent-Length: (\d+)/.exec(head)?.[1]);
  assert.equal(Buffer.byteLength(body, 'latin1'), length);
  assert.match(body, /TLS_AES_128_GCM_SHA256/);
  assert.match(body, /&#60;script&#62;/, 'details are HTML-escaped');
  assert.doesNotMatch(body, /<script>/);
  assert.ok(h.ended);
  assert.deepEqual(h.statuses, [200]);
});

test('HTTP/1.1 GET with Host (what curl sends) gets 200; without Host gets 400', async () => {
  const ok = harness();
  ok.feed(['GET /index.html HTTP/1.1\r\nHost: localhost:8443\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n']);
  assert.equal(statusOf(await ok.response()), 200);
  const noHost = harness();
  noHost.feed(['GET / HTTP/1.1\r\nAccept: */*\r\n\r\n']);
  assert.equal(statusOf(await noHost.response()), 400);
});

test('HEAD gets the GET headers and no body', async () => {
  const h = harness();
  h.feed(['HEAD / HTTP/1.0\r\n\r\n']);
  const response = await h.response();
  assert.equal(statusOf(response), 200);
  assert.ok(response.endsWith('\r\n\r\n'));
  assert.ok(Number(/Content-Length: (\d+)/.exec(response)?.[1]) > 0);
});

test('other methods get 405 with Allow', async () => {
  for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'BREW']) {
    const h = harness();
    h.feed([`${method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`]);
    const response = await h.response();
    assert.equal(statusOf(response), 405, method);
    assert.match(response, /\r\nAllow: GET, HEAD\r\n/);
  }
});

test('malformed requests get 400, HTTP/2.0 gets 505, an oversized head 431', async () => {
  const cases: [string, number][] = [
    ['GET /\r\n\r\n', 400],
    ['GET / HTTP/1.0 extra\r\n\r\n', 400],
    ['GET / FTP/1.0\r\n\r\n', 400],
    ['GET / HTTP/2.0\r\n\r\n', 505],
    ['GET / HTTP/1.0\r\nno colon here\r\n\r\n', 400],
    ['GET / HTTP/1.0\r\nBad Name: x\r\n\r\n', 400],
    ['GET / HTTP/1.0\r\n folded: x\r\n\r\n', 400],
    ['\x16\x03\x01\x00\xa5\x01\x00', 400], // a second ClientHello sent as application data
    [`GET /${'a'.repeat(9000)} HTTP/1.0\r\n\r\n`, 431],
    [`GET / HTTP/1.0\r\nX-Big: ${'b'.repeat(9000)}\r\n\r\n`, 431],
  ];
  for (const [input, expected] of cases) {
    const h = harness();
    h.feed([input]);
    assert.equal(statusOf(await h.response()), expected, JSON.stringify(input.slice(0, 50)));
  }
});

test('an oversized head is refused once the cap is passed, without waiting for its end', async () => {
  const h = harness({ maxHeadBytes: 1024 });
  h.feed(['GET / HTTP/1.0\r\n', 'X-A: ' + 'a'.repeat(2000)]);
  assert.equal(statusOf(await h.response()), 431);
});

test('peer closes before the head ends: 400; closes without sending anything: plain end', async () => {
  const partial = harness();
  partial.feed(['GET / HTTP/1.0\r\n'], true);
  assert.equal(statusOf(await partial.response()), 400);
  const silent = harness();
  silent.feed([], true);
  assert.equal(await silent.response(), '');
});

test('a stalled request gets 408 after the head timeout', async () => {
  const h = harness({ headTimeoutMs: 50 });
  h.feed(['GET / HT']);
  assert.equal(statusOf(await h.response()), 408);
});

test('data after the response is drained and ignored; stream errors do not throw', async () => {
  const errors: Error[] = [];
  const h = harness({ onError: (err) => errors.push(err) });
  h.feed(['GET / HTTP/1.0\r\n\r\nGET /again HTTP/1.0\r\n\r\n', 'more']);
  const response = await h.response();
  assert.equal(response.match(/HTTP\/1\.1 /g)?.length, 1);
  h.stream.destroy(new Error('peer reset'));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(errors.length, 1);
});

test('property: a valid request split anywhere gets the same response', async () => {
  const requests = [
    'GET / HTTP/1.0\r\n\r\n',
    'GET /x?y=1 HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n',
    'HEAD / HTTP/1.1\nHost: a\n\n',
    'POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc',
  ];
  const whole = new Map<string, string>();
  for (const request of requests) {
    const h = harness();
    h.feed([request]);
    whole.set(request, await h.response());
  }
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...requests), fc.array(fc.nat(), { maxLength: 12 }), async (request, cuts) => {
      const h = harness();
      h.feed(splitAt(request, cuts));
      assert.equal(await h.response(), whole.get(request));
    }),
    { numRuns: 300 },
  );
});

test('property: arbitrary bytes, split anywhere, get exactly one error response and an ended stream', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.array(fc.nat(), { maxLength: 8 }), async (bytes, cuts) => {
      const text = Buffer.from(bytes).toString('latin1');
      const h = harness({ maxHeadBytes: 256 });
      h.feed(splitAt(text, cuts), true); // input always ends, so a response always comes
      const response = await h.response();
      // Random bytes can form a complete valid request only by a miracle: expect a rejection.
      assert.ok([400, 405, 431, 505].includes(statusOf(response)), response.slice(0, 40));
      assert.equal(h.statuses.length, 1);
    }),
    { numRuns: 500 },
  );
});

test('parser: every strict prefix of a valid head is incomplete or (for a broken line) never a request', () => {
  const request = Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n', 'latin1');
  for (let length = 0; length < request.length; length++) {
    const result = parseRequestHead(request.subarray(0, length), 8192);
    assert.equal(result.kind, 'incomplete', `prefix of ${length} bytes`);
  }
  const full = parseRequestHead(request, 8192);
  assert.equal(full.kind, 'request');
  if (full.kind === 'request') {
    assert.equal(full.head.method, 'GET');
    assert.equal(full.head.target, '/');
    assert.equal(full.head.minorVersion, 1);
    assert.equal(full.head.headers.get('host'), 'localhost');
  }
});

test('escapeHtml escapes the five HTML-significant characters', () => {
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), '&#60;a href=&#34;x&#34;&#62;&#39;&#38;&#39;&#60;/a&#62;');
});

test('parser: a request line without its newline is refused 431 once past the cap, not buffered on; a shorter one is incomplete (control)', () => {
  assert.deepEqual(parseRequestHead(Buffer.from(`GET /${'a'.repeat(2000)}`, 'latin1'), 1024), { kind: 'reject', status: 431, reason: 'request line too long' });
  assert.deepEqual(parseRequestHead(Buffer.from(`GET /${'a'.repeat(1000)}`, 'latin1'), 1024), { kind: 'incomplete' });
});

test('parser: a complete head of exactly maxHeadBytes is a request, one byte more is 431', () => {
  const head = (size: number) => {
    const start = 'GET / HTTP/1.0\r\nX-Pad: ';
    return Buffer.from(start + 'p'.repeat(size - start.length - 4) + '\r\n\r\n', 'latin1');
  };
  assert.equal(head(1024).length, 1024);
  assert.equal(parseRequestHead(head(1024), 1024).kind, 'request');
  assert.deepEqual(parseRequestHead(head(1025), 1024), { kind: 'reject', status: 431, reason: 'request head too large' });
});

test('parser: a method or target that is not RFC 9110/9112 syntax, a field value with NUL or a bare CR, and two Host fields in HTTP/1.1 are 400; their valid forms are requests (control)', () => {
  const reject = (text: string, reason: string) =>
    assert.deepEqual(parseRequestHead(Buffer.from(text, 'latin1'), 8192), { kind: 'reject', status: 400, reason }, JSON.stringify(text));
  const accept = (text: string) => assert.equal(parseRequestHead(Buffer.from(text, 'latin1'), 8192).kind, 'request', JSON.stringify(text));

  reject('G(T / HTTP/1.0\r\n\r\n', 'invalid method');
  accept("M-SEARCH!#$%&'*+.^_`|~ / HTTP/1.0\r\n\r\n");
  reject('GET /a\x01b HTTP/1.0\r\n\r\n', 'invalid request target');
  reject('GET /a\x7fb HTTP/1.0\r\n\r\n', 'invalid request target');
  reject('GET /\xe9 HTTP/1.0\r\n\r\n', 'invalid request target');
  accept('GET /a?b=c&d=%20#frag HTTP/1.0\r\n\r\n');
  reject('GET / HTTP/1.0\r\nX-A: a\x00b\r\n\r\n', 'invalid header field value');
  reject('GET / HTTP/1.0\r\nX-A: a\rb\r\n\r\n', 'invalid header field value');
  accept('GET / HTTP/1.0\r\nX-A: a\tb \xe9 ~\r\n\r\n');
  reject('GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n', 'HTTP/1.1 request needs one Host header');
  accept('GET / HTTP/1.1\r\nHost: a.test\r\n\r\n');
});

test('a throwing onResponse callback does not stop the response', async () => {
  let called = 0;
  const h = harness({
    onResponse: () => {
      called++;
      throw new Error('logging failed');
    },
  });
  h.feed(['GET / HTTP/1.0\r\n\r\n']);
  const response = await h.response();
  assert.equal(called, 1);
  assert.equal(statusOf(response), 200);
});
