import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { sleep } from '../support/helpers.js';

/**
 * What the bench figures share: alternation of two measurements, medians,
 * and the readings of /proc that say what a process costs.
 */

/** Runs `a` and `b` in turn, A B A B ..., `n` times each, so drift hits both alike. */
export async function alternate<A, B>(a: () => Promise<A>, b: () => Promise<B>, n: number): Promise<{ a: A[]; b: B[] }> {
  const as: A[] = [];
  const bs: B[] = [];
  for (let i = 0; i < n; i++) {
    as.push(await a());
    bs.push(await b());
  }
  return { a: as, b: bs };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of nothing');
  const sorted = [...values].sort((x, y) => x - y);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Clock ticks per second, as `getconf CLK_TCK` says (100 if it cannot). */
export const CLK_TCK: number = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** VmRSS of a live process, in kB. */
export function rssKb(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]);
}

/** Fields of /proc/PID/stat after the command name: index 0 is field 3 (state). */
function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** utime + stime of a live process, in clock ticks. */
export function cpuTicks(pid: number): number {
  const fields = statFields(pid);
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * Time on CPU of all the process's threads, from /proc/PID/task/N/schedstat,
 * in ns: finer than ticks, shown beside them. (/proc/PID/schedstat alone
 * counts the main thread only.)
 */
export function cpuNs(pid: number): number | undefined {
  try {
    let total = 0;
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'latin1').split(' ')[0]);
      } catch {
        // a thread that ended meanwhile
      }
    }
    return total;
  } catch {
    return undefined;
  }
}

/** What one process cost between two readings. */
export interface CpuSample {
  ticks: number;
  ns: number | undefined;
  at: number;
}

export function sampleCpu(pid: number): CpuSample {
  return { ticks: cpuTicks(pid), ns: cpuNs(pid), at: performance.now() };
}

export interface CpuUse {
  /** Per cent of one core, from ticks. */
  percent: number;
  ticks: number;
  seconds: number;
  /** ms on CPU by schedstat, if readable. */
  cpuMs: number | undefined;
}

export function cpuUse(from: CpuSample, to: CpuSample): CpuUse {
  const seconds = (to.at - from.at) / 1000;
  const ticks = to.ticks - from.ticks;
  const cpuMs = from.ns !== undefined && to.ns !== undefined ? (to.ns - from.ns) / 1e6 : undefined;
  return { percent: (ticks / CLK_TCK / seconds) * 100, ticks, seconds, cpuMs };
}

/** The pids whose parent is `pid` (no /proc/PID/task/N/children on this kernel: scan /proc). */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (Number(statFields(Number(name))[1]) === pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Whether a pid has no /proc entry at all: dead and reaped (a zombie still counts as existing). */
export function isGone(pid: number): boolean {
  return !existsSync(`/proc/${pid}`);
}

/** Resolves when the child has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Stops a child we started, by its pid: `signal`, then SIGKILL after `graceMs`. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = exited(child);
  child.kill(signal);
  const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(killer);
}

/** Kills a pid we started (not our direct child) if it is still there. */
export function killPid(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/**
 * RSS of a bare `node -e 0`: the script reads its own VmRSS as its last act,
 * which is as close to `node -e 0`'s end as can be read.
 */
export function nodeBaselineRssKb(): Promise<number> {
  const script = "process.stdout.write(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status','latin1'))[1])";
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.on('error', reject);
    child.on('close', () => (/^\d+$/.test(out) ? resolve(Number(out)) : reject(new Error(`node -e: no VmRSS (${out})`))));
  });
}

/** Waits until `check` holds, polling every `stepMs`; throws `what` after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs: number, what: string, stepMs = 10): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(what);
    await sleep(stepMs);
  }
}

export const mb = (kb: number): string => `${(kb / 1024).toFixed(1)} MB`;
export const ms = (value: number): string => `${Math.round(value)} ms`;
export const perSecond = (value: number): string => `${Math.round(value)}/s`;
export const percent = (value: number): string => `${value.toFixed(3)} %`;
