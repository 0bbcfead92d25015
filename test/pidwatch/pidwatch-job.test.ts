import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { BIN, IS_ROOT, binEnv, freePort, hasIPv6Loopback, isRunning, sleep, startDaemon, startSleeper, waitFor } from '../support/helpers.js';
import { commandStarted, descendants, exitWithin, killAll, pidFrom, pidnsUnavailable, start, watchersOf } from '../support/jobs.js';
import { listeningTcp } from '../support/detached.js';
import { runScriptInPidNamespace } from '../support/netns.js';

/**
 * pidwatch trusted with a job (pidwatch(1)): the whole job ends when
 * the watched pid dies (setsid, double fork, new process group, a cleared
 * environment), --kill-after for what ignores the signal, a calling script
 * is never touched, --dead-after, kill -9 of pidwatch, --foreground's
 * detached watcher, --killer without a shell, --cd it may not enter, the
 * warning when it cannot watch, and IPv6 hosts. Every process a test starts
 * (the job's, the detached watcher) is stopped by that test, by its pid.
 */

let dir = '';

before(() => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'pidwatch-job-')));
  chmodSync(dir, 0o755);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function sleeperFor(t: TestContext): ReturnType<typeof startSleeper> {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  return sleeper;
}

function scratch(name: string): string {
  const path = mkdtempSync(join(dir, `${name}-`));
  return path;
}

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

