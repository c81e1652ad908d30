/**
 * Loads the RFC 8448 trace values kept as data in test/vectors/ (hex strings).
 * Tests run from dist/test/tls/, so the files are found relative to the repository root.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const vectorsDir = fileURLToPath(new URL('../../../test/vectors/', import.meta.url));

export function loadVectors<T = Record<string, unknown>>(name: string): T {
  return JSON.parse(readFileSync(vectorsDir + name, 'utf8')) as T;
}

export function hex(s: string): Buffer {
  return Buffer.from(s, 'hex');
}
