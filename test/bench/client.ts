import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { binEnv, freePort, run, runBin, startDaemon, startSleeper, type Daemon } from '../support/helpers.js';
import { askManyTargets } from '../support/many-targets.js';
import { writeKeyFile } from './keyed.js';
import { alternate, isGone, killPid, median, ms, stopChild, until } from './lib.js';
import { metOrNot, type Row } from './table.js';

/** The client: how soon one answer comes, and how 1000 targets over four hosts fare. */

/**
 * What every Node start pays where these are set, the same for both sides of
 * a ratio: NODE_EXTRA_CA_CERTS alone makes Node 20 read and parse its
 * certificates at start, some 40 ms, which would hide what pidstat itself
 * costs. Both sides run without them.
 */
const CLEAN = { NODE_EXTRA_CA_CERTS: undefined, NODE_OPTIONS: undefined };

/** One `pidstat --no-local` run that must print `127.0.0.1:PID exists`; its wall time. */
async function timedPidstat(port: number, pid: number, extra: readonly string[] = []): Promise<number> {
  const result = await runBin('pidstat', ['--no-local', ...extra, '--port', String(port), '127.0.0.1', String(pid)], { env: CLEAN });
  const expected = `127.0.0.1:${pid} exists`;
  if (result.code !== 0 || result.stdout.trim() !== expected) {
    throw new Error(`pidstat exited ${result.code} with ${JSON.stringify(result.stdout + result.stderr)}, not "${expected}"`);
  }
  return result.ms;
}

async function timedNode(): Promise<number> {
  const result = await run(process.execPath, ['-e', '0'], { env: binEnv(CLEAN) });
  if (result.code !== 0) throw new Error(`node -e 0 exited ${result.code}`);
  return result.ms;
}

/**
 * The request one `pidstat --no-local` run sends, caught by a socket that
 * never answers: proof that the timed runs draw a cookie (`HOST/<16 hex>`).
 */
async function checkCookieDrawn(extra: readonly string[]): Promise<void> {
  const socket = await silentSocket('127.0.0.1', 0);
  try {
    const requests: string[] = [];
    socket.on('message', (msg) => requests.push(msg.toString('latin1')));
    const args = ['--no-local', ...extra, '--try-timeout', '200ms', '--tries', '1', '--port', String(socket.address().port), '127.0.0.1', '1'];
    await runBin('pidstat', args);
    const host = requests[0]?.split(' ')[2];
    if (host === undefined || !/^127\.0\.0\.1\/[0-9a-f]{16}$/.test(host)) {
      throw new Error(`pidstat ${args.join(' ')} sent ${JSON.stringify(requests[0])}: no cookie in its host field`);
    }
  } finally {
    socket.close();
  }
}

interface StartFigure {
  figure: string;
  daemonArgs: readonly string[];
  pidstatArgs: readonly string[];
  /** Maximum ratio ours / `node -e 0`; undefined: reported only. */
  goal: number | undefined;
}

/**
 * The least any Node client can do: one dgram socket, one plain request, the
 * answer printed; no cookie, no check of the reply, no options. Timed beside
 * pidstat, it shows how much of pidstat's time over `node -e 0` is Node's own.
 */
const FLOOR_CLIENT = `const s = require('node:dgram').createSocket('udp4');
s.on('message', (m) => { require('node:fs').writeSync(1, m.toString().split(' ')[2] === '1' ? '127.0.0.1:' + process.argv[3] + ' exists\\n' : 'dead\\n'); s.close(); });
s.send('PIDR ' + process.argv[3] + ' x 3', Number(process.argv[2]), '127.0.0.1');
`;

async function timedFloorClient(file: string, port: number, pid: number): Promise<number> {
  const result = await run(process.execPath, [file, String(port), String(pid)], { env: binEnv(CLEAN) });
  if (result.code !== 0 || result.stdout !== `127.0.0.1:${pid} exists\n`) throw new Error(`the floor client printed ${JSON.stringify(result.stdout + result.stderr)}`);
  return result.ms;
}

/** Runs of each side of a start-up figure, alternated. */
const START_RUNS = 20;

/**
 * Wall time of `node bin/pidstat.cjs --no-local [ARGS] --port P 127.0.0.1 PID`
 * vs `node -e 0`, START_RUNS of each alternated; with `floor`, the floor
 * client's too, in the same rounds, and pidstat's time over the floor
 * client's: at most 1.05 (the bar the start-up machinery keeps, see
 * test/bench/startup.ts).
 */
