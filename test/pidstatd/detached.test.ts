import assert from 'node:assert/strict';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { describe, test, type TestContext } from 'node:test';
import { descendantsOf, readPid, runningChildrenOf, signal, spawnProc, stopDetached, stopPids, scratchFiles } from '../support/detached.js';
import { ask, binCommand, freePort, isRunning, runBin, waitFor } from '../support/helpers.js';

/**
 * A detached pidstatd (pidstatd(8)): the command that starts it exits 0
 * only once the daemon answers, or 1 saying how its supervisor ended; the
 * supervisor and its server in their own session, with no terminal, in /
 * and with stdio on /dev/null; a server that dies restarted, each restart
 * counted in --metrics-file; SIGTERM to the supervisor stopping it all.
 * These tests run once, through the default socket I/O: detaching and
 * supervising do not depend on how the socket is read (dgram-io.test.ts
 * runs daemon-sockets' again through Node's dgram, not these). Real
 * processes and real UDP on loopback; every process started here is
 * stopped here by its pid.
 */

/** A path in this file's scratch folder that nothing uses yet. */
const scratchFile = scratchFiles('pidstatd-detached-');

// ---------------------------------------------------------------------------
// Processes, by pid, through /proc.

/** The fields of /proc/PID/stat, indexed as proc(5) numbers them (1 = pid, 2 = comm, 6 = session, 7 = tty_nr). */
function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  const close = stat.lastIndexOf(')');
  const rest = stat.slice(close + 2).trim().split(/\s+/);
  return ['', String(pid), stat.slice(stat.indexOf('(') + 1, close), ...rest];
}

/** `pidstatd` detached on 127.0.0.1:port with a pidfile; stopped after the test. */
async function detach(t: TestContext, port: number, extra: string[] = []) {
  const pidfile = scratchFile('pidstatd.pid');
  t.after(() => stopDetached(pidfile));
  const result = await runBin('pidstatd', ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile, ...extra], { timeoutMs: 10_000 });
  return { result, pidfile };
}

/** Asks every 100 ms until a reply comes or `timeoutMs` has passed since `since`. */
async function answersBy(port: number, payload: string, since: number, timeoutMs: number): Promise<string | undefined> {
  while (performance.now() - since < timeoutMs) {
    const reply = await ask(port, payload, { waitMs: 100 });
    if (reply !== undefined) return reply;
  }
  return undefined;
}

// ---------------------------------------------------------------------------

