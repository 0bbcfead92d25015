import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, type TestContext } from 'node:test';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { BIN, binEnv, catches, IS_ROOT, isRunning, sleep, startSleeper, waitFor } from './helpers.js';

/**
 * pidwatch's processes as tests see them. bin/pidwatch is a shell script that
 * execs the command in place: the pid a test started becomes `/bin/sh -c
 * COMMAND`, the job's root, and a detached watcher (node, its own session,
 * PIDWATCH_WATCHER in its environment naming the root) watches beside it.
 * The job's processes carry the job's marker in PIDWATCH_JOBS.
 */

function environOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
  } catch {
    return [];
  }
}

function pids(): number[] {
  return readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number);
}

/** Whether pidwatch `pid` runs its command now (it has exec'd /bin/sh -c COMMAND). */
export function commandRuns(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').startsWith('/bin/sh\0-c\0');
  } catch {
    return false;
  }
}

/** The watchers of the job whose root is `root` (its pid, or --foreground's FGPID). */
export function watchersOf(root: number): number[] {
  return pids().filter((pid) => environOf(pid).some((entry) => entry.startsWith('PIDWATCH_WATCHER=') && (entry.includes(`"root":{"pid":${root},`) || entry.includes(`"root":{"pid":${root}}`))) && isRunning(pid));
}

/** Whether `pid` is a pidwatch watcher (PIDWATCH_WATCHER in its environment), of any job. */
export function isWatcher(pid: number): boolean {
  return environOf(pid).some((entry) => entry.startsWith('PIDWATCH_WATCHER=')) && isRunning(pid);
}

/**
 * Whether the bins of this package watch a process's end through a pidfd
 * here: the addon is built, and the kernel has pidfd_open (Linux 5.3).
 */
export const PIDFD_WATCHES: boolean = (() => {
  const { addon } = loadLinuxCalls();
  if (addon?.watchExit === undefined || addon.pidfdOpen === undefined) return false;
  const fd = addon.pidfdOpen(process.pid);
  if (fd < 0) return false;
  addon.pidfdClose?.(fd);
  return true;
})();

/** How many pidfds process `pid` holds (`anon_inode:[pidfd]` in /proc/PID/fd); 0 once it is gone. */
export function pidfdsOf(pid: number): number {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return 0;
  }
  let count = 0;
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[pidfd]') count++;
    } catch {
      // Closed meanwhile.
    }
  }
  return count;
}

/** What `ps` shows for process `pid`: its command line, the NULs and padding after a title cut. */
function shownAs(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/[\0\s]+$/, '');
  } catch {
    return '';
  }
}

/**
 * Waits until the watcher of the job whose root is `root` watches, and
 * returns its pid: it is found (`find`, watchersOf(root) by default), it
 * listens for SIGUSR1 (SigCgt: its first deed), it shows its title
 * `pidwatch: HOST:PID for job ROOT` (set once it has read what to watch),
 * and, where the bins watch ends through pidfds (PIDFD_WATCHES), it holds
 * `pidfds` of them: the root's, and the watched pid's when that is local (2,
 * the default); through a daemon 1, and the daemon's --debug log tells the
 * rest (watchSetUp() in helpers.ts). Without pidfds the watcher polls, and
 * its title is the last sign of it there is. `root` is the job's root as
 * the watcher knows it (inside a PID namespace, its pid there). Fails the
 * test after `timeoutMs`: a liveness bound, never a measure of speed.
 */
export async function watcherReady(
  root: number,
  { pidfds = 2, timeoutMs = 20_000, find = () => watchersOf(root) }: { pidfds?: number; timeoutMs?: number; find?: () => number[] } = {},
): Promise<number> {
  const title = new RegExp(`^pidwatch: \\S+ for job ${root}$`);
  const wanted = PIDFD_WATCHES ? pidfds : 0;
  let watcher: number | undefined;
  const ready = await waitFor(() => {
    watcher = find()[0];
    return watcher !== undefined && catches(watcher, 10) && title.test(shownAs(watcher)) && pidfdsOf(watcher) >= wanted;
  }, timeoutMs);
  const seen = watcher === undefined
    ? 'no watcher'
    : `watcher ${watcher} shows ${JSON.stringify(shownAs(watcher))}, catches SIGUSR1: ${catches(watcher, 10)}, holds ${pidfdsOf(watcher)} pidfds (${wanted} wanted)`;
  assert.ok(ready, `the watcher of job ${root} is not watching after ${timeoutMs} ms: ${seen}`);
  return watcher!;
}

