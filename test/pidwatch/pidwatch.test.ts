import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { BIN, IS_ROOT, binEnv, deadPid, freePort, isRunning, run, shellQuote, startDaemon, startSleeper, waitFor, watchSetUp, type RunResult } from '../support/helpers.js';
import { commandRuns, descendants, isWatcher, pidnsUnavailable, exitWithin as exitWithinJob, start, watcherReady, type Exit, type Started } from '../support/jobs.js';
import { createHostPair, descendantsOf, innerPid, netnsUnavailable, pidInUse, REMOTE_HOST_SCRIPT, runScriptInPidNamespace, spawnInPidNamespace, type HostPair, type NsTree } from '../support/netns.js';

/**
 * pidwatch (pidwatch(1)), with real processes: exit status pass-through,
 * death of the watched pid (locally, through a daemon on loopback, between two
 * network namespaces, and across pid reuse in a PID namespace of our own),
 * signals, --killer, --foreground, --cd and usage errors. Every process a test
 * starts is stopped by that test, by its pid or by the process group it learnt.
 */

const PIDWATCH = BIN.pidwatch;
const cleanEnv = binEnv;

/** Runs pidwatch to its end (only for jobs that leave no process holding its stdout). */
function runPidwatch(args: readonly string[], options: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return run(PIDWATCH, args, { env: cleanEnv(options.env), timeoutMs: options.timeoutMs ?? 15_000, ...(options.cwd !== undefined && { cwd: options.cwd }) });
}

/**
 * Whether pidwatch ended as its job did, by SIGHUP: killed by it, or exit
 * 129 (128 + 1), as a shell says it. A watcher that finds the pid dead before
 * the launcher has handed over ends the job's shell while it still waits
 * for the launcher's answer, and that shell then exits 129: the command
 * never ran, and a caller's $? is 129 either way.
 */
function endedByHangup(result: { code: number | null; signal: NodeJS.Signals | null }): boolean {
  return result.signal === 'SIGHUP' || result.code === 129;
}

function describeRun(result: { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }): string {
  return `exit ${result.code}${result.signal ? ` (${result.signal})` : ''}; stdout: ${JSON.stringify(result.stdout)}; stderr: ${JSON.stringify(result.stderr)}`;
}

/** Fields 3 onwards of /proc/PID/stat (state, ppid, pgrp, ...), or undefined once gone. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

function startToken(pid: number): string | undefined {
  return statFields(pid)?.[19];
}

function killQuietly(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (pid === 0 || pid === -0) return;
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

/**
 * A pidwatch (or a shell around one) started in the background (jobs.ts),
 * with its job: pidwatch execs its command in place, so the job's root is
 * pidwatch's own pid once it runs `/bin/sh -c COMMAND`.
 */
interface Watch extends Started {
  startedAt: number;
  /** The job's root: pidwatch's pid (or, for a shell around it, the pidwatch it runs), once it runs its command. */
  job(timeoutMs?: number): Promise<number>;
  /** Resolves with the job's processes (its root and descendants) once there are at least `count` of them. */
  groupOf(count: number, timeoutMs?: number): Promise<number[]>;
}

function startWatch(t: TestContext, command: string, args: readonly string[], options: { cwd?: string } = {}): Watch {
  const startedAt = performance.now();
  const started = start(t, args, { command, ...(options.cwd !== undefined && { cwd: options.cwd }) });
  const findJob = (): number | undefined => [started.pid, ...descendants(started.pid)].find(commandRuns);
  const watch: Watch = {
    ...started,
    startedAt,
    async job(timeoutMs = 20_000) {
      let found: number | undefined;
      const ok = await waitFor(() => (found = findJob()) !== undefined || !started.running(), timeoutMs);
      assert.ok(ok && found !== undefined, `pidwatch (pid ${started.pid}) started no job within ${timeoutMs} ms; ${started.describe()}`);
      return found;
    },
    async groupOf(count, timeoutMs = 20_000) {
      const root = await watch.job(timeoutMs);
      let members: number[] = [];
      const ok = await waitFor(() => (members = [root, ...descendants(root)].filter(isRunning)).length >= count, timeoutMs);
      assert.ok(ok, `the job ${root} has ${members.length} live processes, not ${count}; ${started.describe()}`);
      return members;
    },
  };
  return watch;
}

