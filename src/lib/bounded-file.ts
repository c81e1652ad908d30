import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

/**
 * Reads a whole file that must be a regular file of at most `maxBytes`, deciding before
 * reading a byte: a file that is larger would be read into memory whole, and one that is
 * not regular never ends (a device) or blocks the open until a writer comes (a FIFO:
 * O_NONBLOCK lets the open return, fstat then names it). `refuse(why)` builds the error,
 * so that the caller names what the file was meant to hold. ENOENT and other open errors
 * are thrown as they are.
 */
export async function readRegularFileBounded(path: string, maxBytes: number, refuse: (why: string) => Error): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw refuse('is not a regular file');
    if (st.size > maxBytes) throw refuse(`is ${st.size} bytes, more than the ${maxBytes} it can hold`);
    const buf = Buffer.alloc(st.size);
    let filled = 0;
    while (filled < buf.length) {
      const { bytesRead } = await fh.read(buf, filled, buf.length - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return buf.subarray(0, filled);
  } finally {
    await fh.close();
  }
}
