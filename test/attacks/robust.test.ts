import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { after, describe, test, type TestContext } from 'node:test';
import { PidStatClient, type Result } from '../../src/index.js';
import { BIN, IS_ROOT, binEnv, deadPid, expectedExit, freePort, run, runBin, startDaemon, startSleeper, waitFor, type Daemon, type RunResult } from '../support/helpers.js';
import { askManyTargets } from '../support/many-targets.js';
import { createHostPair, inNetns, netnsUnavailable, pidInUse, runIn, type HostPair, type NetnsHost } from '../support/netns.js';

/**
 * Robustness of the client and the daemon (doc/protocol.md, pidstat(1), pidstatd(8)): ICMP
 * "port unreachable" ends tries at once; replies are matched by pid and host;
 * a name with several addresses; 100 000 targets in one call; 3000 hosts
 * under `ulimit -n 256`; a closed stdout (SIGPIPE); a daemon asked about pids
 * while the process table churns, and one that cannot read /proc.
 *
 * Everything is on loopback, or inside network namespaces made here (root
 * only; those parts are skipped with the reason otherwise). Every process a
 * test starts is stopped by its pid.
 */

const netnsWhy = netnsUnavailable();
if (netnsWhy) process.stdout.write(`robust: namespace tests skipped: ${netnsWhy}\n`);

/**
 * Options for helpers.run() and its kin: no stdin. run() writes to the child's
 * stdin with no 'error' listener, and a child that exits first turns that into
 * an uncaught EPIPE in this process (some 1 run in 12 here).
 */
const NO_STDIN = { stdio: ['ignore', 'pipe', 'pipe'] } as { stdio: ['ignore', 'pipe', 'pipe'] };

/** Deletes a host pair's namespaces without helpers.run() (see NO_STDIN); its exit hook then finds them gone. */
function destroyPair(pair: HostPair | undefined): void {
  if (!pair) return;
  for (const host of [pair.a, pair.b]) spawnSync('ip', ['netns', 'delete', host.name], { stdio: 'ignore', timeout: 10_000 });
}

function describeRun(result: RunResult): string {
  const cut = (text: string): string => (text.length > 2000 ? `${text.slice(0, 2000)}...(${text.length} chars)` : text);
  return `exit ${result.code}${result.signal ? ` (${result.signal})` : ''}; ${Math.round(result.ms)} ms; stdout: ${JSON.stringify(cut(result.stdout))}; stderr: ${JSON.stringify(cut(result.stderr))}`;
}


/** The last pid the kernel handed out in this PID namespace. */
function lastPid(): number {
  return Number(readFileSync('/proc/sys/kernel/ns_last_pid', 'latin1'));
}

/**
 * Whether `pid` may have been handed out (to any process on the machine)
 * between two readings of lastPid(): pids are given in increasing order,
 * wrapping at pid_max. A pid outside that window kept its state in between,
 * so an answer about it can be held against a reading before or after.
 */
function allocatedBetween(pid: number, from: number, to: number): boolean {
  if (from === to) return false;
  return from < to ? pid > from && pid <= to : pid > from || pid <= to;
}

/** UDP datagrams dropped so far on this network namespace because a socket's receive queue was full (/proc/net/snmp). */
function udpRcvbufErrors(): number {
  const lines = readFileSync('/proc/net/snmp', 'latin1').split('\n').filter((line) => line.startsWith('Udp:'));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  return Number(values[names.indexOf('RcvbufErrors')] ?? NaN);
}

/** A daemon started for one test and stopped after it. */
async function daemonFor(t: TestContext, args: readonly string[]): Promise<Daemon> {
  const daemon = await startDaemon(args);
  t.after(() => daemon.stop());
  return daemon;
}

/** `pidstatd --foreground ARGS` inside a network namespace; resolves once it listens. */
function startDaemonIn(host: NetnsHost, args: readonly string[]): Promise<Daemon> {
  return startDaemon(args, binEnv(), (command, rest) => inNetns(host, command, rest));
}