/** pidwatch ARGS... started in the background. */
function startPidwatch(t: TestContext, args: readonly string[], options: { cwd?: string } = {}): Watch {
  return startWatch(t, PIDWATCH, args, options);
}

/** A sleeper stopped after the test. */
function sleeperFor(t: TestContext): ReturnType<typeof startSleeper> {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  return sleeper;
}

/** Resolves with the exit, or rejects after `timeoutMs`. */
function exitWithin(watch: Watch, timeoutMs: number, what: string): Promise<Exit> {
  return exitWithinJob(watch, timeoutMs, what);
}

/** A job that traps `sig` (INT, TERM, ...), says so and exits `code`, and otherwise loops. */
function trapJob(sig: string, code: number): string {
  return `trap "echo got ${sig}; exit ${code}" ${sig}; while :; do sleep 0.1; done`;
}

let dir = '';

before(() => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'pidwatch-test-')));
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('pidwatch: the command\'s ending is pidwatch\'s', () => {
  test('exit code 0 passes through', async (t) => {
    const sleeper = sleeperFor(t);
    const result = await runPidwatch(['--pid', String(sleeper.pid), 'echo hi'], { cwd: dir });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, 'hi\n');
  });

  test('exit code 7 passes through', async (t) => {
    const sleeper = sleeperFor(t);
    const result = await runPidwatch(['--pid', String(sleeper.pid), 'echo hi; exit 7'], { cwd: dir });
    assert.equal(result.code, 7, describeRun(result));
    assert.equal(result.signal, null);
    assert.equal(result.stdout, 'hi\n');
  });

  test('a command killed by SIGTERM makes pidwatch die by SIGTERM', async (t) => {
    const sleeper = sleeperFor(t);
    const result = await runPidwatch(['--pid', String(sleeper.pid), 'kill -TERM $$'], { cwd: dir });
    assert.equal(result.signal, 'SIGTERM', describeRun(result));
    assert.equal(result.code, null);
  });

  test('a command that does not exist: exit 127, the shell\'s "not found" on stderr', async (t) => {
    const sleeper = sleeperFor(t);
    const result = await runPidwatch(['--pid', String(sleeper.pid), 'pidwatch_no_such_command_x9'], {
      cwd: dir,
      // Only searchable directories: a PATH entry the user cannot read turns "not found" into "Permission denied".
      env: { PATH: '/usr/local/bin:/usr/bin:/bin' },
    });
    assert.equal(result.code, 127, describeRun(result));
    assert.match(result.stderr, /pidwatch_no_such_command_x9: .*not found/);
  });

  test('the words of the command are joined with spaces and run by /bin/sh -c', async (t) => {
    const sleeper = sleeperFor(t);
    const result = await runPidwatch(['--pid', String(sleeper.pid), 'echo', 'a', 'b;', 'echo', 'c', '&&', 'exit', '5'], { cwd: dir });
    assert.equal(result.code, 5, describeRun(result));
    assert.equal(result.stdout, 'a b\nc\n');
  });
});

