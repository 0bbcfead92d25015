import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  checkRequest,
  childrenOf,
  expectedReply,
  failuresOf,
  fuzz,
  HEAP_FLAGS,
  kernelDrops,
  makeTruth,
  ownHostOf,
  pinnedHeap,
  readToken,
  rssKb,
  stopCounters,
  summarize,
  type FuzzReport,
  type Truth,
} from '../support/fuzzer.js';
import { ask, deadPid, freePort, isRunning, runBin, sleep, startDaemon, startSleeper, waitFor, type Daemon } from '../support/helpers.js';

/**
 * The daemon against a datagram fuzzer (doc/protocol.md, pidstatd(8)): random
 * bytes, valid requests with one field or some bytes changed, huge, empty
 * and NUL-laden datagrams, sent to the real bin in closed-loop batches that
 * each end with a valid request whose reply is awaited. Every datagram is
 * judged by test/support/fuzzer.ts's own checker of the contract (not src/wire/protocol.ts):
 * each valid request must get exactly the reply the contract gives it (or none
 * when its flags ask for none), and nothing else may be answered.
 *
 * FUZZ_SEED=N replays a run's sequence of datagrams (the live pids and their
 * start tokens are those of the day); FUZZ_COUNT=N changes its size. The seed
 * is in the first test's diagnostics. `npm run soak` runs the same for minutes.
 */

const COUNT = Number(process.env['FUZZ_COUNT'] ?? 25_000);
const SEED = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
/** The run stops early after this, so the file stays under ~30 s on a slow machine. */
const MAX_MS = 20_000;
/** VmRSS may grow this much from after the warm-up (a tenth of the run) to the end. */
const RSS_SLACK_KB = 6 * 1024;

test('the checker reads the contract as the fuzzer means it', () => {
  const valid = (s: string) => checkRequest(Buffer.from(s, 'latin1')).valid;
  for (const s of ['PIDR 1', 'PIDR 1\n', ' PIDR\t1\r\n', 'PIDR 2147483647 h', 'PIDR 1 h 3 junk more', 'PIDR 1 h abc', 'PIDR 1 h 3\u0000',
    `PIDR 1 ${'h'.repeat(255)} 3`, 'PIDR 1 h 3\nPIDR 0', `PIDR 1 h 3\n${'x'.repeat(1013)}`]) {
    assert.ok(valid(s), `valid: ${JSON.stringify(s.slice(0, 40))}`);
  }
  for (const s of ['', 'PIDR', 'PIDR 0', 'PIDR 01', 'PIDR -1', 'PIDR +1', 'PIDR 0x1', 'PIDR 2147483648', 'PIDR 1\u0000', 'pidr 1', '\nPIDR 1',
    `PIDR 1 ${'h'.repeat(256)}`, 'PIDR 1 h\u00e9', 'PIDR 1 h\u007f', 'EXIS 1 1 h', `PIDR 1 h 3\n${'x'.repeat(1014)}`]) {
    assert.ok(!valid(s), `invalid: ${JSON.stringify(s.slice(0, 40))}`);
  }
  const truth: Truth = { ownHost: 'me', pidMax: 100, live: [7], reaped: [], state: (pid) => (pid === 7 ? 'exists' : 'dead'), token: () => '42' };
  const reply = (s: string) => {
    const c = checkRequest(Buffer.from(s, 'latin1'));
    return c.valid ? expectedReply(c.request, truth) : 'refused';
  };
  assert.equal(reply('PIDR 7'), 'EXIS 7 1 me');
  assert.equal(reply('PIDR 8 h'), 'EXIS 8 0 h');
  assert.equal(reply('PIDR 7 h 2'), undefined);
  assert.equal(reply('PIDR 7 h 0'), 'EXIS 7 1 h');
  assert.equal(reply('PIDR 7 h 9'), 'EXIS 7 1 h 42');
  assert.equal(reply('PIDR 7 h 3 42'), 'EXIS 7 1 h');
  assert.equal(reply('PIDR 7 h 3 43'), 'EXIS 7 0 h');
  assert.equal(reply('PIDR 7 h 3 4x'), 'EXIS 7 1 h');
  assert.equal(reply('PIDR 8 h 256'), undefined, 'a bit set with none of the four bits asks for nothing');
});

