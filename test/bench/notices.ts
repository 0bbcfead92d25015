import dgram from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readStartToken } from '../../src/sys/probe.js';
import { sleep, startDaemon, startSleeper, type Daemon } from '../support/helpers.js';
import { massSubscriber, subscriptionTo } from '../support/subscriber.js';
import { ms, until } from './lib.js';
import { metOrNot, type Row } from './table.js';

/**
 * What one death with 100 000 subscribers costs everyone else (doc/protocol.md,
 * Bounded work): a daemon on loopback holds 100 000 subscriptions to one
 * sleeper, made from 127.0.0.2 by subscribers that never acknowledge (each
 * notice is then sent 8 times: 800 000 datagrams); the sleeper is killed.
 *
 * - The daemon's longest event-loop stall while the notices and their
 *   resends go out, measured inside the daemon: it runs with a preload that
 *   keeps perf_hooks.monitorEventLoopDelay (a 1 ms timer's lateness) and
 *   writes its maximum on SIGUSR2, which resets it. The same over a window
 *   without a fan-out is shown beside it.
 * - A polite client on 127.0.0.3 asks PIDR every 10 ms, each question sent
 *   once, answered if its reply comes within 1 s: the share answered while
 *   the fan-out runs (from the kill until the daemon has given up on every
 *   notice), against the share over as long a window just before.
 *
 * The subscribers' socket is closed once they are subscribed: the daemon
 * sends to it all the same, and the bench process, whose client measures,
 * does not spend itself reading 800 000 datagrams.
 */

const SUBSCRIBERS = 100_000;
const ASK_EVERY_MS = 10;
const ANSWER_WITHIN_MS = 1000;
const GOAL_STALL_MS = 20;
const GOAL_RATE_RATIO = 0.9;

const PRELOAD = `
const { monitorEventLoopDelay } = require('node:perf_hooks');
const { writeFileSync } = require('node:fs');
const histogram = monitorEventLoopDelay({ resolution: 1 });
histogram.enable();
process.on('SIGUSR2', () => {
  writeFileSync(process.env.PIDSTAT_BENCH_STALL_FILE + '.tmp', String(histogram.max / 1e6));
  require('node:fs').renameSync(process.env.PIDSTAT_BENCH_STALL_FILE + '.tmp', process.env.PIDSTAT_BENCH_STALL_FILE);
  histogram.reset();
});
`;

/** The daemon's longest stall since the last call, in ms (and the histogram reset). */
async function stallSince(daemon: Daemon, file: string): Promise<number> {
  if (existsSync(file)) unlinkSync(file);
  daemon.child.kill('SIGUSR2');
  await until(() => existsSync(file), 5000, 'the daemon wrote no event-loop delay within 5 s', 5);
  return Number(readFileSync(file, 'utf8'));
}

/** The daemon's counters, from the line SIGUSR1 makes it log. */
async function counters(daemon: Daemon): Promise<Map<string, number>> {
  const from = daemon.log().length;
  daemon.child.kill('SIGUSR1');
  await until(() => daemon.log().indexOf('counters: ', from) !== -1, 5000, 'the daemon logged no counters within 5 s', 5);
  const line = daemon.log().slice(daemon.log().indexOf('counters: ', from) + 'counters: '.length).split('\n')[0]!;
  return new Map(line.split(', ').map((pair) => [pair.split(' ')[0]!, Number(pair.split(' ')[1])]));
}

interface Polite {
  asked: number;
  answered: number;
  worstMs: number;
}

/** Asks the daemon about a live pid every ASK_EVERY_MS until `done` resolves, each question once; then waits for the last answers. */
async function askPolitely(port: number, done: Promise<unknown>): Promise<Polite> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.3', resolve));
  const sentAt = new Map<string, number>();
  const result: Polite = { asked: 0, answered: 0, worstMs: 0 };
  socket.on('message', (msg) => {
    const host = msg.toString('latin1').split(' ')[3];
    const at = host === undefined ? undefined : sentAt.get(host);
    if (at === undefined) return;
    sentAt.delete(host!);
    const took = performance.now() - at;
    result.worstMs = Math.max(result.worstMs, took);
    if (took <= ANSWER_WITHIN_MS) result.answered++;
  });
  let over = false;
  void done.then(() => (over = true));
  try {
    while (!over) {
      const host = `polite/${result.asked++}`;
      sentAt.set(host, performance.now());
      socket.send(`PIDR ${process.pid} ${host} 3\n`, port, '127.0.0.1');
      await sleep(ASK_EVERY_MS);
    }
    await sleep(ANSWER_WITHIN_MS);
    return result;
  } finally {
    socket.close();
  }
}