describe('pidwatch: the watched pid dies', () => {
  test('through a daemon on loopback (--interval 200): the job and its child end, pidwatch dies by SIGHUP', async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug']);
    t.after(() => daemon.stop());
    const sleeper = sleeperFor(t);
    const watch = startPidwatch(t, ['--host', '127.0.0.1', '--no-local', '--port', String(daemon.port), '--interval', '200ms', '--pid', String(sleeper.pid), 'sleep 60 & sleep 60'], { cwd: dir });
    const leader = await watch.job();
    // The sh and both sleeps (or the two sleeps, were the last one exec'd).
    const members = await watch.groupOf(3);
    assert.ok(members.includes(leader));
    assert.ok(members.every((p) => readFileSync(`/proc/${p}/comm`, 'latin1').trim() !== 'node'));
    // The watcher watches: it watches the job's root, and the daemon keeps its subscription.
    await watcherReady(leader, { pidfds: 1 });
    await watchSetUp(daemon, sleeper.pid);
    assert.ok(watch.running(), `pidwatch ended before the watched pid died; stdout: ${JSON.stringify(watch.stdout())} stderr: ${JSON.stringify(watch.stderr())}`);
    assert.ok(members.every(isRunning), 'the job ended before the watched pid died');

    const killedAt = performance.now();
    await sleeper.stop();
    // Liveness bounds: the death notice comes at once.
    const gone = await waitFor(() => members.every((p) => !isRunning(p)), 10_000);
    const ms = performance.now() - killedAt;
    assert.ok(gone, `the job still runs 10 s after the watched pid died: ${members.filter(isRunning).join(' ')} alive`);
    t.diagnostic(`job gone ${Math.round(ms)} ms after the watched pid died`);
    const exit = await exitWithin(watch, 10_000, 'after the job ended');
    assert.equal(exit.signal, 'SIGHUP', describeRun({ ...exit, stdout: watch.stdout(), stderr: watch.stderr() }));
  });

  test('an already dead --pid kills the command at once: it prints nothing, pidwatch ends long before its 30 s', async () => {
    const pid = await deadPid();
    const result = await runPidwatch(['--pid', String(pid), 'sleep 30; echo never_executed'], { cwd: dir });
    assert.doesNotMatch(result.stdout, /never_executed/);
    assert.ok(endedByHangup(result), describeRun(result));
    // Two Node starts (the launcher, then the watcher) come before the first
    // question: 10 s is a liveness bound, a third of what the command takes.
    assert.ok(result.ms < 10_000, `pidwatch took ${Math.round(result.ms)} ms`);
  });

  test('an already dead --pid through a daemon (--no-local) kills the command at once', async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1']);
    t.after(() => daemon.stop());
    const pid = await deadPid();
    const result = await runPidwatch(['--host', '127.0.0.1', '--no-local', '--port', String(daemon.port), '--pid', String(pid), 'sleep 30; echo never_executed'], { cwd: dir });
    assert.doesNotMatch(result.stdout, /never_executed/);
    assert.ok(endedByHangup(result), describeRun(result));
    // Two Node starts (the launcher, then the watcher) come before the first
    // question: 10 s is a liveness bound, a third of what the command takes.
    assert.ok(result.ms < 10_000, `pidwatch took ${Math.round(result.ms)} ms`);
  });

  for (const spelling of ['TERM', '15', '-SIGTERM']) {
    test(`--signal ${spelling} delivers SIGTERM to the job`, async (t) => {
      const sleeper = sleeperFor(t);
      const job = `trap "echo got HUP; exit 1" HUP; trap "echo got TERM; exit 0" TERM; while :; do sleep 0.1; done`;
      const watch = startPidwatch(t, ['--interval', '200ms', '--signal', spelling, '--pid', String(sleeper.pid), job], { cwd: dir });
      await watch.groupOf(2);
      await watcherReady(watch.pid);
      assert.ok(watch.running(), 'pidwatch ended before the watched pid died');
      await sleeper.stop();
      const exit = await exitWithin(watch, 10_000, 'after the watched pid died');
      const text = describeRun({ ...exit, stdout: watch.stdout(), stderr: watch.stderr() });
      assert.equal(exit.code, 0, text);
      assert.equal(watch.stdout(), 'got TERM\n', text);
    });
  }

  for (const extra of [[], ['--signal', 'HUP'], ['--signal', 'SIGHUP'], ['--signal', '-HUP'], ['--signal=-HUP'], ['--signal', '1']]) {
    test(`${extra.join(' ') || 'no --signal'}: a dead pid's job gets SIGHUP`, async () => {
      const pid = await deadPid();
      const result = await runPidwatch([...extra, '--pid', String(pid), 'sleep 30'], { cwd: dir });
      assert.ok(endedByHangup(result), describeRun(result));
    });
  }

  for (const [extra, name, signal] of [[[], 'HUP', 'SIGHUP'], [['--signal', 'TERM'], 'TERM', 'SIGTERM']] as const) {
    test(`--killer PROG${extra.length ? ` ${extra.join(' ')}` : ''} runs PROG -${name} <the command's pid>`, async (t) => {
      const sleeper = sleeperFor(t);
      const log = join(dir, `killer-${name}.log`);
      const killer = join(dir, `killer-${name}.sh`);
      writeFileSync(killer, `#!/bin/sh\necho "$@" >> ${shellQuote(log)}\nkill "$@"\n`);
      chmodSync(killer, 0o755);
      const watch = startPidwatch(t, ['--interval', '200ms', ...extra, '--killer', killer, '--pid', String(sleeper.pid), 'sleep 30; true'], { cwd: dir });
      const leader = await watch.job();
      await watch.groupOf(2);
      assert.equal(leader, watch.pid, 'the command does not run in pidwatch\'s own process');
      await watcherReady(leader);
      await sleeper.stop();
      const exit = await exitWithin(watch, 10_000, 'after the watched pid died');
      assert.equal(readFileSync(log, 'latin1'), `-${name} ${leader}\n`);
      assert.equal(exit.signal, signal, describeRun({ ...exit, stdout: watch.stdout(), stderr: watch.stderr() }));
    });
  }

  test('silence never kills: no daemon on the port, a dead pid, the job runs to its end', async () => {
    const port = await freePort();
    const pid = await deadPid();
    const result = await runPidwatch(['--host', '127.0.0.1', '--no-local', '--port', String(port), '--interval', '200ms', '--pid', String(pid), 'sleep 3; echo finished'], { cwd: dir });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, 'finished\n');
    assert.ok(result.ms >= 2900, `the job ended after ${Math.round(result.ms)} ms`);
  });

  test('the README barrier: `pidwatch ... sleep 9999999; echo PID finished` ends once PID dies', async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug']);
    t.after(() => daemon.stop());
    const sleeper = sleeperFor(t);
    const line = `${shellQuote(PIDWATCH)} --host 127.0.0.1 --no-local --port ${daemon.port} --pid ${sleeper.pid} sleep 9999999; echo ${sleeper.pid} finished`;
    const shell = startWatch(t, '/bin/sh', ['-c', line], { cwd: dir });
    await shell.job();
    // The job's root: the pidwatch that the shell runs, once it runs `sleep 9999999` (by /bin/sh -c --).
    let leader: number | undefined;
    const isRoot = (p: number): boolean => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'latin1').startsWith('/bin/sh\0-c\0--\0sleep 9999999');
      } catch {
        return false;
      }
    };
    assert.ok(await waitFor(() => (leader = descendants(shell.pid).find(isRoot)) !== undefined, 20_000), `pidwatch ran no command; ${shell.describe()}`);
    await watcherReady(leader!, { pidfds: 1 });
    await watchSetUp(daemon, sleeper.pid);
    assert.ok(shell.running() && isRunning(leader!), 'the barrier ended before the pid died');
    await sleeper.stop();
    const exit = await exitWithin(shell, 10_000, 'after the watched pid died');
    assert.equal(exit.code, 0, describeRun({ ...exit, stdout: shell.stdout(), stderr: shell.stderr() }));
    assert.equal(shell.stdout(), `${sleeper.pid} finished\n`);
    assert.ok(!isRunning(leader!), 'sleep 9999999 still runs');
  });
});

