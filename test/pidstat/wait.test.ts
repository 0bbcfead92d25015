import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { deaths, deathSignal, PidEndedError, waitForExit } from '../../src/index.js';
import { BIN, binCommand, binEnv, deadPid, freePort, run, runBin, sleep, startDaemon, startSleeper, waitFor, watchSetUp, type Daemon, type RunResult } from '../support/helpers.js';
import { PIDFD_WATCHES, pidfdsOf, pidnsUnavailable } from '../support/jobs.js';
import { descendantsOf, innerPid, runScriptInPidNamespace } from '../support/netns.js';
import { startPerlDaemon, type PerlDaemon } from '../support/perl-daemon.js';

/**
 * `pidstat wait` and the library's watch (pidstat(1), WAIT), with real
 * processes and real daemons on loopback: every death printed as it happens,
 * --any, already dead targets, -t (124), silence (2 only with --dead-after,
 * never 0), `unknown` never a death, a reused pid, IPC::Locker's daemon, the
 * JSON lines and usage errors. Every process a test starts is stopped by that
 * test, by its pid.
 */

let dir = '';
let daemon: Daemon;

before(async () => {
  dir = realpathSync(mkdtempSync(join(tmpdir(), 'pidstat-wait-')));
  daemon = await startDaemon();
});

after(async () => {
  await daemon?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function sleeperFor(t: TestContext): ReturnType<typeof startSleeper> {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  return sleeper;
}

/** A `pidstat` run watched while it runs: each stdout line with the ms since start it arrived at. */
interface Waiter {
  child: ChildProcess;
  lines: { text: string; ms: number }[];
  stderr(): string;
  /** Resolves with the exit once it ends. */
  exit: Promise<RunResult>;
  /** Whether it still runs. */
  running(): boolean;
}

function startWait(t: TestContext, args: readonly string[]): Waiter {
  const [command, full] = binCommand('pidstat', ['wait', ...args]);
  const began = performance.now();
  const child = spawn(command, full, { stdio: ['ignore', 'pipe', 'pipe'], env: binEnv() });
  const lines: Waiter['lines'] = [];
  let stdout = '';
  let partial = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop()!;
    for (const text of parts) lines.push({ text, ms: performance.now() - began });
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exit = new Promise<RunResult>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, ms: performance.now() - began })),
  );
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exit;
  });
  return { child, lines, stderr: () => stderr, exit, running: () => child.exitCode === null && child.signalCode === null };
}

function wait(args: readonly string[], timeoutMs = 20_000): Promise<RunResult> {
  return runBin('pidstat', ['wait', ...args], { timeoutMs });
}