/** A sleeper (a live pid) and a reaped pid (a dead one), both stopped after the test. */
async function liveAndDead(t: TestContext): Promise<{ live: number; dead: number }> {
  const sleeper = startSleeper();
  t.after(() => sleeper.stop());
  return { live: sleeper.pid, dead: await deadPid() };
}

describe('ICMP port unreachable: a host without a daemon is reported in about a second', () => {
  test('300 targets on 127.0.0.1, a port nobody listens on: all no_reply "no daemon listening", exit 2, after the four 200 ms pauses, never a --try-timeout', async (t) => {
    const port = await freePort();
    const pids = Array.from({ length: 300 }, (_, i) => 1000 + i);
    const result = await runBin('pidstat', ['--no-local', '--port', String(port), '--try-timeout', '30s', ...pids.map((p) => `127.0.0.1:${p}`)], NO_STDIN);
    t.diagnostic(`${Math.round(result.ms)} ms`);
    assert.equal(result.code, 2, describeRun(result));
    assert.deepEqual(result.stdout.split('\n').filter(Boolean), pids.map((p) => `127.0.0.1:${p} no_reply`));
    const reasons = result.stderr.split('\n').filter(Boolean);
    assert.deepEqual(reasons, pids.map((p) => `pidstat: 127.0.0.1:${p}: no daemon listening`), describeRun(result));
    // Five tries, 200 ms apart: at least 800 ms. Without ICMP, five timeouts
    // of 30 s: the upper bound is a liveness bound (runBin ends it at 20 s).
    assert.ok(result.ms >= 750 && result.ms < 20_000, describeRun(result));
  });

  test('4 hosts at once (127.0.0.2 to 127.0.0.5), 100 targets each: all no_reply "no daemon listening", never a --try-timeout', async (t) => {
    const port = await freePort();
    const words: string[] = [];
    for (let h = 2; h <= 5; h++) for (let p = 1; p <= 100; p++) words.push(`127.0.0.${h}:${p}`);
    const result = await runBin('pidstat', ['--no-local', '--port', String(port), '--try-timeout', '30s', ...words], NO_STDIN);
    t.diagnostic(`${Math.round(result.ms)} ms for ${words.length} targets on 4 hosts`);
    assert.equal(result.code, 2, describeRun(result));
    assert.deepEqual(result.stdout.split('\n').filter(Boolean), words.map((w) => `${w} no_reply`));
    assert.deepEqual(result.stderr.split('\n').filter(Boolean), words.map((w) => `pidstat: ${w}: no daemon listening`));
    // As above: four 200 ms pauses at least; 20 s a liveness bound, where timeouts would take 150 s.
    assert.ok(result.ms >= 750 && result.ms < 20_000, describeRun(result));
  });
});