describe('pidwatch: signals sent to pidwatch reach the command', () => {
  for (const sig of ['INT', 'TERM', 'HUP', 'QUIT'] as const) {
    test(`SIG${sig} to pidwatch reaches the command: it traps it and exits 3`, async (t) => {
      const sleeper = sleeperFor(t);
      const watch = startPidwatch(t, ['--pid', String(sleeper.pid), trapJob(sig, 3)], { cwd: dir });
      // The trap is set once the loop runs its first sleep.
      await watch.groupOf(2);
      process.kill(watch.pid, `SIG${sig}`);
      const exit = await exitWithin(watch, 10_000, `after SIG${sig}`);
      const text = describeRun({ ...exit, stdout: watch.stdout(), stderr: watch.stderr() });
      assert.equal(exit.code, 3, text);
      assert.equal(watch.stdout(), `got ${sig}\n`, text);
      assert.ok(isRunning(sleeper.pid), 'the watched sleeper was touched');
    });
  }
});

describe('pidwatch --foreground FGPID', () => {
  // Changed with the detached watcher: pidwatch returns at once (exit 0), as
  // the original does, and its watcher is what exits once FGPID is gone.
  test('returns 0 at once; its watcher exits shortly after FGPID exits (the watched pid still lives)', async (t) => {
    const sleeper = sleeperFor(t);
    const fg = spawn('sleep', ['600'], { stdio: 'ignore' });
    t.after(() => void killQuietly(fg.pid!));
    const fgExit = new Promise<number>((resolve) => fg.on('exit', () => resolve(performance.now())));
    const watch = startPidwatch(t, ['--interval', '200ms', '--pid', String(sleeper.pid), '--foreground', String(fg.pid)], { cwd: dir });
    // A liveness bound: FGPID lasts 600 s.
    const exit = await exitWithin(watch, 20_000, 'pidwatch --foreground returns at once');
    assert.equal(exit.code, 0, watch.describe());
    const watcher = await watcherReady(fg.pid!);
    t.after(() => killQuietly(watcher));
    assert.ok(isRunning(fg.pid!), 'FGPID ended');
    killQuietly(fg.pid!, 'SIGTERM');
    const fgAt = await fgExit;
    assert.ok(await waitFor(() => !isRunning(watcher), 10_000), 'the watcher outlived FGPID by 10 s');
    t.diagnostic(`watcher gone ${Math.round(performance.now() - fgAt)} ms after FGPID`);
    assert.ok(isRunning(sleeper.pid));
  });

  test('its watcher signals FGPID (SIGHUP) when the watched pid dies, then exits', async (t) => {
    const sleeper = sleeperFor(t);
    const fg = spawn('sleep', ['600'], { stdio: 'ignore' });
    t.after(() => void killQuietly(fg.pid!));
    const fgExit = new Promise<{ signal: NodeJS.Signals | null; at: number }>((resolve) => fg.on('exit', (_, signal) => resolve({ signal, at: performance.now() })));
    const watch = startPidwatch(t, ['--interval', '200ms', '--pid', String(sleeper.pid), '--foreground', String(fg.pid)], { cwd: dir });
    const exit = await exitWithin(watch, 20_000, 'pidwatch --foreground returns at once');
    assert.equal(exit.code, 0, watch.describe());
    const watcher = await watcherReady(fg.pid!);
    t.after(() => killQuietly(watcher));
    assert.ok(isRunning(fg.pid!), 'FGPID died before the watched pid');
    const killedAt = performance.now();
    await sleeper.stop();
    const fgEnd = await fgExit;
    assert.equal(fgEnd.signal, 'SIGHUP');
    // A liveness bound: the watcher's pidfd tells of the death at once.
    assert.ok(fgEnd.at - killedAt < 10_000, `FGPID signalled ${Math.round(fgEnd.at - killedAt)} ms after the pid died`);
    assert.ok(await waitFor(() => !isRunning(watcher), 10_000), 'the watcher lives on');
  });

  test('a command given with --foreground is a usage error: exit 64', async (t) => {
    const sleeper = sleeperFor(t);
    const result = await runPidwatch(['--pid', String(sleeper.pid), '--foreground', String(sleeper.pid), 'echo ran'], { cwd: dir });
    assert.equal(result.code, 64, describeRun(result));
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /--help/);
  });
});

