import { readdirSync, readFileSync } from 'node:fs';
import { isSameStart, openPidRef, type ProcessRef } from '../sys/pidref.js';
import { START_FIELD, statFields } from '../sys/probe.js';
import { sleep } from '../sys/sleep.js';

/**
 * A job's processes on this host, found through /proc (Linux), and signalled
 * one by one.
 *
 * A job is its root process (the command pidwatch ran, or --foreground's
 * FGPID) and what it started. Four ways find what it started, since each
 * alone misses some:
 * - the ppid chain from the root, however deep (misses a double fork or a
 *   daemon, reparented to init or a subreaper);
 * - the job's marker: a random word that pidwatch puts in the command's
 *   environment (PIDWATCH_JOBS) and that every process it starts inherits,
 *   whatever its process group or session (misses a process that cleared its
 *   environment and was reparented, and another user's process, whose
 *   environ cannot be read), as HTCondor tracks a job's family;
 * - the process group of the root or of a member, only where that process
 *   leads it: a group that is not the job's own (a script's, which a
 *   pidwatch without a terminal shares) is never touched;
 * - the children of every member found by the other ways.
 *
 * Each process is known by its pid and its start token (field 22 of
 * /proc/PID/task/PID/stat), and is signalled only while its start token is
 * still the one seen, through a pidfd opened before that check where the
 * addon loads (pidref.ts): a pid that another process got meanwhile is
 * never signalled.
 * @see https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html
 */

/** The environment variable that carries the markers of the jobs a process belongs to, space-separated. */
export const JOBS_ENV = 'PIDWATCH_JOBS';

/** A process as /proc/PID/stat shows it: a ProcessRef whose start token is always known, and its place in the tree. */
export interface ProcessStat extends ProcessRef {
  /** One letter: R, S, D, T (stopped), Z (zombie)... */
  state: string;
  ppid: number;
  pgrp: number;
  start: string;
}

/** /proc/PID/stat, read; undefined once the process is gone (or /proc hides it). */
export function readStat(pid: number): ProcessStat | undefined {
  const fields = statFields(pid);
  if (fields === undefined) return undefined;
  const [state, ppid, pgrp] = fields;
  const start = fields[START_FIELD];
  if (state === undefined || start === undefined || !/^[0-9]+$/.test(start)) return undefined;
  return { pid, state, ppid: Number(ppid), pgrp: Number(pgrp), start };
}

/** Every process /proc shows, as read now; threads are not listed. */
export function listProcesses(): ProcessStat[] {
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [];
  }
  const found: ProcessStat[] = [];
  for (const name of names) {
    if (name.charCodeAt(0) < 48 || name.charCodeAt(0) > 57) continue;
    const stat = readStat(Number(name));
    if (stat !== undefined) found.push(stat);
  }
  return found;
}

/** Whether process `pid`'s environment carries `marker` in PIDWATCH_JOBS; false where it cannot be read. */
export function hasMarker(pid: number, marker: string): boolean {
  let environ: Buffer;
  try {
    environ = readFileSync(`/proc/${pid}/environ`);
  } catch {
    return false;
  }
  const prefix = `${JOBS_ENV}=`;
  for (const entry of environ.toString('latin1').split('\0')) {
    if (entry.startsWith(prefix) && entry.slice(prefix.length).split(' ').includes(marker)) return true;
  }
  return false;
}

/** The value of PIDWATCH_JOBS for a new job: the inherited markers, and this job's after a space. */
export function appendMarker(inherited: string | undefined, marker: string): string {
  return inherited === undefined || inherited.trim() === '' ? marker : `${inherited.trim()} ${marker}`;
}

export interface JobSpec {
  /** The job's root process, with its start token as read when the job began. */
  root: ProcessRef;
  /** The job's marker in PIDWATCH_JOBS; undefined for a job that carries none (--foreground). */
  marker?: string;
  /** Processes never counted in the job: the watcher itself, its launcher. */
  exclude?: ReadonlySet<number>;
}

/**
 * The job's live processes, as /proc shows them now (zombies left out: they
 * have ended, and a signal does nothing to them).
 */