describe('replies are matched to requests by pid and host', () => {
  /** A fake daemon on `address`: `answer(pid, host)` gives the datagrams to send back for each request, in order, 30 ms apart. */
  async function fakeDaemon(t: TestContext, address: string, port: number, answer: (pid: number, host: string) => string[]): Promise<string[]> {
    const socket = dgram.createSocket('udp4');
    const seen: string[] = [];
    const timers = new Set<NodeJS.Timeout>();
    socket.on('message', (msg, rinfo) => {
      const text = msg.toString('latin1');
      seen.push(text.trim());
      const [, pid, host] = text.trim().split(/\s+/);
      answer(Number(pid), host ?? '').forEach((reply, i) => {
        const timer = setTimeout(() => {
          timers.delete(timer);
          socket.send(reply, rinfo.port, rinfo.address);
        }, 30 * i);
        timers.add(timer);
      });
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, address, () => resolve());
    });
    t.after(() => {
      for (const timer of timers) clearTimeout(timer);
      socket.close();
    });
    return seen;
  }

  test('a reply naming another host or another pid answers nothing; the same pid on two hosts gets each host\'s answer', async (t) => {
    const port = await freePort();
    // 127.0.0.1 says: pid 100 only with the wrong host or pid; pid 200 wrong first, then right (dead); pid 300 exists.
    const seen1 = await fakeDaemon(t, '127.0.0.1', port, (pid, host) => {
      if (pid === 100) return [`EXIS 100 1 127.0.0.3`, `EXIS 101 1 ${host}`, `EXIS 100 1 ${host}x`];
      if (pid === 200) return [`EXIS 200 1 127.0.0.3`, `EXIS 201 1 ${host}`, `EXIS 200 0 ${host}`];
      return [`EXIS ${pid} 1 ${host}`];
    });
    // 127.0.0.3 says pid 300 is dead (a reply counts by its fields whatever address it comes from, so it names only its own host).
    const seen3 = await fakeDaemon(t, '127.0.0.3', port, (pid, host) => [`EXIS ${pid} 0 ${host}`]);
    const words = ['127.0.0.1:100', '127.0.0.1:200', '127.0.0.1:300', '127.0.0.3:300'];
    const result = await runBin('pidstat', ['--no-local', '--port', String(port), '--try-timeout', '300ms', '--tries', '2', ...words], NO_STDIN);
    t.diagnostic(`127.0.0.1 was asked ${seen1.length} times, 127.0.0.3 ${seen3.length} times; ${Math.round(result.ms)} ms`);
    assert.deepEqual(result.stdout.split('\n').filter(Boolean), ['127.0.0.1:100 no_reply', '127.0.0.1:200 dead', '127.0.0.1:300 exists', '127.0.0.3:300 dead'], describeRun(result));
    assert.equal(result.code, 2, describeRun(result));
    assert.equal(seen1.filter((s) => /^PIDR 100 /.test(s)).length, 2, `pid 100 was asked ${seen1.filter((s) => /^PIDR 100 /.test(s)).length} times, not --tries 2: ${JSON.stringify(seen1)}`);
  });
});

