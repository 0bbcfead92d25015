import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdirSync, readlinkSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import type { Failure } from '../../src/client/failures.js';
import { startServer, type Server } from '../../src/daemon/server.js';
import { deathSignal, deaths, PidEndedError, waitForExit, type PidEnd, type WaitTarget } from '../../src/deaths/wait.js';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { isRunning, silentSocket, startSleeper, waitFor } from '../support/helpers.js';

/**
 * The library's waits for deaths (src/deaths/wait.ts: deaths(),
 * waitForExit(), deathSignal(); README, The library), in-process: a real
 * daemon started with startServer() on 127.0.0.1, asked with `local: false`
 * (the daemon tells the death by its notice), real sleepers killed once the
 * client's debug lines show the daemon keeps their subscriptions, a bound
 * socket that never answers for a silent host, and one watch through the
 * local shortcut, with no daemon to ask. Every wait is a liveness bound.
 */

/** How long a death, an abort or a silence may take to be told: a liveness bound, 10x and more what it takes. */
const BOUND_MS = 20_000;
/** Short intervals: a renewal every 12 of them (1.2 s), a question's timeout one. */
const INTERVAL_MS = 100;

/** `promise`, or a failure naming `what` after BOUND_MS. */
async function bounded<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${BOUND_MS} ms`)), BOUND_MS);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A daemon on 127.0.0.1, an ephemeral port, closed after the test. */
async function daemon(t: TestContext): Promise<Server> {
  const server = await startServer({ port: 0, bind: '127.0.0.1', hostname: 'me' });
  t.after(() => server.close());
  return server;
}

/** A live process, killed after the test if it still lives. */
function sleeper(t: TestContext): ReturnType<typeof startSleeper> {
  const started = startSleeper();
  t.after(() => started.stop());
  return started;
}

/** The client's debug lines (WaitOptions.onDebug), and a wait for one that matches. */
function debugLines() {
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  return {
    lines,
    onDebug(line: string) {
      lines.push(line);
      for (const waiter of waiters) waiter();
    },
    /** Resolves once `count` lines match `pattern`; fails after BOUND_MS. */
    until(pattern: RegExp, what: string, count = 1): Promise<void> {
      const matched = () => lines.filter((line) => pattern.test(line)).length >= count;
      return bounded(
        new Promise<void>((resolve) => {
          if (matched()) return resolve();
          const waiter = () => {
            if (!matched()) return;
            waiters.delete(waiter);
            resolve();
          };
          waiters.add(waiter);
        }),
        what,
      );
    },
  };
}

/** The daemon's answer that it keeps the subscription to `pid`'s death: the watch is set up. */
const subscribed = (pid: number) => new RegExp(`^< \\S+ SUBR ${pid} \\S+ 1 `);
/** Any answer that `pid` lives: a subscription kept, or a question answered. */
const alive = (pid: number) => new RegExp(`^< \\S+ (SUBR ${pid} \\S+ 1 |EXIS ${pid} 1 )`);

/** Iterates `ends` to its end, keeping each end in `told` as it comes. */
async function collect(ends: AsyncIterable<PidEnd>, told: PidEnd[]): Promise<PidEnd[]> {
  for await (const end of ends) told.push(end);
  return told;
}

/** The pidfds this process holds (the local shortcut's exit watch, src/sys/pidref.ts). */
function pidfds(): number {
  let count = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[pidfd]') count++;
    } catch {
      // closed meanwhile (the directory's own fd)
    }
  }
  return count;
}

const withoutMs = (ends: readonly PidEnd[]) => ends.map(({ host, pid, state }) => ({ host, pid, state }));

test('deaths(): a death is told once, with its target, and the iteration ends', async (t) => {
  const server = await daemon(t);
  const process1 = sleeper(t);
  const debug = debugLines();
  const target = { host: '127.0.0.1', pid: process1.pid };
  const told: PidEnd[] = [];
  // Named twice: watched, and told, once.
  const all = collect(deaths([target, { ...target }], { port: server.address().port, local: false, intervalMs: INTERVAL_MS, onDebug: debug.onDebug }), told);
  await debug.until(subscribed(process1.pid), 'the subscription');
  assert.equal(told.length, 0, 'told before the death');
  await process1.stop();
  await bounded(all, 'the end of the iteration');
  assert.deepEqual(withoutMs(told), [{ host: '127.0.0.1', pid: process1.pid, state: 'dead' }]);
  assert.ok(told[0]!.ms >= 0);
  assert.equal(server.stats.notified, 1, 'the death was not learned from the daemon\'s notice');
});

test('deaths(): of two targets, the one that dies is told, and only it', async (t) => {
  const server = await daemon(t);
  const [a, b] = [sleeper(t), sleeper(t)];
  const debug = debugLines();
  const stop = new AbortController();
  t.after(() => stop.abort());
  const ends = deaths([{ host: '127.0.0.1', pid: a.pid }, { host: '127.0.0.1', pid: b.pid }], {
    port: server.address().port, local: false, intervalMs: INTERVAL_MS, onDebug: debug.onDebug, signal: stop.signal,
  });
  const first = ends.next();
  await Promise.all([debug.until(subscribed(a.pid), 'the subscription of a'), debug.until(subscribed(b.pid), 'the subscription of b')]);
  await a.stop();
  assert.deepEqual(withoutMs([(await bounded(first, 'the death of a')).value as PidEnd]), [{ host: '127.0.0.1', pid: a.pid, state: 'dead' }]);

  // b is still watched after a's end: the daemon answers about it again (its next renewal) ...
  const answers = debug.lines.filter((line) => alive(b.pid).test(line)).length;
  await debug.until(alive(b.pid), 'an answer about b after the death of a', answers + 1);
  // ... and nothing is told of it: the next end is not there to take.
  let settled = false;
  const second = ends.next().finally(() => (settled = true));
  await new Promise((resolve) => setImmediate(resolve));
  if (settled) assert.fail(`told while b lives: ${JSON.stringify(await second)}`);
  assert.ok(isRunning(b.pid));

  await b.stop();
  const end = await bounded(second, 'the death of b');
  assert.deepEqual(withoutMs([end.value as PidEnd]), [{ host: '127.0.0.1', pid: b.pid, state: 'dead' }]);
  assert.equal((await bounded(ends.next(), 'the end of the iteration')).done, true);
});

test('deaths(): an abort ends the watch at once, with the signal\'s reason, and nothing told', async (t) => {
  const server = await daemon(t);
  const process1 = sleeper(t);
  const debug = debugLines();
  const stop = new AbortController();
  const told: PidEnd[] = [];
  const all = collect(deaths([{ host: '127.0.0.1', pid: process1.pid }], { port: server.address().port, local: false, intervalMs: INTERVAL_MS, onDebug: debug.onDebug, signal: stop.signal }), told);
  await debug.until(subscribed(process1.pid), 'the subscription');
  const reason = new Error('enough');
  stop.abort(reason);
  await bounded(assert.rejects(all, (err) => err === reason), 'the end at the abort');
  assert.deepEqual(told, []);
  assert.ok(isRunning(process1.pid), 'the target died');

  // A signal aborted already: nothing asked.
  const before = debug.lines.length;
  const already = new Error('aborted before');
  await assert.rejects(collect(deaths([{ host: '127.0.0.1', pid: process1.pid }], { port: server.address().port, local: false, onDebug: debug.onDebug, signal: AbortSignal.abort(already) }), told), (err) => err === already);
  assert.deepEqual(told, []);
  assert.equal(debug.lines.length, before, 'a question went out');
});

test('waitForExit(): resolves \'dead\' at the death; an abort rejects with its reason', async (t) => {
  const server = await daemon(t);
  const [dies, lives] = [sleeper(t), sleeper(t)];
  const debug = debugLines();
  const options = { port: server.address().port, local: false, intervalMs: INTERVAL_MS, onDebug: debug.onDebug };
  const stop = new AbortController();
  t.after(() => stop.abort());

  const dead = waitForExit({ host: '127.0.0.1', pid: dies.pid }, options);
  const aborted = waitForExit({ host: '127.0.0.1', pid: lives.pid }, { ...options, signal: stop.signal });
  await Promise.all([debug.until(subscribed(dies.pid), 'the subscription'), debug.until(subscribed(lives.pid), 'the other subscription')]);
  await dies.stop();
  assert.equal(await bounded(dead, 'the death'), 'dead');

  const reason = new Error('no longer wanted');
  stop.abort(reason);
  await bounded(assert.rejects(aborted, (err) => err === reason), 'the rejection at the abort');
  assert.ok(isRunning(lives.pid));

  // As README's example: a timeout's signal rejects with its TimeoutError.
  await bounded(
    assert.rejects(waitForExit({ host: '127.0.0.1', pid: lives.pid }, { ...options, signal: AbortSignal.timeout(50) }), { name: 'TimeoutError' }),
    'the rejection at the timeout',
  );
});

test('deathSignal(): aborts at the death with a PidEndedError naming the target; a watch that cannot run aborts with its error', async (t) => {
  const server = await daemon(t);
  const process1 = sleeper(t);
  const debug = debugLines();
  const stop = new AbortController();
  t.after(() => stop.abort());
  const signal = deathSignal({ host: '127.0.0.1', pid: process1.pid }, { port: server.address().port, local: false, intervalMs: INTERVAL_MS, onDebug: debug.onDebug, signal: stop.signal });
  await debug.until(subscribed(process1.pid), 'the subscription');
  assert.equal(signal.aborted, false, 'aborted while the pid lives');
  const aborted = once(signal, 'abort');
  await process1.stop();
  await bounded(aborted, 'the abort at the death');
  assert.ok(signal.reason instanceof PidEndedError, `aborted with ${String(signal.reason)}`);
  assert.deepEqual(withoutMs([signal.reason.end]), [{ host: '127.0.0.1', pid: process1.pid, state: 'dead' }]);
  assert.equal(signal.reason.message, `pid ${process1.pid} on 127.0.0.1 is dead`);

  const broken = deathSignal({ host: '127.0.0.1', pid: process.pid }, { port: 70_000, local: false });
  if (!broken.aborted) await bounded(once(broken, 'abort'), 'the abort of a watch that cannot run');
  assert.ok(broken.reason instanceof RangeError && !(broken.reason instanceof PidEndedError), `aborted with ${String(broken.reason)}`);
});

test('a host that never answers: said once through onReach as silence, and ended as silent past deadAfterMs', async (t) => {
  const silent = await silentSocket('127.0.0.1');
  t.after(() => silent.close());
  const process1 = sleeper(t);
  const target: WaitTarget = { host: '127.0.0.1', pid: process1.pid };
  const reach: [WaitTarget, Failure | undefined][] = [];
  const DEAD_AFTER_MS = 1000;
  const told = await bounded(
    collect(deaths([target], { port: silent.address().port, local: false, intervalMs: 50, deadAfterMs: DEAD_AFTER_MS, onReach: (to, problem) => reach.push([to, problem]) }), []),
    'the silent end',
  );
  assert.deepEqual(withoutMs(told), [{ ...target, state: 'silent' }]);
  assert.ok(told[0]!.ms >= DEAD_AFTER_MS, `silent after ${told[0]!.ms} ms, before deadAfterMs`);
  // Never answered: no `since`; said after three unanswered questions, once.
  assert.deepEqual(reach, [[target, { kind: 'silence', questions: 3 }]]);
  assert.ok(isRunning(process1.pid));
});

test('silence alone ends no watch: said through onReach, the questions go on until an abort, and nothing is told', async (t) => {
  const silent = await silentSocket('127.0.0.1');
  t.after(() => silent.close());
  const process1 = sleeper(t);
  const target: WaitTarget = { host: '127.0.0.1', pid: process1.pid };
  const debug = debugLines();
  const stop = new AbortController();
  t.after(() => stop.abort());
  const reach: (Failure | undefined)[] = [];
  let said!: () => void;
  const silence = new Promise<void>((resolve) => (said = resolve));
  const told: PidEnd[] = [];
  const all = collect(
    deaths([target], {
      port: silent.address().port, local: false, intervalMs: 50, signal: stop.signal, onDebug: debug.onDebug,
      onReach: (_, problem) => {
        reach.push(problem);
        said();
      },
    }),
    told,
  );
  await bounded(silence, 'silence said');
  assert.deepEqual(reach, [{ kind: 'silence', questions: 3 }]);
  // Still asking: five more questions after silence was said.
  const asked = /^> \S+ PIDR /;
  await debug.until(asked, 'more questions', debug.lines.filter((line) => asked.test(line)).length + 5);
  const reason = new Error('done waiting');
  stop.abort(reason);
  await bounded(assert.rejects(all, (err) => err === reason), 'the end at the abort');
  assert.deepEqual(told, []);
  assert.deepEqual(reach, [{ kind: 'silence', questions: 3 }], 'silence said more than once');
});

test('the local shortcut: a pid of this host is watched here, with no daemon asked', async (t) => {
  // The port has a socket that never answers: a question there would never be.
  const silent = await silentSocket('127.0.0.1');
  t.after(() => silent.close());
  const process1 = sleeper(t);
  const debug = debugLines();
  const told: PidEnd[] = [];
  const watching = pidfds();
  const all = collect(deaths([{ host: 'localhost', pid: process1.pid }], { port: silent.address().port, intervalMs: INTERVAL_MS, onDebug: debug.onDebug }), told);
  // Where the addon watches exits, the watch is set up once its pidfd is open here; else it looks every interval.
  if (loadLinuxCalls().addon?.watchExit !== undefined) assert.ok(await waitFor(() => pidfds() > watching, BOUND_MS), 'no pidfd watches the pid');
  else t.diagnostic('no exit watches in the addon here: the pid is looked at every interval');
  await process1.stop();
  await bounded(all, 'the death, learned here');
  assert.deepEqual(withoutMs(told), [{ host: 'localhost', pid: process1.pid, state: 'dead' }]);
  assert.deepEqual(debug.lines.filter((line) => /^[<>] /.test(line)), [], 'a datagram went out or came in');
});
