import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep, startDaemon, startSleeper, type Daemon } from '../support/helpers.js';
import { alternate, median, ms, until } from './lib.js';
import { jobOf, spawnWatcher, stopWatcher } from './pidwatch.js';
import { metOrNot, type Row } from './table.js';

/**
 * Push death notices against polling, through daemons on loopback, half of
 * them started with --no-push (whose clients poll with PIDR every
 * --interval, 1000 ms by default).
 *
 * - Reaction: a `pidwatch --no-local` job (`sleep 60`) watches a sleeper;
 *   a second after the job runs, plus a random part of one poll interval,
 *   and once the watch is in place (on the push daemon: its subscription is
 *   counted), the sleeper is killed, and the time until pidwatch's own
 *   process exits is taken. Runs alternate push, poll, push, ...
 * - Requests per live watch: WATCHES pidwatch jobs (`sleep 600`) on live
 *   sleepers against each of two other daemons (push, --no-push), left to
 *   settle, then the datagrams each daemon received over WINDOW_MS
 *   (`pidstatd_received_total` in its metrics file, read from two fresh
 *   writes, timed by their mtimes), per watch and per second. The reaction
 *   runs take place inside that window, against their own daemons.
 */

const RUNS = 10;
/** pidwatch's default --interval, which the watches here keep: the polls' period. */
const INTERVAL_MS = 1000;
const WATCHES = 20;
/** Past every watch's start and first subscription. */
const SETTLE_MS = 12_000;
/**
 * Four times the least the issue asks: a live push watch renews every 12 s
 * (RENEWALS_PER_LEASE, src/deaths/watch.ts), ten renewals here, and sends one SUBS
 * more each time its ticket lapses (every 4 minutes: a ticket holds for its
 * 120 s slot and the next, TICKET_SLOT_MS in src/daemon/subscriptions.ts), which
 * this window holds only sometimes, as it falls.
 */
const WINDOW_MS = 120_000;
/** How often the daemons write their metrics file here (PIDSTATD_TEST_INTERVAL_MS). */
const METRICS_EVERY_MS = 100;

const GOAL_MEDIAN_MS = 50;
const GOAL_WORST_MS = 200;
const GOAL_PER_WATCH = 0.1;

interface Watched {
  daemon: Daemon;
  metrics: string;
}

/** The daemon's counters and when it wrote them (the file's mtime, ms since the epoch). */
interface Reading {
  at: number;
  counters: Map<string, number>;
}

function parseCounters(text: string): Map<string, number> {
  const counters = new Map<string, number>();
  for (const match of text.matchAll(/^(pidstatd_[a-z_]+) (\S+)$/gm)) counters.set(match[1]!, Number(match[2]));
  return counters;
}

/** The metrics file as last written, read through one descriptor so the mtime is that version's; undefined before the first write. */
function readMetrics(file: string): Reading | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return { at: fstatSync(fd).mtimeMs, counters: parseCounters(readFileSync(fd, 'utf8')) };
  } finally {
    closeSync(fd);
  }
}

/** The next version the daemon writes: counters as of now, not up to an interval old. */
async function freshReading(file: string): Promise<Reading> {
  const last = readMetrics(file)?.at;
  let next: Reading | undefined;
  await until(() => (next = readMetrics(file)) !== undefined && next.at !== last, 5000, `${file} was not written again within 5 s`, 5);
  return next!;
}

function counter(reading: Reading, name: string): number {
  const value = reading.counters.get(name);
  if (value === undefined) throw new Error(`no ${name} in the metrics file`);
  return value;
}

async function startWatched(dir: string, name: string, extra: readonly string[]): Promise<Watched> {
  const metrics = join(dir, `${name}.prom`);
  const daemon = await startDaemon(['--bind', '127.0.0.1', '--metrics-file', metrics, ...extra], { PIDSTATD_TEST_INTERVAL_MS: String(METRICS_EVERY_MS) });
  return { daemon, metrics };
}

/** `pidwatch --no-local` on `pid` through the daemon at `port`, its job `sleep SECONDS`. */
function watcherArgs(port: number, pid: number, seconds: number): string[] {
  return ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--pid', String(pid), 'sleep', String(seconds)];
}