describe('a host name with several addresses (its own /etc/hosts in a network namespace)', { skip: netnsWhy ?? false }, () => {
  let pair: HostPair | undefined;
  let etc = '';
  const NAME = 'pst-multi';
  const SIX = 'pst-multi6';

  const setup = async (): Promise<HostPair> => {
    if (pair) return pair;
    pair = await createHostPair();
    // `ip netns exec NAME` mounts /etc/netns/NAME/hosts over /etc/hosts.
    etc = `/etc/netns/${pair.a.name}`;
    mkdirSync(etc, { recursive: true });
    writeFileSync(`${etc}/hosts`, `127.0.0.1 localhost\n127.0.0.9 ${NAME}\n127.0.0.10 ${NAME}\n::1 ${SIX}\n127.0.0.9 ${SIX}\n`);
    return pair;
  };
  after(async () => {
    if (etc) rmSync(etc, { recursive: true, force: true });
    destroyPair(pair);
  });

  /** pidstat --json NAME:live NAME:dead in A: both right, each on try `tryNo` (the first, unless said). */
  async function check(t: TestContext, host: NetnsHost, name: string, port: number, what: string, tryNo = 1): Promise<void> {
    const { live, dead } = await liveAndDead(t);
    const result = await runIn(host, process.execPath, [BIN.pidstat, '--no-local', '--json', '--port', String(port), `${name}:${live}`, `${name}:${dead}`], { ...NO_STDIN, env: binEnv(), timeoutMs: 15_000 });
    assert.equal(result.code, 1, `${what}: ${describeRun(result)}`);
    const json = JSON.parse(result.stdout) as Result[];
    assert.deepEqual(json.map((r) => `${r.host}:${r.pid} ${r.state} try ${r.tries}`), [`${name}:${live} exists try ${tryNo}`, `${name}:${dead} dead try ${tryNo}`], `${what}: ${describeRun(result)}`);
    t.diagnostic(`${what}: ${json.map((r) => `${r.state} in ${r.ms} ms`).join(', ')}`);
  }

  test('the name resolves to 127.0.0.9 and 127.0.0.10 in that namespace', async () => {
    const { a } = await setup();
    const result = await runIn(a, process.execPath, ['-e', `require('dns').lookup(${JSON.stringify(NAME)}, { all: true }, (e, list) => console.log(e ? e.code : list.map((x) => x.address).sort().join(' ')))`], NO_STDIN);
    assert.equal(result.stdout.trim(), '127.0.0.10 127.0.0.9', describeRun(result));
  });

  for (const only of ['127.0.0.9', '127.0.0.10']) {
    test(`the daemon bound to ${only} only (the other address refuses): answers right, on the first try`, async (t) => {
      const { a } = await setup();
      const daemon = await startDaemonIn(a, ['--bind', only, '--port', '0', '--rate', '0']);
      t.after(() => daemon.stop());
      await check(t, a, NAME, daemon.port, `daemon on ${only}`);
    });
  }

  test('a daemon on each address (the same port): answers right', async (t) => {
    const { a } = await setup();
    const first = await startDaemonIn(a, ['--bind', '127.0.0.9', '--port', '0', '--rate', '0']);
    t.after(() => first.stop());
    const second = await startDaemonIn(a, ['--bind', '127.0.0.10', '--port', String(first.port), '--rate', '0']);
    t.after(() => second.stop());
    await check(t, a, NAME, first.port, 'daemons on both');
  });

  test('one daemon on 0.0.0.0: answers right, from the address asked with the addon', async (t) => {
    // With the addon the daemon answers from the address asked (IP_PKTINFO),
    // which the client's connected socket hears on the first try. Through
    // dgram it answers from 127.0.0.1 whichever was asked: the connected
    // socket does not hear that, and the second try, from the unconnected
    // socket, does (pidstat(1), Asking).
    const { a } = await setup();
    const daemon = await startDaemonIn(a, ['--bind', '0.0.0.0', '--port', '0', '--rate', '0']);
    t.after(() => daemon.stop());
    await check(t, a, NAME, daemon.port, 'daemon on 0.0.0.0', process.env['PIDSTAT_IO'] === 'dgram' ? 2 : 1);
  });

  for (const only of ['::1', '127.0.0.9']) {
    test(`a name on ::1 and 127.0.0.9, the daemon bound to ${only} only: answers right`, async (t) => {
      const { a } = await setup();
      let daemon: Awaited<ReturnType<typeof startDaemonIn>>;
      try {
        daemon = await startDaemonIn(a, ['--bind', only, '--port', '0', '--rate', '0']);
      } catch (err) {
        if (only === '::1') return t.skip(`no ::1 in the namespace: ${(err as Error).message.split('\n')[0]}`);
        throw err;
      }
      t.after(() => daemon.stop());
      await check(t, a, SIX, daemon.port, `daemon on ${only}`);
    });
  }
});

