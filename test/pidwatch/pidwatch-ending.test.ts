import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { BIN, binEnv, isRunning, sleep, startSleeper, waitFor } from '../support/helpers.js';
import { descendants, exitWithin, killAll, marked, markerOf, pidnsUnavailable, start, watchersOf, type Exit } from '../support/jobs.js';
import { runScriptInPidNamespace } from '../support/netns.js';

/**
 * How pidwatch's detached watcher ends a job (pidwatch(1)): --kill-after
 * reaches every process the first signal went to, even one that left the
 * job since; a stderr pipe nobody reads never stops the watcher before it
 * signals; the watcher holds no descriptor its caller left open. Every
 * process a test starts is stopped by that test, by its pid.
 */

let dir = '';

before(() => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'pidwatch-ending-')));
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function sleeperFor(t: TestContext): ReturnType<typeof startSleeper> {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  return sleeper;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** Field 22 of /proc/PID/stat: tells a process from a later one with its pid. */
function startToken(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Whether process `pid` still runs as the process that had start token `start`. */
function runsAs(pid: number, start: string | undefined): boolean {
  return isRunning(pid) && startToken(pid) === start;
}

describe('pidwatch --kill-after: every process the first signal reached', () => {
  test('a member orphaned by the signal, its environment cleared, still gets SIGKILL; both sleeps are gone', async (t) => {
    const sleeper = sleeperFor(t);
    const command = `sh -c '(trap "" HUP; exec env -i sleep 315) & exec sleep 316'`;
    const job = start(t, ['--interval', '100ms', '--pid', String(sleeper.pid), '--kill-after', '1s', command], { cwd: dir });
    let inner: number | undefined;
    let outer: number | undefined;
    const found = await waitFor(() => {
      for (const pid of descendants(job.pid)) {
        if (cmdline(pid) === 'sleep 315') inner = pid;
        if (cmdline(pid) === 'sleep 316') outer = pid;
      }
      if (cmdline(job.pid) === 'sleep 316') outer = job.pid;
      return inner !== undefined && outer !== undefined;
    }, 5000);
    assert.ok(found, `the job's two sleeps did not start; ${job.describe()}`);
    const innerStart = startToken(inner!);
    const outerStart = startToken(outer!);
    // Stopped by pid whatever happens: the inner sleep leaves the job.
    t.after(() => killAll([inner!, outer!].filter((pid, i) => runsAs(pid, i === 0 ? innerStart : outerStart))));
    await sleeper.stop();
    // HUP at once; the inner sleep ignores it, is orphaned, and carries no marker: only its remembered start token finds it.
    const gone = await waitFor(() => !runsAs(inner!, innerStart) && !runsAs(outer!, outerStart), 5000);
    assert.ok(gone, `still alive 5 s after the watched pid died (--kill-after 1s): ${
      [[inner!, innerStart], [outer!, outerStart]].filter(([pid, s]) => runsAs(pid as number, s as string)).map(([pid]) => cmdline(pid as number)).join(', ')}; ${job.describe()}`);
    await exitWithin(job, 5000, 'pidwatch');
    // The detached watcher writes this line; it may reach the pipe after the sleep is gone.
    const told = /sending SIGKILL to 1 process of the command still alive after 1000 ms \(--kill-after\)/;
    assert.ok(await waitFor(() => told.test(job.stderr()), 2000), job.describe());
  });
});

/**
 * pid 1 of a fresh PID namespace: runs pidwatch with --kill-after 3s over a
 * job whose member M ignores SIGHUP; once W is killed and the command has
 * died of the SIGHUP, kills M (orphaned by then, reaped by this shell) and
 * gives its pid to a new sleep through ns_last_pid; reports whether that
 * sleep outlived --kill-after.
 */
const REUSE_SCRIPT = `
pw=$1; cmd=$3; m=$4
sleep 600 & w=$!
PATH=$2:$PATH "$pw" --interval 100ms --pid "$w" --kill-after 3s "$cmd" & job=$!
while ! [ -s "$m" ]; do sleep 0.05; done
echo started
kill -KILL "$w"
wait "$job"; echo "job $?"
mpid=$(cat "$m")
kill -KILL "$mpid"; sleep 0.2
echo $((mpid - 1)) > /proc/sys/kernel/ns_last_pid
sleep 600 & reused=$!
echo "m $mpid reused $reused"
sleep 4
if kill -0 "$reused" 2>/dev/null; then echo "reused-alive"; else echo "reused-dead"; fi
`;

describe('pidwatch --kill-after: a pid reused meanwhile, in a PID namespace of our own', () => {
  const unavailable = pidnsUnavailable();
  if (unavailable) process.stdout.write(`pidwatch: --kill-after reuse test skipped: ${unavailable}\n`);

  test('the process that got the pid of a member signalled in the first round is never killed', { skip: unavailable ?? false }, async (t) => {
    const m = join(mkdtempSync(join(dir, 'reuse-')), 'm');
    const command = `sh -c 'trap "" HUP; echo $$ > ${m}; exec env -i sleep 315' & exec sleep 316`;
    // SIGKILL to the namespace's pid 1 at the end ends every process in it, the detached watcher included.
    const ns = runScriptInPidNamespace(t, REUSE_SCRIPT, [BIN.pidwatch, join(process.execPath, '..'), command, m], { env: binEnv(), cwd: dir });
    await ns.line(/^started$/m, 10_000);
    assert.equal((await ns.line(/^job (\d+)$/m, 5000))[1], '129', `the command did not die of SIGHUP; ${ns.stderr()}`);
    const [, member, reused] = await ns.line(/^m (\d+) reused (\d+)$/m, 5000);
    assert.equal(reused, member, `the new process got pid ${reused}, not the member's ${member}: the reuse could not be made`);
    const [, fate] = await ns.line(/^reused-(alive|dead)$/m, 8000);
    assert.equal(fate, 'alive', `the process that got the member's pid was killed at --kill-after; ${ns.stderr()}`);
  });
});

/** How much process `pid` has written, in all (/proc/PID/io: wchar). */
function written(pid: number): number {
  try {
    return Number(/^wchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'latin1'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** What can be read now from a non-blocking descriptor. */
function drain(fd: number): string {
  const buffer = Buffer.alloc(65536);
  let text = '';
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, buffer, 0, buffer.length, null);
    } catch {
      return text; // EAGAIN: nothing more now
    }
    if (n === 0) return text;
    text += buffer.toString('latin1', 0, n).replace(/\0+/g, '');
  }
}

describe('pidwatch: a stderr pipe nobody reads', () => {
  test('the command is signalled at once though the notice cannot be written; the lost line is told later', async (t) => {
    const sleeper = sleeperFor(t);
    const fifo = join(dir, 'stderr');
    execFileSync('mkfifo', [fifo]);
    // The test holds the read end and reads nothing until the command was signalled.
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(fifo, constants.O_WRONLY);
    t.after(() => {
      closeSync(reader);
      closeSync(writer);
    });
    // head fills the pipe past its 64 KiB and blocks there; the sleep that
    // ignores SIGHUP lives on for --kill-after's line.
    const command = `head -c 100000 /dev/zero >&2 & (trap "" HUP; exec sleep 318) & exec sleep 317`;
    const child = spawn(BIN.pidwatch, ['--interval', '100ms', '--pid', String(sleeper.pid), '--kill-after', '2s', command], {
      stdio: ['ignore', 'ignore', writer],
      env: binEnv(),
      cwd: dir,
    });
    const root = child.pid!;
    const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, at: performance.now() })));
    const seen = new Set<number>();
    let marker: string | undefined;
    const learn = (): void => {
      for (const p of [root, ...descendants(root)]) {
        seen.add(p);
        marker ??= markerOf(p);
        for (const w of watchersOf(p)) seen.add(w);
      }
    };
    const learner = setInterval(learn, 50);
    t.after(async () => {
      clearInterval(learner);
      const all = new Set([...seen, ...(marker === undefined ? [] : marked(marker))]);
      all.delete(process.pid);
      await killAll([...all]);
      await exited;
    });
    let head: number | undefined;
    const full = await waitFor(() => {
      head ??= descendants(root).find((pid) => cmdline(pid).startsWith('head '));
      return head !== undefined && written(head) >= 65536 && watchersOf(root).length === 1;
    }, 5000);
    assert.ok(full, `the pipe was not filled (head ${head}, wrote ${head === undefined ? 0 : written(head)} bytes; watchers ${watchersOf(root).join(' ')})`);
    learn();
    const died = performance.now();
    await sleeper.stop();
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([
      exited,
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), 3000))),
    ]);
    clearTimeout(timer);
    assert.ok(exit !== undefined, 'the command was not signalled within 3 s of the watched pid\'s death: the watcher waits for its stderr');
    assert.equal(exit.signal, 'SIGHUP', `the command ended by ${exit.signal ?? `exit ${exit.code}`}, not by SIGHUP`);
    assert.ok(exit.at - died < 3000);
    // The notice comes after the signal: give it time to meet the full pipe.
    await sleep(500);
    // Room again: the line --kill-after writes says a line was lost.
    const before = drain(reader);
    assert.doesNotMatch(before, /is dead: sending SIGHUP/, 'the notice was written into a full pipe');
    let text = '';
    const told = await waitFor(() => /sending SIGKILL/.test((text += drain(reader))), 5000);
    assert.ok(told, `no --kill-after line: ${JSON.stringify(text)}`);
    assert.match(text, /^pidwatch: 1 earlier line not written: stderr was full\npidwatch: sending SIGKILL to 1 process/m);
  });
});

describe('pidwatch --foreground: the watcher keeps no descriptor of its caller', () => {
  test('`z=$(pidwatch --pid P --foreground $$ 40>&1 9>&1 25>&1); echo done` returns at once while the watcher runs', async (t) => {
    const sleeper = sleeperFor(t);
    const script = `z=$(${BIN.pidwatch} --interval 200ms --pid ${sleeper.pid} --foreground $$ 40>&1 9>&1 25>&1); echo done; exec sleep 60`;
    const shell = start(t, ['-c', script], { command: 'bash', cwd: dir });
    const done = await waitFor(() => shell.stdout().includes('done'), 5000);
    const watchers = watchersOf(shell.pid);
    assert.ok(done, `$(...) still waits 5 s on: watchers ${watchers.join(' ')}; ${shell.describe()}`);
    assert.equal(watchers.length, 1, `the watcher should still run: ${shell.describe()}`);
    await shell.stop();
  });
});
