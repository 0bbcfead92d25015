import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test, type TestContext } from 'node:test';
import { ask, binCommand, binEnv, type Daemon, freePort, run, startDaemon } from '../support/helpers.js';
import { pidIn, python, runningChildrenOf, signal, startDatagramReceiver, stopDetached, type Datagram, type DatagramReceiver } from '../support/detached.js';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { watchdogIntervalMs } from '../../src/daemon/notify.js';

/**
 * systemd's notification protocol (pidstatd(8)): with NOTIFY_SOCKET
 * set, pidstatd says READY=1 once it answers, STATUS= with its counters every
 * few seconds, WATCHDOG=1 at half of WATCHDOG_USEC and STOPPING=1 as it
 * stops. The socket is one of the test's own (a python3 receiver: Node has no
 * Unix datagram sockets), which also names each datagram's sender, as
 * systemd's NotifyAccess= judges them.
 */

const py = python();
const addon = loadLinuxCalls();
const skip = py === undefined ? 'no python3 to receive the datagrams (Node has no Unix datagram sockets)'
  : addon.addon?.unixSend === undefined ? `the addon cannot send to Unix sockets here: ${addon.why ?? 'built from an older source'}` : false;

const scratch = mkdtempSync(join(tmpdir(), 'pidstatd-notify-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** The test runs its STATUS= lines every INTERVAL_MS (the daemon's every 5 s would make it slow). */
const INTERVAL_MS = 300;
/** systemd's watchdog of 400 ms: a ping every 200 ms. */
const WATCHDOG_USEC = '400000';

let count = 0;
const abstractName = () => `@pidstatd-notify-test-${process.pid}-${++count}`;

/** A receiver that asks the daemon on `port` whether this test runs, the moment READY=1 comes; stopped after the test. */
async function receiver(t: TestContext, path: string, port: number): Promise<DatagramReceiver> {
  const started = await startDatagramReceiver(py!, path, { port, request: `PIDR ${process.pid} h 3` });
  t.after(() => started.stop());
  return started;
}

const states = (datagrams: Datagram[], state: string) => datagrams.filter((d) => d.text.split('\n').includes(state));
const statuses = (datagrams: Datagram[]) => datagrams.flatMap((d) => d.text.split('\n').filter((line) => line.startsWith('STATUS=')));

function show(datagrams: Datagram[]): string {
  return datagrams.map((d) => `${d.at.toFixed(3)} [${d.sender}] ${JSON.stringify(d.text)}`).join('\n');
}

/** The mean time between WATCHDOG=1 pings, in ms, and how many there were. */
function watchdogPace(datagrams: Datagram[]): { meanMs: number; pings: number } {
  const pings = states(datagrams, 'WATCHDOG=1');
  const meanMs = pings.length < 2 ? NaN : ((pings.at(-1)!.at - pings[0]!.at) * 1000) / (pings.length - 1);
  return { meanMs, pings: pings.length };
}

test('the watchdog is ours at half of WATCHDOG_USEC, unless WATCHDOG_PID names another process', () => {
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '400000' }, 10), 200);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '10' }, 10), 15_000);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '400000', WATCHDOG_PID: '11' }, 10), undefined);
  assert.equal(watchdogIntervalMs({}, 10), undefined);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 10), undefined);
  assert.equal(watchdogIntervalMs({ WATCHDOG_USEC: 'soon' }, 10), undefined);
});

test('--foreground: READY=1 once it answers, STATUS= with the counters, WATCHDOG=1 every 200 ms, STOPPING=1 at SIGTERM', { skip }, async (t) => {
  const port = await freePort();
  const notify = await receiver(t, abstractName(), port);
  let daemon: Daemon | undefined;
  t.after(() => daemon?.stop());
  daemon = await startDaemon(['--bind', '127.0.0.1', '--port', String(port)], {
    NOTIFY_SOCKET: notify.path, WATCHDOG_USEC, PIDSTATD_TEST_INTERVAL_MS: String(INTERVAL_MS),
  });
  assert.ok(await notify.waitFor((got) => states(got, 'READY=1').length > 0, 10_000), `READY=1 came: ${show(notify.datagrams())}`);
  assert.ok(await notify.waitFor(() => notify.readyAnswer() !== undefined, 10_000));
  // Asked the moment READY=1 came, by the receiver itself: the daemon was answering already.
  assert.equal(notify.readyAnswer(), `EXIS ${process.pid} 1 h`, 'a request sent as READY=1 arrives is answered');
  const [ready] = notify.datagrams();
  assert.equal(ready!.sender, daemon.pid, 'the daemon itself sends (NotifyAccess=main)');
  assert.match(ready!.text, new RegExp(`^READY=1\nSTATUS=answering on 127\\.0\\.0\\.1:${port}; received [01], answered [01], `));

  assert.equal(await ask(daemon.port, `PIDR ${process.pid} h 3`), `EXIS ${process.pid} 1 h`);
  assert.ok(await notify.waitFor((got) => statuses(got).some((line) => / received 2, answered 2, /.test(line)), 10_000),
    `a STATUS= line counts both requests: ${show(notify.datagrams())}`);
  assert.ok(await notify.waitFor((got) => watchdogPace(got).pings >= 8, 20_000), show(notify.datagrams()));
  const pace = watchdogPace(notify.datagrams());
  // Not faster than the timer allows; the upper bound a liveness bound (a busy machine's timers run late).
  assert.ok(pace.meanMs > 120 && pace.meanMs < 1000, `WATCHDOG=1 every ~200 ms, not every ${pace.meanMs.toFixed(0)} ms: ${show(notify.datagrams())}`);

  assert.equal(await daemon.stop(), 0);
  assert.ok(await notify.waitFor((got) => states(got, 'STOPPING=1').length === 1, 10_000), show(notify.datagrams()));
  const got = notify.datagrams();
  const stopping = got.findIndex((d) => d.text === 'STOPPING=1');
  assert.deepEqual(got.slice(stopping + 1), [], 'nothing after STOPPING=1');
  assert.ok(got.every((d) => d.sender === daemon.pid), show(got));
  assert.equal(states(got, 'READY=1').length, 1, 'READY=1 once');
});