describe('many targets and many hosts', () => {
  // Seconds at the client's pace: run once, with the default socket I/O (test/pidstatd/dgram-io.test.ts runs this file again through dgram).
  const again = process.env['PIDSTAT_IO'] === 'dgram' ? 'run once, with the default socket I/O: pacing and matching are the same code through dgram' : false;
  test('20 000 targets in one queryMany (pids 1 to 20000, one daemon with default settings): every answer right, none over its rate', { skip: again }, async (t) => {
    // The daemon's default --rate (10 000 a second per source) must never refuse our own client.
    // 100 000 targets, and the client's peak RSS then, are the bench's (figure 'many targets').
    const daemon = await daemonFor(t, ['--bind', '127.0.0.1']);
    const { result, report } = await askManyTargets(daemon.port, 20_000, 60_000);
    assert.ok(report !== undefined, describeRun(result));
    t.diagnostic(`20 000 targets: ${Math.round(report.ms)} ms; states ${JSON.stringify(report.states)}; tries ${JSON.stringify(report.tries)}; ${report.unstable} pids without a truth (came, went or handed out meanwhile); ${report.drops} datagrams dropped meanwhile on full receive queues (RcvbufErrors, whole machine)`);
    assert.equal(report.count, 20_000);
    daemon.child.kill('SIGUSR1');
    assert.ok(await waitFor(() => /counters: .*limited 0\b/.test(daemon.log()), 20_000), `the daemon refused none over its rate: ${daemon.log().split('\n').filter((l) => l.includes('counters')).join(' ')}`);
    assert.equal(report.wrongCount, 0, `wrong answers (first 20): ${report.wrong.join('; ')}`);
  });

  test('3000 hosts (127.10.x.y) in one call under `ulimit -n 256`, one daemon on 0.0.0.0: every answer right, no descriptor exhaustion, exit 1', { skip: netnsWhy ?? false }, async (t) => {
    // In a namespace of our own: its 127.0.0.0/8 is all ours, and 0.0.0.0 is only its loopback.
    const pair = await createHostPair();
    t.after(() => destroyPair(pair));
    const daemon = await startDaemonIn(pair.a, ['--bind', '0.0.0.0', '--port', '0', '--rate', '0']);
    t.after(() => daemon.stop());
    const sleepers = Array.from({ length: 5 }, () => startSleeper());
    t.after(async () => {
      for (const s of sleepers) await s.stop();
    });
    const dead = await Promise.all(Array.from({ length: 5 }, () => deadPid()));
    const firstLast = lastPid();
    const targets = Array.from({ length: 3000 }, (_, i) => {
      const host = `127.10.${Math.floor(i / 250)}.${(i % 250) + 1}`;
      const pid = i % 2 === 0 ? sleepers[i % 5]!.pid : dead[i % 5]!;
      return { host, pid, truth: i % 2 === 0 ? 'exists' : 'dead' };
    });
    const words = targets.map((x) => `${x.host}:${x.pid}`);
    const shell = `ulimit -n 256 || exit 99; exec "$0" "$@"`;
    const result = await runIn(pair.a, 'sh', ['-c', shell, process.execPath, BIN.pidstat, '--no-local', '--debug', '--port', String(daemon.port), ...words], { ...NO_STDIN, env: binEnv(), timeoutMs: 40_000 });
    const lastLast = lastPid();
    const stillDead = dead.every((p) => !pidInUse(p) && !allocatedBetween(p, firstLast, lastLast));
    const debugLines = result.stderr.split('\n').filter(Boolean);
    const shared = debugLines.filter((l) => /sharing one/.test(l)).length;
    t.diagnostic(`3000 hosts under ulimit -n 256: exit ${result.code} in ${Math.round(result.ms)} ms; ${debugLines.filter((l) => / > /.test(l) || /^pidstat: > /.test(l)).length} datagrams sent; ${shared} "sharing one" fallbacks`);
    assert.doesNotMatch(result.stderr, /EMFILE|ENFILE|too many open files/i, `descriptor exhaustion: ${result.stderr.split('\n').filter((l) => /EMFILE|ENFILE|too many/i.test(l)).slice(0, 5).join('\n')}`);
    assert.doesNotMatch(result.stderr, /internal error|^\s+at /m, describeRun(result));
    const lines = result.stdout.split('\n').filter(Boolean);
    assert.equal(lines.length, 3000, describeRun(result));
    const wrong = lines.map((line, i) => (line === `${words[i]} ${targets[i]!.truth}` ? '' : `${line} (expected ${targets[i]!.truth})`)).filter(Boolean);
    assert.ok(stillDead, 'a dead pid was reused meanwhile: the check is void');
    assert.deepEqual(wrong.slice(0, 20), [], `${wrong.length} wrong lines`);
    assert.equal(result.code, expectedExit(lines.map((line) => line.split(' ')[1] ?? '')), `the exit code does not follow the lines; ${describeRun(result)}`);
    assert.equal(result.code, 1, describeRun(result));
  });
});

