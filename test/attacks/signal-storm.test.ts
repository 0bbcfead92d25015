import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readlinkSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { ask, BIN, binCommand, binEnv, catches, childrenOf, freePort, isRunning, run, sleep, startDaemon, waitFor } from '../support/helpers.js';
import {
  devLogUnavailable,
  listeningTcp,
  pidIn,
  python,
  runningChildrenOf,
  signal,
  startSyslogReceiver,
  stopDetached,
  withDevLog,
  type SyslogLine,
} from '../support/detached.js';

/**
 * SIGUSR1 and SIGHUP at the worst moments (pidstatd(8), SIGNALS): while a
 * server starts, before its listeners exist. SIGUSR1 that reaches Node's own
 * handler would open the inspector on port 9229 (a way in for every local
 * user of a root daemon); SIGHUP before a listener would end the server.
 *
 * Each signal is sent from the first moment it can no longer end the process
 * by its default action: SIGUSR1 once Node's own handler for it is in place
 * (its bit in SigCgt, /proc/PID/status: proc(5)), SIGHUP once our first line
 * of JavaScript has listened for it. Every process started here is stopped
 * here by its pid.
 */

const SIGHUP = 1;
const SIGUSR1 = 10;
const STORM_MS = 2000;

const py = python();
let noDevLog: string | undefined;
const scratch = mkdtempSync(join(tmpdir(), 'pidstatd-storm-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
before(async () => {
  noDevLog = await devLogUnavailable(py);
});
let count = 0;
function scratchDir(): string {
  return mkdtempSync(join(scratch, `${++count}-`));
}

/**
 * Whether server PID runs Node with its handler for SIGUSR1 in place: after
 * its exec (its environment says its role; a child forked but not yet exec'd
 * shows the supervisor's, and its handlers too, until it sets them back to
 * the default action).
 */
function serverInNode(pid: number): boolean {
  try {
    if (!readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes('PIDSTATD_ROLE=server')) return false;
  } catch {
    return false;
  }
  return catches(pid, SIGUSR1);
}

/** The listening TCP sockets each of `pids` holds, added to `seen` as "pid inode". */
function sampleListening(pids: Iterable<number>, seen: Set<string>): void {
  for (const pid of pids) for (const inode of listeningTcp(pid)) seen.add(`${pid} ${inode}`);
}

function show(lines: SyslogLine[]): string {
  return lines.map((line) => `${line.at.toFixed(3)} [${line.pid}] ${line.message}`).join('\n');
}

describe('a storm of SIGUSR1 and SIGHUP at a detached daemon, across a server restart', () => {
  test('never opens the inspector, kills no server; the supervisor holds both signals for a server until it answers', { timeout: 30_000 }, async (t) => {
    if (noDevLog !== undefined) return t.skip(noDevLog);
    const dir = scratchDir();
    const log = await startSyslogReceiver(py!, join(dir, 'log.sock'));
    t.after(() => log.stop());
    const port = await freePort();
    const pidfile = join(dir, 'pidstatd.pid');
    let supervisor = 0;
    const servers = new Set<number>();
    t.after(() => stopDetached(pidfile, supervisor, ...servers));
    const [command, args] = withDevLog(log.path, dir, ...binCommand('pidstatd', ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile]));
    const started = await run(command, args, { env: binEnv(), timeoutMs: 10_000 });
    assert.equal(started.code, 0, `started: ${started.stderr}`);
    supervisor = pidIn(pidfile)!;
    const [first] = runningChildrenOf(supervisor);
    assert.ok(first !== undefined, 'a server runs');
    servers.add(first);

    // Alternately SIGHUP and SIGUSR1 to the supervisor every few ms; besides,
    // SIGUSR1 straight to each server Node has started in (an administrator's
    // `pkill -USR1 pidstatd`), before our listener too. The first server is
    // killed early on, so that the next one starts in the storm.
    const listening = new Set<string>();
    let beforeOurs = 0;
    let sent = 0;
    const start = performance.now();
    let lastSample = 0;
    const toSupervisor = () => signal(supervisor, sent++ % 2 === 0 ? 'SIGHUP' : 'SIGUSR1');
    const elapsed = () => performance.now() - start;
    /** One round: a signal to the supervisor, SIGUSR1 to each server in Node; whether a new server is still before our first line. */
    const killed: number[] = [];
    const round = (): boolean => {
      toSupervisor();
      let starting = false;
      for (const pid of childrenOf(supervisor)) {
        servers.add(pid);
        if (!serverInNode(pid)) {
          starting ||= !killed.includes(pid) && pid !== first && isRunning(pid);
          continue;
        }
        if (!catches(pid, SIGHUP)) {
          beforeOurs++;
          starting = true;
        }
        signal(pid, 'SIGUSR1');
      }
      if (elapsed() - lastSample >= 20) {
        sampleListening([supervisor, ...servers], listening);
        lastSample = elapsed();
      }
      return starting;
    };
    while (elapsed() < 300) {
      round();
      await sleep(2);
    }
    // Synchronous until the next server has run our first line, a round a
    // millisecond (Atomics.wait sleeps without spinning), so that none of its
    // start is missed: it comes 0.5 s after the kill. On a loaded machine a
    // start can still slip between two rounds: then the new server is killed
    // too, up to ATTEMPTS servers, until the storm has reached one in Node
    // before our first line (each next start comes later: the delay grows).
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const ATTEMPTS = 4;
    let victim = first;
    for (let attempt = 0; attempt < ATTEMPTS && beforeOurs === 0; attempt++) {
      if (attempt > 0) {
        const next = runningChildrenOf(supervisor).find((pid) => !killed.includes(pid));
        if (next === undefined || !catches(next, SIGHUP)) break;
        victim = next;
      }
      signal(victim, 'SIGKILL');
      killed.push(victim);
      const until = elapsed() + STORM_MS + (attempt + 1) * 1000;
      while (elapsed() < until && (round() || [...servers].every((pid) => killed.includes(pid)))) Atomics.wait(pause, 0, 0, 1);
    }
    const end = elapsed() + 300;
    while (elapsed() < end) {
      round();
      await sleep(2);
    }
    await sleep(300);
    sampleListening([supervisor, ...servers], listening);
    t.diagnostic(`${sent} signals to the supervisor; ${beforeOurs} SIGUSR1 straight to a server before its first line of JavaScript; servers ${[...servers].join(' ')}`);

    assert.deepEqual([...listening], [], 'no process of the daemon listens on TCP (Node\'s inspector)');
    const lines = () => log.lines().filter((line) => line.pid === supervisor);
    assert.ok(await log.waitFor(() => lines().filter((line) => /^server pid [0-9]+ was killed by SIGKILL;/.test(line.message)).length === killed.length, 10_000), `the kills are logged:\n${show(log.lines())}`);
    const deaths = lines().filter((line) => /^server pid [0-9]+ /.test(line.message));
    assert.deepEqual(deaths.map((line) => line.message.split(' ').slice(0, 7).join(' ')), killed.map((pid) => `server pid ${pid} was killed by SIGKILL;`),
      `the servers that died are those killed by the test:\n${show(deaths)}`);
    assert.ok(!log.lines().some((line) => /killed by SIGHUP/.test(line.message)), 'no server killed by SIGHUP');
    assert.ok(beforeOurs > 0, 'the storm reached the new server in Node before our first line');
    const now = runningChildrenOf(supervisor);
    assert.equal(now.length, 1, `one server runs: ${now.join(' ')}`);
    const [second] = now;
    assert.ok(!killed.includes(second!), 'a new server');
    assert.deepEqual([...servers].sort(), [...killed, second!].sort(), 'no other server was started');
    assert.ok(lines().some((line) => /^SIG(HUP|USR1): no server runs now .*; passed on once it answers$/.test(line.message)), `a signal held while no server ran:\n${show(lines())}`);
    // Held while it started, passed on once it answered: the storm reached it then.
    assert.ok(await log.waitFor(() => log.lines().some((line) => line.pid === second && /^counters: /.test(line.message)), 10_000), `the new server logs its counters:\n${show(log.lines())}`);
    assert.ok(log.lines().some((line) => line.pid === second && /^SIGHUP: /.test(line.message)), 'the new server hears SIGHUP');
    assert.equal(await ask(port, 'PIDR 1 storm 3'), 'EXIS 1 1 storm', 'the daemon answers');
    assert.ok(isRunning(supervisor), 'the supervisor lives on');
  });
});

describe('a storm of SIGUSR1 and SIGHUP at a foreground daemon, right from its start', () => {
  test('never opens the inspector and never stops it; it answers after', { timeout: 45_000 }, async (t) => {
    // Run as a user runs it: the bin itself, through its first line.
    // Its stderr is a file, not a pipe: each SIGUSR1 that reaches Node's own
    // handler writes a line there, and while the loop below holds this
    // process, a pipe nobody reads would fill and stop the daemon in a write.
    const errFile = join(scratchDir(), 'stderr');
    const errFd = openSync(errFile, 'w');
    const child = spawn(BIN.pidstatd, ['--foreground', '--port', '0', '--bind', '127.0.0.1'], { env: binEnv(), stdio: ['ignore', 'ignore', errFd] });
    closeSync(errFd);
    const pid = child.pid!;
    const stderrText = (): string => readFileSync(errFile, 'utf8');
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, sig) => resolve({ code, signal: sig })));
    t.after(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    const start = performance.now();
    const listening = new Set<string>();

    // Until our first line of JavaScript: SIGUSR1 every millisecond from the
    // moment Node's own handler is in place (before, its default action
    // would end the process, which is no way in). Synchronous, so that no
    // millisecond of that window is missed.
    let beforeOurs = 0;
    const node = realpathSync(process.execPath);
    const inNode = () => {
      try {
        return readlinkSync(`/proc/${pid}/exe`) === node;
      } catch {
        return false;
      }
    };
    const pause = new Int32Array(new SharedArrayBuffer(4));
    while (!(inNode() && catches(pid, SIGHUP))) {
      // A liveness bound: a machine this busy may take seconds to start Node.
      assert.ok(isRunning(pid), 'the daemon died while it started (a synchronous loop: its stderr is read after)');
      assert.ok(performance.now() - start < 30_000, 'the daemon did not reach its first line within 30 s');
      if (inNode() && catches(pid, SIGUSR1)) {
        signal(pid, 'SIGUSR1');
        beforeOurs++;
      }
      Atomics.wait(pause, 0, 0, 1);
    }
    // Then both, alternately, every few ms: for STORM_MS at least, and on
    // until the daemon has said it listens and SIGUSR1 has reached our
    // listener (its counters line), however slowly it starts; 20 s at most.
    let sent = 0;
    let lastSample = 0;
    const said = () => {
      const stderr = stderrText();
      return /^pidstatd: listening on /m.test(stderr) && /^pidstatd: counters: /m.test(stderr);
    };
    while ((performance.now() - start < STORM_MS || !said()) && performance.now() - start < 20_000 && isRunning(pid)) {
      signal(pid, sent++ % 2 === 0 ? 'SIGHUP' : 'SIGUSR1');
      if (performance.now() - lastSample >= 20) {
        sampleListening([pid], listening);
        lastSample = performance.now();
      }
      await sleep(2);
    }
    await sleep(300);
    sampleListening([pid], listening);
    const stderr = stderrText();
    const failed = stderr.split('\n').filter((line) => /^Starting inspector on .* failed/.test(line)).length;
    t.diagnostic(`${beforeOurs} SIGUSR1 before our first line (${failed} inspector starts failed), then ${sent} SIGHUP and SIGUSR1`);

    assert.ok(beforeOurs > 0, 'the storm reached Node before our first line');
    assert.deepEqual([...listening], [], 'the daemon never listens on TCP (Node\'s inspector)');
    assert.doesNotMatch(stderr, /Debugger listening/);
    assert.ok(isRunning(pid), `the daemon lives on: ${stderr.slice(-2000)}`);
    const port = Number(/^pidstatd: listening on 127\.0\.0\.1:([0-9]+)$/m.exec(stderr)?.[1]);
    assert.ok(port > 0, `it listens: ${stderr.slice(0, 2000)}`);
    assert.equal(await ask(port, 'PIDR 1 fg 3'), 'EXIS 1 1 fg', 'the daemon answers');
    assert.match(stderr, /^pidstatd: counters: /m, 'SIGUSR1 reached our listener');
    child.kill('SIGTERM');
    assert.deepEqual(await exited, { code: 0, signal: null }, 'SIGTERM still stops it, with 0');
  });

  test('SIGHUP that comes while its code is read does not stop it (the listener is the first line that runs)', { timeout: 20_000 }, async (t) => {
    // Node loads this before the bin: it sends SIGHUP to its own process the
    // moment the daemon's bundle is read, before any of the daemon's code runs.
    const dir = scratchDir();
    const hook = join(dir, 'hangup-on-load.cjs');
    writeFileSync(hook, [
      "const fs = require('node:fs');",
      'const read = fs.readFileSync;',
      'let sent = false;',
      'fs.readFileSync = function (file, ...rest) {',
      "  if (!sent && typeof file === 'string' && file.endsWith('/bundle/pidstatd.cjs')) {",
      '    sent = true;',
      "    process.kill(process.pid, 'SIGHUP');",
      "    process.stderr.write('hook: SIGHUP sent\\n');",
      '  }',
      '  return read.call(this, file, ...rest);',
      '};',
      '',
    ].join('\n'));
    const daemon = await startDaemon(['--bind', '127.0.0.1'], { NODE_OPTIONS: `--require ${hook}` });
    t.after(() => daemon.stop());
    assert.match(daemon.log(), /^hook: SIGHUP sent$/m, 'the hook sent SIGHUP while the bundle was read');
    assert.equal(await ask(daemon.port, 'PIDR 1 h 3'), 'EXIS 1 1 h', 'it answers');
    assert.equal(await daemon.stop(), 0);
  });
});