/** This job's marker: the last word of PIDWATCH_JOBS in the root's environment. */
export function markerOf(root: number): string | undefined {
  const entry = environOf(root).find((e) => e.startsWith('PIDWATCH_JOBS='));
  return entry?.slice('PIDWATCH_JOBS='.length).split(' ').at(-1);
}

/** Every live process that carries `marker`. */
export function marked(marker: string): number[] {
  return pids().filter((pid) => environOf(pid).some((e) => e.startsWith('PIDWATCH_JOBS=') && e.slice(14).split(' ').includes(marker)) && isRunning(pid));
}

/** The live descendants of `pid` (by ppid), not itself. */
export function descendants(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const p of pids()) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      byParent.set(ppid, [...(byParent.get(ppid) ?? []), p]);
    } catch {
      // Gone meanwhile.
    }
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) for (const child of byParent.get(queue.shift()!) ?? []) (found.push(child), queue.push(child));
  return found.filter(isRunning);
}

/** The first child of `pid`, once it has one. */
export async function waitForChild(pid: number): Promise<number> {
  let child: number | undefined;
  assert.ok(await waitFor(() => (child = descendants(pid)[0]) !== undefined, 20_000), `${pid} started no child`);
  return child!;
}

function kill(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

/** SIGKILL to each pid, then waits (up to 5 s) until none runs. */
export async function killAll(list: readonly number[]): Promise<void> {
  for (const pid of list) kill(pid);
  await waitFor(() => list.every((pid) => !isRunning(pid)), 5000);
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
}

/** pidwatch (or a shell around it) started by a test, with what is needed to stop all it started. */
export interface Started {
  child: ChildProcess;
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Its exit, once its pipes have been read to their end (or 300 ms after it, where a detached watcher holds them). */
  exited: Promise<Exit>;
  /** Its exit, the moment it happens. */
  exitedNow: Promise<Exit>;
  running(): boolean;
  /** Text for assertion messages. */
  describe(): string;
  /** Stops, by pid, everything it started: the root, its descendants, the job's marked processes and the watchers. */
  stop(): Promise<void>;
}

/**
 * Starts `command args` (bin/pidwatch when `command` is undefined) with piped
 * stdout and stderr; everything it starts is stopped after the test. `roots`
 * names further job roots (a pidwatch run by a shell) whose jobs and
 * watchers are stopped too.
 */
export function start(
  t: TestContext,
  args: readonly string[],
  options: { command?: string; cwd?: string; env?: NodeJS.ProcessEnv; detached?: boolean } = {},
): Started {
  const child = spawn(options.command ?? BIN.pidwatch, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: binEnv(options.env),
    detached: options.detached ?? false,
    ...(options.cwd !== undefined && { cwd: options.cwd }),
  });
  const out = { stdout: '', stderr: '' };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out.stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out.stderr += chunk));
  let exit: Exit | undefined;
  const exitedNow = new Promise<Exit>((resolve) => {
    child.on('exit', (code, signal) => resolve((exit = { code, signal, at: performance.now() })));
    child.on('error', () => resolve((exit ??= { code: null, signal: null, at: performance.now() })));
  });
  // 'exit' may come before the last bytes of the pipes are read.
  const drained = Promise.all([child.stdout!, child.stderr!].map((stream) => new Promise<void>((resolve) => stream.on('close', resolve))));
  const exited = exitedNow.then(async (ended) => {
    await Promise.race([drained, sleep(300)]);
    return ended;
  });
  const pid = child.pid!;
  const seen = new Set<number>();
  const markers = new Set<string>();
  // What the job is made of, learnt while it runs, so that it can be stopped once the root is gone.
  const learn = (): void => {
    for (const p of [pid, ...descendants(pid)]) {
      seen.add(p);
      const marker = markerOf(p);
      if (marker !== undefined) markers.add(marker);
      for (const w of watchersOf(p)) seen.add(w);
    }
  };
  const learner = setInterval(learn, 50);
  const started: Started = {
    child,
    pid,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    exited,
    exitedNow,
    running: () => exit === undefined,
    describe: () => `exit ${exit?.code ?? '-'}${exit?.signal ? ` (${exit.signal})` : ''}; stdout: ${JSON.stringify(out.stdout)}; stderr: ${JSON.stringify(out.stderr)}`,
    async stop() {
      clearInterval(learner);
      if (exit === undefined) learn();
      const all = new Set(seen);
      for (const marker of markers) for (const p of marked(marker)) all.add(p);
      for (const p of [...all]) for (const w of watchersOf(p)) all.add(w);
      all.delete(process.pid);
      await killAll([...all].filter((p) => p !== pid));
      kill(pid);
      await exited;
    },
  };
  t.after(() => started.stop());
  return started;
}