describe('a closed stdout', () => {
  test('`pidstat ...5000 targets... | head -1` ends quietly: head gets the first line, no EPIPE or stack trace on stderr', async (t) => {
    const daemon = await daemonFor(t, ['--bind', '127.0.0.1', '--rate', '0']);
    const words = Array.from({ length: 5000 }, (_, i) => `127.0.0.1:${i + 1}`);
    // The shell reports pidstat's own status on stderr (fd 3 is stderr, outside the pipe).
    const shell = `{ "$0" "$@"; echo "pidstat-status $?" >&3; } 3>&2 | head -1`;
    const result = await run('sh', ['-c', shell, process.execPath, BIN.pidstat, '--no-local', '--port', String(daemon.port), ...words], { ...NO_STDIN, env: binEnv(), timeoutMs: 30_000 });
    const status = /^pidstat-status (\d+)$/m.exec(result.stderr)?.[1];
    const stderr = result.stderr.replace(/^pidstat-status \d+\n/m, '');
    t.diagnostic(`pidstat exited with ${status}; ${Math.round(result.ms)} ms`);
    assert.equal(result.stdout, '127.0.0.1:1 exists\n', describeRun(result));
    assert.equal(stderr, '', `pidstat wrote to stderr when its stdout closed (status ${status}): ${stderr.slice(0, 1500)}`);
    // Most of pids 1 to 5000 are free here: the answer is "some dead", whoever read it.
    assert.equal(status, '1', `pidstat's exit status once head had gone: ${status}`);
  });
});

