import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { PidStatClient, type Result } from './client.js';
import type { Failure } from './failures.js';
import { isLocalHost } from './host.js';
import { localPidExists, pidExists, readStartToken } from './probe.js';
import { FLAG_DEAD, FLAG_EXISTS, FLAG_START } from './protocol.js';
import { loadLinuxCalls, type SocketIo } from './native.js';
import { sleep } from './sleep.js';
import { monotonicMs } from './time.js';
import { findJob, readStat, signalJob, signalProcess, stillRunning, type JobSpec, type ProcessStat } from './tree.js';

/**
 * pidwatch's core: watch a pid, on this host or through a daemon, and when
 * it dies, end a job (tree.ts finds its processes). The job runs elsewhere:
 * pidwatch's shell script execs it in place, and this code runs in a
 * detached watcher beside it (see pidwatch(1), DESIGN).
 */

export interface WatchOptions {
  host: string;
  pid: number;
  /** Time between two questions, in ms. @default 1000 */
  intervalMs: number;
  port?: number;
  /** Probe a pid on this host locally, without a daemon. @default true */
  local?: boolean;
  /**
   * Silence from the host lasting this long, without a single answer, counts
   * as death (a job lease). @default never: silence never kills
   */
  deadAfterMs?: number;
  onDebug?: (line: string) => void;
  /**
   * Called when watching stops working (with the reason: no daemon
   * listening, a name that does not resolve, no answer) and, with undefined,
   * when it works again. Called on changes only. A watch that had been
   * answered and falls silent (a renewal, or questions, unanswered) gets a
   * `silence` failure whose `since` is when the host last answered
   * (pidwatch(1), DESCRIPTION).
   */
  onReach?: (problem: Failure | undefined) => void;
  /** How the client's sockets are read (ClientOptions.io). */
  io?: SocketIo;
  /** Authenticate questions and answers with this key file (ClientOptions.keyFile). */
  keyFile?: string;
  /**
   * Subscribe to the daemon's death notice where it offers one (doc/protocol.md,
   * Death notices), polling where it does not. @default true
   */
  push?: boolean;
  /**
   * The client to ask through, shared by many watches (wait.ts): made by
   * watchClient() of the same options, and closed by its owner, never here.
   * @default a client of this watch's own
   */
  client?: PidStatClient;
}

/** A daemon that did not answer a first subscription is not asked again before this long: it polls meanwhile. */
const PUSH_RETRY_MS = 60_000;
/**
 * A subscription is renewed 2.5 times a lease (every 12 s of 30): one
 * request in 12 s, a new ticket every few minutes included, stays under 0.1
 * a second, and a renewal lost still leaves the lease a second chance.
 */
const RENEWALS_PER_LEASE = 2.5;
/** With --dead-after, a renewal every third of it: silence is noticed in time. */
const RENEWALS_PER_DEAD_AFTER = 3;
/**
 * A watch hears its host at least every this many intervals, so that
 * silence is said within a bounded number of them (pidwatch(1), pidstat(1)):
 * at the default --interval of 1 s this is the 12 s renewal already.
 */
const HEAR_EVERY_INTERVALS = 12;
/** The lease pidstatd grants (doc/protocol.md, Death notices): a polling watch's heartbeat keeps a renewal's pace. */
const USUAL_LEASE_MS = 30_000;

/**
 * How often a watch makes sure to hear its host: a renewal of its
 * subscription, or, polling, a question that a live pid answers too (a
 * heartbeat). Never more often than once an interval.
 */
function hearEveryMs(opts: WatchOptions, leaseMs = USUAL_LEASE_MS): number {
  let every = Math.min(leaseMs / RENEWALS_PER_LEASE, HEAR_EVERY_INTERVALS * opts.intervalMs);
  if (opts.deadAfterMs !== undefined) every = Math.min(every, opts.deadAfterMs / RENEWALS_PER_DEAD_AFTER);
  return Math.max(opts.intervalMs, every);
}

/** Why the watched pid counts as dead: the host said so, or it was silent for deadAfterMs. */
export type Death = { cause: 'dead' } | { cause: 'silence'; ms: number };

/** Whether a signal name or number is one this host knows; the canonical name (SIGHUP) or undefined. */
export function parseSignal(text: string): NodeJS.Signals | undefined {
  const bare = text.replace(/^-/, '').toUpperCase();
  if (/^[0-9]+$/.test(bare)) {
    const number = Number(bare);
    return (Object.keys(constants.signals) as NodeJS.Signals[]).find((name) => constants.signals[name] === number);
  }
  const name = (bare.startsWith('SIG') ? bare : `SIG${bare}`) as NodeJS.Signals;
  return name in constants.signals ? name : undefined;
}

