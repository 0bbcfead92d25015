import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  childrenOf,
  failuresOf,
  fuzz,
  HEAP_FLAGS,
  kernelDrops,
  makeTruth,
  ownHostOf,
  pinnedHeapEnv,
  readToken,
  rssKb,
  stopCounters,
  summarize,
  type FuzzReport,
} from '../support/fuzzer.js';
import { deadPid, freePort, isRunning, runBin, sleep, startDaemon, startSleeper, waitFor } from '../support/helpers.js';

/**
 * `npm run soak`: test/attacks/fuzz.test.ts's fuzzer at scale, for minutes, then a
 * summary. Two phases, each bounded by a count and a time:
 *
 * 1. `pidstatd --foreground --rate 0 --bind 127.0.0.1 --port 0` as shipped,
 *    two thirds of the datagrams: its pid must live to the end, the counters
 *    of its SIGTERM stop line must agree with what was sent, and its VmRSS,
 *    which grows in steps while V8 sizes its young generation (to 3 x 16 MB),
 *    must be flat over the second half of a run of 1.5 million or more;
 * 2. the detached form (supervisor and server child) with V8's heap pinned
 *    (HEAP_FLAGS, test/support/fuzzer.ts), the last third: the server child must be
 *    the same process from start to end, and its VmRSS must not grow by more
 *    than a few MB after the warm-up (a tenth of the phase).
 *
 * In both, every reply is checked against test/support/fuzzer.ts's reading of the
 * contract. Exit 0 when nothing failed, 1 otherwise.
 *
 * SOAK_COUNT (default 3 000 000 datagrams), SOAK_MINUTES (default 10) and
 * FUZZ_SEED change the run.
 */

const COUNT = Number(process.env['SOAK_COUNT'] ?? 3_000_000);
const MAX_MS = Number(process.env['SOAK_MINUTES'] ?? 10) * 60_000;
const SEED = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
const RSS_SLACK_KB = 8 * 1024;
const SAMPLE_EVERY = 50_000;

interface Phase {
  name: string;
  report: FuzzReport;
  rss: number[];
  problems: string[];
  notes: string[];
}

/** Samples VmRSS every SAMPLE_EVERY datagrams and checks the process still runs. */
function sampler(pid: number, rss: number[], label: string) {
  let next = SAMPLE_EVERY;
  let last = performance.now();
  return (sent: number) => {
    if (!isRunning(pid)) throw new Error(`${label} (pid ${pid}) is gone after ${sent} datagrams`);
    if (sent < next) return;
    next += SAMPLE_EVERY;
    rss.push(rssKb(pid));
    const now = performance.now();
    process.stdout.write(`  ${label}: ${sent} datagrams, ${Math.round(SAMPLE_EVERY / ((now - last) / 1000))}/s, VmRSS ${rss.at(-1)} kB\n`);
    last = now;
  };
}

function rssProblems(rss: number[]): { problems: string[]; note: string } {
  if (rss.length < 3) return { problems: [], note: `VmRSS samples ${rss.join(' ')} kB (too few to judge)` };
  // The warm-up: the first tenth of the samples, at least one.
  const warm = rss[Math.max(1, Math.floor(rss.length / 10)) - 1]!;
  const max = Math.max(...rss.slice(Math.max(1, Math.floor(rss.length / 10))));
  const end = rss.at(-1)!;
  const note = `VmRSS after warm-up ${warm} kB, end ${end} kB, highest ${max} kB (samples every ${SAMPLE_EVERY}: ${rss.join(' ')})`;
  const problems: string[] = [];
  if (end - warm > RSS_SLACK_KB) problems.push(`VmRSS grew by ${end - warm} kB from after the warm-up to the end`);
  if (max - warm > RSS_SLACK_KB) problems.push(`VmRSS peaked ${max - warm} kB over the warm-up value`);
  return { problems, note };
}

/** As shipped: VmRSS over the second half of a long run must be flat (V8's heap sized by then). */
function plateauProblems(rss: number[], datagrams: number): { problems: string[]; note: string } {
  const half = rss.slice(Math.floor(rss.length / 2));
  const note = `VmRSS (heap as shipped) at start ${rss[0]} kB, highest ${Math.max(...rss)} kB, end ${rss.at(-1)} kB; second half ${Math.min(...half)}-${Math.max(...half)} kB ` +
    `(samples every ${SAMPLE_EVERY}: ${rss.join(' ')})`;
  if (datagrams < 1_500_000 || half.length < 2) return { problems: [], note: `${note}; not judged under 1.5 million datagrams` };
  const growth = half.at(-1)! - half[0]!;
  const spread = Math.max(...half) - half[0]!;
  const problems: string[] = [];
  if (growth > RSS_SLACK_KB || spread > RSS_SLACK_KB) problems.push(`VmRSS still grew over the second half: ${half[0]} -> ${half.at(-1)} kB (highest ${Math.max(...half)})`);
  return { problems, note };
}

function fuzzProblems(report: FuzzReport): string[] {
  const problems: string[] = [];
  if (report.failureCounts.size > 0) problems.push(`${failuresOf(report, 'wrong answer', 'unanswered', 'answered an invalid datagram', 'second reply', 'reply to nothing sent')} datagrams handled against the contract (see FAILURES)`);
  return problems;
}

