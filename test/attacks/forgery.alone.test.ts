import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import { startForger, type Forger, type ForgerReport } from '../support/forger.js';
import { BIN, binCommand, binEnv, deadPid, isRunning, sleep, startDaemon, startSleeper, waitFor, type Daemon, type RunResult } from '../support/helpers.js';
import { commandRuns, descendants, watchersOf } from '../support/jobs.js';
import { createHostPair, inNetns, netnsUnavailable, type HostPair } from '../support/netns.js';
import { startPerlDaemon, type PerlDaemon } from '../support/perl-daemon.js';

/**
 * Answers cannot be forged by whoever cannot read the requests (doc/protocol.md,
 * The cookie). A forger who knows the watched pid and the host word
 * sprays `EXIS <pid> 0|1 <host>` at the client, while the true answer is slow
 * to come (a daemon that answers after 1.5 s or more, or never): pidstat must
 * still print the true state, or no_reply, never the forged one; pidwatch must
 * not kill a job whose watched pid lives, and must still kill it once that pid
 * dies. One host's daemon must not answer for another host.
 *
 * Two forgers (forger.ts): one that sprays the ports of the client process
 * itself, found in /proc (on this host's loopback: it hits nothing else), and
 * one that sprays every port of the ephemeral range, which hits every socket
 * of its network namespace, so it runs in a namespace of its own with its
 * clients and daemons (root only; skipped with the reason elsewhere).
 */

type Wrap = (command: string, args: string[]) => [string, string[]];

interface Running {
  pid: number;
  result: Promise<RunResult>;
}

/** Starts a built bin (through `wrap`, e.g. into a network namespace) and hands back its pid at once. */
function startBin(name: keyof typeof BIN, args: readonly string[], wrap?: Wrap, timeoutMs = 20_000): Running {
  const [command, full] = wrap ? wrap(...binCommand(name, args)) : binCommand(name, args);
  const started = performance.now();
  const child = spawn(command, full, { stdio: ['ignore', 'pipe', 'pipe'], env: binEnv() });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const result = new Promise<RunResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
  return { pid: child.pid!, result };
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Ended already.
  }
}

function describeRun(result: RunResult): string {
  return `exit ${result.code}${result.signal ? ` (${result.signal})` : ''} after ${Math.round(result.ms)} ms; stdout: ${JSON.stringify(result.stdout)}; stderr: ${JSON.stringify(result.stderr.slice(0, 2000))}`;
}

function describeForger(report: ForgerReport): string {
  if (report.reason === 'lost') return `the forger ${report.lost}`;
  return `the forger sent ${report.sent} datagrams in ${report.rounds} rounds (${report.reason}; ports ${report.ports.join(',') || 'none'}; ${report.errors} send errors)`;
}

/** A pidstat scenario: the daemon it asks, the target, the options, and what it must print. */
interface Scenario {
  name: string;
  port: number;
  target: string;
  pid: number;
  /** The state a forger claims (the false one). */
  forged: 0 | 1;
  args: readonly string[];
  state: 'exists' | 'dead' | 'no_reply';
  code: number;
}

/** The daemons a pidstat scenario set needs, all in one place (a network namespace, or this host). */
interface Daemons {
  /** The original daemon, answering after 1.5 s. */
  perl: PerlDaemon;
  /** The original daemon, never answering. */
  silent: PerlDaemon;
  /** This suite's pidstatd, made slow by a forwarding stand-in in front of it. */
  ours: Daemon;
  slowOurs: PerlDaemon;
  stop(): Promise<void>;
}

const SLOW_MS = 1000;

async function startDaemons(wrap?: Wrap): Promise<Daemons> {
  const started: { stop(): Promise<unknown> }[] = [];
  try {
    const perl = await startPerlDaemon({ delayMs: SLOW_MS, ...(wrap && { wrap }) });
    started.push(perl);
    const silent = await startPerlDaemon({ silent: true, ...(wrap && { wrap }) });
    started.push(silent);
    const ours = await startDaemon(['--bind', '127.0.0.1'], {}, wrap);
    started.push(ours);
    const slowOurs = await startPerlDaemon({ delayMs: SLOW_MS, forwardTo: `127.0.0.1:${ours.port}`, ...(wrap && { wrap }) });
    started.push(slowOurs);
    return { perl, silent, ours, slowOurs, stop: async () => void (await Promise.all(started.map((s) => s.stop()))) };
  } catch (err) {
    await Promise.all(started.map((s) => s.stop()));
    throw err;
  }
}