/** Silent questions in a row (plain timeouts) before watching counts as not working, at start and after a lapse alike. */
const SILENT_TRIES_TO_WARN = 3;

/**
 * Resolves once `pid` on `host` is known to be dead, or with undefined when
 * `signal` aborts. Silence kills only with deadAfterMs: UDP may be lost and a
 * daemon may be down. The first question asks for the process's start token
 * (flags 11); later ones send it and ask to hear only of death (flags 2), so
 * a live pid costs no reply and a pid reused by another process between two
 * questions still counts as dead. Since silence to those reads as life, the
 * watch hears its host at least every hearEveryMs() (a renewal, or a
 * heartbeat question that a live pid answers too), and once a renewal or a
 * heartbeat goes unanswered it is in doubt: it asks only questions that a
 * live pid answers, subscribes no more, and says so after
 * SILENT_TRIES_TO_WARN of them go unanswered, until the host answers.
 */
export async function waitForDeath(opts: WatchOptions, signal: AbortSignal): Promise<Death | undefined> {
  const local = (opts.local ?? true) && (await isLocalHost(opts.host));
  if (local && localPidExists(opts.pid) !== undefined) return waitForLocalDeath(opts, signal);
  const client = opts.client ?? watchClient(opts);
  // An abort ends the watch at once: a question's answer is not waited for.
  const aborted = new Promise<undefined>((resolve) => {
    if (signal.aborted) resolve(undefined);
    signal.addEventListener('abort', () => resolve(undefined), { once: true });
  });
  const reach = reachTracker(opts.onReach);
  try {
    let start: string | undefined;
    let knowsStart = false;
    /** When the host last answered: --dead-after counts from it. */
    let answeredAt = monotonicMs();
    /**
     * When the last answered question went out (or a renewal was answered):
     * the heartbeat's pace, on the questions' own beat.
     */
    let heardAt = answeredAt;
    const hearEvery = hearEveryMs(opts);
    /** When a subscription may be tried (again): at once, unless the daemon did not answer one. */
    let pushAt = opts.push === false ? Infinity : 0;
    while (!signal.aborted) {
      if (start !== undefined && !reach.doubting() && monotonicMs() >= pushAt) {
        // The daemon tells of the death the moment it happens, and a live pid
        // costs a renewal every hearEveryMs(): no poll meanwhile.
        const pushed = await watchByPush(client, opts, start, signal, () => {
          answeredAt = heardAt = monotonicMs();
          reach.answered();
        });
        if (pushed === 'aborted') return undefined;
        if (pushed === 'dead') return { cause: 'dead' };
        // Never subscribed (an old daemon, a cap): poll, and try again later.
        if (pushed === 'unsupported') pushAt = monotonicMs() + PUSH_RETRY_MS;
        // A lease not renewed: silence, which the questions now tell from life.
        if (pushed === 'lapsed') reach.lapsed();
        const now = monotonicMs();
        if (opts.deadAfterMs !== undefined && now - answeredAt >= opts.deadAfterMs) return { cause: 'silence', ms: now - answeredAt };
      }
      const began = monotonicMs();
      // A question that a live pid answers too: the first (for the token),
      // every one with --dead-after and while in doubt (silence must mean
      // silence), and a heartbeat once hearEvery has passed unheard (half an
      // interval early, as timers drift by a few ms either way).
      const heartbeat = began - heardAt >= hearEvery - opts.intervalMs / 2;
      const wantAnswer = !knowsStart || opts.deadAfterMs !== undefined || reach.doubting() || heartbeat;
      const flags = wantAnswer ? FLAG_EXISTS | FLAG_DEAD | FLAG_START : FLAG_DEAD;
      const result = await Promise.race([client.query(start === undefined ? { host: opts.host, pid: opts.pid, flags } : { host: opts.host, pid: opts.pid, flags, start }), aborted]);
      if (result === undefined || signal.aborted) return undefined;
      if (result.state === 'dead') return { cause: 'dead' };
      if (result.state === 'exists') {
        // An old daemon sends no token: then there is none to compare.
        start = result.start;
        knowsStart = true;
      }
      const now = monotonicMs();
      if (result.state !== 'no_reply') {
        answeredAt = now;
        heardAt = began;
        reach.answered();
      } else if (wantAnswer || failureOf(result) !== undefined) {
        // A name that did not resolve, or a socket that could not be
        // opened, is tried again by the next question (endpoints.ts).
        reach.silent(result);
      }
      // Otherwise a live pid asked with flags 2, which gets no reply: no
      // news, neither an answer nor silence.
      if (opts.deadAfterMs !== undefined && now - answeredAt >= opts.deadAfterMs) return { cause: 'silence', ms: now - answeredAt };
      // Subscribe at once, without waiting out the interval, once the token is known.
      if (start !== undefined && !reach.doubting() && now >= pushAt) continue;
      const rest = opts.intervalMs - (now - began);
      if (rest > 0) await sleep(rest, signal);
    }
    return undefined;
  } finally {
    if (opts.client === undefined) await client.close();
  }
}