async function foregroundPhase(count: number, maxMs: number): Promise<Phase> {
  const sleeper = startSleeper();
  const daemon = await startDaemon(['--rate', '0', '--bind', '127.0.0.1']);
  const rss: number[] = [];
  const notes: string[] = [];
  let report: FuzzReport;
  try {
    const truth = makeTruth(await ownHostOf(daemon.port), [sleeper.pid, 1, process.pid], [await deadPid(), await deadPid()]);
    report = await fuzz({ port: daemon.port, count, maxMs, seed: SEED, truth, onBatch: sampler(daemon.pid, rss, 'foreground') });
  } finally {
    await sleeper.stop();
  }
  const problems = fuzzProblems(report);
  const drops = kernelDrops(daemon.port) ?? 0;
  const alive = isRunning(daemon.pid);
  const code = await daemon.stop();
  if (!alive) problems.push(`the daemon (pid ${daemon.pid}) did not live to the end`);
  if (code !== 0) problems.push(`SIGTERM ended the daemon with ${code}`);
  if ((daemon.log().match(/listening on/g) ?? []).length !== 1) problems.push('the daemon started more than once');
  const { problems: rssP, note } = plateauProblems(rss, report.datagrams);
  problems.push(...rssP);
  notes.push(note);
  const counters = stopCounters(daemon.log());
  notes.push(`stop line: ${JSON.stringify(counters)}; kernel drops on its socket: ${drops}`);
  if (!counters) problems.push('no stop line');
  else {
    if (counters.received < report.sent - drops || counters.received > report.sent + 5) problems.push(`received ${counters.received}, sent ${report.sent}`);
    // Oversized datagrams have a counter of their own.
    const malformed = report.invalid - report.oversized;
    if (counters.malformed < malformed - drops || counters.malformed > malformed) problems.push(`malformed ${counters.malformed}, invalid sent within the size limit ${malformed}`);
    if (counters.answered < report.replies || counters.answered > report.replies + 5) problems.push(`answered ${counters.answered}, replies received ${report.replies}`);
  }
  return { name: 'pidstatd --foreground --rate 0', report, rss, problems, notes };
}

async function detachedPhase(count: number, maxMs: number): Promise<Phase> {
  const scratch = mkdtempSync(join(tmpdir(), 'pidstat-soak-'));
  const pidfile = join(scratch, 'pidstatd.pid');
  const sleeper = startSleeper();
  const port = await freePort();
  let supervisor: number | undefined;
  const rss: number[] = [];
  const problems: string[] = [];
  const notes: string[] = [];
  try {
    const started = await runBin('pidstatd', ['--rate', '0', '--bind', '127.0.0.1', '--port', String(port), '--pidfile', pidfile], { timeoutMs: 10_000, env: pinnedHeapEnv() });
    if (started.code !== 0) throw new Error(`pidstatd did not start: ${started.stderr}`);
    supervisor = Number(readFileSync(pidfile, 'latin1').trim());
    const servers = childrenOf(supervisor).filter(isRunning);
    if (servers.length !== 1) throw new Error(`the supervisor ${supervisor} has ${servers.length} server children`);
    const server = servers[0]!;
    const token = readToken(server);
    const truth = makeTruth(await ownHostOf(port), [sleeper.pid, 1, process.pid], [await deadPid()]);
    const report = await fuzz({ port, count, maxMs, seed: SEED + 1, truth, onBatch: sampler(server, rss, 'detached server') });
    problems.push(...fuzzProblems(report));
    await sleep(100);
    const now = childrenOf(supervisor).filter(isRunning);
    if (!isRunning(supervisor)) problems.push(`the supervisor ${supervisor} is gone`);
    if (now.length !== 1 || now[0] !== server || readToken(server) !== token) problems.push(`the server child changed: ${server} -> ${now.join(' ')}`);
    notes.push(`supervisor ${supervisor}, server child ${server} from start to end: ${now.length === 1 && now[0] === server}`);
    const { problems: rssP, note } = rssProblems(rss);
    problems.push(...rssP);
    notes.push(note);
    return { name: `pidstatd (detached), NODE_OPTIONS=${HEAP_FLAGS}`, report, rss, problems, notes };
  } finally {
    await sleeper.stop();
    if (supervisor !== undefined && isRunning(supervisor)) {
      const family = [supervisor, ...childrenOf(supervisor)];
      process.kill(supervisor, 'SIGTERM');
      if (!(await waitFor(() => family.every((pid) => !isRunning(pid)), 3000))) {
        for (const pid of family) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
      }
    }
    rmSync(scratch, { recursive: true, force: true });
  }
}

async function main(): Promise<number> {
  const started = performance.now();
  console.log(`soak: ${COUNT} datagrams in at most ${MAX_MS / 60_000} min, seed ${SEED}`);
  const phases: Phase[] = [];
  phases.push(await foregroundPhase(Math.round((COUNT * 2) / 3), (MAX_MS * 2) / 3));
  phases.push(await detachedPhase(COUNT - phases[0]!.report.datagrams, MAX_MS - (performance.now() - started)));
  console.log('\n=== soak summary ===');
  let failed = false;
  for (const phase of phases) {
    console.log(`\n${phase.name}`);
    console.log(summarize(phase.report).replace(/^/gm, '  '));
    for (const note of phase.notes) console.log(`  ${note}`);
    if (phase.problems.length > 0) failed = true;
    console.log(phase.problems.length === 0 ? '  PASS' : `  FAIL:\n${phase.problems.map((p) => `    - ${p}`).join('\n')}`);
  }
  const total = phases.reduce((n, p) => n + p.report.datagrams, 0);
  console.log(`\n${total} datagrams in ${((performance.now() - started) / 1000).toFixed(0)} s, seed ${SEED}: ${failed ? 'FAIL' : 'PASS'}`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
