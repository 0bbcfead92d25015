import { PidStatClient, type Result } from '../client/client.js';
import type { Failure } from '../client/failures.js';
import { isLocalHost } from '../net/host.js';
import { processExists, processRef, watchEnd, type ProcessRef } from '../sys/pidref.js';
import { pidExists } from '../sys/probe.js';
import { FLAG_DEAD, FLAG_EXISTS, FLAG_START } from '../wire/protocol.js';
import type { SocketIo } from '../sys/native.js';
import { sleep } from '../sys/sleep.js';
import { monotonicMs } from '../sys/time.js';
import type { KeyRing } from '../wire/keys.js';

/**
 * Learning a death: watch a pid, on this host or through a daemon, until it
 * dies (waitForDeath), for pidwatch (ending.ts acts on its job) and for
 * `pidstat wait` (wait.ts).
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
  /** Or with the keys of one already read (ClientOptions.keys). */
  keys?: KeyRing;
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
  if (local && pidExists(opts.pid) !== undefined) return waitForLocalDeath(opts, signal);
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
    ...(opts.keys !== undefined && { keys: opts.keys }),
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
  const ref = processRef(opts.pid);
  const watched = localEnd(ref, signal);
  if (watched !== undefined) return (await watched) ? { cause: 'dead' } : undefined;
  while (!signal.aborted) {
    if (processExists(ref) === false) return { cause: 'dead' };
    await sleep(opts.intervalMs, signal);
  }
  return undefined;
}

/**
 * A local process's end told by the kernel (pidref.ts, watchEnd) the moment
 * it ends: true at its end, false at abort. Undefined where no pidfd can
 * watch it, or its start token could not be read (a pidfd would name
 * whichever process has the pid now): the caller then looks every interval.
 */
function localEnd(ref: ProcessRef, signal: AbortSignal): Promise<boolean> | undefined {
  if (ref.start === undefined || signal.aborted) return undefined;
  let settle!: (ended: boolean) => void;
  const outcome = new Promise<boolean>((resolve) => (settle = resolve));
  const stop = watchEnd(ref, () => {
    signal.removeEventListener('abort', aborted);
    settle(true);
  });
  if (typeof stop !== 'function') return undefined;
  function aborted() {
    (stop as () => void)();
    settle(false);
  }
  signal.addEventListener('abort', aborted);
  return outcome;
}
