import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { BIN, catches, isRunning, sleep, waitFor } from '../support/helpers.js';
import { commandRuns, commandStarted, descendants, exitWithin, killAll, pidFrom, sleeperFor, start, waitForChild, watcherReady, watchersOf, workDir } from '../support/jobs.js';
import { listeningTcp } from '../support/detached.js';

/**
 * pidwatch trusted with a job (pidwatch(1)): the whole job ends when
 * the watched pid dies (setsid, double fork, new process group, a cleared
 * environment), --kill-after for what ignores the signal, a calling script
 * and a pipeline's reader are never touched, kill -9 of pidwatch, the
 * command's leftovers, and signals to the watcher that neither end it nor
 * open Node's inspector. Every process a test starts (the job's, the
 * detached watcher) is stopped by that test, by its pid.
 */

const work = workDir('pidwatch-job-');


/**
 * A job that leaves the command's reach every way it can, each process
 * writing its pid to a file in `d`: a setsid child, a double-forked orphan
 * (reparented), a child in a new process group, a child with an empty
 * environment (no marker, still a child), and a child that ignores SIGHUP.
 */
function familyJob(d: string): string {
  return [
    `setsid sleep 301 & echo $! > ${d}/setsid`,
    `(sleep 302 & echo $! > ${d}/orphan)`,
    `bash -c 'set -m; sleep 303 & echo $! > ${d}/pgrp; wait' &`,
    `env -i /bin/sleep 304 & echo $! > ${d}/noenv`,
    `sh -c 'trap "" HUP; exec sleep 305' & echo $! > ${d}/nohup`,
    'wait',
  ].join('\n');
}

const FAMILY = ['setsid', 'orphan', 'pgrp', 'noenv', 'nohup'] as const;

/** Whether process `pid`'s command line starts with `prefix` (its words NUL-separated); false once it is gone. */
function cmdlineStarts(pid: number, prefix: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').startsWith(prefix);
  } catch {
    return false;
  }
}