describe('pidwatch --cd DIR', () => {
  test('runs the command in DIR', async (t) => {
    const sleeper = sleeperFor(t);
    const there = mkdtempSync(join(dir, 'cd-'));
    const result = await runPidwatch(['--cd', there, '--pid', String(sleeper.pid), 'pwd'], { cwd: dir });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, `${realpathSync(there)}\n`);
  });

  // Changed on purpose from IPC::Locker, which runs the command where it was
  // started (pidwatch(1), --cd): a job is never run elsewhere.
  test('a missing DIR: exit 126, one line on stderr naming it, nothing run', async (t) => {
    const sleeper = sleeperFor(t);
    const missing = join(dir, 'no-such-dir');
    const result = await runPidwatch(['--cd', missing, '--pid', String(sleeper.pid), 'pwd'], { cwd: dir });
    assert.equal(result.code, 126, describeRun(result));
    assert.equal(result.stdout, '');
    assert.ok(result.stderr.includes(missing), `stderr names not ${missing}: ${result.stderr}`);
    assert.equal(result.stderr.split('\n').length, 2, describeRun(result));
  });
});

describe('pidwatch: usage', () => {
  const live = String(process.pid);
  const cases: [string, string[]][] = [
    ['no --pid', ['echo ran']],
    ['--pid 0', ['--pid', '0', 'echo ran']],
    ['--pid abc', ['--pid', 'abc', 'echo ran']],
    ['no command', ['--pid', live]],
    ['--signal FOO', ['--pid', live, '--signal', 'FOO', 'echo ran']],
    ['--kill-after 5x', ['--pid', live, '--kill-after', '5x', 'echo ran']],
    ['--dead-after 0', ['--pid', live, '--dead-after', '0', 'echo ran']],
    ['an unknown option before the command', ['--pid', live, '--bogus', 'echo', 'ran']],
  ];
  for (const [what, args] of cases) {
    test(`${what}: exit 64, one line on stderr pointing to --help, nothing run`, async () => {
      const result = await runPidwatch(args, { cwd: dir });
      assert.equal(result.code, 64, describeRun(result));
      assert.equal(result.stdout, '');
      assert.equal(result.stderr.trimEnd().split('\n').length, 1, `stderr: ${result.stderr}`);
      assert.match(result.stderr, /--help/);
    });
  }

  test('options after the command belong to the command: `pidwatch --pid P echo --bogus` prints --bogus', async () => {
    const result = await runPidwatch(['--pid', live, 'echo', '--bogus'], { cwd: dir });
    assert.equal(result.code, 0, describeRun(result));
    assert.equal(result.stdout, '--bogus\n');
  });
});


