/**
 * A token that stops answering C_Sign. C_SignAsync runs on libuv's thread pool (4 threads
 * unless UV_THREADPOOL_SIZE says otherwise), which keyd's fs and crypto work shares: each
 * call the token never answers holds a thread for good. keyd has at most callBound calls
 * in the token, fails a signature after signTimeoutMs with KEYD_TOKEN_ABSENT, keeps the
 * hung call's slot and session until the token really returns, and serves again then.
 *
 * SoftHSM never hangs, so the token here is SoftHSM behind its real pkcs11js object,
 * whose C_SignAsync result the test holds back while `hold` is set (Pkcs11Token takes the
 * binding object as an option; keyd itself always passes none and gets a new one).
 */
import assert from 'node:assert/strict';
import { createHash, verify, type KeyObject } from 'node:crypto';
import { test } from 'node:test';
import pkcs11js from 'pkcs11js';
import { KeydError } from '../../../src/keyd/errors.js';
import { CKA, CKM } from '../../../src/keyd/pkcs11/constants.js';
import { publicKeyFromAttributes, tokenKeyKind } from '../../../src/keyd/pkcs11/key-material.js';
import { Pkcs11Token, tokenCallBound, threadPoolSize } from '../../../src/keyd/pkcs11/token.js';
import { makeSoftHsmToken, requireSoftHsm } from './softhsm.js';

const TIMEOUT_MS = 400;
const content = Buffer.from('content keyd built');
const digest = createHash('sha256').update(content).digest();