/** Resolves with the exit, its output read, or fails the test when it has not exited after `timeoutMs`. */
export async function exitWithin(started: Started, timeoutMs: number, what: string): Promise<Exit> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: pid ${started.pid} still runs after ${timeoutMs} ms; ${started.describe()}`)), timeoutMs);
  });
  try {
    await Promise.race([started.exitedNow, late]);
  } finally {
    clearTimeout(timer);
  }
  return started.exited;
}

/** Waits until pidwatch `pid` runs its command; fails after `timeoutMs`. */
export async function commandStarted(started: Started, timeoutMs = 20_000): Promise<void> {
  const ok = await waitFor(() => commandRuns(started.pid) || !started.running(), timeoutMs);
  if (!ok || !started.running()) throw new Error(`pidwatch ${started.pid} did not run its command within ${timeoutMs} ms; ${started.describe()}`);
}

/** Waits until a file holds a pid; the pid. */
export async function pidFrom(file: string, timeoutMs = 20_000): Promise<number> {
  let pid: number | undefined;
  await waitFor(() => {
    try {
      const text = readFileSync(file, 'latin1').trim();
      if (/^\d+$/.test(text)) pid = Number(text);
    } catch {
      // Not written yet.
    }
    return pid !== undefined;
  }, timeoutMs);
  if (pid === undefined) throw new Error(`${file} holds no pid after ${timeoutMs} ms`);
  return pid;
}

/** A live pid to watch (a sleeper), stopped after the test. */
export function sleeperFor(t: TestContext): ReturnType<typeof startSleeper> {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  return sleeper;
}

export { sleep };

/** Why a PID namespace of our own (unshare --pid --fork --mount-proc) cannot be made here, or undefined. */
export function pidnsUnavailable(): string | undefined {
  if (!IS_ROOT) return `not root (uid ${process.getuid?.()}): PID namespaces and ns_last_pid need root`;
  const result = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', 'sh', '-c', 'test -w /proc/sys/kernel/ns_last_pid'], { encoding: 'utf8', timeout: 10_000 });
  if (result.error) return `unshare: ${result.error.message}`;
  if (result.status !== 0) return `cannot make a PID namespace with a writable ns_last_pid: ${result.stderr.trim() || `exit ${result.status}`}`;
  return undefined;
}

/**
 * A test file's working folder (`path`, made before its tests, world-readable so
 * that nobody can enter it, removed after them), and fresh folders in it.
 */
export function workDir(prefix: string): { readonly path: string; scratch(name: string): string } {
  let path = '';
  before(() => {
    path = realpathSync(mkdtempSync(join(tmpdir(), prefix)));
    chmodSync(path, 0o755);
  });
  after(() => {
    if (path) rmSync(path, { recursive: true, force: true });
  });
  return {
    get path() {
      return path;
    },
    scratch: (name) => mkdtempSync(join(path, `${name}-`)),
  };
}