describe('the daemon under a churning process table', () => {
  test('500 short-lived processes, each asked about right after it starts and again once reaped: never "exists" for a reaped pid not reused, never silent', async (t) => {
    const daemon = await daemonFor(t, ['--bind', '127.0.0.1', '--rate', '0']);
    // Two clients: a client joins a question still pending for the same pid and host, and the question after the reap must be a new one.
    const early = new PidStatClient({ port: daemon.port, local: false, timeoutMs: 500, tries: 5 });
    const late = new PidStatClient({ port: daemon.port, local: false, timeoutMs: 500, tries: 5 });
    t.after(async () => {
      await early.close();
      await late.close();
    });
    const questions: Promise<void>[] = [];
    const earlyStates: Record<string, number> = {};
    const lateStates: Record<string, number> = {};
    /** How many tries the answers took. */
    const triesSeen: Record<number, number> = {};
    const suspicious: { pid: number; reused: boolean }[] = [];
    const silent: string[] = [];
    const deadline = performance.now() + 3_000;
    let started = 0;
    /** "exists" answers without a start token: the process ended between the daemon's kill() and its read of /proc/PID/stat. */
    let earlyNoToken = 0;

    const one = async (): Promise<void> => {
      const child = spawn('true', [], { stdio: 'ignore' });
      const pid = child.pid;
      if (pid === undefined) return;
      // Asked while the process runs or is exiting: the start token may be unreadable by now.
      questions.push(early.query({ host: '127.0.0.1', pid }).then((r) => {
        earlyStates[r.state] = (earlyStates[r.state] ?? 0) + 1;
        triesSeen[r.tries] = (triesSeen[r.tries] ?? 0) + 1;
        if (r.state === 'exists' && r.start === undefined) earlyNoToken++;
        if (r.state === 'no_reply' || r.state === 'unknown') silent.push(`early ${pid}: ${r.state} ${r.failure?.kind ?? ''}`);
      }));
      await new Promise<void>((resolve) => child.on('exit', () => resolve()));
      // 'exit' comes after the wait: the pid is free from here on, until reused.
      const lastAtReap = lastPid();
      questions.push(late.query({ host: '127.0.0.1', pid }).then((r) => {
        lateStates[r.state] = (lateStates[r.state] ?? 0) + 1;
        triesSeen[r.tries] = (triesSeen[r.tries] ?? 0) + 1;
        if (r.state === 'no_reply' || r.state === 'unknown') silent.push(`late ${pid}: ${r.state} ${r.failure?.kind ?? ''}`);
        // Reused only if the kernel handed the pid out again between the reap and the answer.
        if (r.state === 'exists') suspicious.push({ pid, reused: allocatedBetween(pid, lastAtReap, lastPid()) || pidInUse(pid) });
      }));
    };
    // Up to 500 in 3 s; on a busy machine on until 300, the fewest that churn the table, within a liveness bound of 120 s.
    const enough = 300;
    const bound = performance.now() + 120_000;
    const worker = async (): Promise<void> => {
      while (started < 500 && (performance.now() < deadline || started < enough) && performance.now() < bound) {
        started++;
        await one();
      }
    };
    const began = performance.now();
    const dropsBefore = udpRcvbufErrors();
    await Promise.all(Array.from({ length: 4 }, () => worker()));
    const spawnMs = performance.now() - began;
    await Promise.all(questions);
    const drops = udpRcvbufErrors() - dropsBefore;
    // An "exists" for a reaped pid is wrong unless the pid was handed out again meanwhile.
    const violations = suspicious.filter(({ reused }) => !reused);
    t.diagnostic(`${started} processes in ${Math.round(spawnMs)} ms; asked while running: ${JSON.stringify(earlyStates)} (${earlyNoToken} "exists" without a token); asked once reaped: ${JSON.stringify(lateStates)}; ${suspicious.length} "exists" after the reap, ${suspicious.length - violations.length} of them reused; tries per answer ${JSON.stringify(triesSeen)}; ${drops} datagrams dropped on full receive queues meanwhile (RcvbufErrors, whole machine)`);
    assert.ok(started >= enough, `only ${started} processes started in 120 s`);
    assert.deepEqual(silent.slice(0, 10), [], `${silent.length} questions got no answer`);
    assert.deepEqual(violations.map((v) => v.pid), [], 'reaped, unreused pids said to exist');
    // The daemon is still there and answers.
    const ping = await runBin('pidstat', ['--port', String(daemon.port), 'ping', '127.0.0.1'], NO_STDIN);
    assert.equal(ping.code, 0, describeRun(ping));
  });
});