/**
 * pid 1 of a fresh PID namespace: starts (for "daemon") a daemon on loopback,
 * the watched sleeper W and pidwatch watching W; on "go" on stdin kills and
 * reaps W, makes the kernel hand W's pid to a new sleep through ns_last_pid,
 * and reports how pidwatch ended.
 */
const REUSE_SCRIPT = `
node=$1 pw=$2 pd=$3 mode=$4
PATH=\${node%/*}:$PATH
if [ "$mode" = daemon ]; then
  # Its --debug log, in the test's folder: the test reads there when the watch is set up.
  log=$(mktemp "$PWD/daemon-log.XXXXXX")
  echo "log $log"
  /bin/sh "$pd" --foreground --bind 127.0.0.1 --port 0 --debug 2>"$log" &
  i=0 port=
  while [ -z "$port" ] && [ $i -lt 200 ]; do
    port=$(sed -n 's/.*listening on .*:\\([0-9][0-9]*\\)$/\\1/p' "$log" | head -n 1)
    [ -n "$port" ] || sleep 0.05
    i=$((i + 1))
  done
  echo "port $port"
  set -- --host 127.0.0.1 --no-local --port "$port"
else
  set --
fi
sleep 600 &
w=$!
echo "watched $w"
"$pw" "$@" --interval 500ms --pid "$w" 'sleep 600' &
p=$!
echo "pidwatch $p"
read go
kill -KILL "$w"
wait "$w" 2>/dev/null
echo $((w - 1)) > /proc/sys/kernel/ns_last_pid
sleep 600 &
echo "reused $!"
wait "$p"
echo "pidwatch-exit $?"
# Kept until the test ends it: a pidwatch told at once (a daemon's death
# notice) may end before the test has looked at the process that took W's pid.
read end
`;

