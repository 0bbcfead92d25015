import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { readStartToken } from '../../src/sys/probe.js';
import { NO_TICKET } from '../../src/wire/pushwire.js';
import { BIN, binCommand, IS_ROOT, ROOT, sleep, startDaemon, startSleeper, waitFor } from '../support/helpers.js';
import { start as startJob, type Exit, type Started } from '../support/jobs.js';
import { createHostPair, inNetns, netnsUnavailable, pidInUse, spawnInPidNamespace, type HostPair, type NsTree } from '../support/netns.js';
import { fate, startRelay, type Relay, type RelayEntry } from '../support/relay.js';

/**
 * Push death notices (doc/protocol.md, Death notices) on real networks,
 * with the real bins, the real daemon and real sockets.
 *
 * 1. A lossy link: network namespaces A and B joined by veth; in B, a PID
 *    namespace of its own with sleepers and the daemon; in A, the lossy
 *    relay (test/support/relay.ts: this kernel has no netem), and pidwatch and
 *    `pidstat wait` asking B's daemon through it. Once they have subscribed,
 *    the relay drops 30 % of the datagrams each way, and the sleepers are
 *    killed one after another: every job must end within the notice's
 *    retransmission schedule, none before its own pid died, and the relay's
 *    log must show notices lost and delivered by a resend. Why: a notice is
 *    one unsolicited datagram; without resends a lost one leaves the job
 *    running until the next poll (here 20 s away) or forever.
 *
 * 2. A forged source: raw IPv4 datagrams (test/support/spoof.py) from a "victim"
 *    address on loopback subscribe in its name. The victim must get nothing
 *    but challenges (SUBC), each no larger than its request, never a SUBR or
 *    a NOTE, and the daemon must store nothing for it; a genuine client,
 *    which echoes its ticket from its own address, does get SUBR 1 and the
 *    NOTE (the contrast that shows the test can fail). Why: a daemon that
 *    took a forged subscription would send an unbounded stream of notices
 *    (8 copies per death) to an address that never asked: a reflector.
 *
 * Root only (namespaces, raw sockets); each test is skipped with the reason
 * otherwise. PIDSTAT_PUSH_LOSSY_SEED picks other losses for test 1.
 */

// ---------------------------------------------------------------------------
// 1. A lossy link

const netUnavailable = netnsUnavailable({ pidns: true });
if (netUnavailable) process.stdout.write(`push-network: the lossy-link test is skipped: ${netUnavailable}\n`);

const LOSS = 0.3;
const DELAY_MS = 20;
/** pidwatch on the first WATCHES sleepers, `pidstat wait` on the last. */
const WATCHES = 5;
const SLEEPERS = WATCHES + 1;
/** When each copy of a notice leaves the daemon, in ms after it sees the death: src/daemon/subscriptions.ts RESEND_MS summed. */
const COPIES_AT_MS = [0, 20, 60, 140, 300, 620, 1260, 2540];
/**
 * How long after the kill a job may end. The last copy leaves 2540 ms after
 * the death; the relay delays it 20 ms; add up to ~940 ms for the daemon to
 * see the death (a pidfd, at once) and for the watcher to hear the notice,
 * signal its job and the job to exit on a loaded machine. Only the loss of
 * all 8 copies (0.3^8, about 7 in 100 000, excluded here by the seed) could
 * push it further; a lost ACKN only causes more copies.
 */
const BOUND_MS = 3500;
/** Between two kills: the jobs of the later pids must still run when an earlier one dies. */
const KILL_GAP_MS = 300;

/**
 * The relay's dice (test/support/relay.ts): a datagram about the pid labelled `#i`
 * is dropped when fate(seed, direction, '#i', n) < LOSS, n counting the
 * datagrams of that direction with the same pid and fourth word before it
 * (relay.ts reads a reply's fourth word as its host): for a NOTE that is the
 * start token, for an ACKN the seq, so a pid's notice copies are n = 0, 1,
 * ... and its first ACKN is n = 0, whatever came before. The seed is
 * the first from PIDSTAT_PUSH_LOSSY_SEED (or a fixed one) for which some
 * notice loses its first two copies (so it needs two resends), none all
 * eight, and some first ACKN is lost: the same datagrams are lost on every
 * run.
 */