describe(`${COUNT} fuzzed datagrams against pidstatd --foreground --rate 0 (V8 heap pinned: ${HEAP_FLAGS})`, () => {
  let daemon: Daemon;
  let sleeper: ReturnType<typeof startSleeper>;
  let report: FuzzReport;
  const rss: { warm?: number; end?: number; max: number } = { max: 0 };
  let aliveAtEnd = false;
  let exitCode: number | null = null;
  let drops: number | undefined;

  before(async () => {
    sleeper = startSleeper();
    const reaped = [await deadPid(), await deadPid()];
    daemon = await startDaemon(['--rate', '0', '--bind', '127.0.0.1'], {}, pinnedHeap);
    const truth = makeTruth(await ownHostOf(daemon.port), [sleeper.pid, 1, process.pid], reaped);
    report = await fuzz({
      port: daemon.port,
      count: COUNT,
      maxMs: MAX_MS,
      seed: SEED,
      truth,
      onBatch(sent) {
        if (!isRunning(daemon.pid)) throw new Error(`the daemon (pid ${daemon.pid}) died after ${sent} datagrams: ${daemon.log()}`);
        const kb = rssKb(daemon.pid);
        if (rss.warm === undefined && sent >= COUNT / 10) rss.warm = kb;
        if (rss.warm !== undefined) rss.max = Math.max(rss.max, kb);
      },
    });
    rss.end = rssKb(daemon.pid);
    drops = kernelDrops(daemon.port);
    aliveAtEnd = isRunning(daemon.pid);
    exitCode = await daemon.stop();
  }, { timeout: 60_000 });

  after(async () => {
    await sleeper?.stop();
    await daemon?.stop();
  });

  test('every valid request gets the reply the contract gives it (or none when its flags ask for none)', (t) => {
    t.diagnostic(summarize(report));
    assert.ok(report.datagrams >= Math.min(COUNT, 20_000), `only ${report.datagrams} datagrams in ${MAX_MS} ms`);
    assert.ok(report.expectedReplies > report.datagrams / 10, 'valid requests make a good share of the run');
    assert.equal(failuresOf(report, 'wrong answer', 'unanswered'), 0, summarize(report));
  });

  test('no invalid datagram is answered, and no request gets two replies', () => {
    assert.ok(report.invalid > report.datagrams / 3, 'invalid datagrams make a good share of the run');
    assert.equal(failuresOf(report, 'answered an invalid datagram', 'second reply', 'reply to nothing sent'), 0, summarize(report));
  });

  test('the daemon never restarts: same pid to the end, one listening line, exit 0 on SIGTERM', () => {
    assert.ok(aliveAtEnd, `pid ${daemon.pid} ran to the end`);
    assert.equal(daemon.log().match(/listening on/g)?.length, 1, daemon.log());
    assert.equal(exitCode, 0, daemon.log());
  });

  test(`VmRSS grows by less than ${RSS_SLACK_KB / 1024} MB from after the warm-up to the end`, (t) => {
    t.diagnostic(`VmRSS after warm-up ${rss.warm} kB, at the end ${rss.end} kB, highest ${rss.max} kB`);
    assert.ok(rss.warm !== undefined && rss.end !== undefined);
    assert.ok(rss.end - rss.warm <= RSS_SLACK_KB, `VmRSS ${rss.warm} kB -> ${rss.end} kB`);
    assert.ok(rss.max - rss.warm <= RSS_SLACK_KB, `VmRSS ${rss.warm} kB -> highest ${rss.max} kB`);
  });

  test('its counters (the SIGTERM stop line) agree with the checker', (t) => {
    const counters = stopCounters(daemon.log());
    t.diagnostic(`daemon: ${JSON.stringify(counters)}; kernel drops on its socket: ${drops}`);
    assert.ok(counters, `a stop line: ${daemon.log()}`);
    const lost = drops ?? 0;
    // A few more than the fuzzer sent: PIDR 1, which learnt the host name.
    assert.ok(counters.received <= report.sent + 5 && counters.received >= report.sent - lost, `received ${counters.received}, sent ${report.sent}`);
    // The oversized ones have a counter of their own.
    const malformed = report.invalid - report.oversized;
    assert.ok(counters.malformed <= malformed && counters.malformed >= malformed - lost, `malformed ${counters.malformed}, invalid sent within the size limit ${malformed}`);
    assert.ok(counters.answered >= report.replies && counters.answered <= report.replies + 5, `answered ${counters.answered}, replies received ${report.replies}`);
    assert.equal(counters.denied + counters.limited, 0);
  });
});

