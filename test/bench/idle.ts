import { type ChildProcess } from 'node:child_process';
import { sleep, startDaemon, startSleeper } from '../support/helpers.js';
import { cpuUse, mb, nodeBaselineRssKb, percent, rssKb, sampleCpu, type CpuUse } from './lib.js';
import { detachedWatcherOf, jobOf, spawnWatcher, stopWatcher } from './pidwatch.js';
import { metOrNot, type Row } from './table.js';

/**
 * What waiting costs, all in the same 10 s: an idle daemon, a pidwatch
 * probing locally, and one asking a daemon (--no-local).
 */

const IDLE_SECONDS = 10;

/**
 * Judged by the on-CPU time of every thread (schedstat, in ns) where the
 * kernel gives it: a clock tick (10 ms) is charged whole to whoever holds the
 * CPU when it falls, so one tick in 10 s can stand for well under 1 ms.
 */
function cpuRow(figure: string, use: CpuUse, boundPercent: number): Row {
  const detail = `${use.ticks} tick${use.ticks === 1 ? '' : 's'} in ${use.seconds.toFixed(1)} s${use.cpuMs === undefined ? '' : `; ${use.cpuMs.toFixed(1)} ms on CPU`}`;
  const used = use.cpuMs === undefined ? use.percent : (use.cpuMs / (use.seconds * 1000)) * 100;
  return {
    figure,
    ours: `${percent(used)} (${detail})`,
    reference: `${boundPercent} % (goal bound)`,
    ratio: used / boundPercent,
    goal: `< ${boundPercent} % of a core`,
    // Judged as shown (3 decimals).
    met: metOrNot(Number(used.toFixed(3)) < boundPercent),
  };
}

function rssRow(figure: string, kb: number, baselineKb: number): Row {
  return {
    figure,
    ours: mb(kb),
    reference: `${mb(baselineKb)} (\`node -e 0\` RSS, baseline)`,
    ratio: kb / baselineKb,
    goal: 'reported',
    met: 'n/a',
  };
}

function assertRunning(processes: Record<string, ChildProcess>): void {
  for (const [name, child] of Object.entries(processes)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) while idle`);
  }
}

const SETTLE_MS = 10_000;

export async function idleCosts(): Promise<Row[]> {
  const sleeper = startSleeper();
  const idleDaemon = await startDaemon(['--bind', '127.0.0.1']);
  const relay = await startDaemon(['--bind', '127.0.0.1']);
  const local = spawnWatcher(['--pid', String(sleeper.pid), 'sleep', '60']);
  const remote = spawnWatcher(['--no-local', '--host', '127.0.0.1', '--port', String(relay.port), '--pid', String(sleeper.pid), 'sleep', '60']);
  try {
    const baselineKb = await nodeBaselineRssKb();
    await Promise.all([jobOf(local), jobOf(remote)]);
    // Past start-up: V8's memory reducer collects once, some 8 s after a
    // process starts (seen with --trace-gc), a cost of starting, not of idling.
    await sleep(SETTLE_MS);
    const running = { 'idle daemon': idleDaemon.child, 'pidwatch (local)': local, 'pidwatch (--no-local)': remote };
    assertRunning(running);
    // pidwatch's own process is the job's shell: the watching costs are its detached watcher's.
    const pids = [idleDaemon.pid, detachedWatcherOf(local), detachedWatcherOf(remote)];
    const from = pids.map(sampleCpu);
    await sleep(IDLE_SECONDS * 1000);
    const to = pids.map(sampleCpu);
    const [localKb, remoteKb] = [rssKb(pids[1]!), rssKb(pids[2]!)];
    assertRunning(running);
    const [daemonUse, localUse, remoteUse] = pids.map((_, i) => cpuUse(from[i]!, to[i]!)) as [CpuUse, CpuUse, CpuUse];
    return [
      cpuRow(`idle daemon CPU over ${IDLE_SECONDS} s`, daemonUse, 0.1),
      cpuRow(`pidwatch idle CPU, local probe (${IDLE_SECONDS} s)`, localUse, 0.2),
      cpuRow(`pidwatch idle CPU, via daemon --no-local (${IDLE_SECONDS} s)`, remoteUse, 0.2),
      rssRow('pidwatch idle RSS, local probe', localKb, baselineKb),
      rssRow('pidwatch idle RSS, via daemon --no-local', remoteKb, baselineKb),
    ];
  } finally {
    await Promise.all([stopWatcher(local), stopWatcher(remote)]);
    await Promise.all([idleDaemon.stop(), relay.stop(), sleeper.stop()]);
  }
}