describe('pidwatch: the whole job ends when the watched pid dies', () => {
  for (const killAfter of [true, false]) {
    test(`setsid, double fork, new process group, empty environment, SIGHUP ignored${killAfter ? ', --kill-after 1s: every one is gone' : ': all but the one ignoring SIGHUP are gone'}`, async (t) => {
      const sleeper = sleeperFor(t);
      const d = scratch('family');
      const job = start(t, ['--interval', '200ms', ...(killAfter ? ['--kill-after', '1s'] : []), '--pid', String(sleeper.pid), familyJob(d)], { cwd: dir });
      const family = Object.fromEntries(await Promise.all(FAMILY.map(async (name) => [name, await pidFrom(join(d, name))] as const)));
      t.after(() => killAll(Object.values(family)));
      // The orphan's parent subshell has ended: it is init's (or a subreaper's) now.
      await sleep(500);
      for (const name of FAMILY) assert.ok(isRunning(family[name]!), `${name} (${family[name]}) died before the watched pid`);
      assert.ok(!descendants(job.pid).includes(family.orphan!), 'the orphan is still a descendant: the double fork did not reparent it');

      const killedAt = performance.now();
      await sleeper.stop();
      const exit = await exitWithin(job, 3000, 'after the watched pid died');
      assert.equal(exit.signal, 'SIGHUP', job.describe());
      // The notice follows the signal (pidwatch(1)): it may come just after the command's exit.
      assert.ok(await waitFor(() => /^pidwatch: pid \d+ on localhost is dead: sending SIGHUP to the command \(\d+ processes\)$/m.test(job.stderr()), 2000), job.describe());
      const goneOnes = killAfter ? FAMILY : FAMILY.filter((name) => name !== 'nohup');
      const gone = await waitFor(() => goneOnes.every((name) => !isRunning(family[name]!)), 200 + 2000 + (killAfter ? 1000 : 0));
      t.diagnostic(`gone ${Math.round(performance.now() - killedAt)} ms after the watched pid died`);
      assert.ok(gone, `still alive: ${goneOnes.filter((name) => isRunning(family[name]!)).join(' ')}; ${job.describe()}`);
      if (!killAfter) {
        await sleep(1500);
        assert.ok(isRunning(family.nohup!), 'the process ignoring SIGHUP was killed without --kill-after');
      } else {
        assert.ok(await waitFor(() => /sending SIGKILL to 1 process of the command still alive after 1000 ms/.test(job.stderr()), 2000), job.describe());
      }
      assert.ok(await waitFor(() => watchersOf(job.pid).length === 0, 2000), 'the watcher lives on');
    });
  }

  test('a script that runs pidwatch is not touched: `sh -c \'pidwatch --pid P sleep 100; echo after\'` prints after', async (t) => {
    const sleeper = sleeperFor(t);
    // The script leads a process group of its own, which pidwatch's command shares (no terminal, no job control).
    const script = start(t, ['-c', `${BIN.pidwatch} --interval 200ms --pid ${sleeper.pid} sleep 100; echo after`], { command: '/bin/sh', cwd: dir, detached: true });
    let root: number | undefined;
    assert.ok(await waitFor(() => (root = descendants(script.pid).find((p) => readFileSync(`/proc/${p}/cmdline`, 'latin1').startsWith('/bin/sh\0-c\0--\0sleep 100'))) !== undefined, 5000), `pidwatch did not run its command; ${script.describe()}`);
    const sleep100 = await waitForChild(root!);
    await sleep(500);
    await sleeper.stop();
    const exit = await exitWithin(script, 4000, 'after the watched pid died');
    assert.equal(exit.code, 0, script.describe());
    assert.equal(script.stdout(), 'after\n');
    assert.ok(await waitFor(() => !isRunning(sleep100), 1000), 'sleep 100 still runs');
  });

  for (const ending of ['the command ends', 'the watched pid dies'] as const) {
    test(`in an interactive shell's pipeline (\`pidwatch ... | reader\`, one process group led by pidwatch), the reader is no part of the job: ${ending}, it reads on to its end`, async (t) => {
      const sleeper = sleeperFor(t);
      const out = join(dir, `reader-${ending === 'the command ends' ? 'end' : 'death'}`);
      // set -m: job control, as in a terminal: the pipeline gets a process group of its own, led by pidwatch.
      // The command lasts long enough for the watcher to see it; the reader reads after it has ended.
      const command = ending === 'the command ends' ? 'echo one; echo two; sleep 1' : 'echo one; echo two; sleep 100';
      const line = `set -m; ${BIN.pidwatch} --interval 200ms --pid ${sleeper.pid} '${command}' | (sleep 2.5; cat > ${out}); echo "status \${PIPESTATUS[*]}"`;
      const shell = start(t, ['-c', line], { command: 'bash', cwd: dir });
      if (ending === 'the watched pid dies') {
        assert.ok(await waitFor(() => descendants(shell.pid).some((p) => readFileSync(`/proc/${p}/cmdline`, 'latin1').startsWith('sleep\x00100')), 5000), shell.describe());
        await sleeper.stop();
      }
      const exit = await exitWithin(shell, 8000, 'the pipeline');
      assert.equal(exit.code, 0, shell.describe());
      assert.match(shell.stdout(), ending === 'the command ends' ? /^status 0 0$/m : /^status 129 0$/m, shell.describe());
      assert.equal(readFileSync(out, 'latin1'), 'one\ntwo\n', 'the reader was signalled and lost the output');
    });
  }

  test('kill -9 of pidwatch running `sleep 100`: that sleep is gone within a second', async (t) => {
    const sleeper = sleeperFor(t);
    const job = start(t, ['--pid', String(sleeper.pid), 'sleep 100'], { cwd: dir });
    await commandStarted(job);
    const sleep100 = await waitForChild(job.pid);
    // The watcher watches the command's process by then (a pidfd, where the addon has them): killed
    // sooner, the command is simply gone when the watcher first looks.
    await sleep(1000);
    process.kill(job.pid, 'SIGKILL');
    const killedAt = performance.now();
    assert.ok(await waitFor(() => !isRunning(sleep100), 1000), `sleep 100 (${sleep100}) still runs 1 s after pidwatch was killed`);
    t.diagnostic(`sleep 100 gone ${Math.round(performance.now() - killedAt)} ms after kill -9`);
    assert.ok(isRunning(sleeper.pid), 'the watched pid was touched');
    assert.ok(await waitFor(() => watchersOf(job.pid).length === 0, 2000), 'the watcher lives on');
  });

  test('the command\'s leftovers end with it: `sleep 100 &` is sent SIGHUP when the command exits', async (t) => {
    const sleeper = sleeperFor(t);
    const d = scratch('leftover');
    const job = start(t, ['--pid', String(sleeper.pid), `sleep 100 & echo $! > ${d}/pid`], { cwd: dir });
    const left = await pidFrom(join(d, 'pid'));
    const exit = await exitWithin(job, 3000, 'the command ends at once');
    assert.equal(exit.code, 0, job.describe());
    assert.ok(await waitFor(() => !isRunning(left), 2000), 'the leftover sleep still runs');
    assert.ok(await waitFor(() => /the command ended and left 1 process: sending SIGHUP/.test(job.stderr()), 2000), job.describe());
  });
});