describe('the stop line', () => {
  test('names every counter as the SIGUSR1 line does', { timeout: 20_000 }, async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1']);
    t.after(() => daemon.stop());
    assert.equal(await ask(daemon.port, 'PIDR 1 s 3'), 'EXIS 1 1 s');
    process.kill(daemon.pid, 'SIGUSR1');
    assert.ok(await waitFor(() => /^pidstatd: counters: /m.test(daemon.log()), 2000), daemon.log());
    assert.equal(await daemon.stop(), 0);
    const names = (line: string) => line.split(', ').map((pair) => pair.split(' ')[0]);
    const counters = /^pidstatd: counters: (.*)$/m.exec(daemon.log())![1]!;
    const stopped = /^pidstatd: stopped: (.*)$/m.exec(daemon.log())?.[1];
    assert.ok(stopped !== undefined, `a stop line: ${daemon.log()}`);
    assert.deepEqual(names(stopped), names(counters), `the same names: ${stopped} / ${counters}`);
    assert.match(stopped, /^received 1, answered 1, /);
  });
});

describe('a detached daemon where there is no /dev/log', () => {
  test('says once, on the terminal, that it has nowhere to log; with /dev/log, it does not', { timeout: 30_000 }, async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root (a mount namespace of its own)');
    const dir = scratchDir();
    const port = await freePort();
    const pidfile = join(dir, 'pidstatd.pid');
    t.after(() => stopDetached(pidfile));
    // /dev a tmpfs with the usual devices and no log, in a mount namespace of the daemon's own.
    const script = [
      'set -e',
      'old=$1; shift',
      'mkdir -p "$old"',
      'mount --rbind /dev "$old"',
      'mount -t tmpfs -o mode=755 tmpfs /dev',
      'for name in null zero full random urandom tty; do touch /dev/$name; mount --bind "$old/$name" /dev/$name; done',
      'umount -l "$old"',
      'exec "$@"',
    ].join('\n');
    const args = ['--mount', '--propagation', 'private', '/bin/sh', '-c', script, 'sh', join(dir, 'real-dev'), ...binCommand('pidstatd', []).flat(), '--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile];
    const result = await run('unshare', args, { env: binEnv(), timeoutMs: 10_000 });
    assert.equal(result.code, 0, `started: ${result.stderr}`);
    const lines = result.stderr.split('\n').filter((line) => line !== '');
    assert.deepEqual(lines.filter((line) => /nowhere to log/.test(line)), ['pidstatd: warning: there is no /dev/log here: the detached daemon has nowhere to log (--foreground logs to stderr)'], result.stderr);
    assert.match(lines.at(-1)!, /^pidstatd: listening on 127\.0\.0\.1:[0-9]+, detached as pid [0-9]+$/);
    assert.equal(await ask(port, 'PIDR 1 n 3'), 'EXIS 1 1 n', 'it answers');
    await stopDetached(pidfile);

    if (noDevLog !== undefined) return t.diagnostic(`not checked with a /dev/log: ${noDevLog}`);
    const log = await startSyslogReceiver(py!, join(dir, 'log.sock'));
    t.after(() => log.stop());
    const other = join(dir, 'other.pid');
    t.after(() => stopDetached(other));
    const [command, withLog] = withDevLog(log.path, dir, ...binCommand('pidstatd', ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', other]));
    const logged = await run(command, withLog, { env: binEnv(), timeoutMs: 10_000 });
    assert.equal(logged.code, 0, `started: ${logged.stderr}`);
    assert.doesNotMatch(logged.stderr, /nowhere to log|log is lost/);
  });
});

describe('SIGUSR1 at pidstat and pidwatch from their start', () => {
  /**
   * Runs a bin through its first line, sending SIGUSR1 every millisecond to
   * each of its processes (and theirs) that runs Node, from the moment Node's
   * own handler is in place, until `ms` have passed. What it wrote on stderr
   * and the listening TCP sockets seen.
   */
  async function storm(file: string, args: string[], ms: number): Promise<{ stderr: string; listening: string[]; hit: number }> {
    const child = spawn(file, args, { env: binEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    const node = realpathSync(process.execPath);
    const known = new Set<number>([child.pid!]);
    const listening = new Set<string>();
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const start = performance.now();
    let hit = 0;
    for (let round = 0; performance.now() - start < ms; round++) {
      for (const pid of [...known]) for (const kid of childrenOf(pid)) known.add(kid);
      for (const pid of known) {
        let exe = '';
        try {
          exe = readlinkSync(`/proc/${pid}/exe`);
        } catch {
          continue;
        }
        if (exe !== node || !catches(pid, SIGUSR1)) continue;
        signal(pid, 'SIGUSR1');
        hit++;
      }
      if (round % 20 === 0) sampleListening(known, listening);
      Atomics.wait(pause, 0, 0, 1);
    }
    sampleListening(known, listening);
    for (const pid of known) signal(pid, 'SIGKILL');
    await exited;
    return { stderr, listening: [...listening], hit };
  }

  /**
   * Storms until a SIGUSR1 reached Node before the command's first line (Node
   * then says its inspector failed to start), at most ATTEMPTS runs: on a
   * loaded machine the poll may miss that short window once. Every run must
   * open no inspector; at least one must have hit the window.
   */
  const ATTEMPTS = 8;
  async function stormUntilHit(t: TestContext, what: string, file: string, args: () => Promise<string[]>): Promise<void> {
    let failed = 0;
    for (let attempt = 1; attempt <= ATTEMPTS && failed === 0; attempt++) {
      const { stderr, listening, hit } = await storm(file, await args(), 800);
      failed = stderr.split('\n').filter((line) => /^Starting inspector on .* failed/.test(line)).length;
      t.diagnostic(`run ${attempt}: ${hit} SIGUSR1 sent, ${failed} inspector starts failed`);
      assert.deepEqual(listening, [], 'no listening TCP socket (Node\'s inspector)');
      assert.doesNotMatch(stderr, /Debugger listening/);
    }
    assert.ok(failed > 0, `in ${ATTEMPTS} runs the storm never reached Node before ${what}'s first line`);
  }

  test('pidstat never opens the inspector', { timeout: 60_000 }, async (t) => {
    await stormUntilHit(t, 'pidstat', BIN.pidstat, async () => ['--no-local', '--port', String(await freePort()), '--tries', '1', '--try-timeout', '1500ms', `127.0.0.1:${process.pid}`]);
  });

  test('pidwatch\'s launcher and its watcher never open the inspector', { timeout: 60_000 }, async (t) => {
    await stormUntilHit(t, 'pidwatch', BIN.pidwatch, async () => ['--pid', String(process.pid), '--interval', '100ms', 'sleep', '1']);
  });
});