describe('detached pidstatd', () => {
  test('exits 0 only once it answers; the supervisor in the pidfile has its own session, no terminal, cwd / and stdio on /dev/null', { timeout: 20_000 }, async (t) => {
    const port = await freePort();
    const { result, pidfile } = await detach(t, port);
    // Right after the command returns, with no retry: the daemon must already answer.
    const reply = await ask(port, 'PIDR 1 x 3', { waitMs: 5000 });
    assert.equal(result.code, 0, `exit status; stderr: ${result.stderr}`);
    assert.equal(reply, 'EXIS 1 1 x', 'answered as soon as the command returned');
    assert.equal(result.stdout, '', 'nothing on stdout');

    const supervisor = readPid(pidfile);
    assert.ok(isRunning(supervisor), `the pid in the pidfile (${supervisor}) is running`);
    const server = runningChildrenOf(supervisor);
    assert.equal(server.length, 1, `the supervisor runs one server child: ${server.join(' ')}`);
    for (const [role, pid] of [['supervisor', supervisor], ['server', server[0]!]] as const) {
      const stat = statFields(pid);
      assert.equal(stat[6], String(supervisor), `${role} ${pid} is in the supervisor's own session (stat field 6)`);
      assert.equal(stat[7], '0', `${role} ${pid} has no controlling terminal (stat field 7 tty_nr)`);
      assert.equal(readlinkSync(`/proc/${pid}/cwd`), '/', `${role} ${pid} works in /`);
      for (const fd of [0, 1, 2]) {
        assert.equal(readlinkSync(`/proc/${pid}/fd/${fd}`), '/dev/null', `${role} ${pid} fd ${fd}`);
      }
    }
  });

  // How soon is the restart pace's (test/unit/restarts.test.ts) and a bench
  // row's; here the bounds are liveness bounds, for a busy machine.
  test('a server that dies is restarted, again and again, and the counters say so where no log is kept', { timeout: 60_000 }, async (t) => {
    const port = await freePort();
    const metrics = scratchFile('restarts.prom');
    const { result, pidfile } = await detach(t, port, ['--metrics-file', metrics]);
    assert.equal(result.code, 0, result.stderr);
    const supervisor = readPid(pidfile);
    for (const round of [1, 2]) {
      const [old, ...more] = runningChildrenOf(supervisor);
      assert.ok(old !== undefined && more.length === 0, `round ${round}: one server child, not ${[old, ...more].join(' ')}`);
      signal(old, 'SIGKILL');
      const killed = performance.now();
      const replaced = await waitFor(() => {
        const now = runningChildrenOf(supervisor);
        return now.length === 1 && now[0] !== old;
      }, 20_000);
      const reply = await answersBy(port, `PIDR 1 r${round} 3`, killed, 20_000);
      const ms = Math.round(performance.now() - killed);
      t.diagnostic(`round ${round}: answering again ${ms} ms after the kill`);
      assert.ok(replaced, `round ${round}: a new server child (children now: ${runningChildrenOf(supervisor).join(' ') || 'none'})`);
      assert.equal(reply, `EXIS 1 1 r${round}`, `round ${round}: the port answers again (after ${ms} ms)`);
      assert.ok(isRunning(supervisor), 'the supervisor lives on');
      assert.equal(readPid(pidfile), supervisor, 'the pidfile still names the supervisor');
      // Each server writes the file as it starts: the restarts before it, the way it counts them.
      const said = new RegExp(`^pidstatd_restarts_total ${round}$`, 'm');
      assert.ok(await waitFor(() => said.test(readFileSync(metrics, 'utf8')), 5000), `round ${round}: ${readFileSync(metrics, 'utf8').split('\n').filter((line) => line.includes('restarts')).join(' ')}`);
    }
  });

  test('a start whose supervisor is killed at once exits 1 saying how it ended, with no stack trace', { timeout: 20_000 }, async (t) => {
    const port = await freePort();
    const [command, args] = binCommand('pidstatd', ['--port', String(port), '--bind', '127.0.0.1']);
    const started = spawnProc(command, args);
    t.after(() => started.stop('SIGKILL'));
    // Its first child is the supervisor, killed before it can say it answers.
    let supervisor: number | undefined;
    const deadline = performance.now() + 10_000;
    while (supervisor === undefined && performance.now() < deadline && !started.isDone()) {
      supervisor = runningChildrenOf(started.pid)[0];
      if (supervisor === undefined) await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(supervisor !== undefined, `no supervisor seen: ${started.stderr()}`);
    t.after(() => stopPids(descendantsOf(supervisor!)));
    signal(supervisor, 'SIGKILL');
    const exit = await started.exited;
    if (/listening on/.test(started.stderr())) return t.skip('the supervisor answered before it was killed');
    assert.equal(exit.code, 1, started.stderr());
    assert.match(started.stderr(), /^pidstatd: the daemon exited at start \(SIGKILL\)\n$/);
  });

  test('SIGTERM to the supervisor ends it and its server, removes the pidfile and frees the port', { timeout: 20_000 }, async (t) => {
    const port = await freePort();
    const { result, pidfile } = await detach(t, port);
    assert.equal(result.code, 0, result.stderr);
    const supervisor = readPid(pidfile);
    const family = [supervisor, ...descendantsOf(supervisor)];
    assert.ok(family.length >= 2, `a supervisor and its server: ${family.join(' ')}`);
    signal(supervisor, 'SIGTERM');
    const gone = await waitFor(() => family.every((pid) => !isRunning(pid)), 3000);
    assert.ok(gone, `still running 3 s after SIGTERM: ${family.filter(isRunning).join(' ')}`);
    assert.ok(await waitFor(() => !existsSync(pidfile), 1000), 'the pidfile is removed');
    assert.equal(await ask(port, 'PIDR 1 x 3', { waitMs: 500 }), undefined, 'the port no longer answers');
    // The port is really free again: a new daemon can have it.
    const again = await detach(t, port);
    assert.equal(again.result.code, 0, `a new daemon gets the port: ${again.result.stderr}`);
  });
});