/**
 * The pidstat runs every forgery test makes: a live pid through a slow daemon
 * (ours and the original) must stay `exists`, through a silent one
 * `no_reply`; a dead pid must stay `dead` or `no_reply`, never `exists`.
 * The slow answers come within the first try (timeout above the delay), so
 * a client that renews its cookie on each try loses nothing.
 */
function scenarios(daemons: Daemons, live: number, dead: number): Scenario[] {
  const slow = ['--no-local', '--tries', '2', '--try-timeout', `${SLOW_MS + 600}ms`];
  const silent = ['--no-local', '--tries', '2', '--try-timeout', '900ms'];
  return [
    { name: 'the original daemon, slow: live pid', port: daemons.perl.port, target: `127.0.0.1:${live}`, pid: live, forged: 0, args: slow, state: 'exists', code: 0 },
    { name: 'pidstatd, slow: live pid', port: daemons.slowOurs.port, target: `127.0.0.1:${live}`, pid: live, forged: 0, args: slow, state: 'exists', code: 0 },
    { name: 'a silent daemon: live pid', port: daemons.silent.port, target: `127.0.0.1:${live}`, pid: live, forged: 0, args: silent, state: 'no_reply', code: 2 },
    { name: 'the original daemon, slow: dead pid', port: daemons.perl.port, target: `127.0.0.1:${dead}`, pid: dead, forged: 1, args: slow, state: 'dead', code: 1 },
    { name: 'pidstatd, slow: dead pid', port: daemons.slowOurs.port, target: `127.0.0.1:${dead}`, pid: dead, forged: 1, args: slow, state: 'dead', code: 1 },
    { name: 'a silent daemon: dead pid', port: daemons.silent.port, target: `127.0.0.1:${dead}`, pid: dead, forged: 1, args: silent, state: 'no_reply', code: 2 },
  ];
}

function startScenario(scenario: Scenario, wrap?: Wrap): Running {
  return startBin('pidstat', ['--port', String(scenario.port), ...scenario.args, scenario.target], wrap);
}

/** What is wrong with a scenario's run, or undefined. */
function scenarioFailure(scenario: Scenario, result: RunResult, forger: string): string | undefined {
  if (result.stdout !== `${scenario.target} ${scenario.state}\n`) {
    return `${scenario.name}: expected ${scenario.state}${result.stdout.includes(scenario.forged === 0 ? ' dead' : ' exists') ? `, the forged "${scenario.forged === 0 ? 'dead' : 'exists'}" was believed` : ''}: ${describeRun(result)}; ${forger}`;
  }
  if (result.code !== scenario.code) return `${scenario.name}: expected exit ${scenario.code}: ${describeRun(result)}`;
  return undefined;
}

/** Fails with every scenario that went wrong, not only the first. */
function assertNoFailures(failures: readonly (string | undefined)[], trailer = ''): void {
  const found = failures.filter((f): f is string => f !== undefined);
  if (found.length > 0) assert.fail(`${found.length} of ${failures.length} runs went wrong:\n${found.join('\n')}${trailer && `\n${trailer}`}`);
}

const netnsWhy = netnsUnavailable();