const share = (polite: Polite) => polite.answered / polite.asked;
const describe = (polite: Polite) => `${polite.answered}/${polite.asked} answered (${(100 * share(polite)).toFixed(1)} %), the slowest in ${ms(polite.worstMs)}`;

export async function noticeFanOut(): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), 'pidstat-bench-notices-'));
  const preload = join(dir, 'stall.cjs');
  const stallFile = join(dir, 'stall');
  writeFileSync(preload, PRELOAD);
  const daemon = await startDaemon(
    ['--bind', '127.0.0.1', '--rate', '0', '--max-subscriptions', String(SUBSCRIBERS), '--max-subscriptions-per-source', String(SUBSCRIBERS)],
    { PIDSTAT_BENCH_STALL_FILE: stallFile },
    (command, args) => [command, ['--require', preload, ...args]],
  );
  const sleeper = startSleeper();
  try {
    const start = readStartToken(sleeper.pid);
    if (start === undefined) throw new Error('cannot read the sleeper\'s start token');
    const subscriber = await massSubscriber(daemon.port, { address: '127.0.0.2', acknowledge: false });
    let seconds: number;
    try {
      const made = await subscriber.subscribeAll(Array.from({ length: SUBSCRIBERS }, () => subscriptionTo(sleeper.pid, start)), 120_000);
      if (made.subscribed !== SUBSCRIBERS) throw new Error(`only ${made.subscribed} of ${SUBSCRIBERS} subscribed in 120 s`);
      seconds = made.seconds;
    } finally {
      subscriber.close();
    }
    await sleep(1000);

    // The fan-out: from the kill until every notice has been given up on.
    await stallSince(daemon, stallFile);
    const killedAt = performance.now();
    const fannedOut = (async () => {
      await sleep(200);
      await sleeper.stop();
      const deadline = performance.now() + 120_000;
      while ((await counters(daemon)).get('notifyUnacknowledged') !== SUBSCRIBERS) {
        if (performance.now() > deadline) throw new Error('the daemon did not give up on every notice within 120 s');
        await sleep(100);
      }
    })();
    const during = await askPolitely(daemon.port, fannedOut);
    await fannedOut;
    const fanOutMs = performance.now() - killedAt;
    const stallMs = await stallSince(daemon, stallFile);

    // As long a window without one.
    const without = await askPolitely(daemon.port, sleep(fanOutMs));
    const quietStallMs = await stallSince(daemon, stallFile);

    return [
      {
        figure: `daemon's longest event-loop stall while ${SUBSCRIBERS} subscribers are notified of one death (monitorEventLoopDelay in the daemon; subscribed in ${seconds.toFixed(1)} s, notices sent and given up on in ${(fanOutMs / 1000).toFixed(1)} s)`,
        ours: ms(stallMs),
        reference: `${GOAL_STALL_MS} ms (goal bound); ${ms(quietStallMs)} over as long a window without a death`,
        ratio: stallMs / GOAL_STALL_MS,
        goal: `<= ${GOAL_STALL_MS} ms`,
        met: metOrNot(stallMs <= GOAL_STALL_MS),
      },
      {
        figure: `polite client's PIDR answer rate during that fan-out / without it (one question every ${ASK_EVERY_MS} ms, each sent once, answered within ${ANSWER_WITHIN_MS} ms)`,
        ours: describe(during),
        reference: `${describe(without)} (as long a window without a death)`,
        ratio: share(during) / share(without),
        goal: `>= ${GOAL_RATE_RATIO}`,
        met: metOrNot(share(during) / share(without) >= GOAL_RATE_RATIO),
      },
    ];
  } finally {
    await sleeper.stop();
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
