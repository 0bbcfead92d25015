import { ask, startDaemon, type Daemon } from '../support/helpers.js';
import { checkKeyedAnswer, keyedRequest, withCookie, writeKeyFile } from './keyed.js';
import { alternate, mb, median, perSecond, rssKb } from './lib.js';
import { metOrNot, type Row } from './table.js';
import { startFloor, udpload, type Tools } from './tools.js';

/** The daemon under load: throughput and round trip against the C floor, and memory. */

/** A fresh daemon as the figures want it: no rate limit, loopback only; `env` may set PIDSTAT_IO. */
function startUnlimitedDaemon(env: NodeJS.ProcessEnv = {}, args: readonly string[] = []): Promise<Daemon> {
  return startDaemon(['--bind', '127.0.0.1', '--rate', '0', ...args], env);
}

/** One request like udpload's, to see the daemon answers what it should before timing it. */
async function checkAnswer(port: number, pid: string, expected: string): Promise<void> {
  const reply = await ask(port, `PIDR ${pid} 127.0.0.1 3\n`);
  if (reply?.trim() !== expected) throw new Error(`daemon answered ${JSON.stringify(reply)} to PIDR ${pid}, not "${expected}"`);
}

interface LoadFigure {
  figure: string;
  window: number;
  pid: string;
  /** The answer to PIDR pid: what every reply must say. */
  expected: string;
  /** Minimum ratio ours / floor; undefined: reported only. */
  goal: number | undefined;
  env?: NodeJS.ProcessEnv;
  /** More pidstatd arguments. */
  args?: readonly string[];
  /**
   * The exact request our daemon gets (udpload's UDPLOAD_MESSAGE) and the
   * check of its answer, instead of `PIDR pid 127.0.0.1 3` and `expected`.
   * The floor still gets udpload's own request.
   */
  keyed?: { request: string; check(port: number): Promise<void> };
}

/** `udpload 127.0.0.1 PORT 3 WINDOW PID` against our daemon and udplimit, alternated 3 times, median replies/s. */
async function loadFigure(tools: Tools, spec: LoadFigure): Promise<Row[]> {
  const daemon = await startUnlimitedDaemon(spec.env, spec.args);
  try {
    const floor = await startFloor(tools);
    try {
      if (spec.keyed === undefined) await checkAnswer(daemon.port, spec.pid, spec.expected);
      else await spec.keyed.check(daemon.port);
      const runs = await alternate(
        () => udpload(tools, daemon.port, 3, spec.window, spec.pid, spec.keyed?.request),
        () => udpload(tools, floor.port, 3, spec.window, spec.pid),
        3,
      );
      const ours = median(runs.a.map((load) => load.rate));
      const floorRate = median(runs.b.map((load) => load.rate));
      const ratio = ours / floorRate;
      return [
        {
          figure: spec.figure,
          ours: `${perSecond(ours)} (${runs.a.map((l) => Math.round(l.rate)).join(', ')})`,
          reference: `${perSecond(floorRate)} C floor${spec.keyed === undefined ? '' : ' for unkeyed requests'} (${runs.b.map((l) => Math.round(l.rate)).join(', ')})`,
          ratio,
          goal: spec.goal === undefined ? 'reported' : `>= ${spec.goal.toFixed(2)} x floor`,
          met: spec.goal === undefined ? 'n/a' : metOrNot(ratio >= spec.goal),
        },
      ];
    } finally {
      await floor.stop();
    }
  } finally {
    await daemon.stop();
  }
}

export const daemonThroughput = (tools: Tools) =>
  loadFigure(tools, { figure: 'daemon throughput (window 8, pid 1)', window: 8, pid: '1', expected: 'EXIS 1 1 127.0.0.1', goal: 0.7 });

/**
 * A daemon with `--key-file`: every request's MAC checked, every reply's
 * computed. udpload sends one keyed request, cookie included, computed here
 * and checked first: the daemon answers it with a reply whose MAC verifies,
 * and ignores it with a MAC changed.
 */
export async function keyedThroughput(tools: Tools): Promise<Row[]> {
  const key = writeKeyFile();
  try {
    const host = withCookie('127.0.0.1');
    const request = keyedRequest(key, '1', host);
    return await loadFigure(tools, {
      figure: 'daemon throughput with a key file (window 8, pid 1)',
      window: 8,
      pid: '1',
      expected: `EXIS 1 1 ${host} -`,
      goal: 0.5,
      args: ['--key-file', key.file],
      keyed: { request, check: (port) => checkKeyedAnswer(port, key, request, `EXIS 1 1 ${host} -`) },
    });
  } finally {
    key.remove();
  }
}

/** What a daemon without the addon answers (no goal: the goal is the default build's). */
export const dgramThroughput = (tools: Tools) =>
  loadFigure(tools, {
    figure: "daemon throughput through Node's dgram (PIDSTAT_IO=dgram)",
    window: 8,
    pid: '1',
    expected: 'EXIS 1 1 127.0.0.1',
    goal: undefined,
    env: { PIDSTAT_IO: 'dgram' },
  });

export const daemonRoundTrip = (tools: Tools) =>
  loadFigure(tools, { figure: 'daemon round trip (window 1, pid 1)', window: 1, pid: '1', expected: 'EXIS 1 1 127.0.0.1', goal: 0.85 });

export const deadPidThroughput = (tools: Tools) =>
  loadFigure(tools, {
    figure: 'dead-pid throughput (window 8, pid 999999)',
    window: 8,
    pid: '999999',
    expected: 'EXIS 999999 0 127.0.0.1',
    goal: 0.65,
  });

/**
 * Drives the daemon with udpload (window 8, pid 1) until `total` replies in
 * all: a 1 s run to learn the rate, then runs sized by it (a little over, so
 * the count lands just past `total`, not a whole run past it). Returns the new total.
 */
async function driveTo(tools: Tools, port: number, done: number, total: number, rate: { value?: number }): Promise<number> {
  while (done < total) {
    const seconds = rate.value === undefined ? 1 : Math.max(0.2, ((total - done) / rate.value) * 1.02);
    const load = await udpload(tools, port, Number(seconds.toFixed(2)), 8, '1');
    done += load.replies;
    rate.value = load.rate;
  }
  return done;
}

/** VmRSS after 1 and 2 million requests (counted as replies), and the growth between. */
export async function daemonMemory(tools: Tools): Promise<Row[]> {
  const daemon = await startUnlimitedDaemon();
  try {
    const rate: { value?: number } = {};
    const done1M = await driveTo(tools, daemon.port, 0, 1_000_000, rate);
    const at1M = rssKb(daemon.pid);
    const done = await driveTo(tools, daemon.port, done1M, 2_000_000, rate);
    const at2M = rssKb(daemon.pid);
    const growth = at2M - at1M;
    return [
      {
        figure: `daemon RSS after 2M requests (at ${(done / 1e6).toFixed(2)}M replies)`,
        ours: mb(at2M),
        reference: '60 MB (goal bound)',
        ratio: at2M / 1024 / 60,
        goal: '<= 60 MB',
        met: metOrNot(at2M <= 60 * 1024),
      },
      {
        figure: `daemon RSS growth 1M -> 2M requests (at ${(done1M / 1e6).toFixed(2)}M, ${(done / 1e6).toFixed(2)}M)`,
        ours: `${mb(growth)} (${mb(at1M)} -> ${mb(at2M)})`,
        reference: '2 MB (goal bound)',
        ratio: growth / 1024 / 2,
        goal: '< 2 MB',
        met: metOrNot(growth < 2 * 1024),
      },
    ];
  } finally {
    await daemon.stop();
  }
}
