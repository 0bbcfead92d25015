import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { freePort, hasIPv6Loopback, silentSocket, isRunning, sleep, startDaemon, waitFor, watchSetUp } from '../support/helpers.js';
import { commandStarted, exitWithin, sleeperFor, start, workDir } from '../support/jobs.js';

/**
 * pidwatch when its daemon is silent or out of reach (pidwatch(1)):
 * --dead-after counts silence as the watched pid's death, and nothing else
 * does; no daemon listening, or a host that does not resolve, is one warning
 * line while the job runs to its end; IPv6 hosts are watched. Every process
 * a test starts is stopped by that test, by its pid.
 */

const work = workDir('pidwatch-silence-');

/** A UDP socket on 127.0.0.1 that reads every question and answers none. */
async function silentPort(t: TestContext): Promise<number> {
  const socket = await silentSocket();
  let questions = 0;
  socket.on('message', () => questions++);
  t.after(() => {
    t.diagnostic(`the silent port got ${questions} questions`);
    socket.close();
  });
  return socket.address().port;
}

describe('pidwatch --dead-after: silence as death', () => {
  test('--dead-after 2s against a silent port: the job ends within about 2 s + the interval', async (t) => {
    const sleeper = sleeperFor(t);
    const port = await silentPort(t);
    const began = performance.now();
    const job = start(t, ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--interval', '500ms', '--dead-after', '2s', '--pid', String(sleeper.pid), 'sleep 60'], { cwd: work.path });
    // A liveness bound: --dead-after 2s counts from the watcher's start, which Node's start-ups come before.
    const exit = await exitWithin(job, 20_000, 'silence for --dead-after 2s');
    const ms = exit.at - began;
    t.diagnostic(`the job ended ${Math.round(ms)} ms into the run`);
    assert.ok(ms >= 1900, `the job ended after ${Math.round(ms)} ms of silence, before --dead-after 2s`);
    assert.equal(exit.signal, 'SIGHUP', job.describe());
    assert.ok(await waitFor(() => /no answer from 127\.0\.0\.1 for 2 s \(--dead-after\): pid \d+ counts as dead: sending SIGHUP/.test(job.stderr()), 2000), job.describe());
    assert.ok(isRunning(sleeper.pid));
  });

  test('without --dead-after, the job outlives 5 s of silence', async (t) => {
    const sleeper = sleeperFor(t);
    const port = await silentPort(t);
    const began = performance.now();
    const job = start(t, ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--interval', '500ms', '--pid', String(sleeper.pid), 'sleep 6; echo finished'], { cwd: work.path });
    const exit = await exitWithin(job, 30_000, 'a job of 6 s');
    assert.equal(exit.code, 0, job.describe());
    assert.equal(job.stdout(), 'finished\n');
    assert.ok(exit.at - began >= 5900, `the job ended after ${Math.round(exit.at - began)} ms`);
    // Silence is worth one warning: the user must know the job is not protected.
    assert.match(job.stderr(), /^pidwatch: cannot watch pid \d+ on 127\.0\.0\.1: no answer to 3 questions; trying again/m);
  });

  test('a daemon that answers keeps --dead-after from firing', async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1']);
    t.after(() => daemon.stop());
    const sleeper = sleeperFor(t);
    const job = start(t, ['--no-local', '--host', '127.0.0.1', '--port', String(daemon.port), '--interval', '300ms', '--dead-after', '1s', '--pid', String(sleeper.pid), 'sleep 3; echo finished'], { cwd: work.path });
    const exit = await exitWithin(job, 20_000, 'a job of 3 s');
    assert.equal(exit.code, 0, job.describe());
    assert.equal(job.stdout(), 'finished\n');
  });
});

describe('pidwatch: when it cannot watch', () => {
  /**
   * Runs a job that waits for a file and then prints finished, under
   * pidwatch ARGS, which cannot watch: once it has said so and then asked on
   * for 2 s more, unsaid, the test makes the file and the job runs on to
   * its end, its status pidwatch's. Returns pidwatch's stderr lines. The job
   * outlasts the watcher's start, however slow: the warning is waited for,
   * never raced.
   */
  async function unwatchedJob(t: TestContext, args: readonly string[], warning: RegExp): Promise<string[]> {
    const end = join(work.scratch('end'), 'end');
    const job = start(t, [...args, `while [ ! -e ${end} ]; do sleep 0.1; done; echo finished`], { cwd: work.path });
    await commandStarted(job);
    assert.ok(await waitFor(() => warning.test(job.stderr()) || !job.running(), 20_000), `no warning within 20 s; ${job.describe()}`);
    // Questions every 200 or 300 ms meanwhile: none of them is said again.
    await sleep(2000);
    assert.ok(job.running(), `the job ended: ${job.describe()}`);
    writeFileSync(end, '');
    const exit = await exitWithin(job, 10_000, 'the job, once its file was made');
    assert.equal(exit.code, 0, job.describe());
    assert.equal(job.stdout(), 'finished\n');
    const lines = job.stderr().trimEnd().split('\n');
    assert.equal(lines.length, 1, job.describe());
    return lines;
  }

  test('no daemon listening: one warning line, the job runs to its end', async (t) => {
    const sleeper = sleeperFor(t);
    const port = await freePort();
    const [line] = await unwatchedJob(t, ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--interval', '200ms', '--pid', String(sleeper.pid)], /cannot watch/);
    assert.match(line!, /^pidwatch: cannot watch pid \d+ on 127\.0\.0\.1: no daemon listening; trying again every 200 ms \(the job is not protected meanwhile\)$/);
  });

  test('a host name that does not resolve: one warning line, the job runs to its end', async (t) => {
    const sleeper = sleeperFor(t);
    const [line] = await unwatchedJob(t, ['--host', 'no-such-host.invalid', '--interval', '300ms', '--pid', String(sleeper.pid)], /cannot watch/);
    assert.match(line!, /^pidwatch: cannot watch pid \d+ on no-such-host\.invalid: cannot resolve no-such-host\.invalid: /);
  });

  for (const [host, bind] of [['[::1]', '::1'], ['[::ffff:127.0.0.1]', '127.0.0.1']] as const) {
    test(`--host '${host}' through a daemon on ${bind}: the job ends when the pid dies`, async (t) => {
      if (bind === '::1' && !(await hasIPv6Loopback())) return t.skip('no usable ::1 here');
      const daemon = await startDaemon(['--bind', bind, '--debug']);
      t.after(() => daemon.stop());
      const sleeper = sleeperFor(t);
      const job = start(t, ['--no-local', '--host', host, '--port', String(daemon.port), '--interval', '200ms', '--pid', String(sleeper.pid), 'sleep 60'], { cwd: work.path });
      await commandStarted(job);
      await watchSetUp(daemon, sleeper.pid);
      assert.ok(job.running(), `the job ended while the pid lives; ${job.describe()}`);
      await sleeper.stop();
      // A liveness bound: the daemon's death notice comes at once.
      const exit = await exitWithin(job, 10_000, 'after the watched pid died');
      assert.equal(exit.signal, 'SIGHUP', job.describe());
      assert.doesNotMatch(job.stderr(), /cannot watch/);
    });
  }
});