/** A client for watches of these options: each question waits for its answer at most one interval, then the next goes out. */
export function watchClient(opts: Omit<WatchOptions, 'host' | 'pid'>): PidStatClient {
  return new PidStatClient({
    timeoutMs: opts.intervalMs,
    tries: 1,
    local: false,
    ...(opts.port !== undefined && { port: opts.port }),
    ...(opts.onDebug && { onDebug: opts.onDebug }),
    ...(opts.io && { io: opts.io }),
    ...(opts.keyFile !== undefined && { keyFile: opts.keyFile }),
  });
}

/**
 * Watches by the daemon's death notice (client.subscribe) while the
 * daemon keeps the subscription: 'dead' when it tells of the death (or
 * says it is dead already); 'unsupported' when the first subscription got
 * no subscription (no answer, as from IPC::Locker's daemon, or a refusal);
 * 'lapsed' when a renewal got no answer (silence, which the caller counts);
 * 'aborted'. Each answer that holds the lease calls `answered`.
 */
async function watchByPush(client: PidStatClient, opts: WatchOptions, start: string, signal: AbortSignal, answered: () => void): Promise<'dead' | 'unsupported' | 'lapsed' | 'aborted'> {
  let died!: () => void;
  let told = false;
  const death = new Promise<'dead'>((resolve) => (died = () => resolve('dead')));
  const subscription = client.subscribe({ host: opts.host, pid: opts.pid, start }, () => {
    told = true;
    died();
  });
  const onAbort = () => subscription.close();
  signal.addEventListener('abort', onAbort);
  try {
    for (let first = true; !signal.aborted; first = false) {
      const outcome = await subscription.renew(opts.intervalMs);
      if (signal.aborted) return 'aborted';
      // A notice heard while the renewal waited counts, whatever the renewal got.
      if (outcome.state === 'dead' || told) return 'dead';
      if (outcome.state !== 'subscribed') return first || outcome.state === 'refused' ? 'unsupported' : 'lapsed';
      answered();
      const next = await Promise.race([death, sleep(hearEveryMs(opts, outcome.leaseMs), signal).then(() => 'renew' as const)]);
      if (next === 'dead') return 'dead';
    }
    return 'aborted';
  } finally {
    signal.removeEventListener('abort', onAbort);
    subscription.close();
  }
}

/** The failure of a no_reply that is more than a lost datagram (nothing listens, the host cannot be resolved or reached, a key is refused); undefined for a plain timeout. */
function failureOf(result: Result): Failure | undefined {
  return result.failure?.kind === 'timeout' ? undefined : result.failure;
}

/**
 * Tells onReach of changes: a failure at once, plain silence after a few
 * questions. From a lapsed renewal or an unanswered question until the next
 * answer the watch is in doubt: whether the host hears is not known.
 */
function reachTracker(onReach: WatchOptions['onReach']) {
  let problem: Failure | undefined;
  let silent = 0;
  let doubt = false;
  /** When the host last answered, epoch ms: what a user compares with the clock. */
  let heardAt: number | undefined;
  return {
    doubting: () => doubt,
    answered() {
      silent = 0;
      doubt = false;
      heardAt = Date.now();
      if (problem !== undefined) onReach?.(undefined);
      problem = undefined;
    },
    /** A renewal went unanswered: the questions that follow count. */
    lapsed() {
      doubt = true;
    },
    silent(result: Result) {
      doubt = true;
      silent++;
      const failure = failureOf(result);
      if (problem !== undefined || (failure === undefined && silent < SILENT_TRIES_TO_WARN)) return;
      problem = failure ?? (heardAt === undefined ? { kind: 'silence', questions: silent } : { kind: 'silence', questions: silent, since: heardAt });
      onReach?.(problem);
    },
  };
}

