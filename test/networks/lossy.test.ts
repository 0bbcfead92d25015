import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { BIN, binCommand, binEnv, expectedExit, isRunning, sleep, startDaemon, waitFor, type Daemon, type RunResult } from '../support/helpers.js';
import { commandRuns, descendants, killAll, watchersOf } from '../support/jobs.js';
import { createHostPair, inNetns, netnsUnavailable, pidInUse, runBinIn, spawnInPidNamespace, type HostPair, type NetnsHost, type NsTree } from '../support/netns.js';
import { startRelay, type Relay, type RelayEntry } from '../support/relay.js';

/**
 * Loss and delay for real (pidstat(1), pidwatch(1)). Network namespaces A
 * and B joined by veth; in B, its own PID namespace with 100 sleepers and the
 * daemon; in A, a user-space relay (test/support/relay.ts: this kernel has no netem)
 * listening on A's address, forwarding to B's daemon and relaying the replies
 * back, dropping a share of the datagrams each way (a seeded hash: the same
 * datagrams are lost on every run) and delaying the others by 20 ms. Also in
 * A, a daemon on 127.0.0.1 at the relay's port, which sees A's processes, not
 * B's: the same pid asked of both hosts in one run has two answers.
 *
 * pidstat and pidwatch run in A. What is checked: no answer is ever wrong; a
 * target is no_reply only when the relay's log shows every one of its tries
 * lost; the number of no_reply is plausible; the exit code follows the lines;
 * total loss is no_reply for all, within tries x timeout; pidwatch never kills
 * on silence, and kills once the pid in B dies while some datagrams get through.
 *
 * Root only (namespaces); skipped with the reason otherwise. Set
 * PIDSTAT_LOSSY_SEED to try other losses.
 */

const unavailable = netnsUnavailable({ pidns: true });
if (unavailable) process.stdout.write(`lossy: every test skipped: ${unavailable}\n`);
const opts = { skip: unavailable ?? false };

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

const SEED = Number(process.env['PIDSTAT_LOSSY_SEED'] ?? 1752_2024);
const LOSS = 0.3;
const DELAY_MS = 20;
const SLEEPERS = 100;
const TRIES = 5;

/**
 * pid 1 of B's PID namespace: $1 sleepers with pids from $4+1 on (where A has
 * none: they are dead to A's daemon), then the daemon ($2 $3); reaps whatever
 * dies while it waits.
 */
const B_SCRIPT = `
echo "$4" > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo "ns_last_pid not writable" >&2
i=0
while [ "$i" -lt "$1" ]; do sleep 600 & echo "sleeper $!"; i=$((i+1)); done
"$2" "$3" --foreground --port 0 --rate 0 &
d=$!
echo "daemon $d"
wait "$d"
echo "daemon-exit $?"
`;

function describeRun(result: RunResult): string {
  const cut = (text: string): string => (text.length > 3000 ? `${text.slice(0, 3000)}...` : text);
  return `exit ${result.code}${result.signal ? ` (${result.signal})` : ''}; stdout: ${JSON.stringify(cut(result.stdout))}; stderr: ${JSON.stringify(cut(result.stderr))}`;
}

/**
 * The start of a block of `size` pids that no process or thread uses in this
 * (A's) PID namespace: the first from a place fixed by the seed, so that the
 * pids, and with them the relay's losses, are the same from run to run.
 */
function freeBlockHere(size: number): number {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'latin1'));
  const span = Math.floor(pidMax * 0.3);
  const first = Math.floor(pidMax * 0.5) + (SEED % span);
  for (let step = 0; step < span; step += 97) {
    const start = Math.floor(pidMax * 0.5) + ((first - Math.floor(pidMax * 0.5) + step) % span);
    if (Array.from({ length: size + 1 }, (_, i) => start + i).every((p) => !pidInUse(p))) return start;
  }
  return 0;
}

/** The last pid the kernel handed out in this (A's) PID namespace. */
function lastPid(): number {
  return Number(readFileSync('/proc/sys/kernel/ns_last_pid', 'latin1'));
}