/** Waits until the daemon has stored `count` subscriptions since it started. */
async function subscribed(target: Watched, count: number): Promise<void> {
  const stored = () => readMetrics(target.metrics)?.counters.get('pidstatd_subscribed_total') ?? 0;
  await until(() => stored() >= count, 5000, `the daemon stored ${stored()} subscriptions, not ${count}, within 5 s`, 5);
}

/**
 * One reaction: the job runs; a second (pidwatch's token question, then its
 * subscription, or a first SUBS left unanswered) plus a random part of one
 * interval, so that the polls' phase is random; the sleeper killed; ms until
 * pidwatch exits. `ready` waits for what must be in place first.
 */
async function reactionOnce(target: Watched, ready: () => Promise<void>): Promise<number> {
  const sleeper = startSleeper();
  const watcher = spawnWatcher(watcherArgs(target.daemon.port, sleeper.pid, 60));
  let exitedAt: number | undefined;
  watcher.once('exit', () => (exitedAt = performance.now()));
  try {
    await jobOf(watcher);
    await sleep(1000 + Math.random() * INTERVAL_MS);
    await ready();
    if (exitedAt !== undefined) throw new Error(`pidwatch exited (${watcher.exitCode ?? watcher.signalCode}) while its pid lived`);
    const killedAt = performance.now();
    await sleeper.stop();
    await until(() => exitedAt !== undefined, 5000 + INTERVAL_MS, 'pidwatch did not end within 5 s of its pid dying', 1);
    return exitedAt! - killedAt;
  } finally {
    await stopWatcher(watcher);
    await sleeper.stop();
  }
}

/** RUNS reactions on each daemon, alternated; the push runs each wait for their own subscription. */
async function reactions(push: Watched, poll: Watched): Promise<{ push: number[]; poll: number[] }> {
  const before = counter(await freshReading(push.metrics), 'pidstatd_subscribed_total');
  let runs = 0;
  const { a, b } = await alternate(
    () => reactionOnce(push, () => subscribed(push, before + ++runs)),
    () => reactionOnce(poll, async () => {}),
    RUNS,
  );
  return { push: a, poll: b };
}

/** WATCHES live pidwatch jobs against each of `targets`, started one per target at a time; what stops them all. */
async function liveWatches(targets: readonly Watched[]): Promise<{ stop(): Promise<void>; ended(): string | undefined }> {
  const sleepers: ReturnType<typeof startSleeper>[] = [];
  const watchers: ReturnType<typeof spawnWatcher>[] = [];
  const stop = async () => {
    await Promise.all(watchers.map(stopWatcher));
    await Promise.all(sleepers.map((sleeper) => sleeper.stop()));
  };
  const startOne = (target: Watched) => {
    const sleeper = startSleeper();
    sleepers.push(sleeper);
    // A job that outlasts the start of every watch, the settling and the window, however slow the start.
    const watcher = spawnWatcher(watcherArgs(target.daemon.port, sleeper.pid, 600));
    watchers.push(watcher);
    return jobOf(watcher);
  };
  try {
    for (let i = 0; i < WATCHES; i++) await Promise.all(targets.map(startOne));
  } catch (err) {
    await stop();
    throw err;
  }
  const ended = () => {
    const watcher = watchers.find((w) => w.exitCode !== null || w.signalCode !== null);
    return watcher && `pidwatch ${watcher.pid} exited (${watcher.exitCode ?? watcher.signalCode}) while its pid lived`;
  };
  return { stop, ended };
}

interface Rate {
  perWatch: number;
  datagrams: number;
  seconds: number;
}

function rateOf(from: Reading, to: Reading): Rate {
  const datagrams = counter(to, 'pidstatd_received_total') - counter(from, 'pidstatd_received_total');
  const seconds = (to.at - from.at) / 1000;
  return { perWatch: datagrams / WATCHES / seconds, datagrams, seconds };
}