function describeRun(r: RunResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''} after ${Math.round(r.ms)} ms; stdout: ${JSON.stringify(r.stdout)}; stderr: ${JSON.stringify(r.stderr)}`;
}

/** A daemon that answers every PIDR with UNKN (it cannot tell), its <host> echoed. */
async function startUnknownDaemon(t: TestContext): Promise<number> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (msg, from) => {
    const fields = msg.toString('latin1').split('\n')[0]!.trim().split(/\s+/);
    if (fields[0] !== 'PIDR' || fields[2] === undefined) return;
    socket.send(`UNKN ${fields[1]} na ${fields[2]}`, from.port, from.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => socket.close(() => resolve())));
  return socket.address().port;
}

describe('pidstat wait: deaths', () => {
  for (const where of ['local', 'daemon'] as const) {
    test(`every target's death is printed as it happens, exit 0 once all died (${where})`, async (t) => {
      const a = sleeperFor(t);
      const b = sleeperFor(t);
      const remote = where === 'daemon' ? ['--no-local', '--port', String(daemon.port)] : [];
      const w = startWait(t, ['--interval', '200ms', ...remote, `127.0.0.1:${a.pid}`, `127.0.0.1:${b.pid}`]);
      await sleep(1000);
      assert.ok(w.running(), `it returned while both targets lived: ${w.stderr()}`);
      await a.stop();
      // A liveness bound: the death is printed as it is learnt, while the other target lives.
      assert.ok(await waitFor(() => w.lines.length > 0, 10_000), `no line within 10 s of the first death: ${w.stderr()}`);
      assert.equal(w.lines[0]!.text, `127.0.0.1:${a.pid} dead`);
      await sleep(500);
      assert.ok(w.running(), 'it returned while a target lived');
      await b.stop();
      const r = await w.exit;
      assert.equal(r.code, 0, describeRun(r));
      assert.deepEqual(w.lines.map((l) => l.text), [`127.0.0.1:${a.pid} dead`, `127.0.0.1:${b.pid} dead`]);
    });
  }

  test('--any returns on the first death, the other target still alive', async (t) => {
    const a = sleeperFor(t);
    const b = sleeperFor(t);
    const w = startWait(t, ['--any', '--interval', '200ms', '--no-local', '--port', String(daemon.port), `127.0.0.1:${a.pid}`, `127.0.0.1:${b.pid}`]);
    await sleep(800);
    assert.ok(w.running(), `it returned while both targets lived: ${w.stderr()}`);
    await b.stop();
    const r = await Promise.race([w.exit, sleep(10_000).then(() => undefined)]);
    assert.ok(r !== undefined, '--any went on waiting after a death');
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${b.pid} dead\n`);
  });

  test('targets already dead return at once, locally and through the daemon', async () => {
    const gone = await deadPid();
    // With an interval of 60 s, a wait of one interval would show: past
    // the 20 s liveness bound (wait() ends it there).
    for (const args of [[`${gone}`], ['--no-local', '--port', String(daemon.port), `127.0.0.1:${gone}`]]) {
      const r = await wait(['--interval', '60s', ...args]);
      assert.equal(r.code, 0, describeRun(r));
      assert.match(r.stdout, new RegExp(`:${gone} dead\\n$`));
      assert.ok(r.ms < 20_000, describeRun(r));
    }
  });

  test('--json prints one line {host, pid, state, ms} per death; -s prints nothing', async (t) => {
    const gone = await deadPid();
    const a = sleeperFor(t);
    const w = startWait(t, ['--json', '--interval', '200ms', '--no-local', '--port', String(daemon.port), `127.0.0.1:${gone}`, `127.0.0.1:${a.pid}`]);
    assert.ok(await waitFor(() => w.lines.length === 1, 5000), w.stderr());
    await a.stop();
    const r = await w.exit;
    assert.equal(r.code, 0, describeRun(r));
    const lines = r.stdout.trimEnd().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(lines.length, 2, r.stdout);
    assert.deepEqual(lines.map((l) => [l['host'], l['pid'], l['state']]), [['127.0.0.1', gone, 'dead'], ['127.0.0.1', a.pid, 'dead']]);
    for (const l of lines) {
      assert.deepEqual(Object.keys(l).sort(), ['host', 'ms', 'pid', 'state']);
      assert.equal(typeof l['ms'], 'number');
    }
    const silent = await wait(['-s', `${await deadPid()}`]);
    assert.equal(silent.code, 0, describeRun(silent));
    assert.equal(silent.stdout + silent.stderr, '');
  });

  test('many targets at once: every death printed, and not a word on stderr', async () => {
    // Pids above pid_max never exist.
    const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'latin1'));
    const targets = Array.from({ length: 40 }, (_, i) => `127.0.0.1:${pidMax + 1 + i}`);
    const r = await wait(['--no-local', '--port', String(daemon.port), ...targets]);
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stderr, '');
    assert.deepEqual(r.stdout.trimEnd().split('\n').sort(), targets.map((t) => `${t} dead`).sort());
  });

  test('300 live targets with 128 descriptors: the watches share their sockets, and every death is printed', async (t) => {
    const sleepers = Array.from({ length: 300 }, () => sleeperFor(t));
    const [command, full] = binCommand('pidstat', ['wait', '-t', '15', '--interval', '200ms', '--no-local', '--port', String(daemon.port), ...sleepers.map((s) => `127.0.0.1:${s.pid}`)]);
    // The limit is set by the shell, and the bin run by it from its own arguments.
    const limited = run('/bin/sh', ['-c', 'ulimit -n 128 && exec "$@"', 'sh', command, ...full], { env: binEnv(), timeoutMs: 25_000 });
    await sleep(1500);
    await Promise.all(sleepers.map((s) => s.stop()));
    const r = await limited;
    assert.equal(r.code, 0, describeRun(r));
    // No socket or descriptor error. On a busy machine an answer may come later than its
    // 200 ms interval, and the silence is said, then the answer: those lines only.
    const others = r.stderr.split('\n').filter((line) => line !== '' && !/^pidstat: 127\.0\.0\.1 (is not answering \(.*\): still waiting|answers)$/.test(line));
    assert.deepEqual(others, [], describeRun(r));
    assert.deepEqual(r.stdout.trimEnd().split('\n').sort(), sleepers.map((s) => `127.0.0.1:${s.pid} dead`).sort());
  });

  test("IPC::Locker's daemon: the death is learned by polling", async (t) => {
    const perl: PerlDaemon = await startPerlDaemon();
    t.after(() => perl.stop());
    const a = sleeperFor(t);
    const w = startWait(t, ['--interval', '200ms', '--no-local', '--port', String(perl.port), `127.0.0.1:${a.pid}`]);
    await sleep(1000);
    assert.ok(w.running(), `it returned while the target lived: ${w.stderr()}`);
    await a.stop();
    const r = await Promise.race([w.exit, sleep(10_000).then(() => undefined)]);
    assert.ok(r !== undefined, 'no return within 10 s of the death');
    assert.equal(r.code, 0, describeRun(r));
    assert.equal(r.stdout, `127.0.0.1:${a.pid} dead\n`);
    assert.ok(perl.requests.some((line) => line.startsWith(`PIDR ${a.pid} `)), 'the stand-in was never asked');
  });
});

describe('pidstat wait: no death, no 0', () => {
  test('-t runs out: exit 124, nothing printed', async (t) => {
    const a = sleeperFor(t);
    const r = await wait(['-t', '1', '--interval', '200ms', `${a.pid}`]);
    assert.equal(r.code, 124, describeRun(r));
    assert.equal(r.stdout, '');
    // -t 1 from its own start, which Node's start-up comes before: 20 s a liveness bound.
    assert.ok(r.ms >= 900 && r.ms < 20_000, describeRun(r));
  });

  test('a daemon that stops answering, with --dead-after 1s: exit 2 and why', async (t) => {
    const own = await startDaemon();
    t.after(async () => {
      process.kill(own.pid, 'SIGCONT');
      await own.stop();
    });
    const a = sleeperFor(t);
    const w = startWait(t, ['--dead-after', '1s', '--interval', '200ms', '--no-local', '--port', String(own.port), `127.0.0.1:${a.pid}`]);
    await sleep(1500);
    assert.ok(w.running(), `it returned while the daemon answered: ${w.stderr()}`);
    process.kill(own.pid, 'SIGSTOP');
    const stopped = performance.now();
    const r = await Promise.race([w.exit, sleep(8000).then(() => undefined)]);
    assert.ok(r !== undefined, 'still waiting 8 s after the daemon fell silent, with --dead-after 1s');
    assert.equal(r.code, 2, describeRun(r));
    assert.equal(r.stdout, '', 'silence was printed as a death');
    assert.match(r.stderr, /no answer from 127\.0\.0\.1 .*--dead-after/);
    // --dead-after counts from the last answer, which came at most a renewal
    // (a third of it, 333 ms) before the stop: never sooner than 667 ms after it.
    assert.ok(performance.now() - stopped >= 600, `exit 2 ${Math.round(performance.now() - stopped)} ms after the daemon was stopped`);
  });

  test('a silent daemon without --dead-after: still waiting, and said once on stderr', async (t) => {
    const silent = await startPerlDaemon({ silent: true });
    t.after(() => silent.stop());
    const a = sleeperFor(t);
    const w = startWait(t, ['--interval', '200ms', '--no-local', '--port', String(silent.port), `127.0.0.1:${a.pid}`, `127.0.0.1:${process.pid}`]);
    assert.ok(await waitFor(() => /is not answering/.test(w.stderr()) || !w.running(), 20_000), `silence never said: ${w.stderr()}`);
    // Ten more questions unanswered (200 ms apart): said no second time.
    await sleep(2000);
    assert.ok(w.running(), `it returned on silence: ${w.stderr()}`);
    assert.equal(w.lines.length, 0);
    assert.equal(w.stderr().match(/127\.0\.0\.1 is not answering/g)?.length, 1, w.stderr());
    assert.match(w.stderr(), /still waiting/);
  });

  test('no daemon listening, with --dead-after 1s: one line says the host is silent and how long it is waited for, one that the wait gives up; exit 2', async () => {
    const port = await freePort();
    const r = await wait(['--dead-after', '1s', '--interval', '200ms', '--no-local', '--port', String(port), '127.0.0.1:1', '127.0.0.1:2']);
    assert.equal(r.code, 2, describeRun(r));
    assert.equal(r.stdout, '');
    const lines = r.stderr.split('\n').filter((line) => line !== '');
    assert.equal(lines[0], 'pidstat: 127.0.0.1 is not answering (no daemon listening): waiting up to 1 s of silence (--dead-after)', r.stderr);
    assert.match(lines[1] ?? '', /^pidstat: 127\.0\.0\.1:[12]: no answer from 127\.0\.0\.1 for 1 s \(--dead-after\): giving up$/, r.stderr);
    assert.equal(lines.length, 2, r.stderr);
  });

  test('`unknown` never counts as dead', async (t) => {
    const port = await startUnknownDaemon(t);
    const r = await wait(['-t', '2', '--interval', '200ms', '--no-local', '--port', String(port), `127.0.0.1:${await deadPid()}`]);
    assert.equal(r.code, 124, describeRun(r));
    assert.equal(r.stdout, '');
  });
});

describe('pidstat wait: usage', () => {
  const cases: [string, string[], RegExp][] = [
    ['no target', [], /no target/],
    ['-t 0', ['-t', '0', '1'], /-t must be/],
    ['-t words', ['-t', 'soon', '1'], /-t must be/],
    ['-t negative', ['-t', '-5', '1'], /./],
    ['--interval 0', ['--interval', '0ms', '1'], /--interval must be/],
    ['--dead-after words', ['--dead-after', 'never', '1'], /--dead-after must be/],
    ['a host without a pid', ['node17'], /no PID after it/],
    ['pid 0', ['0'], /not a pid/],
    ["pidstat's --tries", ['--tries', '3', '1'], /tries/],
  ];
  for (const [what, args, message] of cases) {
    test(`${what}: exit 64, one line`, async () => {
      const r = await wait(args);
      assert.equal(r.code, 64, describeRun(r));
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.equal(r.stdout, '');
    });
  }
});

/**
 * pid 1 of a fresh PID namespace: starts W and two `pidstat wait`s on it
 * (the local probe, and a daemon in the namespace), then kills and reaps W
 * and at once gives its pid to a new sleep through ns_last_pid.
 */
const REUSE_SCRIPT = `
node=$1; inspect=$2; pidstat=$3; pidstatd=$4; dir=$5
"$node" "$pidstatd" --foreground --port 0 --bind 127.0.0.1 --debug 2>"$dir/daemon.log" & d=$!
port=
while [ -z "$port" ]; do sleep 0.1; port=$(sed -n 's/.*listening on .*:\\([0-9]*\\)$/\\1/p' "$dir/daemon.log"); done
sleep 600 & w=$!
"$node" "$inspect" "$pidstat" wait -t 30 --interval 300ms "$w" > "$dir/local.out" & l=$!
"$node" "$inspect" "$pidstat" wait -t 30 --interval 300ms --no-local --port "$port" "127.0.0.1:$w" > "$dir/remote.out" & r=$!
echo "started $w $l"
read go
kill -KILL "$w"; wait "$w" 2>/dev/null
echo $((w - 1)) > /proc/sys/kernel/ns_last_pid
sleep 600 & reused=$!
echo "w $w reused $reused"
wait "$l"; echo "local $? $(cat "$dir/local.out")"
wait "$r"; echo "remote $? $(cat "$dir/remote.out")"
kill "$d"
`;

describe('pidstat wait: a pid reused by another process, in a PID namespace of our own', () => {
  const unavailable = pidnsUnavailable();
  if (unavailable) process.stdout.write(`pidstat wait: reuse test skipped: ${unavailable}\n`);

  test('counts as dead, locally and through the daemon', { skip: unavailable ?? false }, async (t) => {
    const scratch = mkdtempSync(join(dir, 'reuse-'));
    const [node, [inspect]] = binCommand('pidstat', []);
    const ns = runScriptInPidNamespace(t, REUSE_SCRIPT, [node, inspect!, BIN.pidstat, BIN.pidstatd, scratch], { env: binEnv(), cwd: scratch });
    const [, watched, local] = (await ns.line(/^started (\d+) (\d+)$/m, 20_000)).map(Number);
    // Both know W for W before its pid is reused: the local wait holds a
    // pidfd of it (where the bins have them), and the daemon keeps a
    // subscription of the other's, which names W's start token.
    if (PIDFD_WATCHES) {
      const here = () => descendantsOf(ns.initPid() ?? 0).find((p) => innerPid(p) === local);
      assert.ok(await waitFor(() => pidfdsOf(here() ?? 0) >= 1, 20_000), `the local wait holds no pidfd of W: ${ns.stderr()}`);
    }
    await watchSetUp({ log: () => readFileSync(join(scratch, 'daemon.log'), 'latin1') }, watched!);
    ns.say('go');
    const [, w, reused] = await ns.line(/^w (\d+) reused (\d+)$/m, 20_000);
    assert.equal(reused, w, `the new process got pid ${reused}, not W's ${w}: the reuse could not be made`);
    // Liveness bounds: each learns of the death at once, or at the latest at -t 30.
    const [, localCode, localOut] = await ns.line(/^local (\d+) (.*)$/m, 40_000);
    assert.equal(localCode, '0', `local: ${localOut}; ${ns.stderr()}`);
    assert.equal(localOut, `localhost:${w} dead`);
    const [, remoteCode, remoteOut] = await ns.line(/^remote (\d+) (.*)$/m, 40_000);
    assert.equal(remoteCode, '0', `through the daemon: ${remoteOut}; ${ns.stderr()}`);
    assert.equal(remoteOut, `127.0.0.1:${w} dead`);
  });
});