describe('the detached daemon (supervisor and server) under 10 000 fuzzed datagrams', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'pidstat-fuzz-'));
  after(() => rmSync(scratch, { recursive: true, force: true }));

  test('its server child is the same process from start to end, and nothing invalid is answered', { timeout: 30_000 }, async (t) => {
    const port = await freePort();
    const pidfile = join(scratch, 'pidstatd.pid');
    const sleeper = startSleeper();
    let supervisor: number | undefined;
    t.after(async () => {
      await sleeper.stop();
      if (supervisor !== undefined && isRunning(supervisor)) {
        const family = [supervisor, ...childrenOf(supervisor)];
        process.kill(supervisor, 'SIGTERM');
        if (!(await waitFor(() => family.every((pid) => !isRunning(pid)), 3000))) {
          for (const pid of family) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
        }
      }
    });
    const started = await runBin('pidstatd', ['--rate', '0', '--bind', '127.0.0.1', '--port', String(port), '--pidfile', pidfile], { timeoutMs: 10_000 });
    assert.equal(started.code, 0, started.stderr);
    supervisor = Number(readFileSync(pidfile, 'latin1').trim());
    const servers = childrenOf(supervisor).filter(isRunning);
    assert.equal(servers.length, 1, `one server child of ${supervisor}: ${servers.join(' ')}`);
    const server = servers[0]!;
    const token = readToken(server);
    const truth = makeTruth(await ownHostOf(port), [sleeper.pid, 1, process.pid], [await deadPid()]);
    const report = await fuzz({
      port, count: 10_000, maxMs: 8000, seed: SEED + 1, truth,
      onBatch(sent) {
        if (!isRunning(server)) throw new Error(`the server child ${server} died after ${sent} datagrams`);
      },
    });
    t.diagnostic(summarize(report));
    await sleep(100);
    assert.ok(isRunning(supervisor), 'the supervisor runs');
    assert.deepEqual(childrenOf(supervisor).filter(isRunning), [server], 'the same server child');
    assert.equal(readToken(server), token, 'the same process (start token), not a new one with the same pid');
    assert.equal(failuresOf(report, 'answered an invalid datagram', 'second reply', 'reply to nothing sent'), 0, summarize(report));
    assert.equal(report.failureCounts.get('unanswered (sentinel)'), undefined, `every batch's closing request is answered: ${summarize(report)}`);
  });
});

/**
 * The disagreements the fuzzer finds between the daemon and the contract,
 * each as its smallest datagram. pidstatd(8), PROTOCOL: flags are "a bit set
 * ... Missing, not a number, or 0 means 3"; a start that "is not a decimal
 * number is ignored", and one that "differs from the live process's token"
 * means dead.
 */
describe('contract edges the fuzzer finds, one datagram each', () => {
  let daemon: Daemon;
  let sleeper: ReturnType<typeof startSleeper>;
  let dead: number;
  before(async () => {
    daemon = await startDaemon(['--rate', '0', '--bind', '127.0.0.1']);
    sleeper = startSleeper();
    dead = await deadPid();
  });
  after(async () => {
    await sleeper?.stop();
    await daemon?.stop();
  });
  const q = (text: string, waitMs = 300) => ask(daemon.port, text, { waitMs });

  test('flags 256 (a bit set with none of 1, 2, 4, 8) asks for no reply, as flags 16 does', async () => {
    assert.equal(await q(`PIDR ${dead} h 16\n`), undefined, 'flags 16');
    assert.equal(await q(`PIDR ${dead} h 256\n`), undefined, 'flags 256');
    assert.equal(await q(`PIDR ${sleeper.pid} h 512\n`), undefined, 'flags 512');
  });

  test('flags of 11 digits are a number too: 10000000001 has bit 1 and not bit 2', async () => {
    assert.equal(await q(`PIDR ${sleeper.pid} h 10000000001\n`, 1000), `EXIS ${sleeper.pid} 1 h`, 'bit 1: exists is answered');
    assert.equal(await q(`PIDR ${dead} h 10000000001\n`), undefined, 'no bit 2: dead is not');
  });

  test('a start of 21 digits differs from every live token: the pid counts as dead', async () => {
    const start = '123456789012345678901';
    assert.notEqual(readToken(sleeper.pid), start);
    assert.equal(await q(`PIDR ${sleeper.pid} h 3 ${start}\n`, 1000), `EXIS ${sleeper.pid} 0 h`, 'flags 3');
    // pidwatch's question: flags 2, reply only if dead.
    assert.equal(await q(`PIDR ${sleeper.pid} h 2 ${start}\n`, 1000), `EXIS ${sleeper.pid} 0 h`, 'flags 2');
  });
});
