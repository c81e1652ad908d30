import { KeydError } from '../errors.js';
import { tpmFailure } from './sealed-root.js';
import { TPM_RC, TpmCommandError, exclusive, tpm, type TpmConnection } from './tools.js';

/**
 * A TPM NV monotonic counter (TPM 2.0 Library Part 1, §37.2.2, TPM_NT_COUNTER): 8 bytes
 * that can only grow, by one per TPM2_NV_Increment, and that survive reboots and power
 * loss. Its first value is not 0 but the largest value any counter on this TPM ever had,
 * so keyd records the absolute value in its manifest. Owner auth (empty by default on a
 * fresh TPM) is what define and increment use.
 */

export interface MonotonicCounter {
  /** Where it lives, for messages ("TPM NV counter 0x01504b44"). */
  readonly description: string;
  read(): Promise<bigint>;
  /** Adds one; returns the new value. */
  increment(): Promise<bigint>;
}

/** Default NV index: in the owner range (TCG "Registry of Reserved TPM 2.0 Handles", 0x01000000–0x013FFFFF platform-free). */
export const DEFAULT_NV_INDEX = 0x01504b44;

export class TpmNvCounter implements MonotonicCounter {
  readonly description: string;
  private readonly hex: string;

  constructor(
    private readonly conn: TpmConnection,
    readonly index: number,
  ) {
    this.hex = `0x${index.toString(16).padStart(8, '0')}`;
    this.description = `TPM NV counter ${this.hex}`;
  }

  /** Reads the counter; undefined when the index is not defined (or never incremented). */
  async readOptional(): Promise<bigint | undefined> {
    try {
      return await this.read();
    } catch (err) {
      if (err instanceof KeydError && (err.code === 'KEYD_COUNTER_MISSING')) return undefined;
      throw err;
    }
  }

  read(): Promise<bigint> {
    return exclusive(this.conn, () => this.readNow());
  }

  private async readNow(): Promise<bigint> {
    let out: Buffer;
    try {
      out = await tpm(this.conn, 'tpm2_nvread', [this.hex, '-C', 'o', '-s', '8']);
    } catch (err) {
      if (err instanceof TpmCommandError && (err.responseCode === TPM_RC.HANDLE1 || err.responseCode === TPM_RC.NV_UNINITIALIZED)) {
        throw new KeydError('KEYD_COUNTER_MISSING', `${this.description} is not defined on this TPM`);
      }
      throw tpmFailure(err, `reading ${this.description}`);
    }
    if (out.length !== 8) throw new KeydError('KEYD_TPM', `${this.description} read ${out.length} bytes, expected 8`);
    return out.readBigUInt64BE(0);
  }

  increment(): Promise<bigint> {
    return exclusive(this.conn, async () => {
      try {
        await tpm(this.conn, 'tpm2_nvincrement', [this.hex, '-C', 'o']);
      } catch (err) {
        throw tpmFailure(err, `incrementing ${this.description}`);
      }
      return this.readNow();
    });
  }

  /** Defines the counter and increments it once (a counter cannot be read before its first increment). */
  async create(): Promise<bigint> {
    await exclusive(this.conn, async () => {
      try {
        await tpm(this.conn, 'tpm2_nvdefine', [this.hex, '-C', 'o', '-s', '8', '-a', 'ownerread|ownerwrite|nt=counter']);
      } catch (err) {
        if (err instanceof TpmCommandError && err.responseCode === TPM_RC.NV_DEFINED) {
          // Left by an earlier store on this TPM: reusing it is safe, its value only grows.
        } else {
          throw tpmFailure(err, `defining ${this.description}`);
        }
      }
    });
    return this.increment();
  }
}
