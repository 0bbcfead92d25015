import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import { ask, BIN, binEnv, freePort, isRunning, run, runBin, sleep, startDaemon, startSleeper, waitFor } from '../support/helpers.js';
import { commandRuns } from '../support/jobs.js';
import { descendantsOf, listeningTcp, pidIn, pidsWithArgs, runningChildrenOf, signal, stopDetached } from '../support/detached.js';

/**
 * Signals to pidstatd and pidwatch (pidstatd(8), pidwatch(1)): SIGUSR1
 * logs the daemon's counters and never opens Node's inspector, SIGHUP never
 * stops the daemon, SIGTERM stops a supervisor for good even while it waits
 * to restart its server, and pidwatch passes SIGUSR1 and SIGUSR2 on to its
 * command. Every process started here is stopped here by its pid.
 */

const scratch = mkdtempSync(join(tmpdir(), 'pidstatd-signals-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let count = 0;
function scratchFile(name: string): string {
  return join(scratch, `${++count}-${name}`);
}

/** `pidstatd` detached on 127.0.0.1 with a pidfile, stopped after the test: its supervisor and server pids. */
async function detach(t: TestContext): Promise<{ port: number; pidfile: string; supervisor: number; server: number }> {
  const port = await freePort();
  const pidfile = scratchFile('pidstatd.pid');
  let supervisor = 0;
  t.after(() => stopDetached(pidfile, supervisor));
  const result = await runBin('pidstatd', ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile], { timeoutMs: 10_000 });
  assert.equal(result.code, 0, `started: ${result.stderr}`);
  supervisor = pidIn(pidfile)!;
  const children = runningChildrenOf(supervisor);
  assert.equal(children.length, 1, `one server: ${children.join(' ')}`);
  return { port, pidfile, supervisor, server: children[0]! };
}

describe('SIGUSR1', () => {
  test('--foreground: logs one line with every counter, opens no listening socket, serves on', { timeout: 20_000 }, async (t) => {
    const daemon = await startDaemon(['--bind', '127.0.0.1']);
    t.after(() => daemon.stop());
    assert.equal(await ask(daemon.port, 'PIDR 1 u 3'), 'EXIS 1 1 u');
    const before = listeningTcp(daemon.pid);
    process.kill(daemon.pid, 'SIGUSR1');
    assert.ok(await waitFor(() => /counters: /.test(daemon.log()), 2000), `the counters are logged: ${daemon.log()}`);
    // The inspector, were it opened, listens within a few milliseconds of the signal.
    await sleep(300);
    assert.deepEqual(listeningTcp(daemon.pid), before, 'no new listening socket (Node\'s inspector)');
    assert.doesNotMatch(daemon.log(), /Debugger listening|inspector/i);
    const line = /^pidstatd: counters: (.*)$/m.exec(daemon.log())![1]!;
    for (const name of ['received 1', 'answered 1', 'malformed 0', 'denied 0', 'limited 0']) assert.ok(line.includes(name), `${name} in ${line}`);
    assert.equal(await ask(daemon.port, 'PIDR 1 u2 3'), 'EXIS 1 1 u2', 'serves on');
    assert.equal(await daemon.stop(), 0);
  });

  test('detached: neither the supervisor nor its server opens a listening socket; both live on and it answers', { timeout: 20_000 }, async (t) => {
    const { port, supervisor, server } = await detach(t);
    const before = [listeningTcp(supervisor), listeningTcp(server)];
    signal(supervisor, 'SIGUSR1');
    signal(server, 'SIGUSR1');
    await sleep(300);
    assert.deepEqual([listeningTcp(supervisor), listeningTcp(server)], before, 'no new listening socket');
    assert.ok(isRunning(supervisor) && isRunning(server), 'both live on');
    assert.deepEqual(runningChildrenOf(supervisor), [server], 'the same server');
    assert.equal(await ask(port, 'PIDR 1 d 3'), 'EXIS 1 1 d');
  });

  test('pidstat ignores it: it neither dies nor opens the inspector, and answers as it would have', { timeout: 20_000 }, async (t) => {
    // A port that swallows requests: pidstat asks for --timeout x --tries, 900 ms.
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    t.after(() => silent.close());
    const port = silent.address().port;
    // Its first request shows it has started: the listener start.ts installs first thing is there.
    const asked = new Promise<void>((resolve) => silent.once('message', () => resolve()));
    const asking = run(process.execPath, [BIN.pidstat, '--no-local', '--port', String(port), '--try-timeout', '300ms', '--tries', '3', '127.0.0.1', '1'], { env: binEnv(), timeoutMs: 10_000 });
    assert.ok(await waitFor(() => pidsOf(BIN.pidstat).length === 1, 2000), 'pidstat runs');
    const [pid] = pidsOf(BIN.pidstat);
    await asked;
    const before = listeningTcp(pid!);
    signal(pid!, 'SIGUSR1');
    await sleep(200);
    const opened = listeningTcp(pid!).filter((inode) => !before.includes(inode));
    const result = await asking;
    assert.deepEqual(opened, [], 'no new listening socket (Node\'s inspector)');
    assert.deepEqual({ code: result.code, signal: result.signal }, { code: 2, signal: null }, `no_reply, exit 2: ${result.stderr}`);
    assert.doesNotMatch(result.stderr, /Debugger listening/);
    assert.match(result.stdout, /no_reply/);
  });
});

/** The running processes of this test runner whose argv names `script`. */
function pidsOf(script: string): number[] {
  return descendantsOf(process.pid).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').includes(script);
    } catch {
      return false;
    }
  });
}