async function waitForLocalDeath(opts: WatchOptions, signal: AbortSignal): Promise<Death | undefined> {
  const start = readStartToken(opts.pid);
  const watched = watchLocalExit(opts.pid, start, signal);
  if (watched !== undefined) return (await watched) ? { cause: 'dead' } : undefined;
  while (!signal.aborted) {
    if (localPidExists(opts.pid, start) === false) return { cause: 'dead' };
    await sleep(opts.intervalMs, signal);
  }
  return undefined;
}

/**
 * A local pid's end told by the kernel (the addon's pidfd) the moment it
 * ends, its zombie included, at no cost while it runs: true at its end,
 * false at abort. Undefined where the addon cannot watch it, or the start
 * token could not be read (a pidfd would name whichever process has the pid
 * now): the caller then looks every interval.
 */
function watchLocalExit(pid: number, start: string | undefined, signal: AbortSignal): Promise<boolean> | undefined {
  const { watchExit, unwatchExit } = loadLinuxCalls().addon ?? {};
  if (watchExit === undefined || unwatchExit === undefined || start === undefined || signal.aborted) return undefined;
  let settle!: (ended: boolean) => void;
  const outcome = new Promise<boolean>((resolve) => (settle = resolve));
  const ended = () => {
    signal.removeEventListener('abort', aborted);
    settle(true);
  };
  const handle = watchExit(pid, ended);
  if (typeof handle === 'number') return undefined;
  function aborted() {
    unwatchExit!(handle);
    settle(false);
  }
  signal.addEventListener('abort', aborted);
  // The pidfd is of whatever process has the pid now: if that is not the
  // one meant, the one meant is dead. A token that cannot be read says nothing.
  const now = readStartToken(pid);
  if (now !== undefined && now !== start) {
    signal.removeEventListener('abort', aborted);
    unwatchExit(handle);
    settle(true);
  }
  return outcome;
}

/**
 * Where the addon cannot watch a process end (not built, or a kernel before
 * Linux 5.3 without pidfd_open), the job's root is looked at: kill(pid, 0),
 * the cheap look, every ROOT_POLL_MS; and every ROOT_STAT_EVERY looks one
 * read of /proc/PID/stat, for a root that is a zombie its parent has not
 * reaped yet, or whose pid is another process's already. Each wake-up of an
 * idle Node process costs CPU (the watcher idles for hours); 200 ms still
 * ends the leftovers of a root killed with SIGKILL well within a second.
 */
export const ROOT_POLL_MS = 200;
const ROOT_STAT_EVERY = 5;

/** Whether the job's root still runs: the same process (by its start token), not a zombie. */
export function rootRuns(job: JobSpec): boolean {
  const stat = readStat(job.root);
  if (stat === undefined) return job.rootStart === undefined && pidExists(job.root) === true;
  if (job.rootStart !== undefined && stat.start !== job.rootStart) return false;
  return stat.state !== 'Z' && stat.state !== 'X';
}

/** Resolves once the job's root has ended, or at abort. */
function rootEnds(job: JobSpec, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else if (!rootEndWatched(job, signal, resolve)) rootEndPolled(job, signal, resolve);
  });
}

/**
 * The root's end told by the kernel (the addon's pidfd), at no cost while it
 * runs. False where the addon cannot: the caller then polls.
 */
function rootEndWatched(job: JobSpec, signal: AbortSignal, ended: () => void): boolean {
  const { watchExit, unwatchExit } = loadLinuxCalls().addon ?? {};
  if (watchExit === undefined || unwatchExit === undefined) return false;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    signal.removeEventListener('abort', cancel);
    ended();
  };
  function cancel() {
    if (done) return;
    unwatchExit!(handle);
    finish();
  }
  const handle = watchExit(job.root, finish);
  if (typeof handle === 'number') return false;
  signal.addEventListener('abort', cancel);
  // The pidfd is of whatever process had the pid when it was opened: the
  // root only if that is still the same process, running.
  if (!rootRuns(job)) cancel();
  return true;
}

function rootEndPolled(job: JobSpec, signal: AbortSignal, ended: () => void): void {
  let looks = 0;
  const timer = setInterval(check, ROOT_POLL_MS);
  function check() {
    const runs = pidExists(job.root) !== false && (looks++ % ROOT_STAT_EVERY !== 0 || rootRuns(job));
    if (!signal.aborted && runs) return;
    clearInterval(timer);
    ended();
  }
  check();
}