async function startFigure(spec: StartFigure, floor?: string): Promise<Row[]> {
  await checkCookieDrawn(spec.pidstatArgs);
  const daemon = await startDaemon(['--bind', '127.0.0.1', ...spec.daemonArgs]);
  const sleeper = startSleeper();
  const dir = floor === undefined ? undefined : mkdtempSync(join(tmpdir(), 'pidstat-bench-'));
  try {
    const floorFile = dir === undefined ? undefined : join(dir, 'floor.cjs');
    if (floorFile !== undefined) writeFileSync(floorFile, FLOOR_CLIENT);
    const floorTimes: number[] = [];
    const nodeAndFloor = async (): Promise<number> => {
      const node = await timedNode();
      if (floorFile !== undefined) floorTimes.push(await timedFloorClient(floorFile, daemon.port, sleeper.pid));
      return node;
    };
    // One untimed run of each first, so none pays for a cold file cache.
    await timedPidstat(daemon.port, sleeper.pid, spec.pidstatArgs);
    await nodeAndFloor();
    floorTimes.length = 0;
    const runs = await alternate(() => timedPidstat(daemon.port, sleeper.pid, spec.pidstatArgs), nodeAndFloor, START_RUNS);
    const ours = median(runs.a);
    const node = median(runs.b);
    const rows: Row[] = [
      {
        figure: spec.figure,
        ours: ms(ours),
        reference: `${ms(node)} \`node -e 0\``,
        ratio: ours / node,
        goal: spec.goal === undefined ? 'reported' : `<= ${spec.goal.toFixed(2)} x \`node -e 0\``,
        met: spec.goal === undefined ? 'n/a' : metOrNot(ours / node <= spec.goal),
      },
    ];
    if (floor !== undefined) {
      const least = median(floorTimes);
      rows.push(
        { figure: floor, ours: ms(least), reference: `${ms(node)} \`node -e 0\``, ratio: least / node, goal: 'reported', met: 'n/a' },
        {
          figure: `pidstat start-to-answer over the 3-line client (medians of ${START_RUNS})`,
          ours: ms(ours),
          reference: `${ms(least)} 3-line client`,
          ratio: ours / least,
          goal: '<= 1.05 x the 3-line client',
          met: metOrNot(ours / least <= 1.05),
        },
      );
    }
    return rows;
  } finally {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    await sleeper.stop();
    await daemon.stop();
  }
}

/**
 * Start-up to an answer from the daemon: --no-local, so the request carries
 * a fresh cookie. No Node program that opens a socket meets the goal of
 * 1.0: the floor client's row says how far from it Node itself is.
 */
export const startToAnswer = (): Promise<Row[]> =>
  startFigure(
    { figure: `pidstat start-to-answer, daemon-answered with a cookie (median of ${START_RUNS})`, daemonArgs: [], pidstatArgs: [], goal: 1.0 },
    `the least a Node client can do: 3 lines of dgram, no cookie, no checks (median of ${START_RUNS})`,
  );

/** The same with `--key-file` on both sides: node:crypto loaded, the request signed, the reply verified. */
export async function keyedStartToAnswer(): Promise<Row[]> {
  const key = writeKeyFile();
  try {
    return await startFigure({
      figure: `pidstat start-to-answer with a key file (median of ${START_RUNS})`,
      daemonArgs: ['--key-file', key.file],
      pidstatArgs: ['--key-file', key.file],
      goal: undefined,
    });
  } finally {
    key.remove();
  }
}

/** `n` sleeps started by one shell (fast), each reported by pid; each killed by its pid, once. */
async function startSleepers(n: number): Promise<{ pids: number[]; kill(pid: number): void; stop(): Promise<void> }> {
  const script = `i=0; while [ $i -lt ${n} ]; do sleep 600 >/dev/null 2>&1 & echo $!; i=$((i+1)); done; wait`;
  const shell = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  shell.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  const pids = () => out.split('\n').filter((line) => /^\d+$/.test(line)).map(Number);
  const killed = new Set<number>();
  const kill = (pid: number) => {
    if (!killed.has(pid)) killPid(pid);
    killed.add(pid);
  };
  const stop = async () => {
    pids().forEach(kill);
    await stopChild(shell, 'SIGKILL', 2000);
  };
  try {
    await until(() => pids().length >= n || shell.exitCode !== null, 10_000, `${n} sleeps did not start`);
    if (pids().length < n) throw new Error(`the shell starting ${n} sleeps exited early`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pids: pids(), kill, stop };
}

/** A UDP socket that takes datagrams and never answers (so no ICMP error shortens the wait). */
async function silentSocket(address: string, port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(port, address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  socket.on('error', () => {});
  return socket;
}

interface FanoutHosts {
  port: number;
  daemons: Daemon[];
  silent: dgram.Socket;
  stop(): Promise<void>;
}

/** Daemons on 127.0.0.1-3 and a silent socket on 127.0.0.4, all on one port free on the four. */
async function startFanoutHosts(): Promise<FanoutHosts> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort('127.0.0.1');
    const daemons: Daemon[] = [];
    let silent: dgram.Socket | undefined;
    const stop = async () => {
      silent?.close();
      await Promise.all(daemons.map((daemon) => daemon.stop()));
    };
    try {
      silent = await silentSocket('127.0.0.4', port);
      for (const n of [1, 2, 3]) daemons.push(await startDaemon(['--bind', `127.0.0.${n}`, '--port', String(port), '--rate', '0']));
      return { port, daemons, silent, stop };
    } catch (err) {
      lastError = err;
      await stop();
    }
  }
  throw lastError;
}

