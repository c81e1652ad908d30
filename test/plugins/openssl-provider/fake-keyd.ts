/**
 * A fake keyd for the provider's tests: a unix socket that parses the provider's
 * signHandshakeContent requests (docs/PROTOCOL.md, "Frame" and opcode 0x05) and answers as
 * a test says, well-formed or not; and a reference file (docs/OPENSSL-PROVIDER.md) for a
 * P-256 key made here, so that a test can sign as keyd would and verify with node:crypto.
 */
import { generateKeyPairSync, randomBytes, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { encodeKeyReferencePem } from '../../../src/keyd/key-reference.js';
import { runTool, type ToolResult } from '../../helpers/tools.js';
import { opensslConf, PROVIDER_SO } from './harness.js';

export const OP_SIGN_HANDSHAKE_CONTENT = 0x05;
export const OP_REPLY = 0x80;
export const OP_CHANGED = 0x40;
export const OP_ERROR = 0xff;

export interface Request {
  id: number;
  keyRef: string;
  serverName: string;
  scheme: number;
  content: Buffer;
}

/** docs/PROTOCOL.md "Frame": version 2, opcode, reserved 0, request id, payload length. */
export function frame(opcode: number, id: number, payload: Buffer, length = payload.length): Buffer {
  const header = Buffer.alloc(12);
  header[0] = 2;
  header[1] = opcode;
  header.writeUInt32BE(id, 4);
  header.writeUInt32BE(length, 8);
  return Buffer.concat([header, payload]);
}

export const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);

export interface FakeKeyd {
  /** Connections accepted so far. */
  connections: number;
  requests: Request[];
}

/** A fake keyd on `path`: each signHandshakeContent request is handed to `answer`. */
export async function fakeKeyd(t: TestContext, path: string, answer: (socket: Socket, request: Request) => void): Promise<FakeKeyd> {
  const state: FakeKeyd = { connections: 0, requests: [] };
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    state.connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 12 && buffered.length >= 12 + buffered.readUInt32BE(8)) {
        const id = buffered.readUInt32BE(4);
        const payload = buffered.subarray(12, 12 + buffered.readUInt32BE(8));
        buffered = buffered.subarray(12 + payload.length);
        // key_ref<1..255> server_name<1..255> scheme content<1..2^16-1>
        const keyRef = payload.subarray(1, 1 + payload[0]!).toString('latin1');
        let at = 1 + payload[0]!;
        const serverName = payload.subarray(at + 1, at + 1 + payload[at]!).toString('latin1');
        at += 1 + payload[at]!;
        const scheme = payload.readUInt16BE(at);
        const content = Buffer.from(payload.subarray(at + 4, at + 4 + payload.readUInt16BE(at + 2)));
        const request = { id, keyRef, serverName, scheme, content };
        state.requests.push(request);
        answer(socket, request);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(() => {
    // close() waits for open connections: a case that leaves one open ends it here.
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return state;
}

export interface Signer {
  key: KeyObject;
  /** DER SubjectPublicKeyInfo of `key`. */
  spki: Buffer;
  conf: string;
  content: Buffer;
  /** `openssl pkeyutl` signing `content` with the reference file `refFile` (default: the one made here). */
  sign(refFile?: string): Promise<ToolResult & { signature?: Buffer }>;
  /** `openssl pkey -pubout` of a reference file: its public key in PEM, or the failure. */
  load(refFile: string): Promise<ToolResult>;
  refFile: string;
}

/** A P-256 key, its reference naming `socketPath`, an openssl.cnf with `timeoutMs`, and pkeyutl/pkey runs. */
export function signer(dir: string, socketPath: string, timeoutMs = 5000): Signer {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const refFile = join(dir, 'fake.ref');
  writeFileSync(refFile, encodeKeyReferencePem({ socketPath, serverName: 'a.test', keyRef: 'k-fake', spki }));
  const conf = join(dir, 'fake.cnf');
  writeFileSync(conf, opensslConf(PROVIDER_SO).replace('timeout_ms = 5000', `timeout_ms = ${timeoutMs}`));
  // RFC 8446 §4.4.3: 64 spaces, the server context string, 0x00, the transcript hash.
  const content = Buffer.concat([Buffer.alloc(64, 0x20), Buffer.from('TLS 1.3, server CertificateVerify'), Buffer.from([0]), randomBytes(32)]);
  const input = join(dir, 'cv.bin');
  writeFileSync(input, content);
  const out = join(dir, 'sig.bin');
  const env = { ...process.env, OPENSSL_CONF: conf };
  return {
    key: privateKey, spki, conf, content, refFile,
    async sign(ref = refFile) {
      writeFileSync(out, '');
      const r = await runTool('openssl', ['pkeyutl', '-sign', '-rawin', '-digest', 'sha256', '-inkey', ref, '-in', input, '-out', out], '', { env, timeoutMs: 30_000 });
      return { ...r, signature: r.code === 0 ? readFileSync(out) : undefined };
    },
    load: (ref) => runTool('openssl', ['pkey', '-in', ref, '-pubout'], '', { env, timeoutMs: 30_000 }),
  };
}

/** The ECDSA P-256 signature (DER) keyd would return, as a signHandshakeContent reply payload. */
export function signatureReply(s: Signer, request: Request, signature = cryptoSign('sha256', request.content, s.key)): Buffer {
  return Buffer.concat([u16(signature.length), signature]);
}

/** A fake keyd that signs every request correctly. */
export function answerWithSignature(s: Signer): (socket: Socket, request: Request) => void {
  return (socket, request) => socket.write(frame(OP_REPLY | OP_SIGN_HANDSHAKE_CONTENT, request.id, signatureReply(s, request)));
}