/**
 * Datagrams per live watch per second on both daemons over the same window
 * of WINDOW_MS at least, their watches settled; `during` runs inside the
 * window (its datagrams must go to other daemons) and its result comes back.
 */
async function requestRates<T>(push: Watched, poll: Watched, during: () => Promise<T>): Promise<{ push: Rate; poll: Rate; during: T }> {
  const watches = await liveWatches([push, poll]);
  try {
    await sleep(SETTLE_MS);
    const from = await Promise.all([freshReading(push.metrics), freshReading(poll.metrics)]);
    const opened = performance.now();
    const held = counter(from[0], 'pidstatd_subscribed_total');
    if (held !== WATCHES) throw new Error(`${held} subscriptions for ${WATCHES} live watches on the push daemon`);
    const result = await during();
    await sleep(WINDOW_MS - (performance.now() - opened));
    const to = await Promise.all([freshReading(push.metrics), freshReading(poll.metrics)]);
    const ended = watches.ended();
    if (ended !== undefined) throw new Error(ended);
    return { push: rateOf(from[0], to[0]), poll: rateOf(from[1], to[1]), during: result };
  } finally {
    await watches.stop();
  }
}

const perWatch = (rate: Rate): string => `${rate.perWatch.toFixed(3)}/s (${rate.datagrams} datagrams from ${WATCHES} watches in ${rate.seconds.toFixed(1)} s)`;

function reactionRow(push: number[], poll: number[]): Row {
  const [pushMedian, pushWorst, pollMedian] = [median(push), Math.max(...push), median(poll)];
  return {
    figure: `push reaction, pidwatch --no-local via daemon (median of ${push.length}, worst)`,
    ours: `${ms(pushMedian)}, worst ${ms(pushWorst)}`,
    reference: `${ms(pollMedian)}, worst ${ms(Math.max(...poll))} (polling: the same job against a --no-push daemon, --interval ${INTERVAL_MS})`,
    ratio: pushMedian / pollMedian,
    goal: `median <= ${ms(GOAL_MEDIAN_MS)}, worst <= ${ms(GOAL_WORST_MS)}`,
    met: metOrNot(pushMedian <= GOAL_MEDIAN_MS && pushWorst <= GOAL_WORST_MS),
  };
}

function rateRows(push: Rate, poll: Rate): Row[] {
  return [
    {
      figure: 'requests per live watch, push',
      ours: perWatch(push),
      reference: `${GOAL_PER_WATCH}/s (goal bound)`,
      ratio: push.perWatch / GOAL_PER_WATCH,
      goal: `<= ${GOAL_PER_WATCH} request/s per live watch`,
      // Judged as shown (3 decimals).
      met: metOrNot(Number(push.perWatch.toFixed(3)) <= GOAL_PER_WATCH),
    },
    {
      figure: 'requests per live watch, polling',
      ours: perWatch(poll),
      reference: `${1000 / INTERVAL_MS}/s (one PIDR per --interval ${INTERVAL_MS})`,
      ratio: poll.perWatch / (1000 / INTERVAL_MS),
      goal: 'reported',
      met: 'n/a',
    },
  ];
}

/** The four daemons, each with its metrics file in `dir`: two for the reactions, two for the live watches. */
async function startDaemons(dir: string, started: Watched[]): Promise<Record<'push' | 'poll' | 'livePush' | 'livePoll', Watched>> {
  const one = async (name: string, extra: readonly string[]) => {
    const watched = await startWatched(dir, name, extra);
    started.push(watched);
    return watched;
  };
  return { push: await one('push', []), poll: await one('poll', ['--no-push']), livePush: await one('live-push', []), livePoll: await one('live-poll', ['--no-push']) };
}

export async function pushReaction(): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-bench-push-'));
  const started: Watched[] = [];
  try {
    const { push, poll, livePush, livePoll } = await startDaemons(dir, started);
    const rates = await requestRates(livePush, livePoll, () => reactions(push, poll));
    return [reactionRow(rates.during.push, rates.during.poll), ...rateRows(rates.push, rates.poll)];
  } finally {
    await Promise.all(started.map(({ daemon }) => daemon.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}