function notesDropped(seed: number, label: number): boolean[] {
  return COPIES_AT_MS.map((_, n) => fate(seed, 'rep', `#${label}`, n) < LOSS);
}
/** Whether the first ACKN for the pid labelled `#i` is dropped. */
function firstAckDropped(seed: number, label: number): boolean {
  return fate(seed, 'req', `#${label}`, 0) < LOSS;
}
function chooseSeed(base: number): number {
  for (let seed = base; ; seed++) {
    const firstThrough = Array.from({ length: SLEEPERS }, (_, i) => notesDropped(seed, i).indexOf(false));
    const ackLost = Array.from({ length: SLEEPERS }, (_, i) => firstAckDropped(seed, i)).some(Boolean);
    if (firstThrough.every((k) => k >= 0) && Math.max(...firstThrough) >= 2 && ackLost) return seed;
  }
}
const SEED = chooseSeed(Number(process.env['PIDSTAT_PUSH_LOSSY_SEED'] ?? 1752_2024));

/**
 * pid 1 of B's PID namespace: $1 sleepers, then the daemon ($2 $3) with
 * --debug; reaps the sleepers as they die while it waits for the daemon.
 */
const B_SCRIPT = `
i=0
while [ "$i" -lt "$1" ]; do sleep 600 & echo "sleeper $!"; i=$((i+1)); done
"$2" "$3" --foreground --port 0 --rate 0 --debug &
d=$!
echo "daemon $d"
wait "$d"
echo "daemon-exit $?"
`;

/** Deletes a pair's namespaces synchronously (helpers.run() would write to a stdin that may be gone: see lossy.test.ts). */
function destroyPair(pair: HostPair): void {
  for (const host of [pair.a, pair.b]) spawnSync('ip', ['netns', 'delete', host.name], { stdio: 'ignore', timeout: 10_000 });
}

/**
 * What a test started, stopped once it is over: last started first, and each
 * even when one before it failed (node:test skips a test's remaining after()
 * hooks once one throws, which would leave processes running and this file
 * never ending). `asContext` is for helpers that register their own stop with
 * `t.after()` (jobs.start): it puts that stop on this stack instead.
 */
function cleanupStack(t: TestContext): { push(fn: () => unknown): void; asContext: TestContext } {
  const stack: (() => unknown)[] = [];
  t.after(async () => {
    const errors: unknown[] = [];
    for (const fn of stack.reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'clean-up failed');
  });
  const push = (fn: () => unknown): void => void stack.push(fn);
  return { push, asContext: { after: push } as unknown as TestContext };
}

/** Resolves with the exit, or undefined after `timeoutMs`. */
async function exitWithin(job: Started, timeoutMs: number): Promise<Exit | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)));
  try {
    return await Promise.race([job.exitedNow, late]);
  } finally {
    clearTimeout(timer);
  }
}

