import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { ask, binCommand, binEnv, freePort, isRunning, run, sleep, waitFor } from '../support/helpers.js';
import {
  devLogUnavailable,
  pidIn,
  pidsWithArgs,
  python,
  runningChildrenOf,
  signal,
  startSyslogReceiver,
  stopDetached,
  withDevLog,
  type SyslogLine,
  type SyslogReceiver,
} from '../support/detached.js';

/**
 * A detached pidstatd logs to syslog (pidstatd(8)): facility daemon,
 * tag pidstatd, `<PRI>pidstatd[PID]: message` datagrams to /dev/log. Here
 * /dev/log is a socket of the test's own, bound over it in a private mount
 * namespace the daemon is started in. Through it, the supervisor's log of a
 * server that keeps dying (its port taken): each failure with its reason,
 * the restarts further and further apart.
 */

const py = python();
let why: string | undefined;
const scratch = mkdtempSync(join(tmpdir(), 'pidstatd-syslog-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
before(async () => {
  why = await devLogUnavailable(py);
});

/** LOG_DAEMON (3 << 3) with a severity. */
const DAEMON_INFO = (3 << 3) | 6;
const DAEMON_ERR = (3 << 3) | 3;

let count = 0;

/** A syslog receiver and a detached daemon logging to it, both stopped after the test. */
async function detachLogging(t: TestContext): Promise<{ log: SyslogReceiver; port: number; pidfile: string; supervisor: number; server: number }> {
  const dir = mkdtempSync(join(scratch, `${++count}-`));
  const log = await startSyslogReceiver(py!, join(dir, 'log.sock'));
  t.after(() => log.stop());
  const port = await freePort();
  const pidfile = join(dir, 'pidstatd.pid');
  let supervisor = 0;
  t.after(() => stopDetached(pidfile, supervisor));
  const [command, args] = withDevLog(log.path, dir, ...binCommand('pidstatd', ['--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile]));
  const result = await run(command, args, { env: binEnv(), timeoutMs: 10_000 });
  assert.equal(result.code, 0, `started: ${result.stderr}`);
  supervisor = pidIn(pidfile)!;
  const [server] = runningChildrenOf(supervisor);
  assert.ok(server !== undefined, 'a server runs');
  return { log, port, pidfile, supervisor, server };
}

/** A socket bound to 127.0.0.1:port, tried again until `timeoutMs` has passed; undefined if none. */
async function takePort(port: number, timeoutMs: number): Promise<dgram.Socket | undefined> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const socket = dgram.createSocket('udp4');
    const bound = await new Promise<boolean>((resolve) => {
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => resolve(true));
    });
    if (bound) return socket;
    socket.close();
    await sleep(10);
  }
  return undefined;
}

function show(lines: SyslogLine[]): string {
  return lines.map((line) => `${line.at.toFixed(2)} <${line.pri}>${line.tag}[${line.pid}]: ${line.message}`).join('\n');
}

describe('a detached pidstatd logs to syslog', () => {
  test('the supervisor\'s and the server\'s lines reach /dev/log, tagged pidstatd[PID], facility daemon; SIGUSR1 and SIGHUP reach the server', { timeout: 60_000 }, async (t) => {
    if (why !== undefined) return t.skip(why);
    const { log, port, supervisor, server } = await detachLogging(t);
    const from = (pid: number, pattern: RegExp) => log.lines().find((line) => line.pid === pid && pattern.test(line.message));
    assert.ok(await log.waitFor(() => from(server, new RegExp(`^listening on 127\\.0\\.0\\.1:${port}$`)) !== undefined, 10_000), `the server's "listening" line:\n${show(log.lines())}`);
    assert.equal(await ask(port, 'PIDR 1 s 3'), 'EXIS 1 1 s');
    signal(supervisor, 'SIGUSR1');
    assert.ok(await log.waitFor(() => from(server, /^counters: .*received 1, answered 1/) !== undefined, 10_000), `the counters, from the server:\n${show(log.lines())}`);
    signal(supervisor, 'SIGHUP');
    assert.ok(await log.waitFor(() => from(server, /^SIGHUP: no key file to re-read$/) !== undefined, 10_000), `SIGHUP, from the server:\n${show(log.lines())}`);
    signal(supervisor, 'SIGTERM');
    assert.ok(await log.waitFor(() => from(supervisor, /^SIGTERM: stopping$/) !== undefined && from(server, /^stopped: /) !== undefined, 10_000), `the stop, from both:\n${show(log.lines())}`);
    const ours = log.lines().filter((line) => line.pid === supervisor || line.pid === server);
    assert.deepEqual([...new Set(ours.map((line) => line.tag))], ['pidstatd'], 'tag pidstatd');
    assert.deepEqual([...new Set(ours.map((line) => line.pri))], [DAEMON_INFO], 'facility daemon, severity info');
    assert.deepEqual(log.junk(), [], 'every datagram is a syslog line');
  });
});

describe('a server that keeps dying (its port taken)', () => {
  test('is restarted further and further apart, each failure logged with its reason; SIGTERM in a delay stops all', { timeout: 60_000 }, async (t) => {
    if (why !== undefined) return t.skip(why);
    const { log, port, pidfile, supervisor, server } = await detachLogging(t);
    signal(server, 'SIGKILL');
    // Take the port as soon as the server has let go of it.
    const thief = await takePort(port, 400);
    if (thief === undefined) return t.skip('could not take the port within 400 ms of the kill');
    t.after(() => new Promise<void>((resolve) => thief.close(() => resolve())));
    const failures = () => log.lines().filter((line) => line.pid === supervisor && /^server pid [0-9]+ /.test(line.message));
    // The kill, then two refused binds: 0.5 and 1 s apart (each after a server's start). A liveness bound.
    assert.ok(await log.waitFor(() => failures().length >= 3, 30_000), `three failures logged:\n${show(log.lines())}`);
    const seen = failures().slice(0, 3);
    for (const line of show(seen).split('\n')) t.diagnostic(line);
    assert.match(seen[0]!.message, new RegExp(`^server pid ${server} was killed by SIGKILL; `));
    for (const line of seen.slice(1)) {
      assert.match(line.message, new RegExp(`exited with status 1 \\(cannot listen on 127\\.0\\.0\\.1 port ${port}: address already in use\\)`), 'the reason');
      assert.equal(line.pri, DAEMON_ERR, 'severity err');
    }
    const delays = seen.map((line) => Number(/starting another in ([0-9.]+) s$/.exec(line.message)?.[1]));
    assert.deepEqual(delays, [0.5, 1, 2], 'the announced delays double');
    const gaps = seen.slice(1).map((line, i) => line.at - seen[i]!.at);
    // Never sooner than announced; the upper bound a liveness bound (a server's start comes in each gap).
    gaps.forEach((gap, i) => assert.ok(gap >= delays[i]! && gap < delays[i]! + 10, `failure ${i + 2} came ${gap.toFixed(2)} s after the one before, which announced ${delays[i]} s`));

    // Now inside the 2 s delay.
    assert.deepEqual(runningChildrenOf(supervisor), [], 'no server runs during the delay');
    signal(supervisor, 'SIGTERM');
    assert.ok(await waitFor(() => !isRunning(supervisor), 10_000), 'the supervisor ends');
    await sleep(300);
    assert.deepEqual(pidsWithArgs('--pidfile', pidfile), [], 'no server was started');
    assert.equal(existsSync(pidfile), false, 'the pidfile is removed');
  });
});
