import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { BIN, binEnv, isRunning, waitFor } from '../support/helpers.js';
import { exitWithin, isWatcher, killAll, pidnsUnavailable, sleeperFor, start, waitForChild, watcherReady, watchersOf, workDir } from '../support/jobs.js';
import { descendantsOf, runScriptInPidNamespace } from '../support/netns.js';

/**
 * pidwatch --foreground FGPID (pidwatch(1)): the launcher returns at once
 * and leaves a detached watcher (a session of its own, stdio on /dev/null,
 * in /) that signals FGPID when the watched pid dies, exits as soon as
 * FGPID is gone, and never signals the process that got FGPID's pid after
 * it. Every process a test starts (the detached watcher included) is
 * stopped by that test, by its pid.
 */

const work = workDir('pidwatch-foreground-');

describe('pidwatch --foreground FGPID: returns at once, a detached watcher stays', () => {
  test('`sh -c \'pidwatch --pid P --foreground $$; echo next\'` prints next at once; the watcher signals the script when P dies', async (t) => {
    const sleeper = sleeperFor(t);
    const began = performance.now();
    const script = start(t, ['-c', `${BIN.pidwatch} --interval 200ms --pid ${sleeper.pid} --foreground $$; echo next; sleep 60; echo never`], { command: '/bin/sh', cwd: work.path, detached: true });
    assert.ok(await waitFor(() => script.stdout() === 'next\n', 20_000), `no "next"; ${script.describe()}`);
    t.diagnostic(`next after ${Math.round(performance.now() - began)} ms`);
    const watchers = watchersOf(script.pid);
    assert.equal(watchers.length, 1, 'one watcher');
    const watcher = watchers[0]!;
    t.after(() => killAll([watcher]));
    // Detached: a session of its own, stdio on /dev/null, in /.
    const stat = readFileSync(`/proc/${watcher}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    assert.equal(fields[3], String(watcher), 'the watcher leads no session of its own');
    assert.equal(realpathSync(`/proc/${watcher}/cwd`), '/');
    for (const fd of [0, 1, 2]) assert.equal(realpathSync(`/proc/${watcher}/fd/${fd}`), '/dev/null');
    // What ps shows, once it has read what to watch: what it watches, and for which job.
    const shown = () => readFileSync(`/proc/${watcher}/cmdline`, 'latin1').replace(/\0+$/, '');
    const title = `pidwatch: localhost:${sleeper.pid} for job ${script.pid}`;
    assert.ok(await waitFor(() => shown() === title, 20_000), `the watcher shows ${JSON.stringify(shown())}, not ${title}`);
    const sleep60 = await waitForChild(script.pid);
    await watcherReady(script.pid);
    assert.ok(script.running());
    await sleeper.stop();
    // Liveness bounds, from the death.
    const exit = await exitWithin(script, 10_000, 'after the watched pid died');
    assert.equal(exit.signal, 'SIGHUP', script.describe());
    assert.ok(await waitFor(() => !isRunning(sleep60), 10_000), 'what the script started still runs');
    assert.ok(await waitFor(() => !isRunning(watcher), 10_000), 'the watcher lives on');
  });

  test('the watcher exits as soon as FGPID is gone, and signals nothing', async (t) => {
    const sleeper = sleeperFor(t);
    const fg = spawn('sleep', ['600'], { stdio: 'ignore' });
    const fgExit = new Promise<number>((resolve) => fg.on('exit', () => resolve(performance.now())));
    t.after(async () => {
      if (fg.exitCode === null && fg.signalCode === null) fg.kill('SIGKILL');
      await fgExit;
    });
    const launch = start(t, ['--interval', '200ms', '--pid', String(sleeper.pid), '--foreground', String(fg.pid)], { cwd: work.path });
    // A liveness bound: FGPID lasts 600 s, and the launcher does not wait for it.
    const exit = await exitWithin(launch, 20_000, 'the launcher returns at once');
    assert.equal(exit.code, 0, launch.describe());
    const watchers = watchersOf(fg.pid!);
    assert.equal(watchers.length, 1);
    t.after(() => killAll(watchers));
    // FGPID ends (by the test's hand) once the watcher watches it.
    await watcherReady(fg.pid!);
    assert.ok(isRunning(fg.pid!), 'FGPID ended');
    fg.kill('SIGTERM');
    const fgAt = await fgExit;
    assert.ok(await waitFor(() => !isRunning(watchers[0]!), 10_000), 'the watcher outlived FGPID by over 10 s');
    t.diagnostic(`watcher gone ${Math.round(performance.now() - fgAt)} ms after FGPID`);
    assert.ok(isRunning(sleeper.pid));
  });
});

/**
 * pid 1 of a fresh PID namespace: starts the watched sleeper W and FG, a
 * --foreground watcher for FG; on "go" kills and reaps FG and at once gives
 * its pid to a new sleep through ns_last_pid (before the watcher's next look
 * at FG, mostly); on "kill" kills W; reports how the new process ended.
 */
const FG_REUSE_SCRIPT = `
pw=$1
sleep 600 & w=$!
sleep 600 & fg=$!
PATH=$2:$PATH "$pw" --interval 200ms --pid "$w" --foreground "$fg"
echo "launched $? $fg"
read go
kill -KILL "$fg"; wait "$fg" 2>/dev/null
echo $((fg - 1)) > /proc/sys/kernel/ns_last_pid
sleep 600 & reused=$!
echo "fg $fg reused $reused"
read go
kill -KILL "$w"
sleep 2
if kill -0 "$reused" 2>/dev/null; then echo "reused-alive"; else echo "reused-dead"; fi
`;

describe('pidwatch --foreground: FGPID reused in a PID namespace of our own', () => {
  const unavailable = pidnsUnavailable();
  if (unavailable) process.stdout.write(`pidwatch: --foreground reuse test skipped: ${unavailable}\n`);

  test('the process that got FGPID\'s pid is never signalled', { skip: unavailable ?? false }, async (t) => {
    // SIGKILL to the namespace's pid 1 at the end ends every process in it, the detached watcher included.
    const ns = runScriptInPidNamespace(t, FG_REUSE_SCRIPT, [BIN.pidwatch, join(process.execPath, '..')], { env: binEnv(), cwd: work.path });
    const [, launched, fgInner] = await ns.line(/^launched (\d+) (\d+)$/m, 20_000);
    assert.equal(launched, '0', ns.stderr());
    // FG's pid is reused once the watcher watches FG.
    await watcherReady(Number(fgInner), { find: () => descendantsOf(ns.initPid() ?? 0).filter(isWatcher) });
    ns.say('go');
    const [, fg, reused] = await ns.line(/^fg (\d+) reused (\d+)$/m, 20_000);
    assert.equal(reused, fg, `the new process got pid ${reused}, not FGPID ${fg}: the reuse could not be made`);
    ns.say('kill');
    const [, fate] = await ns.line(/^reused-(alive|dead)$/m, 20_000);
    assert.equal(fate, 'alive', 'the process that got FGPID\'s pid was signalled');
  });
});
