import { spawn, type ChildProcess } from 'node:child_process';
import { BIN, binEnv, sleep, startSleeper } from '../support/helpers.js';
import { commandRuns, watchersOf } from '../support/jobs.js';
import { childrenOf, isGone, killPid, median, ms, stopChild, until } from './lib.js';
import { metOrNot, type Row } from './table.js';

/** pidwatch: how soon its job ends once the watched pid dies. */

/** Starts `pidwatch ARGS` (a job like `sleep 60` at the end of ARGS), stdio ignored. */
export function spawnWatcher(args: readonly string[]): ChildProcess {
  return spawn(BIN.pidwatch, args, { stdio: 'ignore', env: binEnv() });
}

/** Waits until pidwatch runs its job (in its own process, exec'd in place); the job's first child. */
export async function jobOf(watcher: ChildProcess): Promise<number> {
  let job: number | undefined;
  await until(() => (commandRuns(watcher.pid!) && (job = childrenOf(watcher.pid!)[0]) !== undefined) || watcher.exitCode !== null, 5000, 'pidwatch started no job', 5);
  if (job === undefined) throw new Error(`pidwatch exited with ${watcher.exitCode} before running its job`);
  return job;
}

/** The detached watcher of pidwatch `watcher`: the process that asks, and costs CPU and memory. */
export function detachedWatcherOf(watcher: ChildProcess): number {
  const [pid] = watchersOf(watcher.pid!);
  if (pid === undefined) throw new Error(`pidwatch ${watcher.pid} has no watcher`);
  return pid;
}

/** Stops a pidwatch by its pid (SIGTERM, the job's own), then its job's children and its watcher by theirs. */
export async function stopWatcher(watcher: ChildProcess): Promise<void> {
  const others = watcher.pid !== undefined && watcher.exitCode === null ? [...childrenOf(watcher.pid), ...watchersOf(watcher.pid)] : [];
  await stopChild(watcher, 'SIGTERM', 3000);
  others.filter((pid) => !isGone(pid)).forEach((pid) => killPid(pid));
}

/**
 * One reaction: pidwatch watches a sleeper and runs `sleep 60`; once the job
 * runs, wait one interval plus a random part of one (a random phase against
 * the polls), kill the sleeper and time until pidwatch exits (after its job).
 */
async function reactionOnce(intervalMs: number | undefined): Promise<number> {
  const sleeper = startSleeper();
  const interval = intervalMs === undefined ? [] : ['--interval', String(intervalMs)];
  const watcher = spawnWatcher([...interval, '--pid', String(sleeper.pid), 'sleep', '60']);
  let exitedAt: number | undefined;
  watcher.once('exit', () => (exitedAt = performance.now()));
  try {
    await jobOf(watcher);
    const period = intervalMs ?? 1000;
    await sleep(period + Math.random() * period);
    if (exitedAt !== undefined) throw new Error(`pidwatch exited (${watcher.exitCode ?? watcher.signalCode}) while its pid lived`);
    const killedAt = performance.now();
    await sleeper.stop();
    await until(() => exitedAt !== undefined, 5000 + period, 'pidwatch did not end within 5 s of its pid dying', 1);
    return exitedAt! - killedAt;
  } finally {
    await stopWatcher(watcher);
    await sleeper.stop();
  }
}

async function reactions(intervalMs: number | undefined, n: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) times.push(await reactionOnce(intervalMs));
  return times;
}

/** Median reaction with `--interval 100` (10 runs) and with the default interval (3 runs). */
export async function pidwatchReaction(): Promise<Row[]> {
  const fast = await reactions(100, 10);
  const usual = await reactions(undefined, 3);
  const row = (figure: string, times: number[], boundMs: number): Row => ({
    figure,
    ours: `${ms(median(times))} (${Math.round(Math.min(...times))}-${Math.round(Math.max(...times))})`,
    reference: `${ms(boundMs)} (goal bound)`,
    ratio: median(times) / boundMs,
    goal: `<= ${ms(boundMs)}`,
    met: metOrNot(median(times) <= boundMs),
  });
  return [
    row('pidwatch reaction, --interval 100ms (median of 10)', fast, 200),
    row('pidwatch reaction, default interval (median of 3)', usual, 1200),
  ];
}