describe('push notices over a lossy link (namespaces A and B, relay in A)', () => {
  /** What the relay saw of each notice, for the test after the first. */
  let observed: { pid: number; notes: string; acks: string }[] | undefined;

  test(`A ${LOSS * 100} % lossy link still delivers the notice within the retransmission schedule`, { skip: netUnavailable ?? false, timeout: 60_000 }, async (t) => {
    const cleanups = cleanupStack(t);

    const pair = await createHostPair();
    cleanups.push(() => destroyPair(pair));
    const tree: NsTree = spawnInPidNamespace(pair.b, 'sh', ['-c', B_SCRIPT, 'sh', String(SLEEPERS), '/bin/sh', BIN.pidstatd]);
    cleanups.push(() => tree.stop());
    const daemonPort = Number((await tree.waitFor(/pidstatd: listening on .*:(\d+)$/m, { stream: 'stderr', timeoutMs: 15_000 }))[1]);
    const inner = [...tree.stdout().matchAll(/^sleeper (\d+)$/gm)].map((m) => Number(m[1]));
    assert.equal(inner.length, SLEEPERS, `B started ${inner.length} sleepers: ${tree.stdout()}`);
    assert.ok(await waitFor(() => inner.every((p) => tree.outerPid(p) !== undefined), 10_000), 'the sleepers in B are not found from here');
    const outer = new Map(tree.processes().map((p) => [p.inner, p.pid]));

    const relayAddress = pair.a.ipv4;
    // No loss while the watchers subscribe: the subscription is not what is tested here, and at 30 %
    // loss a first subscription often fails (every SUBS, SUBC or SUBR of its renewal lost), after
    // which pidwatch polls instead for 60 s (watch.ts, PUSH_RETRY_MS). The loss is on, each way,
    // from before the first death to the end.
    const relay: Relay = await startRelay({
      listen: relayAddress,
      target: `${pair.b.ipv4}:${daemonPort}`,
      loss: 0,
      delayMs: DELAY_MS,
      seed: SEED,
      wrap: (command, args) => inNetns(pair.a, command, args),
    });
    cleanups.push(() => relay.stop());
    await relay.setLabels(inner);

    // --interval 20000: no poll in the test's time, and a renewal only every 20 s; so a job that ends was ended by a notice.
    const common = ['--no-local', '--port', String(relay.port), '--interval', '20000ms'];
    const jobs: Started[] = inner.map((pid, i) => {
      const [command, args] = i < WATCHES
        ? [BIN.pidwatch, [...common, '--host', relayAddress, '--pid', String(pid), 'sleep 60']]
        : binCommand('pidstat', ['wait', ...common, `${relayAddress}:${pid}`]);
      return startJob(cleanups.asContext, ['netns', 'exec', pair.a.name, command, ...args], { command: 'ip' });
    });

    // Subscribed: each pid's SUBR 1 went through the relay, to one client each.
    const subscribedTo = new Map<number, string>();
    const subscribed = await waitFor(() => {
      for (const e of relay.entries) if (e.kind === 'SUBR' && !e.dropped && / 1 30$/.test(e.text) && e.pid !== undefined) subscribedTo.set(e.pid, e.client);
      return inner.every((pid) => subscribedTo.has(pid));
    }, 15_000);
    assert.ok(subscribed, `not all subscribed: ${inner.filter((pid) => !subscribedTo.has(pid)).join(' ')}; ${jobs.map((j) => j.describe()).join(' | ')}; daemon: ${tree.stderr().slice(-3000)}`);
    const lossFrom = await relay.setLoss(LOSS);
    await sleep(300);

    // The deaths, one after another; before each, every job whose pid lives still runs.
    const killedAt: number[] = [];
    for (const [i, pid] of inner.entries()) {
      const early = jobs.slice(i).filter((job) => !job.running());
      assert.deepEqual(early.map((job) => job.describe()), [], `a job ended before its pid in B died (${i} killed so far)`);
      killedAt.push(performance.now());
      process.kill(outer.get(pid)!, 'SIGKILL');
      await sleep(KILL_GAP_MS);
    }
    const exits = await Promise.all(jobs.map((job, i) => exitWithin(job, Math.max(0, killedAt[i]! + BOUND_MS + 2000 - performance.now()))));
    // The relay's log, complete: quiet for 1500 ms, longer than the last wait between two copies (1280 ms).
    for (let count = -1; count !== relay.entries.length; await sleep(1500)) count = relay.entries.length;
    assert.ok(inner.every((pid) => !pidInUse(outer.get(pid)!)), 'a killed sleeper is still there');

    const entries = relay.entries.filter((e) => e.seq >= lossFrom);
    const fates = (list: RelayEntry[]): string => list.map((e) => (e.dropped ? 'x' : 'o')).join('');
    observed = inner.map((pid) => ({
      pid,
      notes: fates(entries.filter((e) => e.kind === 'NOTE' && e.pid === pid)),
      acks: fates(entries.filter((e) => e.kind === 'ACKN' && e.pid === pid)),
    }));
    const report: string[] = [];
    const late: string[] = [];
    let droppedNotes = 0;
    let resentToDeliver = 0;
    for (const [i, pid] of inner.entries()) {
      const notes = entries.filter((e) => e.kind === 'NOTE' && e.pid === pid);
      const acks = entries.filter((e) => e.kind === 'ACKN' && e.pid === pid);
      const exit = exits[i];
      const ms = exit === undefined ? undefined : exit.at - killedAt[i]!;
      const through = notes.findIndex((e) => !e.dropped);
      // Diagnostic only: a relay slowed by a loaded machine reads two copies at once.
      const gaps = notes.slice(1).map((e, k) => Math.round(e.t - notes[k]!.t));
      report.push(`pid ${pid}: job ${ms === undefined ? `still running after ${BOUND_MS + 2000} ms` : `ended ${Math.round(ms)} ms after the kill`}; ` +
        `NOTE copies ${fates(notes)}${gaps.length > 0 ? ` (${gaps.join('+')} ms apart)` : ''}, ACKN ${fates(acks) || 'none'}`);
      droppedNotes += notes.filter((e) => e.dropped).length;
      if (through > 0) resentToDeliver++;
      if (ms === undefined || ms > BOUND_MS) late.push(`pid ${pid}`);
      // The relay sent each copy back to the subscriber's own address and port.
      for (const e of notes) assert.equal(e.client, subscribedTo.get(pid), `a NOTE for ${pid} went to ${e.client}, not the subscriber ${subscribedTo.get(pid)}`);
      assert.ok(notes.length >= 1 && notes.length <= COPIES_AT_MS.length, `${notes.length} copies of the notice for ${pid}`);
      // The seeded dice: the copies lost are those the seed says.
      assert.deepEqual(notes.map((e) => e.dropped), notesDropped(SEED, i).slice(0, notes.length), `the relay did not lose the notices the seed ${SEED} says for ${pid}`);
      // Acknowledged: no copy leaves the daemon once an ACKN went through. Copies sent while it was
      // on its way (20 ms in the relay, more on a loaded machine) are no fault: 1 s of slack, which
      // an ignored ACKN would still show, by the copies due 1260 and 2540 ms after the death.
      const acked = acks.find((e) => !e.dropped);
      if (acked !== undefined) {
        const after = notes.filter((e) => e.t > acked.t + DELAY_MS + 1000);
        assert.deepEqual(after.map((e) => e.t), [], `the notice for ${pid} was sent again after its ACKN went through (at ${acked.t} ms)`);
      }
      if (ms !== undefined && through >= 0) {
        // Not before the first copy that got through could have arrived.
        assert.ok(ms >= COPIES_AT_MS[through]!, `the job of ${pid} ended ${Math.round(ms)} ms after the kill, before copy ${through}, the first delivered, could arrive`);
      }
    }
    t.diagnostic(`seed ${SEED}: ${report.join('; ')}`);
    assert.deepEqual(late, [], `jobs not ended within ${BOUND_MS} ms of their pid's death: ${report.join('; ')}; daemon: ${tree.stderr().slice(-2000)}`);
    assert.ok(droppedNotes >= 2, `only ${droppedNotes} NOTE datagrams were dropped: the test proved nothing about loss`);
    assert.ok(resentToDeliver >= 1, 'no notice needed a resend to get through');
    for (const [i, job] of jobs.entries()) {
      const exit = exits[i]!;
      if (i < WATCHES) assert.equal(exit.signal, 'SIGHUP', `pidwatch on ${inner[i]}: ${job.describe()}`);
      else {
        assert.equal(exit.code, 0, `pidstat wait: ${job.describe()}`);
        assert.equal(job.stdout(), `${relayAddress}:${inner[i]} dead\n`);
      }
    }
  });

  // The client acknowledges each copy it hears three times at once, and a subscription closed on
  // its death still acknowledges later copies while the client lives (client.ts, ACK_COPIES and
  // mourn()): a lost ACKN costs a copy or two, not the rest of the schedule (up to 7 copies over 2.5 s).
  test('a notice that got through is acknowledged, even when the first ACKN is lost', { skip: netUnavailable ?? false }, (t) => {
    if (observed === undefined) return t.skip('the lossy-link test did not get as far as the relay\'s log');
    const delivered = observed.filter((o) => o.notes.includes('o'));
    const unacknowledged = delivered.filter((o) => !o.acks.includes('o'));
    assert.deepEqual(unacknowledged.map((o) => `pid ${o.pid}: NOTE copies ${o.notes}, ACKN ${o.acks || 'none'}`), [],
      'notices heard by their subscriber, whose every ACKN was lost and never sent again for the copies that followed');
  });
});