describe('pidwatch: pid reuse in a PID namespace of our own', () => {
  const unavailable = pidnsUnavailable();
  if (unavailable) process.stdout.write(`pidwatch: pid reuse tests skipped: ${unavailable}\n`);

  for (const mode of ['local', 'daemon'] as const) {
    const title = mode === 'local'
      ? 'local probe (--host localhost): W dies and its pid goes to a new process between two polls; the job still ends'
      : 'through a daemon in the namespace (--no-local): W dies and its pid is reused; the job still ends';
    test(title, { skip: unavailable ?? false }, async (t) => {
      // SIGKILL to the namespace's pid 1 at the end ends every process in it, pidwatch's job included.
      const ns = runScriptInPidNamespace(t, REUSE_SCRIPT, [process.execPath, PIDWATCH, BIN.pidstatd, mode], { env: cleanEnv(), cwd: dir });
      const { line, initPid } = ns;
      let daemonLog = '';
      if (mode === 'daemon') {
        daemonLog = (await line(/^log (.+)$/m, 15_000))[1]!;
        const [, port] = await line(/^port (\d*)$/m, 15_000);
        assert.ok(port, `the daemon in the namespace did not start: ${ns.stderr()}`);
      }
      const watched = Number((await line(/^watched (\d+)$/m, 10_000))[1]);
      const pidwatchInner = Number((await line(/^pidwatch (\d+)$/m, 10_000))[1]);
      // Map inner pids to ours, and wait for pidwatch's job (the sh leading its group).
      const outer = (inner: number): number | undefined => {
        const init = initPid();
        return init === undefined ? undefined : descendantsOf(init).find((p) => innerPid(p) === inner);
      };
      let pidwatchHere: number | undefined;
      let watchedHere: number | undefined;
      let jobHere: number | undefined;
      assert.ok(
        await waitFor(() => {
          pidwatchHere = outer(pidwatchInner);
          watchedHere = outer(watched);
          // pidwatch runs its command in its own process.
          jobHere = pidwatchHere !== undefined && commandRuns(pidwatchHere) ? pidwatchHere : undefined;
          return jobHere !== undefined && watchedHere !== undefined;
        }, 20_000),
        `pidwatch's job never started in the namespace; stdout: ${JSON.stringify(ns.stdout())} stderr: ${JSON.stringify(ns.stderr())}`,
      );
      const tokenBefore = startToken(watchedHere!);
      // pidwatch knows W for W before its pid is reused: a pidfd of W's
      // (local), or a subscription the daemon keeps, which names W's start token.
      await watcherReady(pidwatchInner, { pidfds: mode === 'local' ? 2 : 1, find: () => descendantsOf(initPid() ?? 0).filter(isWatcher) });
      if (mode === 'daemon') await watchSetUp({ log: () => readFileSync(daemonLog, 'latin1') }, watched);
      assert.ok(isRunning(jobHere!), `the job ended while W lived; stdout: ${JSON.stringify(ns.stdout())} stderr: ${JSON.stringify(ns.stderr())}`);
      assert.doesNotMatch(ns.stdout(), /pidwatch-exit/);

      ns.say('go');
      const reusedAt = performance.now();
      const reused = Number((await line(/^reused (\d+)$/m, 20_000))[1]);
      assert.equal(reused, watched, `the new process got pid ${reused}, not W's ${watched}: the reuse could not be made; stderr: ${ns.stderr()}`);
      const reusedHere = outer(reused);
      assert.ok(reusedHere !== undefined && isRunning(reusedHere), 'the process that took W\'s pid is not running');
      assert.notEqual(startToken(reusedHere), tokenBefore, 'the new process has W\'s start token');
      t.diagnostic(`W = ${watched} in the namespace (${watchedHere} here), now a new sleep (${reusedHere} here)`);

      const [, status] = await line(/^pidwatch-exit (\d+)$/m, 20_000);
      t.diagnostic(`pidwatch ended ${Math.round(performance.now() - reusedAt)} ms after the reuse`);
      // 129 = 128 + SIGHUP: pidwatch died by the signal that ended its job.
      assert.equal(status, '129', `stdout: ${JSON.stringify(ns.stdout())} stderr: ${JSON.stringify(ns.stderr())}`);
      assert.ok(!isRunning(jobHere!), 'the job still runs');
    });
  }
});