test('a NOTIFY_SOCKET path; no WATCHDOG=1 when WATCHDOG_PID names another process', { skip }, async (t) => {
  const port = await freePort();
  const notify = await receiver(t, join(scratch, `notify-${++count}.sock`), port);
  let daemon: Daemon | undefined;
  t.after(() => daemon?.stop());
  daemon = await startDaemon(['--bind', '127.0.0.1', '--port', String(port)], {
    NOTIFY_SOCKET: notify.path, WATCHDOG_USEC, WATCHDOG_PID: '1', PIDSTATD_TEST_INTERVAL_MS: String(INTERVAL_MS),
  });
  assert.ok(await notify.waitFor((got) => statuses(got).length >= 4, 10_000), show(notify.datagrams()));
  assert.equal(notify.readyAnswer(), `EXIS ${process.pid} 1 h`);
  assert.equal(states(notify.datagrams(), 'WATCHDOG=1').length, 0, show(notify.datagrams()));
  assert.equal(await daemon.stop(), 0);
  assert.ok(await notify.waitFor((got) => states(got, 'STOPPING=1').length === 1, 10_000));
});

test('detached: the command typed says READY=1 with MAINPID= the supervisor, which sends on its server\'s states', { skip }, async (t) => {
  const port = await freePort();
  const notify = await receiver(t, abstractName(), port);
  const pidfile = join(scratch, `detached-${++count}.pid`);
  t.after(() => stopDetached(pidfile));
  // As systemd starts a Type=notify service: WATCHDOG_PID is the pid of the command it runs.
  const started = await run('/bin/sh', ['-c', 'WATCHDOG_PID=$$ exec "$@"', 'sh', ...binCommand('pidstatd', []).flat(), '--port', String(port), '--bind', '127.0.0.1', '--pidfile', pidfile], {
    env: binEnv({ NOTIFY_SOCKET: notify.path, WATCHDOG_USEC, PIDSTATD_TEST_INTERVAL_MS: String(INTERVAL_MS) }),
    timeoutMs: 15_000,
  });
  assert.equal(started.code, 0, started.stderr);
  const supervisor = pidIn(pidfile)!;
  const [server] = runningChildrenOf(supervisor);
  assert.ok(server !== undefined, 'a server runs');
  assert.ok(await notify.waitFor((got) => watchdogPace(got).pings >= 6 && statuses(got).length >= 2, 20_000), show(notify.datagrams()));
  assert.equal(notify.readyAnswer(), `EXIS ${process.pid} 1 h`, 'a request sent as READY=1 arrives is answered');
  const [ready, ...rest] = notify.datagrams();
  assert.equal(ready!.text, `READY=1\nMAINPID=${supervisor}`);
  assert.ok(ready!.sender !== supervisor && ready!.sender !== server, 'READY=1 comes from the command typed');
  assert.ok(rest.every((d) => d.sender === supervisor), `then only the main pid sends (NotifyAccess=main): ${show(rest)}`);
  const pace = watchdogPace(rest);
  assert.ok(pace.meanMs > 120 && pace.meanMs < 1000, `WATCHDOG=1 every ~200 ms, not every ${pace.meanMs.toFixed(0)} ms`);
  const environ = readFileSync(`/proc/${server}/environ`, 'latin1').split('\0');
  assert.ok(!environ.some((v) => v.startsWith('NOTIFY_SOCKET=')), 'the server has no NOTIFY_SOCKET of its own');

  signal(supervisor, 'SIGTERM');
  assert.ok(await notify.waitFor((got) => states(got, 'STOPPING=1').length >= 1, 10_000), show(notify.datagrams()));
  assert.equal(states(notify.datagrams(), 'STOPPING=1')[0]!.sender, supervisor);
});

test('a real Type=notify start through systemd-run', async (t) => {
  const probe = await run('systemctl', ['is-system-running'], { timeoutMs: 5000 }).catch(() => undefined);
  const state = probe?.stdout.trim();
  if (probe === undefined || !/^(running|degraded|starting)$/.test(state ?? '')) {
    return t.skip(`no systemd runs as PID 1 here (systemctl is-system-running: ${state || probe?.stderr.trim() || 'not installed'})`);
  }
  const port = await freePort();
  const unit = `pidstatd-notify-test-${process.pid}`;
  t.after(() => run('systemctl', ['stop', unit], { timeoutMs: 10_000 }));
  const started = await run('systemd-run', ['--unit', unit, '-p', 'Type=notify', '-p', 'WatchdogSec=30s',
    ...binCommand('pidstatd', []).flat(), '--foreground', '--port', String(port), '--bind', '127.0.0.1'], { timeoutMs: 30_000 });
  assert.equal(started.code, 0, started.stderr);
  const shown = await run('systemctl', ['show', unit, '-p', 'ActiveState,StatusText'], { timeoutMs: 10_000 });
  assert.match(shown.stdout, /ActiveState=active/);
  assert.match(shown.stdout, /StatusText=answering on/);
});
