import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { makePki, startKeydForTest } from './harness.js';

/**
 * `clientRefused` lets any authenticated operator (an auditor too) put its own strings in
 * keyd's log: they are quoted truncated there, as in the audit log (keyd/audit.ts).
 */
describe('clientRefused in keyd\'s log', () => {
  it('a huge code is logged truncated; an ordinary one as sent', async () => {
    const lines: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const pki = await makePki();
    const keyd = await startKeydForTest(pki, { logger });
    try {
      const client = await keyd.connect(pki.bob); // auditor
      try {
        const refusedLines = (): string[] => lines.filter((l) => l.includes("refused this keyd's provisioning key"));
        // Control: an ordinary code is logged as sent.
        await client.request('clientRefused', { code: 'PROVISION_KEYD_FINGERPRINT_MISMATCH', message: 'fingerprint differs' });
        assert.equal(refusedLines().length, 1);
        assert.equal(JSON.parse(refusedLines()[0]!).code, 'PROVISION_KEYD_FINGERPRINT_MISMATCH');
        await client.request('clientRefused', { code: 'X'.repeat(100_000), message: 'fingerprint differs' });
        assert.equal(refusedLines().length, 2);
        const line = refusedLines()[1]!;
        assert.ok(line.length < 1000, `a log line of ${line.length} characters`);
        assert.match(JSON.parse(line).code, /^X{256}…\(99744 more characters\)$/);
      } finally {
        client.close();
      }
    } finally {
      await keyd.close();
    }
  });
});
