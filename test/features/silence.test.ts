import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test, type TestContext } from 'node:test';
import { waitForExit, type Failure } from '../../src/index.js';
import { binCommand, binEnv, sleep, startDaemon, startSleeper, waitFor, watchSetUp, type Daemon, type RunResult } from '../support/helpers.js';
import { commandStarted, exitWithin, start } from '../support/jobs.js';

/**
 * Silence in the middle of a watch is said (pidwatch(1), pidstat(1) WAIT):
 * a daemon that answered and then stops (SIGSTOP) is said to be silent since
 * its last answer, on pidwatch's stderr, on `pidstat wait`'s, and to the
 * library's onReach, within 16 intervals of that answer; the job is not
 * killed for it; and when the daemon goes on (SIGCONT) it is said to answer
 * again, and a death is acted on as before. Both with the death notice
 * (push) and against a daemon that offers none (--no-push: polling, where
 * only the heartbeat tells silence from life). Every process a test starts
 * is stopped by it, by its pid.
 */

const INTERVAL_MS = 100;
/**
 * pidwatch(1): silence is said within 16 intervals of the last answer (a
 * renewal period of 12, the renewal's own wait, 3 unanswered questions);
 * ten times that as a liveness bound.
 */
const SAID_WITHIN_MS = 10 * 16 * INTERVAL_MS;
/** In doubt, the watch asks every interval: the first answer after SIGCONT is said within one or two (ten times more here). */
const AGAIN_WITHIN_MS = 10 * 3 * INTERVAL_MS;
const MODES = [['push', []], ['poll (--no-push)', ['--no-push']]] as const;

/** A daemon with --debug (its log tells when the watch is set up), woken and stopped after the test whatever it ended in. */
async function daemonFor(t: TestContext, extra: readonly string[]): Promise<Daemon> {
  const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug', ...extra]);
  t.after(async () => {
    try {
      process.kill(daemon.pid, 'SIGCONT');
    } catch {
      // Gone already.
    }
    await daemon.stop();
  });
  return daemon;
}

function sleeperFor(t: TestContext): ReturnType<typeof startSleeper> {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  return sleeper;
}

/**
 * The wall-clock time HH:MM:SS as an instant, the one nearest `near` (the
 * day is not printed): what a silence line's time means.
 */
function instantOf(clock: string, near: number): number {
  const [h, m, s] = clock.split(':').map(Number) as [number, number, number];
  const at = new Date(near);
  at.setHours(h, m, s, 0);
  const day = 86_400_000;
  return [at.getTime() - day, at.getTime(), at.getTime() + day].reduce((a, b) => (Math.abs(b - near) < Math.abs(a - near) ? b : a));
}

/**
 * The time a silence line names is when the host last answered: after the
 * watch was set up (its second, as printed, included) and not after the
 * daemon was stopped.
 */
function assertLastAnswer(clock: string, setUpAt: number, stoppedAt: number): void {
  const since = instantOf(clock, stoppedAt);
  assert.ok(since >= Math.floor(setUpAt / 1000) * 1000 - 1000 && since <= stoppedAt, `silent since ${clock}, but the watch was set up at ${new Date(setUpAt).toTimeString()} and the daemon stopped at ${new Date(stoppedAt).toTimeString()}`);
}