describe('the library: deaths(), waitForExit(), deathSignal()', () => {
  const through = () => ({ port: daemon.port, local: false, intervalMs: 200 });

  test('waitForExit resolves dead once the pid dies, and rejects with the reason on abort', async (t) => {
    const a = sleeperFor(t);
    const stop = new AbortController();
    const waiting = waitForExit({ host: '127.0.0.1', pid: a.pid }, { ...through(), signal: stop.signal });
    const early = await Promise.race([waiting, sleep(800).then(() => 'still waiting')]);
    assert.equal(early, 'still waiting');
    await a.stop();
    assert.equal(await waiting, 'dead');

    const b = sleeperFor(t);
    const gone = new Error('enough');
    const aborted = waitForExit({ host: '127.0.0.1', pid: b.pid }, { ...through(), signal: AbortSignal.abort(gone) });
    await assert.rejects(aborted, (err) => err === gone);
    const later = new AbortController();
    const abortedLater = waitForExit({ host: '127.0.0.1', pid: b.pid }, { ...through(), signal: later.signal });
    setTimeout(() => later.abort(gone), 300);
    await assert.rejects(abortedLater, (err) => err === gone);
  });

  test('deaths yields each end in the order they happen; silence is "silent" only with deadAfterMs', async (t) => {
    const a = sleeperFor(t);
    const b = sleeperFor(t);
    const gone = await deadPid();
    setTimeout(() => void b.stop().then(() => sleep(600)).then(() => a.stop()), 500);
    const seen: string[] = [];
    for await (const end of deaths([{ host: '127.0.0.1', pid: a.pid }, { host: '127.0.0.1', pid: b.pid }, { host: '127.0.0.1', pid: gone }, { host: '127.0.0.1', pid: gone }], through())) {
      seen.push(`${end.pid} ${end.state}`);
      assert.ok(end.ms >= 0);
    }
    assert.deepEqual(seen, [`${gone} dead`, `${b.pid} dead`, `${a.pid} dead`]);

    const silent = await startPerlDaemon({ silent: true });
    t.after(() => silent.stop());
    const c = sleeperFor(t);
    const state = await waitForExit({ host: '127.0.0.1', pid: c.pid }, { port: silent.port, local: false, intervalMs: 200, deadAfterMs: 1000 });
    assert.equal(state, 'silent');
  });

  test('deathSignal aborts with a PidEndedError when the pid dies', async (t) => {
    const a = sleeperFor(t);
    const stop = new AbortController();
    t.after(() => stop.abort());
    const signal = deathSignal({ host: '127.0.0.1', pid: a.pid }, { ...through(), signal: stop.signal });
    await sleep(600);
    assert.equal(signal.aborted, false);
    await a.stop();
    assert.ok(await waitFor(() => signal.aborted, 10_000), 'not aborted within 10 s of the death');
    assert.ok(signal.reason instanceof PidEndedError);
    assert.equal(signal.reason.end.state, 'dead');
    assert.equal(signal.reason.end.pid, a.pid);
  });
});