/** The first child of `pid`, once it has one. */
async function waitForChild(pid: number): Promise<number> {
  let child: number | undefined;
  assert.ok(await waitFor(() => (child = descendants(pid)[0]) !== undefined, 5000), `${pid} started no child`);
  return child!;
}

/** A UDP socket on 127.0.0.1 that reads every question and answers none. */
async function silentPort(t: TestContext): Promise<number> {
  const socket = dgram.createSocket('udp4');
  let questions = 0;
  socket.on('message', () => questions++);
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
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
    const job = start(t, ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--interval', '500ms', '--dead-after', '2s', '--pid', String(sleeper.pid), 'sleep 60'], { cwd: dir });
    const exit = await exitWithin(job, 2000 + 500 + 3000, 'silence for --dead-after 2s');
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
    const job = start(t, ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--interval', '500ms', '--pid', String(sleeper.pid), 'sleep 6; echo finished'], { cwd: dir });
    const exit = await exitWithin(job, 12_000, 'a job of 6 s');
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
    const job = start(t, ['--no-local', '--host', '127.0.0.1', '--port', String(daemon.port), '--interval', '300ms', '--dead-after', '1s', '--pid', String(sleeper.pid), 'sleep 3; echo finished'], { cwd: dir });
    const exit = await exitWithin(job, 10_000, 'a job of 3 s');
    assert.equal(exit.code, 0, job.describe());
    assert.equal(job.stdout(), 'finished\n');
  });
});

