import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fanout, keyedStartToAnswer, manyTargets, startToAnswer } from './client.js';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { daemonMemory, daemonRoundTrip, daemonThroughput, deadPidThroughput, dgramThroughput, keyedThroughput } from './daemon.js';
import { idleCosts } from './idle.js';
import { CLK_TCK } from './lib.js';
import { noticeFanOut } from './notices.js';
import { pidwatchReaction } from './pidwatch.js';
import { pushReaction } from './push.js';
import { serverRestart } from './restart.js';
import { manyThreads } from './threads.js';
import { floodLatency } from './flood.js';
import { massDeaths } from './deaths.js';
import { startupMachinery } from './startup.js';
import { subscriptionMemory } from './subscriptions.js';
import { markdownTable, progressLine, Unavailable, type Row } from './table.js';
import { buildTools, type Tools } from './tools.js';

/**
 * `npm run bench`: every figure of the performance issue, each against a
 * reference run interleaved with it or against its goal's bound, printed as
 * it completes and then as one markdown table. Exit 0 whether the goals are
 * met or not; 1 if a figure could not be measured. Words after `--`
 * (`npm run bench -- daemon`) run only the figures whose names hold one; a
 * word that is a figure's whole name (`-- 'daemon throughput'`) picks that
 * figure alone.
 */

interface Figure {
  name: string;
  /** Needs udpload/udplimit, so `cc`. */
  needsTools: boolean;
  measure(tools: Tools): Promise<Row[]>;
}

const FIGURES: Figure[] = [
  { name: 'daemon throughput', needsTools: true, measure: daemonThroughput },
  { name: 'daemon throughput with a key file', needsTools: true, measure: keyedThroughput },
  { name: 'daemon round trip', needsTools: true, measure: daemonRoundTrip },
  { name: 'dead-pid throughput', needsTools: true, measure: deadPidThroughput },
  { name: 'dgram throughput', needsTools: true, measure: dgramThroughput },
  { name: 'daemon memory', needsTools: true, measure: daemonMemory },
  { name: 'idle daemon and pidwatch cost', needsTools: false, measure: idleCosts },
  { name: 'pidstat start-to-answer', needsTools: false, measure: startToAnswer },
  { name: 'pidstat start-to-answer with a key file', needsTools: false, measure: keyedStartToAnswer },
  { name: 'start-up machinery', needsTools: false, measure: startupMachinery },
  { name: 'fan-out', needsTools: false, measure: fanout },
  { name: 'many targets', needsTools: false, measure: manyTargets },
  { name: 'pidwatch reaction', needsTools: false, measure: pidwatchReaction },
  { name: 'push reaction', needsTools: false, measure: pushReaction },
  { name: 'subscription memory', needsTools: false, measure: subscriptionMemory },
  { name: 'mass deaths', needsTools: false, measure: massDeaths },
  { name: 'many-thread target', needsTools: true, measure: manyThreads },
  { name: 'notice fan-out', needsTools: false, measure: noticeFanOut },
  { name: 'forged-source flood', needsTools: false, measure: floodLatency },
  { name: 'server restart', needsTools: false, measure: serverRestart },
];

const firstLine = (err: unknown): string => (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 160);

function nproc(): string {
  try {
    return execFileSync('nproc', { encoding: 'utf8' }).trim();
  } catch {
    return String(availableParallelism());
  }
}

/** Measures one figure; a skip or an error becomes its row instead of ending the bench. */
async function measure(figure: Figure, tools: Tools | { reason: string }): Promise<{ rows: Row[]; failed: boolean }> {
  const stub = (met: 'skipped' | 'error', why: string): Row => ({ figure: figure.name, ours: why, reference: '', ratio: undefined, goal: '', met });
  if (figure.needsTools && 'reason' in tools) return { rows: [stub('skipped', `needs the C tools: ${tools.reason}`)], failed: false };
  try {
    return { rows: await figure.measure(tools as Tools), failed: false };
  } catch (err) {
    if (err instanceof Unavailable) return { rows: [stub('skipped', err.message)], failed: false };
    console.error(`  ${figure.name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    return { rows: [stub('error', firstLine(err))], failed: true };
  }
}

async function main(): Promise<number> {
  const started = performance.now();
  const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const { why } = loadLinuxCalls();
  const io = process.env['PIDSTAT_IO'] ?? (why === undefined ? 'batch (the addon is built)' : `dgram (${why})`);
  console.log(`pidstat bench: ${date}, nproc ${nproc()}, node ${process.version}, CLK_TCK ${CLK_TCK}, socket I/O ${io}`);
  const tools = buildTools();
  if ('reason' in tools) console.log(`C tools not built (${tools.reason}): the figures that need them are skipped`);
  const rows: Row[] = [];
  let failures = 0;
  try {
    const words = process.argv.slice(2);
    const names = new Set(FIGURES.map((figure) => figure.name));
    const picks = (word: string, name: string) => (names.has(word) ? name === word : name.includes(word));
    const chosen = words.length === 0 ? FIGURES : FIGURES.filter((figure) => words.some((word) => picks(word, figure.name)));
    if (chosen.length === 0) throw new Error(`no figure's name holds ${words.join(' or ')}: ${FIGURES.map((f) => f.name).join(', ')}`);
    for (const figure of chosen) {
      const result = await measure(figure, tools);
      if (result.failed) failures++;
      for (const row of result.rows) console.log(progressLine(row, performance.now() - started));
      rows.push(...result.rows);
    }
  } finally {
    if (!('reason' in tools)) tools.remove();
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  console.log(`\n### Benchmark (${date}, nproc ${nproc()}, node ${process.version}, socket I/O ${io})\n`);
  console.log(markdownTable(rows));
  console.log(
    '\nReference: a run alternated with ours (C floor `udplimit`, `node -e 0`), or, for figures without one, the goal\'s bound or a baseline, as named.' +
      ' CPU is the time on CPU of every thread (schedstat), with utime+stime clock ticks beside it. MB = 1024 kB of VmRSS.',
  );
  console.log(`\nbench took ${seconds} s; ${failures === 0 ? 'every figure measured' : `${failures} figure(s) could not be measured`}`);
  return failures === 0 ? 0 : 1;
}

process.exitCode = await main();