describe('pidwatch: a daemon that falls silent mid-watch', () => {
  for (const [mode, daemonArgs] of MODES) {
    test(`${mode}: said once within 16 intervals, the job not killed, and said again when it answers; a death then still ends the job`, async (t) => {
      const daemon = await daemonFor(t, daemonArgs);
      const sleeper = sleeperFor(t);
      const job = start(t, ['--no-local', '--host', '127.0.0.1', '--port', String(daemon.port), '--pid', String(sleeper.pid), '--interval', `${INTERVAL_MS}ms`, 'sleep 100']);
      await commandStarted(job);
      await watchSetUp(daemon, sleeper.pid, mode === 'push');
      const setUpAt = Date.now();
      // A few renewals or heartbeats answered first: the silence comes in the middle.
      await sleep(2000);
      assert.equal(job.stderr(), '', 'pidwatch said something while the daemon answered');

      process.kill(daemon.pid, 'SIGSTOP');
      const stoppedAt = Date.now();
      const stopped = performance.now();
      const silence = /^pidwatch: 127\.0\.0\.1 is not answering since (\d\d:\d\d:\d\d): the job is not protected until it answers again \(see --dead-after\)$/m;
      assert.ok(await waitFor(() => silence.test(job.stderr()), SAID_WITHIN_MS), `no silence line within ${SAID_WITHIN_MS} ms of SIGSTOP; ${job.describe()}`);
      t.diagnostic(`silence said ${Math.round(performance.now() - stopped)} ms after SIGSTOP`);
      assertLastAnswer(silence.exec(job.stderr())![1]!, setUpAt, stoppedAt);
      // Silence without --dead-after never kills: the job runs on.
      await sleep(1000);
      assert.ok(job.running(), `the job was ended on silence; ${job.describe()}`);

      process.kill(daemon.pid, 'SIGCONT');
      const again = new RegExp(`^pidwatch: 127\\.0\\.0\\.1 answers again: pid ${sleeper.pid} is watched$`, 'm');
      assert.ok(await waitFor(() => again.test(job.stderr()), AGAIN_WITHIN_MS), `no "answers again" line within ${AGAIN_WITHIN_MS} ms of SIGCONT; ${job.describe()}`);
      // Once each: one silence, one return.
      assert.deepEqual(job.stderr().trimEnd().split('\n').map((line) => line.replace(/\d\d:\d\d:\d\d/, 'HH:MM:SS')), [
        'pidwatch: 127.0.0.1 is not answering since HH:MM:SS: the job is not protected until it answers again (see --dead-after)',
        `pidwatch: 127.0.0.1 answers again: pid ${sleeper.pid} is watched`,
      ]);
      // Watched again (by push, subscribed anew, or by polling): the death ends the job.
      if (mode === 'push') {
        const subscriptions = () => daemon.log().match(new RegExp(`answered SUBR ${sleeper.pid} \\S+ 1 30`, 'g'))?.length ?? 0;
        const before = subscriptions();
        assert.ok(await waitFor(() => subscriptions() > before, 5000), `no new subscription after the daemon answered again: ${daemon.log()}`);
      }
      await sleeper.stop();
      const exit = await exitWithin(job, 5000, 'after the watched pid died');
      assert.equal(exit.signal, 'SIGHUP', job.describe());
    });
  }
});

/** `pidstat wait ARGS` in the background, stopped after the test. */
function startWait(t: TestContext, args: readonly string[]) {
  const [command, full] = binCommand('pidstat', ['wait', ...args]);
  const child = spawn(command, full, { stdio: ['ignore', 'pipe', 'pipe'], env: binEnv() });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exit = new Promise<RunResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, ms: 0 })));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exit;
  });
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    running: () => child.exitCode === null && child.signalCode === null,
    exit,
    describe: () => `stdout: ${JSON.stringify(stdout)}; stderr: ${JSON.stringify(stderr)}`,
  };
}