/** `p`'s outcome, or a failure naming `what` when it has not settled in 10 s (a hang, not a speed check). */
async function settled<T>(p: Promise<T>, what: string): Promise<PromiseSettledResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: never settled (no timeout on a hung C_Sign?)`)), 10_000);
  });
  try {
    return await Promise.race([p.then((value) => ({ status: 'fulfilled' as const, value }), (reason: unknown) => ({ status: 'rejected' as const, reason })), hang]);
  } finally {
    clearTimeout(timer);
  }
}

function refusal(result: PromiseSettledResult<unknown>, what: string): KeydError {
  assert.equal(result.status, 'rejected', `${what} must fail`);
  const err = (result as PromiseRejectedResult).reason as unknown;
  assert.ok(err instanceof KeydError, `${what}: ${String(err)}`);
  assert.equal(err.code, 'KEYD_TOKEN_ABSENT', `${what}: ${err.message}`);
  return err;
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

test('the bound on calls in the token (C_Sign, C_GenerateKeyPair) is half of libuv\'s thread pool over all tokens, at least one', () => {
  assert.equal(threadPoolSize({}), 4);
  assert.equal(threadPoolSize({ UV_THREADPOOL_SIZE: '16' }), 16);
  assert.equal(threadPoolSize({ UV_THREADPOOL_SIZE: 'x' }), 4);
  assert.equal(tokenCallBound(4, 1), 2);
  assert.equal(tokenCallBound(4, 2), 1);
  assert.equal(tokenCallBound(4, 3), 1);
  assert.equal(tokenCallBound(16, 2), 4);
  assert.equal(tokenCallBound(1, 1), 1);
});

test('a token that does not answer C_Sign: at most the bound in the token, the request fails after the timeout, the token serves again once the calls return', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  assert.equal(process.env.UV_THREADPOOL_SIZE, undefined, 'the test expects libuv\'s default pool (4 threads)');
  const softhsm = makeSoftHsmToken('keyd-hung');
  process.env.SOFTHSM2_CONF = softhsm.env.SOFTHSM2_CONF;

  const real = new pkcs11js.PKCS11();
  let hold = false;
  const held: (() => void)[] = [];
  /** Sessions of the C_Sign calls the token received, and how many it had at once. */
  const signSessions: Buffer[] = [];
  let inToken = 0;
  let mostInToken = 0;
  const findSessions: Buffer[] = [];
  const lib = new Proxy(real, {
    get(target, prop) {
      if (prop === 'C_SignAsync') {
        return async (session: Buffer, data: Buffer, out: Buffer) => {
          signSessions.push(session);
          mostInToken = Math.max(mostInToken, ++inToken);
          try {
            const signature = await target.C_SignAsync(session, data, out);
            if (hold) await new Promise<void>((release) => held.push(release));
            return signature;
          } finally {
            inToken--;
          }
        };
      }
      if (prop === 'C_FindObjectsInit') {
        return (session: Buffer, template: pkcs11js.Template) => {
          findSessions.push(session);
          target.C_FindObjectsInit(session, template);
        };
      }
      const value = Reflect.get(target, prop) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });

  // Three sessions: the two hung calls hold two, the third serves the other requests.
  const token = new Pkcs11Token({ label: softhsm.label, module: softhsm.module, pinFile: softhsm.pinFile, sessions: 3, signTimeoutMs: TIMEOUT_MS }, undefined, { lib });
  assert.equal(token.callBound, 2);
  try {
    const kind = tokenKeyKind('ecdsa-p256');
    const id = Pkcs11Token.newObjectId();
    const common = [{ type: CKA.ID, value: id }, { type: CKA.LABEL, value: 'hung' }];
    const attrs = await token.generateKeyPair(
      kind.generateMechanism,
      [{ type: CKA.TOKEN, value: true }, { type: CKA.VERIFY, value: true }, { type: CKA.EC_PARAMS, value: kind.ecParams! }, ...common],
      [{ type: CKA.TOKEN, value: true }, { type: CKA.PRIVATE, value: true }, { type: CKA.SENSITIVE, value: true }, { type: CKA.EXTRACTABLE, value: false }, { type: CKA.SIGN, value: true }, ...common],
      [CKA.EC_POINT],
      (attrs) => attrs,
    );
    const publicKey: KeyObject = publicKeyFromAttributes(kind, { ecPoint: attrs.get(CKA.EC_POINT) });
    const sign = () => token.sign(id, { mechanism: CKM.ECDSA }, digest, 64);
    const verifies = (signature: Buffer) => verify('sha256', content, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);

    // Control: the token signs, several at once, never more than the bound in the token.
    const first = await settled(Promise.all([sign(), sign(), sign(), sign(), sign()]), 'signatures of a token that answers');
    assert.equal(first.status, 'fulfilled');
    for (const { signature } of (first as PromiseFulfilledResult<{ signature: Buffer }[]>).value) assert.ok(verifies(signature));
    assert.equal(signSessions.length, 5);
    assert.ok(mostInToken <= 2, `${mostInToken} C_Sign calls were in the token at once`);

    // The token stops answering: three requests at once.
    hold = true;
    const before = signSessions.length;
    // And keyd stops meanwhile: close() waits for the calls in flight, not for hung ones
    // (it leaves the module loaded then; C_Finalize under a call in progress is undefined).
    const [a, b, c, closed] = await Promise.all([settled(sign(), 'first'), settled(sign(), 'second'), settled(sign(), 'third'), settled(turn().then(() => token.close()), 'close during the calls')]);
    assert.equal(closed.status, 'fulfilled');
    for (const [result, what] of [[a, 'first'], [b, 'second']] as const) {
      assert.match(refusal(result, what).message, new RegExp(`^token "keyd-hung": C_Sign \\(CKM_ECDSA\\): C_Sign did not return within ${TIMEOUT_MS} ms; the token is not answering$`));
    }
    // The third waited for a slot: it fails at its own timeout or when both slots hung.
    assert.match(refusal(c, 'third').message, new RegExp(`no C_Sign slot came free within ${TIMEOUT_MS} ms|2 C_Sign call\\(s\\) have not returned after ${TIMEOUT_MS} ms`));
    assert.equal(signSessions.length - before, 2, 'only the bound reached the token');
    assert.equal(inToken, 2);

    // While both slots are held by hung calls, a signature fails at once, without a call.
    const d = await settled(sign(), 'fourth');
    assert.match(refusal(d, 'fourth').message, new RegExp(`2 C_Sign call\\(s\\) have not returned after ${TIMEOUT_MS} ms, and keyd has at most 2 in the token at once`));
    assert.equal(signSessions.length - before, 2);

    // The hung calls' sessions are not handed out: the token is still working in them.
    const hung = signSessions.slice(before);
    assert.equal((await settled(token.hasObjectWithId(id), 'a lookup beside the hung calls')).status, 'fulfilled');
    assert.ok(!hung.includes(findSessions.at(-1)!), 'the lookup ran in a session a hung C_Sign still holds');

    // The token answers again: the held calls return, their slots and sessions come back.
    hold = false;
    for (const release of held.splice(0)) release();
    await turn();
    assert.equal(inToken, 0);
    const again = await settled(Promise.all([sign(), sign(), sign()]), 'signatures after the token answered');
    assert.equal(again.status, 'fulfilled', String((again as PromiseRejectedResult).reason));
    for (const { signature } of (again as PromiseFulfilledResult<{ signature: Buffer }[]>).value) assert.ok(verifies(signature));
    assert.ok(mostInToken <= 2, `${mostInToken} C_Sign calls were in the token at once`);
  } finally {
    hold = false;
    for (const release of held.splice(0)) release();
    await turn();
    await token.close();
    softhsm.cleanup();
  }
});

test('a token that does not answer C_GenerateKeyPair: the request fails after generateTimeoutMs, the call keeps a slot shared with C_Sign, a key pair made late is destroyed', { timeout: 120_000 }, async (t) => {
  if (!requireSoftHsm(t)) return;
  assert.equal(process.env.UV_THREADPOOL_SIZE, undefined, 'the test expects libuv\'s default pool (4 threads)');
  const softhsm = makeSoftHsmToken('keyd-hung-gen');
  process.env.SOFTHSM2_CONF = softhsm.env.SOFTHSM2_CONF;

  const real = new pkcs11js.PKCS11();
  let hold = false;
  const held: (() => void)[] = [];
  let generateCalls = 0;
  let signCalls = 0;
  const lib = new Proxy(real, {
    get(target, prop) {
      if (prop === 'C_GenerateKeyPairAsync') {
        // The token makes the key pair, then does not answer while `hold` is set.
        return async (...args: Parameters<pkcs11js.PKCS11['C_GenerateKeyPairAsync']>) => {
          generateCalls++;
          const keys = await target.C_GenerateKeyPairAsync(...args);
          if (hold) await new Promise<void>((release) => held.push(release));
          return keys;
        };
      }
      if (prop === 'C_SignAsync') {
        return (session: Buffer, data: Buffer, out: Buffer) => {
          signCalls++;
          return target.C_SignAsync(session, data, out);
        };
      }
      const value = Reflect.get(target, prop) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });

  // Key generation has its own timeout, here twice the signatures'; both calls share the slots.
  const GENERATE_TIMEOUT_MS = 2 * TIMEOUT_MS;
  const token = new Pkcs11Token(
    { label: softhsm.label, module: softhsm.module, pinFile: softhsm.pinFile, sessions: 3, signTimeoutMs: TIMEOUT_MS, generateTimeoutMs: GENERATE_TIMEOUT_MS },
    undefined,
    { lib },
  );
  assert.equal(token.callBound, 2);
  const kind = tokenKeyKind('ecdsa-p256');
  const generate = (id: Buffer) => {
    const common = [{ type: CKA.ID, value: id }, { type: CKA.LABEL, value: 'hung-gen' }];
    return token.generateKeyPair(
      kind.generateMechanism,
      [{ type: CKA.TOKEN, value: true }, { type: CKA.VERIFY, value: true }, { type: CKA.EC_PARAMS, value: kind.ecParams! }, ...common],
      [{ type: CKA.TOKEN, value: true }, { type: CKA.PRIVATE, value: true }, { type: CKA.SENSITIVE, value: true }, { type: CKA.EXTRACTABLE, value: false }, { type: CKA.SIGN, value: true }, ...common],
      [CKA.EC_POINT],
      (attrs) => attrs,
    );
  };
  const exists = async (id: Buffer) => {
    const found = await settled(token.hasObjectWithId(id), 'an object lookup');
    assert.equal(found.status, 'fulfilled', String((found as PromiseRejectedResult).reason));
    return (found as PromiseFulfilledResult<boolean>).value;
  };
  const generateRefusal = new RegExp(`^token "keyd-hung-gen": C_GenerateKeyPair \\(CKM_EC_KEY_PAIR_GEN\\): C_GenerateKeyPair did not return within ${GENERATE_TIMEOUT_MS} ms; the token is not answering$`);
  try {
    // Control: a token that answers generates a key pair that stays, and signs with it.
    const kept = Pkcs11Token.newObjectId();
    const made = await settled(generate(kept), 'a generation the token answers');
    assert.equal(made.status, 'fulfilled', String((made as PromiseRejectedResult).reason));
    const publicKey = publicKeyFromAttributes(kind, { ecPoint: (made as PromiseFulfilledResult<Map<number, Buffer>>).value.get(CKA.EC_POINT) });
    assert.ok(await exists(kept));
    const sign = () => token.sign(kept, { mechanism: CKM.ECDSA }, digest, 64);
    const signed = await settled(sign(), 'a signature');
    assert.equal(signed.status, 'fulfilled');
    assert.ok(verify('sha256', content, { key: publicKey, dsaEncoding: 'ieee-p1363' }, (signed as PromiseFulfilledResult<{ signature: Buffer }>).value.signature));

    // The token stops answering C_GenerateKeyPair: the request fails at generateTimeoutMs
    // (not signTimeoutMs), with KEYD_TOKEN_ABSENT naming the call.
    hold = true;
    const late = [Pkcs11Token.newObjectId(), Pkcs11Token.newObjectId()];
    const first = await settled(generate(late[0]!), 'a generation the token does not answer');
    assert.match(refusal(first, 'first generation').message, generateRefusal);
    // Its call keeps one of the two slots: a signature still gets the other.
    assert.equal((await settled(sign(), 'a signature beside one hung generation')).status, 'fulfilled');
    // A second hung generation takes the other slot: then a signature fails at once, without a call.
    assert.match(refusal(await settled(generate(late[1]!), 'second generation'), 'second generation').message, generateRefusal);
    const signsBefore = signCalls;
    const refused = refusal(await settled(sign(), 'a signature while both slots are held'), 'a signature while both slots are held');
    assert.equal(refused.message, `token "keyd-hung-gen": C_Sign (CKM_ECDSA): 2 C_GenerateKeyPair call(s) have not returned after ${GENERATE_TIMEOUT_MS} ms, and keyd has at most 2 in the token at once (each holds one of libuv's threads); the token is not answering`);
    assert.equal(signCalls, signsBefore, 'no C_Sign reached the token');
    assert.equal(generateCalls, 3);

    // The token answers: the key pairs it made after their requests failed are destroyed
    // (keyd never recorded them), the slots come back; signing and generating work again.
    hold = false;
    for (const release of held.splice(0)) release();
    await turn();
    for (const id of late) assert.equal(await exists(id), false, `the late key pair ${id.toString('hex')} was destroyed`);
    assert.ok(await exists(kept), 'the key generated in time stays');
    const again = await settled(Promise.all([sign(), sign(), generate(Pkcs11Token.newObjectId())]), 'calls after the token answered');
    assert.equal(again.status, 'fulfilled', String((again as PromiseRejectedResult).reason));
  } finally {
    hold = false;
    for (const release of held.splice(0)) release();
    await turn();
    await token.close();
    softhsm.cleanup();
  }
});