describe('a daemon that cannot read /proc/<pid> (run as nobody, /proc mounted with hidepid)', () => {
  const why = !IS_ROOT
    ? `not root (uid ${process.getuid?.()}): needs unshare, mount and setpriv`
    : spawnSync('unshare', ['--pid', '--fork', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t proc -o hidepid=1 proc /proc && setpriv --reuid=65534 --regid=65534 --clear-groups true'], { encoding: 'utf8', timeout: 10_000 }).status !== 0
      ? 'cannot mount a /proc with hidepid in a PID and mount namespace of our own, or cannot setpriv to nobody'
      : undefined;

  for (const hidepid of [1, 2]) {
    test(`hidepid=${hidepid}: asked with flag 8 about root's processes (their /proc/<pid>/stat unreadable), it still answers${hidepid === 1 ? ': exists, without a start token' : ''}`, { skip: why ?? false }, async (t) => {
      // pid 1 of a PID namespace: a root sleeper, then the daemon as nobody; both printed as the namespace sees them.
      const script = `
        mount -t proc -o hidepid=${hidepid} proc /proc || exit 97
        sleep 600 &
        echo "sleeper $!"
        setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'test -e "/proc/$1" && echo "nobody sees /proc/$1"; cat "/proc/$1/stat" >/dev/null 2>&1 || echo "nobody cannot read /proc/$1/stat"' sh "$!"
        setpriv --reuid=65534 --regid=65534 --clear-groups "$0" "$1" --foreground --bind 127.0.0.1 --port 0 &
        d=$!
        echo "daemon $d"
        wait "$d"
      `;
      const child = spawn('unshare', ['--pid', '--fork', '--mount', '--propagation', 'private', '--kill-child', 'sh', '-c', script, '/bin/sh', BIN.pidstatd], { stdio: ['ignore', 'pipe', 'pipe'], env: binEnv() });
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
      const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
      t.after(async () => {
        // unshare --kill-child: SIGKILL to unshare ends the namespace's pid 1, and with it everything inside.
        child.kill('SIGKILL');
        await closed;
      });
      assert.ok(await waitFor(() => /listening on .*:\d+$/m.test(out) || child.exitCode !== null, 10_000), `the daemon did not start: ${out}`);
      const port = Number(/listening on .*:(\d+)$/m.exec(out)?.[1]);
      const sleeper = Number(/^sleeper (\d+)$/m.exec(out)?.[1]);
      const daemonPid = Number(/^daemon (\d+)$/m.exec(out)?.[1]);
      assert.ok(port > 0 && sleeper > 1 && daemonPid > 1, out);
      const ask = async (request: string): Promise<string | undefined> => {
        const socket = dgram.createSocket('udp4');
        await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
        try {
          return await new Promise<string | undefined>((resolve) => {
            const timer = setTimeout(() => resolve(undefined), 1000);
            socket.on('message', (msg, from) => {
              if (from.port !== port) return;
              clearTimeout(timer);
              resolve(msg.toString('latin1'));
            });
            socket.send(request, port, '127.0.0.1');
          });
        } finally {
          socket.close();
        }
      };
      const answers = {
        sleeper: await ask(`PIDR ${sleeper} h 15\n`),
        sleeperWithToken: await ask(`PIDR ${sleeper} h 3 12345\n`),
        init: await ask('PIDR 1 h 15\n'),
        itself: await ask(`PIDR ${daemonPid} h 15\n`),
        none: await ask('PIDR 99999 h 15\n'),
      };
      t.diagnostic(`hidepid=${hidepid}: ${JSON.stringify(answers)}`);
      for (const [what, reply] of Object.entries(answers)) assert.ok(reply !== undefined, `no answer about ${what}: ${out}`);
      assert.match(answers.itself!, new RegExp(`^EXIS ${daemonPid} 1 h \\d+$`), 'about itself, with its token');
      assert.equal(answers.none, 'EXIS 99999 0 h');
      assert.match(out, new RegExp(`^nobody cannot read /proc/${sleeper}/stat$`, 'm'), 'the sleeper\'s stat is readable by nobody: nothing is tested');
      if (hidepid === 1) {
        // /proc/<pid> is there (nobody's stat(2) and test -e see it), its stat unreadable: exists, and no token is sent or compared.
        assert.match(out, new RegExp(`^nobody sees /proc/${sleeper}$`, 'm'), 'with hidepid=1 nobody should see the directory');
        assert.equal(answers.sleeper, `EXIS ${sleeper} 1 h`, `a live root process whose /proc/${sleeper} nobody sees (stat and test -e find it; only access(2) says EPERM under hidepid=1) must be answered as existing`);
        assert.equal(answers.sleeperWithToken, `EXIS ${sleeper} 1 h`);
        assert.equal(answers.init, 'EXIS 1 1 h');
      } else {
        // /proc/<pid> is hidden, but kill() says EPERM, which only a live process gives: exists (doc/protocol.md, EXIS and UNKN).
        assert.equal(answers.sleeper, `EXIS ${sleeper} 1 h`, 'a live root process hidden by hidepid=2 must be answered as existing (kill() said EPERM)');
        assert.equal(answers.init, 'EXIS 1 1 h');
      }
    });
  }
});