// ---------------------------------------------------------------------------
// 2. A forged source

const SPOOF = join(ROOT, 'test', 'support', 'spoof.py');

/** Why forged datagrams cannot be sent here, or undefined. */
function spoofUnavailable(): string | undefined {
  if (!IS_ROOT) return `not root (uid ${process.getuid?.()}): a raw socket needs CAP_NET_RAW`;
  const probe = spawnSync('python3', [SPOOF, '--probe'], { encoding: 'utf8', timeout: 10_000 });
  if (probe.error) return `python3: ${probe.error.message}`;
  if (probe.status !== 0) return `${SPOOF} --probe: ${probe.stderr.trim() || `exit ${probe.status}`}`;
  return undefined;
}
const noSpoof = spoofUnavailable();
if (noSpoof) process.stdout.write(`push-network: the forged-source test is skipped: ${noSpoof}\n`);

/** Sends each line as one UDP datagram from `from` to `to`, with a forged source. */
function spoof(from: { address: string; port: number }, to: { address: string; port: number }, lines: readonly string[]): void {
  const result = spawnSync('python3', [SPOOF, from.address, String(from.port), to.address, String(to.port), ...lines.map((line) => Buffer.from(line, 'latin1').toString('hex'))], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(result.status, 0, `spoof.py: ${result.error?.message ?? result.stderr}`);
  assert.equal(result.stdout.trim(), `sent ${lines.length}`);
}

/** The counters of a Prometheus text file, by name; empty while it is not there. */
function counters(file: string): Map<string, number> {
  let text = '';
  try {
    text = readFileSync(file, 'latin1');
  } catch {
    return new Map();
  }
  return new Map([...text.matchAll(/^(pidstatd_[a-z_]+_total) ([0-9]+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
}

describe('push notices and a forged source address (loopback)', () => {
  test('A spoofed-source subscription sends nothing to the spoofed address', { skip: noSpoof ?? false, timeout: 30_000 }, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'pidstat-push-network-'));
    const cleanups = cleanupStack(t);
    // Removed after the daemon has stopped: it writes its metrics file there every 100 ms.
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const metrics = join(dir, 'pidstatd.prom');
    const daemon = await startDaemon(['--bind', '127.0.0.1', '--debug', '--metrics-file', metrics], { PIDSTATD_TEST_INTERVAL_MS: '100' });
    cleanups.push(() => daemon.stop());
    const sleeper = startSleeper();
    cleanups.push(() => sleeper.stop());
    const start = readStartToken(sleeper.pid);
    assert.ok(start, 'no start token for the sleeper');
    const server = { address: '127.0.0.1', port: daemon.port };

    /** A UDP socket on `address` that keeps every datagram from the daemon (others' strays are not the daemon's doing). */
    const listener = async (address: string) => {
      const socket = dgram.createSocket('udp4');
      const got: string[] = [];
      const strays: string[] = [];
      socket.on('message', (msg, from) => (from.address === server.address && from.port === server.port ? got : strays).push(msg.toString('latin1')));
      await new Promise<void>((resolve) => socket.bind(0, address, resolve));
      cleanups.push(() => new Promise<void>((resolve) => socket.close(() => resolve())));
      return { socket, port: socket.address().port, got, strays };
    };
    const victim = await listener('127.0.0.9');
    const genuine = await listener('127.0.0.1');
    const from = { address: '127.0.0.9', port: victim.port };
    const subs = (host: string, ticket: string, pid = sleeper.pid) => `SUBS ${pid} ${host} ${start} ${ticket}\n`;
    const cookie = () => `127.0.0.1/${randomBytes(8).toString('hex')}`;
    /** Every SUBS sent in the victim's name, by its host field. */
    const forged = new Map<string, string>();
    /** Datagrams sent to the daemon, forged or not; and those forged. */
    let sent = 0;
    let forgedCount = 0;
    const forge = (lines: string[]) => {
      for (const line of lines) forged.set(line.split(' ')[2]!, line);
      spoof(from, server, lines);
      forgedCount += lines.length;
      sent += lines.length;
    };
    /** Waits until the metrics file has counted `count` datagrams received. */
    const counted = async (count: number): Promise<Map<string, number>> => {
      assert.ok(await waitFor(() => (counters(metrics).get('pidstatd_received_total') ?? -1) >= count, 5000),
        `the metrics file never counted ${count} datagrams received: ${JSON.stringify([...counters(metrics)])}`);
      return counters(metrics);
    };

    // (a) a first subscription, zero ticket; (b) guessed tickets, several times.
    const hostA = cookie();
    const hostB = cookie();
    forge([subs(hostA, NO_TICKET)]);
    const guesses = Array.from({ length: 5 }, () => subs(hostB, randomBytes(12).toString('hex')));
    for (const guess of guesses) forge([guess]);
    // (c) a genuine client's ticket, taken from the wire and echoed from the victim's address.
    const hostG = cookie();
    genuine.socket.send(subs(hostG, NO_TICKET), server.port, server.address);
    sent += 1;
    assert.ok(await waitFor(() => genuine.got.length >= 1, 2000), 'the genuine client got no challenge');
    const challenge = new RegExp(`^SUBC ${sleeper.pid} ${hostG} ([0-9a-f]{24})$`).exec(genuine.got[0]!);
    assert.ok(challenge, `the genuine client's challenge: ${JSON.stringify(genuine.got)}`);
    const ticket = challenge[1]!;
    forge([subs(hostG, ticket)]);

    // They reached the daemon (it answered them, to the victim); nothing was stored.
    assert.ok(await waitFor(() => victim.got.length >= forgedCount, 2000), `the victim got ${victim.got.length} datagrams: the forged ones did not reach the daemon? ${JSON.stringify(victim.got)}`);
    let stats = await counted(sent);
    assert.equal(stats.get('pidstatd_subscribed_total'), 0, 'a forged subscription was stored');
    const fromVictim = daemon.log().split('\n').filter((line) => line.includes(`127.0.0.9:${victim.port} "SUBS `));
    assert.equal(fromVictim.length, forgedCount, `the daemon's log of the forged datagrams: ${fromVictim.join('\n')}`);
    assert.ok(fromVictim.every((line) => / answered SUBC /.test(line)), `the daemon's answers to the forged datagrams: ${fromVictim.join('\n')}`);

    // The contrast: the genuine client echoes its ticket from its own address, and is subscribed.
    genuine.socket.send(subs(hostG, ticket), server.port, server.address);
    sent += 1;
    assert.ok(await waitFor(() => genuine.got.length >= 2, 2000), 'the genuine client got no answer to its echo');
    assert.equal(genuine.got[1], `SUBR ${sleeper.pid} ${hostG} 1 30`);
    await counted(sent);
    assert.ok(await waitFor(() => counters(metrics).get('pidstatd_subscribed_total') === 1, 2000), `subscribed: ${counters(metrics).get('pidstatd_subscribed_total')}, not 1`);

    // The death: the genuine subscriber is told (and acknowledges); the victim, never.
    await sleeper.stop();
    assert.ok(await waitFor(() => genuine.got.some((text) => text.startsWith('NOTE ')), 2000), `the genuine client got no notice: ${JSON.stringify(genuine.got)}`);
    const notice = genuine.got.find((text) => text.startsWith('NOTE '))!;
    assert.match(notice, new RegExp(`^NOTE ${sleeper.pid} ${hostG} ${start} [0-9]+$`));
    genuine.socket.send(`ACKN ${sleeper.pid} ${hostG} ${notice.split(' ')[4]}\n`, server.port, server.address);
    sent += 1;
    // Forged again after the death: a challenge still, not SUBR 0 (which would tell a stranger about the pid).
    const hostD = cookie();
    forge([subs(hostD, NO_TICKET), subs(hostD, randomBytes(12).toString('hex'))]);
    await sleep(1000);
    stats = await counted(sent);

    assert.deepEqual(victim.got.filter((text) => !text.startsWith('SUBC ')), [], 'the spoofed address got something other than a challenge');
    assert.equal(victim.got.length, forgedCount, `the victim got ${victim.got.length} challenges for ${forgedCount} forged subscriptions`);
    for (const text of victim.got) {
      const [, pid, host, proof] = text.split(' ');
      const request = forged.get(host!);
      assert.ok(request, `a challenge for a host never forged: ${text}`);
      assert.equal(pid, String(sleeper.pid));
      assert.match(proof!, /^[0-9a-f]{24}$/);
      assert.ok(text.length <= request.length, `a ${text.length}-byte challenge to a ${request.length}-byte forged request`);
    }
    assert.equal(stats.get('pidstatd_subscribed_total'), 1, 'something was stored besides the genuine subscription');
    assert.equal(stats.get('pidstatd_notified_total'), 1, 'a notice went to someone besides the genuine subscriber');
    if (victim.strays.length > 0) t.diagnostic(`the victim's port also got ${victim.strays.length} datagrams from elsewhere (another test's), ignored`);
    t.diagnostic(`the victim got ${victim.got.length} challenges (${victim.got.map((text) => text.length).join(', ')} bytes) for ${forged.size} forged hosts; the genuine client got ${genuine.got.map((text) => text.split(' ')[0]).join(', ')}`);
  });
});