describe('SIGHUP never stops the daemon', () => {
  test('--foreground: it says there is no key file to re-read, answers on, pidfile in place', { timeout: 20_000 }, async (t) => {
    const pidfile = scratchFile('hup.pid');
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--pidfile', pidfile]);
    t.after(() => daemon.stop());
    assert.ok(await waitFor(() => pidIn(pidfile) === daemon.pid, 2000), 'pidfile written');
    process.kill(daemon.pid, 'SIGHUP');
    assert.ok(await waitFor(() => /SIGHUP: no key file to re-read/.test(daemon.log()), 2000), daemon.log());
    assert.equal(await ask(daemon.port, 'PIDR 1 h 3'), 'EXIS 1 1 h');
    assert.equal(pidIn(pidfile), daemon.pid, 'the pidfile is in place');
    assert.equal(await daemon.stop(), 0);
  });

  test('detached: the supervisor passes it on; the same server answers on, pidfile in place', { timeout: 20_000 }, async (t) => {
    const { port, pidfile, supervisor, server } = await detach(t);
    signal(supervisor, 'SIGHUP');
    await sleep(300);
    assert.ok(isRunning(supervisor), 'the supervisor lives on');
    assert.deepEqual(runningChildrenOf(supervisor), [server], 'the same server, not a restarted one');
    assert.equal(await ask(port, 'PIDR 1 h 3'), 'EXIS 1 1 h');
    assert.equal(pidIn(pidfile), supervisor, 'the pidfile is in place');
  });
});

describe('SIGTERM to a supervisor waiting to restart its server', () => {
  test('stops it for good: no new server, no process of that run left, the pidfile removed', { timeout: 60_000 }, async (t) => {
    const { port, pidfile, supervisor, server } = await detach(t);
    // The first restart comes 500 ms after the supervisor has reaped the
    // server (its /proc entry gone, zombie included), each next one twice as
    // late: SIGTERM goes the moment no server is seen to run after the kill.
    // Should a busy machine let the restart come first, the new server is
    // killed in turn, and the next, longer, delay is the one signalled in.
    let victim = server;
    let delayMs = 500;
    let sent = false;
    for (let attempt = 1; ; attempt++) {
      signal(victim, 'SIGKILL');
      assert.ok(await waitFor(() => !existsSync(`/proc/${victim}`), 10_000), 'the server is gone and reaped');
      const running = runningChildrenOf(supervisor);
      if (running.length === 0) {
        signal(supervisor, 'SIGTERM');
        sent = true;
        break;
      }
      t.diagnostic(`server ${running.join(' ')} restarted before SIGTERM could be sent in the ${delayMs} ms delay`);
      if (attempt === 4) break;
      victim = running[0]!;
      delayMs *= 2;
    }
    assert.ok(sent, 'no server runs: the supervisor waits to restart one (the restart always came first)');
    assert.ok(await waitFor(() => !isRunning(supervisor), 10_000), 'the supervisor ends');
    // Past the restart delay: nothing may have started meanwhile.
    await sleep(delayMs + 300);
    const left = [...runningChildrenOf(supervisor), ...pidsWithArgs('--pidfile', pidfile)];
    assert.deepEqual(left, [], `no process of that run: ${left.join(' ')}`);
    assert.equal(existsSync(pidfile), false, 'the pidfile is removed');
    assert.equal(await ask(port, 'PIDR 1 t 3', { waitMs: 300 }), undefined, 'nothing answers');
  });
});

describe('pidwatch passes SIGUSR1 and SIGUSR2 on to its command', () => {
  test('the command\'s traps run; pidwatch and the command live on', { timeout: 20_000 }, async (t) => {
    const sleeper = startSleeper();
    t.after(() => sleeper.stop());
    const ready = scratchFile('ready');
    const got = scratchFile('got');
    const job = `trap 'echo USR1 >> ${got}' USR1; trap 'echo USR2 >> ${got}' USR2; echo > ${ready}; while :; do sleep 0.1; done`;
    const watch = runBin('pidwatch', ['--pid', String(sleeper.pid), job], { timeoutMs: 15_000 });
    assert.ok(await waitFor(() => existsSync(ready), 5000), 'the command started');
    // pidwatch runs its command in its own process: the one running the job's loop.
    const [pidwatch] = descendantsOf(process.pid).filter((pid) => commandRuns(pid) && readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(ready));
    assert.ok(pidwatch !== undefined, 'pidwatch runs');
    const before = listeningTcp(pidwatch);
    signal(pidwatch, 'SIGUSR1');
    assert.ok(await waitFor(() => existsSync(got) && readFileSync(got, 'latin1') === 'USR1\n', 2000), 'the command got SIGUSR1');
    signal(pidwatch, 'SIGUSR2');
    assert.ok(await waitFor(() => readFileSync(got, 'latin1') === 'USR1\nUSR2\n', 2000), `the command got SIGUSR2: ${JSON.stringify(readFileSync(got, 'latin1'))}`);
    assert.deepEqual(listeningTcp(pidwatch), before, 'pidwatch opened no listening socket');
    assert.ok(isRunning(pidwatch), 'pidwatch lives on');
    signal(pidwatch, 'SIGTERM');
    const result = await watch;
    assert.equal(result.signal, 'SIGTERM', `ends as its command did: ${result.code} ${result.signal} ${result.stderr}`);
  });
});