describe('pidwatch: when it cannot watch', () => {
  test('no daemon listening: one warning line, the job runs to its end', async (t) => {
    const sleeper = sleeperFor(t);
    const port = await freePort();
    const job = start(t, ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--interval', '200ms', '--pid', String(sleeper.pid), 'sleep 2; echo finished'], { cwd: dir });
    const exit = await exitWithin(job, 10_000, 'a job of 2 s');
    assert.equal(exit.code, 0, job.describe());
    assert.equal(job.stdout(), 'finished\n');
    const lines = job.stderr().trimEnd().split('\n');
    assert.equal(lines.length, 1, job.describe());
    assert.match(lines[0]!, /^pidwatch: cannot watch pid \d+ on 127\.0\.0\.1: no daemon listening; trying again every 200 ms \(the job is not protected meanwhile\)$/);
  });

  test('a host name that does not resolve: one warning line, the job runs to its end', async (t) => {
    const sleeper = sleeperFor(t);
    const job = start(t, ['--host', 'no-such-host.invalid', '--interval', '300ms', '--pid', String(sleeper.pid), 'sleep 2; echo finished'], { cwd: dir });
    const exit = await exitWithin(job, 10_000, 'a job of 2 s');
    assert.equal(exit.code, 0, job.describe());
    assert.equal(job.stdout(), 'finished\n');
    const lines = job.stderr().trimEnd().split('\n');
    assert.equal(lines.length, 1, job.describe());
    assert.match(lines[0]!, /^pidwatch: cannot watch pid \d+ on no-such-host\.invalid: cannot resolve no-such-host\.invalid: /);
  });

  for (const [host, bind] of [['[::1]', '::1'], ['[::ffff:127.0.0.1]', '127.0.0.1']] as const) {
    test(`--host '${host}' through a daemon on ${bind}: the job ends when the pid dies`, async (t) => {
      if (bind === '::1' && !(await hasIPv6Loopback())) return t.skip('no usable ::1 here');
      const daemon = await startDaemon(['--bind', bind]);
      t.after(() => daemon.stop());
      const sleeper = sleeperFor(t);
      const job = start(t, ['--no-local', '--host', host, '--port', String(daemon.port), '--interval', '200ms', '--pid', String(sleeper.pid), 'sleep 60'], { cwd: dir });
      await commandStarted(job);
      await sleep(800);
      assert.ok(job.running(), `the job ended while the pid lives; ${job.describe()}`);
      await sleeper.stop();
      const exit = await exitWithin(job, 3000, 'after the watched pid died');
      assert.equal(exit.signal, 'SIGHUP', job.describe());
      assert.doesNotMatch(job.stderr(), /cannot watch/);
    });
  }
});

describe('pidwatch: failure paths', () => {
  test('standard output closed: the command runs with it closed, and its status is pidwatch\'s', async (t) => {
    const sleeper = sleeperFor(t);
    const script = start(t, ['-c', `${BIN.pidwatch} --pid ${sleeper.pid} 'echo err >&2; exit 5' >&-; echo status:$? >&2`], { command: '/bin/sh', cwd: dir });
    const exit = await exitWithin(script, 5000, 'a job that exits at once');
    assert.equal(exit.code, 0, script.describe());
    assert.equal(script.stderr(), 'err\nstatus:5\n');
  });

  test('--killer \'\': a usage error, exit 64, nothing run', async (t) => {
    const d = scratch('killer-empty');
    const job = start(t, ['--killer', '', '--pid', String(process.pid), `touch ${d}/ran`], { cwd: dir });
    const exit = await exitWithin(job, 5000, 'a usage error');
    assert.equal(exit.code, 64, job.describe());
    assert.equal(job.stderr().trimEnd().split('\n').length, 1, job.describe());
    assert.ok(!existsSync(join(d, 'ran')));
  });

  test('--killer PROG that cannot run is refused at start: exit 126, the reason in one line, nothing run', async (t) => {
    const d = scratch('killer-missing');
    const plain = join(d, 'plain');
    writeFileSync(plain, '#!/bin/sh\n');
    chmodSync(plain, 0o644);
    for (const [killer, why] of [[join(d, 'absent'), 'no such file'], ['pidstat-no-such-killer', 'not found in PATH'], [plain, `${plain} is not executable`], [d, `${d} is not a file`]] as const) {
      const job = start(t, ['--killer', killer, '--pid', String(process.pid), `touch ${d}/ran`], { cwd: dir });
      const exit = await exitWithin(job, 5000, 'a killer that cannot run');
      assert.equal(exit.code, 126, job.describe());
      assert.equal(job.stderr(), `pidwatch: --killer ${killer}: ${why}; the command was not run\n`, job.describe());
      assert.ok(!existsSync(join(d, 'ran')));
    }
  });

  test('--killer PROG is executed directly: a name with shell metacharacters runs no shell', async (t) => {
    const sleeper = sleeperFor(t);
    const d = scratch('killer');
    // Through a shell this would run `${d}/k` (missing) and `x` (missing): nothing would be logged.
    const killer = join(d, 'k;x $(true)');
    writeFileSync(killer, `#!/bin/sh\necho "$@" >> ${d}/log\nkill "$@"\n`);
    chmodSync(killer, 0o755);
    const job = start(t, ['--interval', '200ms', '--killer', killer, '--pid', String(sleeper.pid), 'sleep 30; true'], { cwd: dir });
    await commandStarted(job);
    await sleeper.stop();
    const exit = await exitWithin(job, 3000, 'after the watched pid died');
    assert.equal(readFileSync(join(d, 'log'), 'latin1'), `-HUP ${job.pid}\n`);
    assert.equal(exit.signal, 'SIGHUP', job.describe());
  });

  test('--cd into a directory the user may not enter (0700, as nobody): one line, exit 126, no hang', { skip: IS_ROOT ? false : 'not root: cannot run as nobody' }, async (t) => {
    const closed = join(dir, 'closed');
    mkdirSync(closed, { mode: 0o700 });
    const d = scratch('cd');
    chmodSync(d, 0o777);
    const job = start(t, ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', BIN.pidwatch, '--cd', closed, '--pid', String(process.pid), `touch ${d}/ran`], { command: 'setpriv', cwd: '/' });
    const exit = await exitWithin(job, 5000, '--cd into a closed directory');
    assert.equal(exit.code, 126, job.describe());
    const lines = job.stderr().trimEnd().split('\n');
    assert.equal(lines.length, 1, job.describe());
    assert.match(lines[0]!, /^pidwatch: --cd .*closed: permission denied/);
    assert.ok(!existsSync(join(d, 'ran')), 'the command ran');
  });
});

describe('pidwatch\'s watcher and signals', () => {
  test('SIGUSR1, SIGUSR2, SIGHUP and SIGINT to the watcher neither end it nor open Node\'s inspector', async (t) => {
    const sleeper = sleeperFor(t);
    const job = start(t, ['--pid', String(sleeper.pid), 'sleep 30'], { cwd: dir });
    await commandStarted(job);
    let watcher: number | undefined;
    assert.ok(await waitFor(() => (watcher = watchersOf(job.pid)[0]) !== undefined, 5000), 'no watcher');
    await sleep(300);
    const before = listeningTcp(watcher!);
    for (const sig of ['SIGUSR1', 'SIGUSR2', 'SIGHUP', 'SIGINT'] as const) process.kill(watcher!, sig);
    await sleep(500);
    assert.ok(isRunning(watcher!), 'the watcher died');
    assert.deepEqual(listeningTcp(watcher!), before, 'the watcher opened a listening socket (Node\'s inspector)');
    assert.ok(job.running(), 'the job died');
  });
});

describe('pidwatch --foreground FGPID: returns at once, a detached watcher stays', () => {
  test('`sh -c \'pidwatch --pid P --foreground $$; echo next\'` prints next at once; the watcher signals the script when P dies', async (t) => {
    const sleeper = sleeperFor(t);
    const began = performance.now();
    const script = start(t, ['-c', `${BIN.pidwatch} --interval 200ms --pid ${sleeper.pid} --foreground $$; echo next; sleep 60; echo never`], { command: '/bin/sh', cwd: dir, detached: true });
    assert.ok(await waitFor(() => script.stdout() === 'next\n', 5000), `no "next"; ${script.describe()}`);
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
    assert.ok(await waitFor(() => shown() === title, 10_000), `the watcher shows ${JSON.stringify(shown())}, not ${title}`);
    const sleep60 = await waitForChild(script.pid);
    await sleep(500);
    assert.ok(script.running());
    await sleeper.stop();
    const exit = await exitWithin(script, 3000, 'after the watched pid died');
    assert.equal(exit.signal, 'SIGHUP', script.describe());
    assert.ok(await waitFor(() => !isRunning(sleep60), 1000), 'what the script started still runs');
    assert.ok(await waitFor(() => !isRunning(watcher), 2000), 'the watcher lives on');
  });

  test('the watcher exits as soon as FGPID is gone, and signals nothing', async (t) => {
    const sleeper = sleeperFor(t);
    const fg = spawn('sleep', ['3'], { stdio: 'ignore' });
    const fgExit = new Promise<number>((resolve) => fg.on('exit', () => resolve(performance.now())));
    const launch = start(t, ['--interval', '200ms', '--pid', String(sleeper.pid), '--foreground', String(fg.pid)], { cwd: dir });
    const exit = await exitWithin(launch, 3000, 'the launcher returns at once');
    assert.equal(exit.code, 0, launch.describe());
    assert.ok(isRunning(fg.pid!), 'FGPID ended before the launcher did: too slow a machine for this test');
    const watchers = watchersOf(fg.pid!);
    assert.equal(watchers.length, 1);
    t.after(() => killAll(watchers));
    const fgAt = await fgExit;
    assert.ok(await waitFor(() => !isRunning(watchers[0]!), 1000), 'the watcher outlived FGPID by over 1 s');
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
echo "launched $?"
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
    const ns = runScriptInPidNamespace(t, FG_REUSE_SCRIPT, [BIN.pidwatch, join(process.execPath, '..')], { env: binEnv(), cwd: dir });
    assert.equal((await ns.line(/^launched (\d+)$/m, 10_000))[1], '0', ns.stderr());
    await sleep(600);
    ns.say('go');
    const [, fg, reused] = await ns.line(/^fg (\d+) reused (\d+)$/m, 5000);
    assert.equal(reused, fg, `the new process got pid ${reused}, not FGPID ${fg}: the reuse could not be made`);
    ns.say('kill');
    const [, fate] = await ns.line(/^reused-(alive|dead)$/m, 6000);
    assert.equal(fate, 'alive', 'the process that got FGPID\'s pid was signalled');
  });
});