const HOSTS = ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'];
const SILENT_HOST = '127.0.0.4';

/**
 * One `pidstat --no-local --timeout 1000 --tries 5` with 1000 targets: 250
 * pids (half live sleeps, half sleeps killed and reaped a moment ago) on
 * each of three daemons and one silent host. Wall time, and every line checked.
 */
export async function fanout(): Promise<Row[]> {
  const hosts = await startFanoutHosts();
  try {
    const sleepers = await startSleepers(250);
    try {
      const dead = new Set(sleepers.pids.filter((_, i) => i % 2 === 1));
      dead.forEach(sleepers.kill);
      await until(() => [...dead].every(isGone), 5000, 'killed sleeps were not reaped');

      const targets = sleepers.pids.flatMap((pid) => HOSTS.map((host) => ({ host, pid })));
      const expected = targets.map(({ host, pid }) => `${host}:${pid} ${host === SILENT_HOST ? 'no_reply' : dead.has(pid) ? 'dead' : 'exists'}`);
      const args = ['--no-local', '--try-timeout', '1000ms', '--tries', '5', '--port', String(hosts.port)];
      const result = await runBin('pidstat', [...args, ...targets.map(({ host, pid }) => `${host}:${pid}`)], { timeoutMs: 60_000 });

      const lines = result.stdout.split('\n').filter((line) => line !== '');
      const wrong = expected.filter((line, i) => lines[i] !== line).length + Math.max(0, lines.length - expected.length);
      if (wrong > 0) {
        const firstWrong = expected.findIndex((line, i) => lines[i] !== line);
        console.log(`  fan-out: ${wrong} wrong lines; first: expected "${expected[firstWrong]}", got "${lines[firstWrong]}" (exit ${result.code})`);
      }
      const seconds = result.ms / 1000;
      return [
        {
          figure: 'fan-out: 1000 targets, 3 daemons + 1 silent host, wall',
          ours: `${seconds.toFixed(2)} s`,
          reference: '5.0 s (silent host budget: 5 tries x 1000 ms)',
          ratio: seconds / 5,
          goal: '<= 5.3 s',
          met: metOrNot(seconds <= 5.3),
        },
        {
          figure: 'fan-out: lines right',
          ours: `${expected.length - wrong}/${expected.length}`,
          reference: `${expected.length} (every target)`,
          ratio: (expected.length - wrong) / expected.length,
          goal: 'every line right',
          met: metOrNot(wrong === 0 && result.code === 2),
        },
      ];
    } finally {
      await sleepers.stop();
    }
  } finally {
    await hosts.stop();
  }
}

/**
 * 100 000 targets in one queryMany of one client against one daemon with
 * its default settings (the test asks about 20 000, test/attacks/robust.test.ts):
 * every answer right, and the client's peak RSS against the goal's bound.
 */
export async function manyTargets(): Promise<Row[]> {
  const COUNT = 100_000;
  const RSS_BOUND_MB = 400;
  const daemon = await startDaemon(['--bind', '127.0.0.1']);
  try {
    const { result, report } = await askManyTargets(daemon.port, COUNT, 120_000);
    if (report === undefined) throw new Error(`the client failed: exit ${result.code}: ${result.stderr.slice(0, 300)}`);
    const rssMb = report.maxRssKb / 1024;
    const right = report.count - report.wrongCount - report.unstable;
    return [
      {
        figure: `many targets: ${COUNT} in one call, answers right (of those with a truth)`,
        ours: `${right}/${report.count - report.unstable} in ${(report.ms / 1000).toFixed(1)} s`,
        reference: `${report.count - report.unstable} (${report.unstable} pids came or went meanwhile)`,
        ratio: right / (report.count - report.unstable),
        goal: 'all',
        met: metOrNot(report.count === COUNT && report.wrongCount === 0),
      },
      {
        figure: `many targets: the client's peak RSS for ${COUNT}`,
        ours: `${rssMb.toFixed(1)} MB`,
        reference: `${RSS_BOUND_MB} MB (goal bound)`,
        ratio: rssMb / RSS_BOUND_MB,
        goal: `< ${RSS_BOUND_MB} MB`,
        met: metOrNot(rssMb < RSS_BOUND_MB),
      },
    ];
  } finally {
    await daemon.stop();
  }
}