describe('pidwatch: the whole job ends when the watched pid dies', () => {
  for (const killAfter of [true, false]) {
    test(`setsid, double fork, new process group, empty environment, SIGHUP ignored${killAfter ? ', --kill-after 1s: every one is gone' : ': all but the one ignoring SIGHUP are gone'}`, async (t) => {
      const sleeper = sleeperFor(t);
      const d = work.scratch('family');
      const job = start(t, ['--interval', '200ms', ...(killAfter ? ['--kill-after', '1s'] : []), '--pid', String(sleeper.pid), familyJob(d)], { cwd: work.path });
      const family = Object.fromEntries(await Promise.all(FAMILY.map(async (name) => [name, await pidFrom(join(d, name))] as const)));
      t.after(() => killAll(Object.values(family)));
      // Once the orphan's parent subshell has ended, it is init's (or a subreaper's).
      assert.ok(await waitFor(() => !descendants(job.pid).includes(family.orphan!), 20_000), 'the orphan is still a descendant: the double fork did not reparent it');
      for (const name of FAMILY) assert.ok(isRunning(family[name]!), `${name} (${family[name]}) died before the watched pid`);
      await watcherReady(job.pid);

      const killedAt = performance.now();
      await sleeper.stop();
      // Liveness bounds, from the death: the watcher's pidfd tells of it at once.
      const exit = await exitWithin(job, 10_000, 'after the watched pid died');
      assert.equal(exit.signal, 'SIGHUP', job.describe());
      // The notice follows the signal (pidwatch(1)): it may come just after the command's exit.
      assert.ok(await waitFor(() => /^pidwatch: pid \d+ on localhost is dead: sending SIGHUP to the command \(\d+ processes\)$/m.test(job.stderr()), 10_000), job.describe());
      const goneOnes = killAfter ? FAMILY : FAMILY.filter((name) => name !== 'nohup');
      const gone = await waitFor(() => goneOnes.every((name) => !isRunning(family[name]!)), 10_000 + (killAfter ? 1000 : 0));
      t.diagnostic(`gone ${Math.round(performance.now() - killedAt)} ms after the watched pid died`);
      assert.ok(gone, `still alive: ${goneOnes.filter((name) => isRunning(family[name]!)).join(' ')}; ${job.describe()}`);
      if (!killAfter) {
        await sleep(1500);
        assert.ok(isRunning(family.nohup!), 'the process ignoring SIGHUP was killed without --kill-after');
      } else {
        assert.ok(await waitFor(() => /sending SIGKILL to 1 process of the command still alive after 1000 ms/.test(job.stderr()), 10_000), job.describe());
      }
      assert.ok(await waitFor(() => watchersOf(job.pid).length === 0, 10_000), 'the watcher lives on');
    });
  }

  test('a script that runs pidwatch is not touched: `sh -c \'pidwatch --pid P sleep 100; echo after\'` prints after', async (t) => {
    const sleeper = sleeperFor(t);
    // The script leads a process group of its own, which pidwatch's command shares (no terminal, no job control).
    const script = start(t, ['-c', `${BIN.pidwatch} --interval 200ms --pid ${sleeper.pid} sleep 100; echo after`], { command: '/bin/sh', cwd: work.path, detached: true });
    let root: number | undefined;
    assert.ok(await waitFor(() => (root = descendants(script.pid).find((p) => cmdlineStarts(p, '/bin/sh\0-c\0--\0sleep 100'))) !== undefined, 20_000), `pidwatch did not run its command; ${script.describe()}`);
    const sleep100 = await waitForChild(root!);
    await watcherReady(root!);
    await sleeper.stop();
    const exit = await exitWithin(script, 10_000, 'after the watched pid died');
    assert.equal(exit.code, 0, script.describe());
    assert.equal(script.stdout(), 'after\n');
    assert.ok(await waitFor(() => !isRunning(sleep100), 10_000), 'sleep 100 still runs');
  });

  for (const ending of ['the command ends', 'the watched pid dies'] as const) {
    test(`in an interactive shell's pipeline (\`pidwatch ... | reader\`, one process group led by pidwatch), the reader is no part of the job: ${ending}, it reads on to its end`, async (t) => {
      const sleeper = sleeperFor(t);
      const out = join(work.path, `reader-${ending === 'the command ends' ? 'end' : 'death'}`);
      // set -m: job control, as in a terminal: the pipeline gets a process group of its own, led by pidwatch.
      // The command lasts long enough for the watcher to see it; the reader reads after it has ended.
      const command = ending === 'the command ends' ? 'echo one; echo two; sleep 1' : 'echo one; echo two; sleep 100';
      const line = `set -m; ${BIN.pidwatch} --interval 200ms --pid ${sleeper.pid} '${command}' | (sleep 2.5; cat > ${out}); echo "status \${PIPESTATUS[*]}"`;
      const shell = start(t, ['-c', line], { command: 'bash', cwd: work.path });
      if (ending === 'the watched pid dies') {
        let sleep100: number | undefined;
        assert.ok(await waitFor(() => (sleep100 = descendants(shell.pid).find((p) => cmdlineStarts(p, 'sleep\x00100'))) !== undefined, 20_000), shell.describe());
        // The job's root: pidwatch, running its command, whose child the sleep is.
        await watcherReady(descendants(shell.pid).find((p) => commandRuns(p) && descendants(p).includes(sleep100!))!);
        await sleeper.stop();
      }
      // A liveness bound: the reader's own 2.5 s, and the watcher's start.
      const exit = await exitWithin(shell, 20_000, 'the pipeline');
      assert.equal(exit.code, 0, shell.describe());
      assert.match(shell.stdout(), ending === 'the command ends' ? /^status 0 0$/m : /^status 129 0$/m, shell.describe());
      assert.equal(readFileSync(out, 'latin1'), 'one\ntwo\n', 'the reader was signalled and lost the output');
    });
  }

  test('kill -9 of pidwatch running `sleep 100`: that sleep is gone', async (t) => {
    const sleeper = sleeperFor(t);
    const job = start(t, ['--pid', String(sleeper.pid), 'sleep 100'], { cwd: work.path });
    await commandStarted(job);
    const sleep100 = await waitForChild(job.pid);
    // Killed once the watcher watches the command's process (a pidfd, where
    // the addon has them): killed sooner, the command would simply be gone
    // when the watcher first looks.
    await watcherReady(job.pid);
    process.kill(job.pid, 'SIGKILL');
    const killedAt = performance.now();
    // A liveness bound (the bench measures how fast).
    assert.ok(await waitFor(() => !isRunning(sleep100), 10_000), `sleep 100 (${sleep100}) still runs 10 s after pidwatch was killed`);
    t.diagnostic(`sleep 100 gone ${Math.round(performance.now() - killedAt)} ms after kill -9`);
    assert.ok(isRunning(sleeper.pid), 'the watched pid was touched');
    assert.ok(await waitFor(() => watchersOf(job.pid).length === 0, 10_000), 'the watcher lives on');
  });

  test('the command\'s leftovers end with it: `sleep 100 &` is sent SIGHUP when the command exits', async (t) => {
    const sleeper = sleeperFor(t);
    const d = work.scratch('leftover');
    const job = start(t, ['--pid', String(sleeper.pid), `sleep 100 & echo $! > ${d}/pid`], { cwd: work.path });
    const left = await pidFrom(join(d, 'pid'));
    const exit = await exitWithin(job, 10_000, 'the command ends at once');
    assert.equal(exit.code, 0, job.describe());
    // Liveness bounds: the watcher may still be starting when the command ends.
    assert.ok(await waitFor(() => !isRunning(left), 20_000), 'the leftover sleep still runs');
    assert.ok(await waitFor(() => /the command ended and left 1 process: sending SIGHUP/.test(job.stderr()), 20_000), job.describe());
  });
});

describe('pidwatch\'s watcher and signals', () => {
  test('SIGUSR1, SIGUSR2, SIGHUP and SIGINT to the watcher neither end it nor open Node\'s inspector', async (t) => {
    const sleeper = sleeperFor(t);
    const job = start(t, ['--pid', String(sleeper.pid), 'sleep 30'], { cwd: work.path });
    await commandStarted(job);
    let watcher: number | undefined;
    assert.ok(await waitFor(() => (watcher = watchersOf(job.pid)[0]) !== undefined, 20_000), 'no watcher');
    // Sent once the watcher's JavaScript has listened for all four (their bits
    // in SigCgt): before that, in Node's own start, a signal's default action
    // is what any process has. A watcher that never listens fails here.
    const signals = { SIGHUP: 1, SIGINT: 2, SIGUSR1: 10, SIGUSR2: 12 } as const;
    assert.ok(
      await waitFor(() => Object.values(signals).every((sig) => catches(watcher!, sig)), 20_000),
      'the watcher never listened for SIGHUP, SIGINT, SIGUSR1 and SIGUSR2',
    );
    const before = listeningTcp(watcher!);
    for (const sig of Object.keys(signals) as (keyof typeof signals)[]) process.kill(watcher!, sig);
    await sleep(500);
    assert.ok(isRunning(watcher!), 'the watcher died');
    assert.deepEqual(listeningTcp(watcher!), before, 'the watcher opened a listening socket (Node\'s inspector)');
    assert.ok(job.running(), 'the job died');
  });
});