export interface JobWatch {
  watch: WatchOptions;
  job: JobSpec;
  /** What the job gets when the pid dies. */
  signal: NodeJS.Signals;
  /** SIGKILL to whatever of the job still lives this long after the signal. */
  killAfterMs?: number;
  /** Run `killer -NAME ROOT` instead of sending the signal (executed directly, no shell). */
  killer?: string;
  /** When the root ends first, send the signal to what it left behind (the job's leftovers); not for --foreground. */
  endLeftovers: boolean;
  /**
   * What pidwatch did, one line each, for stderr. Called after the deed:
   * a notice that cannot be written (a pipe nobody reads) never delays a
   * signal (pidwatch(1)).
   */
  onNotice(line: string): void;
}

/** How a watch ended. */
export type WatchEnd = 'root-ended' | 'pid-died';

/**
 * Watches the pid and the job's root together. When the pid dies first, the
 * job gets the signal (or the killer runs); when the root ends first, its
 * leftovers get it (with endLeftovers). --kill-after then sends SIGKILL to
 * whatever still lives.
 */
export async function watchJob(w: JobWatch): Promise<WatchEnd> {
  const stop = new AbortController();
  const rootEnded = rootEnds(w.job, stop.signal).then(() => 'root' as const);
  const death = waitForDeath(w.watch, stop.signal);
  const first = await Promise.race([rootEnded, death]);
  stop.abort();
  await Promise.allSettled([rootEnded, death]);
  const name = w.signal.replace(/^SIG/, '');
  if (first === 'root' || first === undefined) {
    if (!w.endLeftovers) return 'root-ended';
    const left = findJob(w.job);
    if (left.length === 0) return 'root-ended';
    const sent = await signalJob(w.job, w.signal, () => w.onNotice(`the command ended and left ${count(left.length)}: sending ${w.signal}`));
    await killAfter(w, sent);
    return 'root-ended';
  }
  const why = first.cause === 'dead'
    ? `pid ${w.watch.pid} on ${w.watch.host} is dead`
    : `no answer from ${w.watch.host} for ${Math.round(first.ms / 1000)} s (--dead-after): pid ${w.watch.pid} counts as dead`;
  // The first round: what --kill-after must reach again, by pid and start token.
  let round: ProcessStat[];
  if (w.killer !== undefined) {
    round = findJob(w.job);
    // Started before the notice is written (spawn runs at once).
    const ran = runKiller(w.killer, [`-${name}`, String(w.job.root)]);
    w.onNotice(`${why}: running ${w.killer} -${name} ${w.job.root}`);
    const failed = await ran;
    if (failed !== undefined) {
      const notice = `cannot run --killer ${w.killer}: ${failed}; sending ${w.signal} to the command instead`;
      round = round.concat(await signalJob(w.job, w.signal, () => w.onNotice(notice)));
    }
  } else {
    round = await signalJob(w.job, w.signal, (sent) => w.onNotice(`${why}: sending ${w.signal} to the command (${count(sent.length)})`));
  }
  await killAfter(w, round);
  return 'pid-died';
}

function count(n: number): string {
  return `${n} ${n === 1 ? 'process' : 'processes'}`;
}

/**
 * --kill-after: SIGKILL to what of the job is still alive then, and to every
 * process of the first round (`first`) that still runs as the same process:
 * one that ignored the signal may have left the job since (orphaned when its
 * parent died of the signal, its environment cleared), and no longer be
 * found as part of it. A pid reused meanwhile has another start token and is
 * never killed.
 */
async function killAfter(w: JobWatch, first: readonly ProcessStat[]): Promise<void> {
  if (w.killAfterMs === undefined) return;
  await sleep(w.killAfterMs);
  // The remembered ones first, then the job as found now; the notice counts each process once.
  const sent = new Set(stillRunning(first).filter((p) => signalProcess(p, 'SIGKILL')).map((p) => `${p.pid}/${p.start}`));
  await signalJob(w.job, 'SIGKILL', (more) => {
    for (const p of more) sent.add(`${p.pid}/${p.start}`);
    if (sent.size > 0) w.onNotice(`sending SIGKILL to ${count(sent.size)} of the command still alive after ${w.killAfterMs} ms (--kill-after)`);
  });
}

/** Runs the killer as argv (no shell) and waits for it; the reason it could not run, or undefined. */
function runKiller(program: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn(program, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    child.once('exit', () => resolve(undefined));
  });
}
