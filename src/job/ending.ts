import { spawn } from 'node:child_process';
import { isSameStart, watchEnd, type ProcessRef } from '../sys/pidref.js';
import { pidExists } from '../sys/probe.js';
import { sleep } from '../sys/sleep.js';
import { findJob, readStat, signalJob, signalProcess, stillRunning, type JobSpec, type ProcessStat } from './tree.js';
import { waitForDeath, type WatchOptions } from '../deaths/watch.js';

/**
 * pidwatch's core: when the watched pid dies (deaths/watch.ts learns it), end the
 * job (tree.ts finds its processes). The job runs elsewhere: pidwatch's
 * shell script execs it in place, and this code runs in a detached watcher
 * beside it (see pidwatch(1), DESIGN).
 */

/**
 * Where the addon cannot watch a process end (not built, or a kernel before
 * Linux 5.3 without pidfd_open), the job's root is looked at: kill(pid, 0),
 * the cheap look, every ROOT_POLL_MS; and every ROOT_STAT_EVERY looks one
 * read of /proc/PID/stat, for a root that is a zombie its parent has not
 * reaped yet, or whose pid is another process's already. Each wake-up of an
 * idle Node process costs CPU (the watcher idles for hours); 200 ms still
 * ends the leftovers of a root killed with SIGKILL well within a second.
 */
const ROOT_POLL_MS = 200;
const ROOT_STAT_EVERY = 5;

/** Whether the job's root still runs: the same process (pidref.ts, isSameStart), not a zombie. */
function rootRuns(root: ProcessRef): boolean {
  const stat = readStat(root.pid);
  if (stat === undefined) return root.start === undefined && pidExists(root.pid) === true;
  if (isSameStart(root, stat.start) === false) return false;
  return stat.state !== 'Z' && stat.state !== 'X';
}

/** Resolves once the job's root has ended, or at abort. */
function rootEnds(job: JobSpec, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else if (!rootEndWatched(job.root, signal, resolve)) rootEndPolled(job.root, signal, resolve);
  });
}

/**
 * The root's end told by the kernel (pidref.ts, watchEnd), at no cost while
 * it runs. False where no pidfd can watch it: the caller then polls.
 */
function rootEndWatched(root: ProcessRef, signal: AbortSignal, ended: () => void): boolean {
  const stop = watchEnd(root, () => {
    signal.removeEventListener('abort', cancel);
    ended();
  });
  if (typeof stop !== 'function') return false;
  function cancel() {
    (stop as () => void)();
    ended();
  }
  signal.addEventListener('abort', cancel, { once: true });
  return true;
}

function rootEndPolled(root: ProcessRef, signal: AbortSignal, ended: () => void): void {
  let looks = 0;
  const timer = setInterval(check, ROOT_POLL_MS);
  function check() {
    const runs = pidExists(root.pid) !== false && (looks++ % ROOT_STAT_EVERY !== 0 || rootRuns(root));
    if (!signal.aborted && runs) return;
    clearInterval(timer);
    ended();
  }
  check();
}

export interface JobWatch {
  watch: WatchOptions;
  job: JobSpec;
  /** What the job gets when the pid dies. */
  signal: NodeJS.Signals;
  /** SIGKILL to whatever of the job still lives this long after the signal. */
  killAfterMs?: number;
  /** Run `killer -NAME ROOT` instead of sending the signal (executed directly, no shell). */
  killer?: string;
  /** When the root ends first, send the signal to what it left behind (the job's leftovers); not for --foreground. */
  endLeftovers: boolean;
  /**
   * What pidwatch did, one line each, for stderr. Called after the deed:
   * a notice that cannot be written (a pipe nobody reads) never delays a
   * signal (pidwatch(1)).
   */
  onNotice(line: string): void;
}

/** How a watch ended. */
export type WatchEnd = 'root-ended' | 'pid-died';

/**
 * Watches the pid and the job's root together. When the pid dies first, the
 * job gets the signal (or the killer runs); when the root ends first, its
 * leftovers get it (with endLeftovers). --kill-after then sends SIGKILL to
 * whatever still lives.
 */
export async function watchJob(w: JobWatch): Promise<WatchEnd> {
  const stop = new AbortController();
  const rootEnded = rootEnds(w.job, stop.signal).then(() => 'root' as const);
  const death = waitForDeath(w.watch, stop.signal);
  const first = await Promise.race([rootEnded, death]);
  stop.abort();
  await Promise.allSettled([rootEnded, death]);
  const name = w.signal.replace(/^SIG/, '');
  if (first === 'root' || first === undefined) {
    if (!w.endLeftovers) return 'root-ended';
    const left = findJob(w.job);
    if (left.length === 0) return 'root-ended';
    const sent = await signalJob(w.job, w.signal, () => w.onNotice(`the command ended and left ${count(left.length)}: sending ${w.signal}`));
    await killAfter(w, sent);
    return 'root-ended';
  }
  const why = first.cause === 'dead'
    ? `pid ${w.watch.pid} on ${w.watch.host} is dead`
    : `no answer from ${w.watch.host} for ${Math.round(first.ms / 1000)} s (--dead-after): pid ${w.watch.pid} counts as dead`;
  // The first round: what --kill-after must reach again, by pid and start token.
  let round: ProcessStat[];
  if (w.killer !== undefined) {
    round = findJob(w.job);
    // Started before the notice is written (spawn runs at once).
    const ran = runKiller(w.killer, [`-${name}`, String(w.job.root.pid)]);
    w.onNotice(`${why}: running ${w.killer} -${name} ${w.job.root.pid}`);
    const failed = await ran;
    if (failed !== undefined) {
      const notice = `cannot run --killer ${w.killer}: ${failed}; sending ${w.signal} to the command instead`;
      round = round.concat(await signalJob(w.job, w.signal, () => w.onNotice(notice)));
    }
  } else {
    round = await signalJob(w.job, w.signal, (sent) => w.onNotice(`${why}: sending ${w.signal} to the command (${count(sent.length)})`));
  }
  await killAfter(w, round);
  return 'pid-died';
}

function count(n: number): string {
  return `${n} ${n === 1 ? 'process' : 'processes'}`;
}

/**
 * --kill-after: SIGKILL to what of the job is still alive then, and to every
 * process of the first round (`first`) that still runs as the same process:
 * one that ignored the signal may have left the job since (orphaned when its
 * parent died of the signal, its environment cleared), and no longer be
 * found as part of it. A pid reused meanwhile has another start token and is
 * never killed.
 */
async function killAfter(w: JobWatch, first: readonly ProcessStat[]): Promise<void> {
  if (w.killAfterMs === undefined) return;
  await sleep(w.killAfterMs);
  // The remembered ones first, then the job as found now; the notice counts each process once.
  const sent = new Set(stillRunning(first).filter((p) => signalProcess(p, 'SIGKILL')).map((p) => `${p.pid}/${p.start}`));
  await signalJob(w.job, 'SIGKILL', (more) => {
    for (const p of more) sent.add(`${p.pid}/${p.start}`);
    if (sent.size > 0) w.onNotice(`sending SIGKILL to ${count(sent.size)} of the command still alive after ${w.killAfterMs} ms (--kill-after)`);
  });
}

/** Runs the killer as argv (no shell) and waits for it; the reason it could not run, or undefined. */
function runKiller(program: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn(program, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    child.once('exit', () => resolve(undefined));
  });
}