/** Whether `pid` may have been handed out between two readings of lastPid() (in increasing order, wrapping at pid_max). */
function allocatedBetween(pid: number, from: number, to: number): boolean {
  if (from === to) return false;
  return from < to ? pid > from && pid <= to : pid > from || pid <= to;
}


/** `pidstatd --foreground ARGS` inside a network namespace; resolves once it listens. */
function startDaemonIn(host: NetnsHost, args: readonly string[]): Promise<Daemon> {
  return startDaemon(args, binEnv(), (command, rest) => inNetns(host, command, rest));
}

interface Watcher {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  running(): boolean;
  stderr(): string;
  /** The job's process group (its leader's pid), once seen. */
  job(): number | undefined;
  stop(): Promise<void>;
}

/** pidwatch ARGS run inside `host`'s network namespace; its job's process group is learnt while it runs, to stop it. */
function startPidwatchIn(host: NetnsHost, args: readonly string[]): Watcher {
  const [cmd, full] = inNetns(host, ...binCommand('pidwatch', args));
  const child = spawn(cmd, full, { stdio: ['ignore', 'pipe', 'pipe'], env: binEnv() });
  let stderr = '';
  child.stdout!.resume();
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  let exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;
  let leader: number | undefined;
  const learn = (): void => {
    if (leader !== undefined || exit !== undefined || child.pid === undefined) return;
    // pidwatch runs its command in its own process (ip netns exec execs in place too).
    leader = commandRuns(child.pid) ? child.pid : undefined;
  };
  const learner = setInterval(learn, 20);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => {
    child.on('exit', (code, signal) => {
      clearInterval(learner);
      exit = { code, signal, at: performance.now() };
      resolve(exit);
    });
  });
  return {
    child,
    exited,
    running: () => exit === undefined,
    stderr: () => stderr,
    job: () => {
      learn();
      return leader;
    },
    async stop() {
      clearInterval(learner);
      // What the job started and its detached watcher, by their pids; then pidwatch itself.
      if (leader !== undefined) await killAll([...descendants(leader), ...watchersOf(leader)]);
      if (exit === undefined) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** Resolves with the exit, or undefined after `timeoutMs`. */
async function exitWithin(watcher: Watcher, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)));
  try {
    return await Promise.race([watcher.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('loss and delay for real: A asks B through a lossy relay in A', () => {
  let pair: HostPair;
  let tree: NsTree | undefined;
  let relay: Relay | undefined;
  let local: Awaited<ReturnType<typeof startDaemonIn>> | undefined;
  /** Sleepers in B: their pids in B, and in this process's view. */
  let live: { inner: number; outer: number }[] = [];
  /** pids no process uses in B. */
  let deadInB: number[] = [];
  let relayAddress = '';
  const watchers: Watcher[] = [];

  /** The relay's entries from `seq` on. */
  const entriesFrom = (seq: number): RelayEntry[] => relay!.entries.filter((e) => e.seq >= seq);
  /** Waits until the relay has been quiet for 300 ms (its log is complete). */
  const settle = async (): Promise<void> => {
    let count = -1;
    while (count !== relay!.entries.length) {
      count = relay!.entries.length;
      await sleep(300);
    }
  };

  before(async () => {
    if (unavailable) return;
    pair = await createHostPair();
    try {
      tree = spawnInPidNamespace(pair.b, 'sh', ['-c', B_SCRIPT, 'sh', String(SLEEPERS), '/bin/sh', BIN.pidstatd, String(freeBlockHere(SLEEPERS + 50))]);
      const daemonPort = Number((await tree.waitFor(/pidstatd: listening on .*:(\d+)$/m, { stream: 'stderr', timeoutMs: 15_000 }))[1]);
      const inner = [...tree.stdout().matchAll(/^sleeper (\d+)$/gm)].map((m) => Number(m[1]));
      assert.equal(inner.length, SLEEPERS, `B started ${inner.length} sleepers: ${tree.stdout()}`);
      const t = tree;
      assert.ok(await waitFor(() => inner.every((p) => t.outerPid(p) !== undefined), 10_000), 'the sleepers in B are not found from here');
      if (/ns_last_pid not writable/.test(t.stderr())) process.stdout.write('# lossy: ns_last_pid not writable in B: the sleepers have low pids, which A may use too\n');
      const map = new Map(t.processes().map((p) => [p.inner, p.pid]));
      live = inner.map((p) => ({ inner: p, outer: map.get(p)! }));
      const used = t.innerPidsInUse();
      // Dead in B: first pids that A uses (kernel threads, long-lived: alive to A's daemon), then unused ones.
      const aliveHere = readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number).filter((p) => p > 1 && !used.has(p)).sort((x, y) => x - y);
      deadInB = aliveHere.slice(0, 20);
      for (let p = 400; deadInB.length < SLEEPERS; p++) if (!used.has(p) && !deadInB.includes(p)) deadInB.push(p);

      relayAddress = pair.a.ipv4;
      relay = await startRelay({
        listen: relayAddress,
        target: `${pair.b.ipv4}:${daemonPort}`,
        loss: LOSS,
        delayMs: DELAY_MS,
        seed: SEED,
        wrap: (command, args) => inNetns(pair.a, command, args),
      });
      // The relay's dice go by a target's place in this list, not its pid: the same datagrams are lost on every run.
      await relay.setLabels([...live.map((l) => l.inner), ...deadInB]);
      local = await startDaemonIn(pair.a, ['--bind', '127.0.0.1', '--port', String(relay.port), '--rate', '0']);
    } catch (err) {
      await relay?.stop();
      await local?.stop();
      await tree?.stop();
      destroyPair(pair);
      throw err;
    }
  });

  after(async () => {
    for (const watcher of watchers) await watcher.stop();
    await relay?.stop();
    await local?.stop();
    // SIGKILL to B's pid 1 ends the sleepers and the daemon with it.
    await tree?.stop();
    destroyPair(pair);
  });

  const pidstat = (args: readonly string[], timeoutMs = 30_000): Promise<RunResult> =>
    runBinIn(pair.a, 'pidstat', ['--no-local', '--port', String(relay!.port), ...args], { ...NO_STDIN, timeoutMs });

  test('without loss, through the relay: every answer right and each at least 40 ms late (20 ms each way)', opts, async (t) => {
    const from = await relay!.setLoss(0);
    const targets = [live[0]!.inner, deadInB[0]!, live[1]!.inner, deadInB[1]!];
    const result = await pidstat(['--json', ...targets.map((p) => `${relayAddress}:${p}`)]);
    assert.equal(result.code, 1, describeRun(result));
    const json = JSON.parse(result.stdout) as { host: string; pid: number; state: string; ms: number }[];
    assert.deepEqual(json.map((r) => `${r.host}:${r.pid} ${r.state}`), targets.map((p, i) => `${relayAddress}:${p} ${i % 2 === 0 ? 'exists' : 'dead'}`));
    t.diagnostic(`answer times through the relay: ${json.map((r) => r.ms).join(', ')} ms`);
    for (const r of json) assert.ok(r.ms >= 2 * DELAY_MS - 1, `${r.host}:${r.pid} answered in ${r.ms} ms: the relay does not delay`);
    await settle();
    assert.ok(entriesFrom(from).every((e) => !e.dropped), 'the relay dropped a datagram at 0 % loss');
  });

  test(`${LOSS * 100} % loss each way, ${DELAY_MS} ms delay: 200 targets in B and 40 on A's loopback daemon, no line wrong, no_reply only where the log shows every try lost`, opts, async (t) => {
    const from = await relay!.setLoss(LOSS);
    // Truth in B: the sleepers live (checked again after), the others are unused.
    const usedBefore = tree!.innerPidsInUse();
    const relayTargets: { pid: number; truth: 'exists' | 'dead' }[] = [];
    for (let i = 0; i < SLEEPERS; i++) {
      relayTargets.push({ pid: live[i]!.inner, truth: 'exists' });
      relayTargets.push({ pid: deadInB[i]!, truth: 'dead' });
    }
    // The same pids asked of A's own daemon, where they mean A's processes: a reply must answer its own host only.
    const loopbackPids = [...live.slice(0, 20).map((l) => l.inner), ...deadInB.slice(0, 20)];
    const aBefore = new Map(loopbackPids.map((p) => [p, pidInUse(p)]));
    const lastBefore = lastPid();
    const words = [...loopbackPids.map((p) => `127.0.0.1:${p}`), ...relayTargets.map((x) => `${relayAddress}:${x.pid}`)];

    const result = await pidstat(words);
    await settle();
    const usedAfter = tree!.innerPidsInUse();
    const aAfter = new Map(loopbackPids.map((p) => [p, pidInUse(p)]));
    const lastAfter = lastPid();

    const lines = result.stdout.split('\n').filter(Boolean);
    assert.equal(lines.length, words.length, describeRun(result));
    const states = lines.map((line, i) => {
      const match = /^(\S+) (exists|dead|unknown|no_reply)$/.exec(line);
      assert.ok(match, `line ${i + 1} is not HOST:PID STATE: ${JSON.stringify(line)}`);
      assert.equal(match[1], words[i], `line ${i + 1} is not about the target given in that place`);
      return match[2]!;
    });
    assert.equal(result.code, expectedExit(states), `the exit code does not follow the lines; ${describeRun(result)}`);

    const wrong: string[] = [];
    // A's loopback daemon: no loss, so every one answers, and with A's truth.
    let differing = 0;
    loopbackPids.forEach((pid, i) => {
      const state = states[i]!;
      const truth = aBefore.get(pid) ? 'exists' : 'dead';
      // No truth for a pid that came, went, or was handed out to some process meanwhile.
      if (aBefore.get(pid) !== aAfter.get(pid) || allocatedBetween(pid, lastBefore, lastAfter)) return;
      const inB = i < 20 ? 'exists' : 'dead';
      if (truth !== inB) differing++;
      if (state !== truth) wrong.push(`127.0.0.1:${pid} ${state}, but in A it is ${truth} (in B: ${inB})`);
    });

    const entries = entriesFrom(from);
    const about = (dir: 'req' | 'rep', pid: number): RelayEntry[] => entries.filter((e) => e.dir === dir && e.pid === pid && e.host === relayAddress);
    const noReply: string[] = [];
    const noReplyPids: number[] = [];
    const unproven: string[] = [];
    relayTargets.forEach(({ pid, truth }, j) => {
      const state = states[loopbackPids.length + j]!;
      const reqs = about('req', pid);
      const reps = about('rep', pid);
      if (state === 'no_reply') {
        noReply.push(`[${j}] (${truth === 'exists' ? 'live' : 'dead'} pid ${pid})`);
        noReplyPids.push(pid);
        const forwarded = reqs.filter((e) => !e.dropped).length;
        if (reqs.length !== TRIES) unproven.push(`${relayAddress}:${pid}: ${reqs.length} requests reached the relay, not ${TRIES}`);
        if (reps.some((e) => !e.dropped)) unproven.push(`${relayAddress}:${pid}: a reply went through (${reps.filter((e) => !e.dropped).map((e) => JSON.stringify(e.text)).join(', ')}) but the line says no_reply`);
        if (reps.length !== forwarded) unproven.push(`${relayAddress}:${pid}: ${forwarded} requests went through, ${reps.length} replies came back`);
        return;
      }
      const stable = truth === 'exists'
        ? tree!.outerPid(pid) !== undefined
        : !usedBefore.has(pid) && !usedAfter.has(pid);
      if (!stable) return;
      if (state !== truth) wrong.push(`${relayAddress}:${pid} ${state}, but in B it is ${truth}`);
      if (!reps.some((e) => !e.dropped)) unproven.push(`${relayAddress}:${pid} ${state}, but the relay let no reply through`);
      if (reqs.length < 1 || reqs.length > TRIES) unproven.push(`${relayAddress}:${pid}: ${reqs.length} requests, not 1 to ${TRIES}`);
    });

    const reqs = entries.filter((e) => e.dir === 'req');
    const reps = entries.filter((e) => e.dir === 'rep');
    const rate = (list: RelayEntry[]): string => `${list.filter((e) => e.dropped).length}/${list.length} = ${((100 * list.filter((e) => e.dropped).length) / Math.max(1, list.length)).toFixed(1)} %`;
    t.diagnostic(`seed ${SEED}: requests dropped ${rate(reqs)}, replies dropped ${rate(reps)}`);
    t.diagnostic(`no_reply: ${noReply.length} of ${relayTargets.length} (expected about ${(relayTargets.length * (1 - (1 - LOSS) ** 2) ** TRIES).toFixed(1)}): targets ${noReply.join(' ') || 'none'}; exit ${result.code}; ${Math.round(result.ms)} ms`);
    t.diagnostic(`${differing} of ${loopbackPids.length} loopback targets have another answer in A than in B`);
    assert.ok(differing >= 10, `only ${differing} of the loopback targets differ between A and B: the check of matching by host is too weak`);

    assert.deepEqual(wrong, [], 'wrong answers');
    assert.deepEqual(unproven, [], 'lines the relay log does not bear out');
    assert.ok(noReply.length < relayTargets.length * 0.1, `${noReply.length} of ${relayTargets.length} targets no_reply at ${LOSS * 100} % loss each way with ${TRIES} tries`);
    // The relay itself: its drop rate is what it was told.
    for (const list of [reqs, reps]) {
      const share = list.filter((e) => e.dropped).length / list.length;
      assert.ok(share > LOSS - 0.1 && share < LOSS + 0.1, `the relay dropped ${rate(list)}`);
    }
    for (const pid of noReplyPids) assert.match(result.stderr, new RegExp(`^pidstat: ${relayAddress.replace(/\./g, '\\.')}:${pid}: no reply after ${TRIES} tries$`, 'm'));
  });

  test('100 % loss, --try-timeout 300ms --tries 3: all 200 no_reply after their 3 tries of 300 ms, exit 2, exactly 3 requests each', opts, async (t) => {
    const from = await relay!.setLoss(1);
    const pids = [...live.map((l) => l.inner), ...deadInB];
    const result = await pidstat(['--json', '--try-timeout', '300ms', '--tries', '3', ...pids.map((p) => `${relayAddress}:${p}`)]);
    await settle();
    t.diagnostic(`${Math.round(result.ms)} ms for ${pids.length} targets`);
    assert.equal(result.code, 2, describeRun(result));
    const json = JSON.parse(result.stdout) as { host: string; pid: number; state: string; tries: number; ms: number }[];
    assert.deepEqual(json.map((r) => `${r.host}:${r.pid} ${r.state} ${r.tries}`), pids.map((p) => `${relayAddress}:${p} no_reply 3`));
    // Each target's own time, from its first request to its verdict (no start-up of node in it):
    // 3 tries of 300 ms at least; ten times that a liveness bound.
    const slowest = Math.max(...json.map((r) => r.ms));
    const fastest = Math.min(...json.map((r) => r.ms));
    t.diagnostic(`verdicts after ${fastest} to ${slowest} ms`);
    assert.ok(fastest >= 3 * 300 - 20, `a verdict after ${fastest} ms: fewer than 3 tries of 300 ms`);
    assert.ok(slowest < 10 * 3 * 300, `a verdict after ${slowest} ms, ten times past 3 x 300 ms`);
    const entries = entriesFrom(from);
    const counts = new Map<number, number>();
    for (const e of entries) {
      assert.ok(e.dir === 'req' && e.dropped, `at 100 % loss: ${JSON.stringify(e)}`);
      if (e.host === relayAddress && e.pid !== undefined) counts.set(e.pid, (counts.get(e.pid) ?? 0) + 1);
    }
    const off = pids.filter((p) => counts.get(p) !== 3).map((p) => `${p}: ${counts.get(p) ?? 0}`);
    assert.deepEqual(off, [], 'targets not asked exactly 3 times');
  });

  test('pidwatch through the relay (--interval 200): 100 % loss never kills the job, while pidwatch keeps asking; at 30 % loss the death of the pid in B does', opts, async (t) => {
    const watched = live[SLEEPERS - 1]!;
    const args = ['--no-local', '--host', relayAddress, '--port', String(relay!.port), '--interval', '200ms', '--pid', String(watched.inner)];

    // Total loss: pidwatch hears nothing and asks on, every interval; its job
    // is never touched, and runs until the test ends it.
    const from = await relay!.setLoss(1);
    const quiet = startPidwatchIn(pair.a, [...args, 'sleep 600; exit 0']);
    watchers.push(quiet);
    const askedSoFar = () => entriesFrom(from).filter((e) => e.dir === 'req' && e.pid === watched.inner);
    assert.ok(await waitFor(() => askedSoFar().length >= 8 || !quiet.running(), 20_000), `pidwatch asked ${askedSoFar().length} times in 20 s at --interval 200; stderr: ${quiet.stderr()}`);
    assert.ok(quiet.running(), `pidwatch ended on silence; stderr: ${quiet.stderr()}`);
    const asked = askedSoFar().slice(0, 8);
    const span = asked.at(-1)!.t - asked[0]!.t;
    t.diagnostic(`at 100 % loss pidwatch asked 8 times in ${Math.round(span)} ms (the relay's clock), all dropped`);
    assert.ok(asked.every((e) => e.dropped));
    // Seven intervals of 200 ms between the first and the eighth: ten times
    // that is a liveness bound, which a watch that gave up or backed off misses.
    assert.ok(span < 10 * 7 * 200, `8 questions took ${Math.round(span)} ms at --interval 200`);
    // The job's sleep ended by the test: the shell goes on to `exit 0`, its status pidwatch's.
    const quietJob = quiet.job();
    assert.ok(quietJob !== undefined, `no job seen; stderr: ${quiet.stderr()}`);
    const [quietSleep] = descendants(quietJob);
    assert.ok(quietSleep !== undefined, `the job's sleep is gone: pidwatch signalled its job on silence? stderr: ${quiet.stderr()}`);
    process.kill(quietSleep, 'SIGKILL');
    const end = await exitWithin(quiet, 10_000);
    assert.ok(end, `pidwatch still runs 10 s after its job's sleep was killed; stderr: ${quiet.stderr()}`);
    assert.deepEqual([end.code, end.signal], [0, null], `pidwatch killed its job on silence: exit ${end.code} ${end.signal}; stderr: ${quiet.stderr()}`);

    // 30 % loss: the pid lives, so nothing happens once pidwatch hears B; then it dies, and the job is killed.
    const from2 = await relay!.setLoss(LOSS);
    const watch = startPidwatchIn(pair.a, [...args, 'sleep 30']);
    watchers.push(watch);
    assert.ok(await waitFor(() => watch.job() !== undefined || !watch.running(), 20_000), `pidwatch started no job; stderr: ${watch.stderr()}`);
    const heard = () => entriesFrom(from2).some((e) => e.dir === 'rep' && e.pid === watched.inner && !e.dropped);
    assert.ok(await waitFor(() => heard() || !watch.running(), 20_000), `no reply about pid ${watched.inner} got through to pidwatch in 20 s; stderr: ${watch.stderr()}`);
    assert.ok(watch.running(), `pidwatch ended while the pid in B lived: ${watch.stderr()}`);
    const killedAt = performance.now();
    process.kill(watched.outer, 'SIGKILL');
    assert.ok(await waitFor(() => !pidInUse(watched.outer), 5000), 'the killed sleeper is never reaped in B');
    // A liveness bound: a lost notice waits for the next renewal (12 intervals) or question.
    const death = await exitWithin(watch, 20_000);
    await settle();
    const log = entriesFrom(from2).filter((e) => e.pid === watched.inner);
    t.diagnostic(`pidwatch ended ${death ? Math.round(death.at - killedAt) : '>20000'} ms after the pid in B was killed; at 30 % loss: ${log.filter((e) => e.dir === 'req').length} requests (${log.filter((e) => e.dir === 'req' && e.dropped).length} dropped), ${log.filter((e) => e.dir === 'rep').length} replies (${log.filter((e) => e.dir === 'rep' && e.dropped).length} dropped)`);
    assert.ok(death, `pidwatch still runs 20 s after the pid in B died; stderr: ${watch.stderr()}`);
    assert.equal(death.signal, 'SIGHUP', `pidwatch ended with ${death.code} ${death.signal}; stderr: ${watch.stderr()}`);
    const leader = watch.job();
    if (leader !== undefined) assert.ok(await waitFor(() => !isRunning(leader), 10_000), 'the job still runs');
  });
});