/** A pid that no process or thread uses in this PID namespace, clear of the usual ones. */
function pidFreeHere(): number {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'latin1'));
  for (;;) {
    const pid = Math.floor(pidMax * (0.5 + Math.random() * 0.4));
    if (!pidInUse(pid) && !pidInUse(pid - 1)) return pid;
  }
}

describe('pidwatch between two hosts: network namespaces A and B, the daemon in B in its own PID namespace', () => {
  const unavailable = IS_ROOT ? netnsUnavailable({ pidns: true }) : `not root (uid ${process.getuid?.()}): network namespaces need root`;
  if (unavailable) process.stdout.write(`pidwatch: two-hosts test skipped: ${unavailable}\n`);

  test('pidwatch in A ends its job (by SIGHUP) once the process in B dies', { skip: unavailable ?? false }, async (t) => {
    let pair: HostPair | undefined;
    let tree: NsTree | undefined;
    t.after(async () => {
      await tree?.stop();
      await pair?.destroy();
    });
    pair = await createHostPair();
    const wanted = pidFreeHere();
    tree = spawnInPidNamespace(pair.b, 'sh', ['-c', REMOTE_HOST_SCRIPT, 'sh', String(wanted - 1), '/bin/sh', BIN.pidstatd]);
    const inB = Number((await tree.waitFor(/^sleeper (\d+)$/m, { stream: 'stdout' }))[1]);
    const port = Number((await tree.waitFor(/pidstatd: listening on .*:(\d+)$/m, { stream: 'stderr' }))[1]);
    const b = tree;
    assert.ok(await waitFor(() => b.outerPid(inB) !== undefined, 5000), 'the sleeper in B is not found from here');
    const sleeperHere = b.outerPid(inB)!;
    t.after(() => void (b.processes().some((p) => p.pid === sleeperHere) && killQuietly(sleeperHere)));
    if (inB === wanted) assert.ok(!pidInUse(inB), `pid ${inB} is in use in A too`);
    else t.diagnostic(`B gave the sleeper pid ${inB}, not ${wanted}: ns_last_pid was not honoured`);

    const watch = startWatch(t, 'ip', ['netns', 'exec', pair.a.name, PIDWATCH, '--host', pair.b.ipv4, '--port', String(port), '--interval', '200ms', '--pid', String(inB), 'sleep 60'], { cwd: dir });
    const leader = await watch.job();
    await watcherReady(leader, { pidfds: 1 });
    assert.ok(watch.running() && isRunning(leader), `the job ended while the process in B lived: ${watch.stderr()}`);

    const killedAt = performance.now();
    killQuietly(sleeperHere);
    // A liveness bound: a question every 200 ms, or the death notice, tells at once.
    const exit = await exitWithin(watch, 10_000, 'after the process in B died');
    t.diagnostic(`pidwatch ended ${Math.round(exit.at - killedAt)} ms after the process in B was killed`);
    assert.equal(exit.signal, 'SIGHUP', describeRun({ ...exit, stdout: watch.stdout(), stderr: watch.stderr() }));
    assert.ok(await waitFor(() => !isRunning(leader), 10_000), 'the job still runs');
  });
});