export function findJob(job: JobSpec, processes: readonly ProcessStat[] = listProcesses()): ProcessStat[] {
  const byPid = new Map<number, ProcessStat>();
  const children = new Map<number, ProcessStat[]>();
  const groups = new Map<number, ProcessStat[]>();
  for (const p of processes) {
    byPid.set(p.pid, p);
    let list = children.get(p.ppid);
    if (list === undefined) children.set(p.ppid, (list = []));
    list.push(p);
    let group = groups.get(p.pgrp);
    if (group === undefined) groups.set(p.pgrp, (group = []));
    group.push(p);
  }
  const members = new Map<number, ProcessStat>();
  const queue: ProcessStat[] = [];
  const add = (p: ProcessStat | undefined): void => {
    if (p === undefined || members.has(p.pid) || p.pid <= 1 || job.exclude?.has(p.pid)) return;
    members.set(p.pid, p);
    queue.push(p);
  };
  const root = byPid.get(job.root.pid);
  const rootIsOurs = root !== undefined && isSameStart(job.root, root.start) !== false;
  if (rootIsOurs) add(root);
  if (job.marker !== undefined) for (const p of processes) if (!members.has(p.pid) && hasMarker(p.pid, job.marker)) add(p);
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const child of children.get(p.pid) ?? []) add(child);
    // A group a member leads is the job's: a setsid or setpgid child and its
    // own children. Not the root's: an interactive shell puts the whole
    // pipeline in it (`pidwatch ... | tee log`), and the reader is no part
    // of the job.
    if (p.pgrp === p.pid && p.pid !== job.root.pid) for (const q of groups.get(p.pid) ?? []) add(q);
  }
  return [...members.values()].filter((p) => p.state !== 'Z' && p.state !== 'X');
}

/**
 * Sends `signal` to `p` only if its start token is still the one seen;
 * whether it was sent. The process is pinned (pidref.ts) before its token is
 * read, so that the check and the signal name the same process: a pid that
 * another process got meanwhile is never signalled. `checked` runs between
 * the two, for the test that shows it (test/unit/pidref.test.ts).
 */
export function signalProcess(p: ProcessStat, signal: NodeJS.Signals, checked?: () => void): boolean {
  const ref = openPidRef(p.pid);
  try {
    const now = readStat(p.pid);
    if (now === undefined || isSameStart(p, now.start) !== true) return false;
    checked?.();
    if (!ref.signal(signal)) return false;
    // A stopped process (Ctrl-Z) acts on the signal only once it runs again, as a shell does for its stopped jobs on a hang-up.
    if (now.state === 'T' && signal !== 'SIGKILL') ref.signal('SIGCONT');
    return true;
  } finally {
    ref.close();
  }
}

/**
 * Signals every process of the job, then looks again and signals those that
 * were not there yet (a fork in flight when it looked), a few rounds until
 * nothing new shows up. Returns the processes the signal was sent to, each
 * with the start token it had: a caller that must reach them again (SIGKILL
 * at --kill-after) finds them by it even once they left the job, an orphan
 * that cleared its environment, and never a process that got a pid of theirs.
 */
export async function signalJob(
  job: JobSpec,
  signal: NodeJS.Signals,
  onFirstRound?: (sent: readonly ProcessStat[]) => void,
  rounds = 5,
): Promise<ProcessStat[]> {
  const done = new Set<string>();
  const sent: ProcessStat[] = [];
  for (let round = 0; round < rounds; round++) {
    const fresh = findJob(job).filter((p) => !done.has(`${p.pid}/${p.start}`));
    if (fresh.length === 0 && round > 0) break;
    for (const p of fresh) {
      done.add(`${p.pid}/${p.start}`);
      if (signalProcess(p, signal)) sent.push(p);
    }
    // Told as soon as the job has the signal, not after the later rounds.
    if (round === 0) onFirstRound?.(sent);
    await sleep(20);
  }
  return sent;
}

/** Those of `processes` that still run as the same process (their start token unchanged), not zombies. */
export function stillRunning(processes: readonly ProcessStat[]): ProcessStat[] {
  return processes.filter((p) => {
    const now = readStat(p.pid);
    return now !== undefined && isSameStart(p, now.start) === true && now.state !== 'Z' && now.state !== 'X';
  });
}