describe('forged answers', () => {
  test('pidstat: a forger spraying the client\'s own UDP ports changes no answer', async () => {
    const sleeper = startSleeper();
    const dead = await deadPid();
    const daemons = await startDaemons();
    const forgers: Forger[] = [];
    try {
      const runs = scenarios(daemons, sleeper.pid, dead).map(async (scenario): Promise<string | undefined> => {
        const running = startScenario(scenario);
        const forger = await startForger({
          mode: 'target',
          targetPid: running.pid,
          forge: [{ pid: scenario.pid, state: scenario.forged }],
          hosts: ['127.0.0.1'],
          durationMs: 8000,
        });
        forgers.push(forger);
        const result = await running.result;
        const report = await forger.stop();
        if (!(report.ports.length > 0 && report.sent > 0)) return `${scenario.name}: the forger never reached the client: ${describeForger(report)}`;
        return scenarioFailure(scenario, result, describeForger(report));
      });
      assertNoFailures(await Promise.all(runs));
    } finally {
      await Promise.all(forgers.map((f) => f.stop()));
      await daemons.stop();
      await sleeper.stop();
    }
  });

  test('pidstat: a forger spraying every ephemeral port (IPv4 and IPv6) changes no answer', { skip: netnsWhy ?? false }, async (t) => {
    const pair: HostPair = await createHostPair();
    const wrap: Wrap = (command, args) => inNetns(pair.a, command, args);
    const sleeper = startSleeper();
    const dead = await deadPid();
    let daemons: Daemons | undefined;
    let perl6: PerlDaemon | undefined;
    let forger: Forger | undefined;
    try {
      daemons = await startDaemons(wrap);
      const all = scenarios(daemons, sleeper.pid, dead);
      try {
        perl6 = await startPerlDaemon({ bind: '::1', delayMs: SLOW_MS, wrap });
        all.push({ ...all[0]!, name: 'the original daemon on ::1, slow: live pid', port: perl6.port, target: `[::1]:${sleeper.pid}` });
      } catch (err) {
        t.diagnostic(`no IPv6 case: ::1 unusable in the namespace (${(err as Error).message.split('\n')[0]})`);
      }
      forger = await startForger({
        mode: 'sweep',
        forge: [{ pid: sleeper.pid, state: 0 }, { pid: dead, state: 1 }],
        hosts: ['127.0.0.1', ...(perl6 ? ['::1'] : [])],
        ipv6: perl6 !== undefined,
        durationMs: 10_000,
        wrap,
      });
      const results = await Promise.all(all.map((scenario) => startScenario(scenario, wrap).result));
      const report = await forger.stop();
      t.diagnostic(describeForger(report));
      assertNoFailures(all.map((scenario, i) => scenarioFailure(scenario, results[i]!, describeForger(report))));
      // The sweep reached the daemons' ports too: proof that it covered the range.
      const seen = await daemons.perl.stop();
      assert.ok(report.sent > 0 && (report.rounds >= 1 || seen.ignored > 0), `the sweep reached nothing: ${describeForger(report)}; the stand-in ignored ${seen.ignored}`);
    } finally {
      await forger?.stop();
      await perl6?.stop();
      await daemons?.stop();
      await sleeper.stop();
      await pair.destroy();
    }
  });

  test(
    `pidwatch --interval 200: forged "dead" answers ${netnsWhy ? 'aimed at its port' : 'over the whole ephemeral range and aimed at its port'} for 2 s kill no job; the true death does`,
    async (t) => {
      if (netnsWhy) t.diagnostic(`the sweeping forger is left out (${netnsWhy}); the targeted one runs on this host's loopback`);
      const pair = netnsWhy ? undefined : await createHostPair();
      const wrap: Wrap | undefined = pair && ((command, args) => inNetns(pair.a, command, args));
      const sleeper = startSleeper();
      const started: { stop(): Promise<unknown> }[] = [];
      const watchers: Running[] = [];
      const jobs: number[] = [];
      try {
        const ours = await startDaemon(['--bind', '127.0.0.1'], {}, wrap);
        started.push(ours);
        const perl = await startPerlDaemon({ ...(wrap && { wrap }) });
        started.push(perl);
        const daemons = [{ name: 'pidstatd', port: ours.port }, { name: 'the original daemon', port: perl.port }];
        for (const { port } of daemons) {
          watchers.push(startBin(
            'pidwatch',
            ['--no-local', '--host', '127.0.0.1', '--port', String(port), '--pid', String(sleeper.pid), '--interval', '200ms', 'sleep', '30'],
            wrap,
            30_000,
          ));
        }
        for (const [i, watcher] of watchers.entries()) {
          let ended = false;
          void watcher.result.then(() => (ended = true));
          // pidwatch runs its command (the job's root) in its own process.
          await waitFor(() => ended || commandRuns(watcher.pid), 5000);
          if (ended) assert.fail(`${daemons[i]!.name}: pidwatch ended before its job could be seen: ${describeRun(await watcher.result)}`);
          const job = commandRuns(watcher.pid) ? watcher.pid : undefined;
          assert.ok(job !== undefined, `${daemons[i]!.name}: pidwatch started no job within 5 s`);
          jobs.push(job);
        }

        const forge = { forge: [{ pid: sleeper.pid, state: 0 as const }], hosts: ['127.0.0.1'], ...(wrap && { wrap }) };
        const forgers: Forger[] = [];
        // The questions come from each job's detached watcher: aim at its port.
        for (const job of jobs) {
          let watcher: number | undefined;
          assert.ok(await waitFor(() => (watcher = watchersOf(job)[0]) !== undefined, 5000), `no watcher for the job ${job}`);
          forgers.push(await startForger({ ...forge, mode: 'target', targetPid: watcher!, durationMs: 6000 }));
        }
        if (wrap) forgers.push(await startForger({ ...forge, mode: 'sweep', durationMs: 60_000 }));
        started.push(...forgers);
        await Promise.all(forgers.slice(0, watchers.length).map((f) => f.found(3000)));
        await sleep(2000);
        // The sweep has reached every port, the watchers' among them, however busy the machine (a liveness bound).
        if (wrap) assert.ok(await forgers[watchers.length]!.swept(20_000), 'the sweep ended before it covered the range once');
        const reports = await Promise.all(forgers.map((f) => f.stop()));
        const told = reports.map(describeForger).join('; ');
        t.diagnostic(told);
        const failures: (string | undefined)[] = [];
        for (const [i, job] of jobs.entries()) {
          const name = daemons[i]!.name;
          if (!(reports[i]!.sent > 0)) failures.push(`${name}: the targeted forger sent nothing`);
          else if (!isRunning(job)) failures.push(`${name}: the job was killed on a forged answer: ${describeRun(await watchers[i]!.result)}`);
          else failures.push(undefined);
        }
        assertNoFailures(failures, told);
        if (wrap) assert.ok(reports[watchers.length]!.rounds >= 1, `the sweep did not cover the range once: ${told}`);

        await sleeper.stop();
        for (const [i, job] of jobs.entries()) {
          assert.ok(await waitFor(() => !isRunning(job), 5000), `${daemons[i]!.name}: the watched pid died and the job still runs`);
          // pidwatch ends as its job did: by the SIGHUP it sent.
          const result = await watchers[i]!.result;
          assert.equal(result.signal, 'SIGHUP', `${daemons[i]!.name}: ${describeRun(result)}`);
        }
      } finally {
        // Each job: what it started and its detached watcher, then the job's root, pidwatch itself.
        for (const job of jobs) for (const pid of [...descendants(job), ...watchersOf(job)]) killQuietly(pid);
        for (const watcher of watchers) killQuietly(watcher.pid);
        await Promise.all(started.map((s) => s.stop()));
        await sleeper.stop();
        await pair?.destroy();
      }
    },
  );

  test('one host\'s daemon cannot answer for another: a hostile 127.0.0.2 says 127.0.0.3\'s live pid is dead', async () => {
    const sleeper = startSleeper();
    let hostile: PerlDaemon | undefined;
    let honest: PerlDaemon | undefined;
    try {
      // Both on one port, as the client asks every host on the same port.
      for (let attempt = 0; honest === undefined; attempt++) {
        hostile = await startPerlDaemon({ bind: '127.0.0.2', forgeFor: '127.0.0.3' });
        try {
          honest = await startPerlDaemon({ bind: '127.0.0.3', port: hostile.port, delayMs: SLOW_MS });
        } catch (err) {
          await hostile.stop();
          if (attempt >= 4) throw err;
        }
      }
      const result = await startBin('pidstat', [
        '--no-local', '--port', String(hostile!.port), '--tries', '2', '--try-timeout', `${SLOW_MS + 600}ms`,
        `127.0.0.2:${sleeper.pid}`, `127.0.0.3:${sleeper.pid}`,
      ]).result;
      const stats = await hostile!.stop();
      assert.equal(
        result.stdout,
        `127.0.0.2:${sleeper.pid} exists\n127.0.0.3:${sleeper.pid} exists\n`,
        `${describeRun(result)}; the hostile daemon sent ${stats.forged} forged answers; requests it got: ${JSON.stringify(hostile!.requests)}`,
      );
      assert.equal(result.code, 0, describeRun(result));
      assert.ok(stats.forged > 0 && hostile!.requests.length > 0, `the hostile daemon got no request and forged nothing: ${JSON.stringify(stats)}`);
      assert.ok(honest.requests.length > 0, 'the honest daemon got no request');
    } finally {
      await hostile?.stop();
      await honest?.stop();
      await sleeper.stop();
    }
  });
});