describe('pidstat wait: a daemon that falls silent mid-wait', () => {
  for (const [mode, daemonArgs] of MODES) {
    test(`${mode}: said once per change for the host, still waiting, and the death then printed`, async (t) => {
      const daemon = await daemonFor(t, daemonArgs);
      const a = sleeperFor(t);
      const b = sleeperFor(t);
      const w = startWait(t, ['--no-local', '--port', String(daemon.port), '--interval', `${INTERVAL_MS}ms`, `127.0.0.1:${a.pid}`, `127.0.0.1:${b.pid}`]);
      await watchSetUp(daemon, a.pid, mode === 'push');
      await watchSetUp(daemon, b.pid, mode === 'push');
      const setUpAt = Date.now();
      await sleep(2000);
      assert.equal(w.stderr(), '', 'pidstat said something while the daemon answered');

      process.kill(daemon.pid, 'SIGSTOP');
      const stoppedAt = Date.now();
      const silence = /^pidstat: 127\.0\.0\.1 is not answering since (\d\d:\d\d:\d\d): still waiting$/m;
      assert.ok(await waitFor(() => silence.test(w.stderr()), SAID_WITHIN_MS), `no silence line within ${SAID_WITHIN_MS} ms of SIGSTOP; ${w.describe()}`);
      assertLastAnswer(silence.exec(w.stderr())![1]!, setUpAt, stoppedAt);
      await sleep(1000);
      assert.ok(w.running(), `the wait ended on silence; ${w.describe()}`);
      assert.equal(w.stdout(), '', 'silence was printed as a death');

      process.kill(daemon.pid, 'SIGCONT');
      assert.ok(await waitFor(() => /^pidstat: 127\.0\.0\.1 answers again$/m.test(w.stderr()), AGAIN_WITHIN_MS), `no "answers again" line within ${AGAIN_WITHIN_MS} ms of SIGCONT; ${w.describe()}`);
      // Two targets on the host, one line per change.
      await sleep(500);
      assert.deepEqual(w.stderr().trimEnd().split('\n').map((line) => line.replace(/\d\d:\d\d:\d\d/, 'HH:MM:SS')), [
        'pidstat: 127.0.0.1 is not answering since HH:MM:SS: still waiting',
        'pidstat: 127.0.0.1 answers again',
      ]);
      await a.stop();
      await b.stop();
      const r = await Promise.race([w.exit, sleep(5000).then(() => undefined)]);
      assert.ok(r !== undefined, `no return within 5 s of the deaths; ${w.describe()}`);
      assert.equal(r.code, 0, w.describe());
      assert.deepEqual(r.stdout.trimEnd().split('\n').sort(), [`127.0.0.1:${a.pid} dead`, `127.0.0.1:${b.pid} dead`].sort());
    });
  }
});

describe('the library: onReach tells of the silence, and of the answer', () => {
  for (const [mode, daemonArgs] of MODES) {
    test(`${mode}: waitForExit's onReach gets { kind: 'silence', since } and then undefined`, async (t) => {
      const daemon = await daemonFor(t, daemonArgs);
      const sleeper = sleeperFor(t);
      const seen: (Failure | undefined)[] = [];
      const stop = new AbortController();
      t.after(() => stop.abort());
      const ended = waitForExit({ host: '127.0.0.1', pid: sleeper.pid }, {
        port: daemon.port,
        local: false,
        intervalMs: INTERVAL_MS,
        signal: stop.signal,
        onReach: (_target, problem) => seen.push(problem),
      });
      ended.catch(() => {});
      await watchSetUp(daemon, sleeper.pid, mode === 'push');
      const setUpAt = Date.now();
      await sleep(2000);
      assert.equal(seen.length, 0, `onReach was called while the daemon answered: ${JSON.stringify(seen)}`);

      process.kill(daemon.pid, 'SIGSTOP');
      const stoppedAt = Date.now();
      assert.ok(await waitFor(() => seen.length > 0, SAID_WITHIN_MS), `onReach not called within ${SAID_WITHIN_MS} ms of SIGSTOP`);
      const silence = seen[0];
      assert.equal(silence?.kind, 'silence', JSON.stringify(silence));
      assert.ok(silence.kind === 'silence' && silence.since !== undefined, `no since: ${JSON.stringify(silence)}`);
      assert.ok(silence.since >= setUpAt - 1000 && silence.since <= stoppedAt, `since ${silence.since} is not between the set-up (${setUpAt}) and the stop (${stoppedAt})`);

      process.kill(daemon.pid, 'SIGCONT');
      assert.ok(await waitFor(() => seen.length > 1, AGAIN_WITHIN_MS), `onReach not called again within ${AGAIN_WITHIN_MS} ms of SIGCONT: ${JSON.stringify(seen)}`);
      assert.equal(seen[1], undefined);
      await sleeper.stop();
      assert.equal(await Promise.race([ended, sleep(5000).then(() => 'still waiting')]), 'dead');
      assert.equal(seen.length, 2, `onReach was called more than once per change: ${JSON.stringify(seen)}`);
    });
  }
});
