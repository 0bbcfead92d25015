import { setMaxListeners } from 'node:events';
import type { Failure } from '../client/failures.js';
import type { SocketIo } from '../sys/native.js';
import { readKeyFile, type KeyRing } from '../wire/keys.js';
import { monotonicMs } from '../sys/time.js';
import { waitForDeath, watchClient, type WatchOptions } from './watch.js';

/**
 * `pidstat wait` and the library's way to watch pids: wait for one, all or
 * any of many pids, on this host or through their hosts' daemons, learning
 * each death as it happens. How a death is learned is pidwatch's own
 * waitForDeath() (watch.ts), once per target, so both commands judge a death
 * alike: a pid reused by another process counts as dead (its start token),
 * `unknown` never does, and silence does only after `deadAfterMs`
 * (pidstat(1), WAIT). The watches share one client: its sockets (one per
 * daemon address) and its pace, however many pids they watch.
 */

/** A pid to watch, on a host (`localhost` and this host's names are probed locally). */
export interface WaitTarget {
  host: string;
  pid: number;
}

export interface WaitOptions {
  /**
   * Stop watching when this aborts: deaths() then throws, and waitForExit()
   * rejects, with the signal's reason.
   */
  signal?: AbortSignal;
  /** Time between two questions to a host, in ms. @default 1000 */
  intervalMs?: number;
  /**
   * Silence from a target's host lasting this long, without a single answer,
   * ends the watch of that target with `state: 'silent'`.
   * @default never: silence goes on waiting
   */
  deadAfterMs?: number;
  /** The daemons' UDP port. @default the pidstatd entry of /etc/services, else 1752 */
  port?: number;
  /** Authenticate questions and answers with the first key of this file (pidstatd(8), KEYS). */
  keyFile?: string;
  /** The keys of a key file already read (readKeyFile()), in place of keyFile: it is then not read again. */
  keys?: KeyRing;
  /** Probe pids on this host locally, without a daemon. @default true */
  local?: boolean;
  /**
   * Called when a target cannot be watched (no daemon listening, a name that
   * does not resolve, no answer to several questions), with the reason
   * (describeFailure() says it in words), and with undefined when it can
   * again. Called on changes only. A host that had answered and falls
   * silent is a `silence` failure whose `since` is when it last answered
   * (pidstat(1), WAIT).
   */
  onReach?: (target: WaitTarget, problem: Failure | undefined) => void;
  /** Each datagram, as `--debug` shows it. */
  onDebug?: (line: string) => void;
  /** How the client's sockets are read (ClientOptions.io). */
  io?: SocketIo;
}

/** How the watch of one target ended. */
export interface PidEnd {
  host: string;
  pid: number;
  /**
   * `dead`: the host said the pid does not exist, or now belongs to another
   * process. `silent`: its host did not answer for `deadAfterMs`.
   */
  state: 'dead' | 'silent';
  /** Milliseconds from the start of the watch to the moment this was learned. */
  ms: number;
}

/** The default time between two questions to a host, as pidwatch's --interval. */
export const DEFAULT_INTERVAL_MS = 1000;

/**
 * Watches every target at once and yields each one's end as it is learned,
 * in that order; the iteration ends when every target has ended. A target
 * already dead is yielded at once. Breaking out of the loop stops watching
 * the rest. A target named twice is watched, and yielded, once.
 *
 * @example
 * for await (const end of deaths([{ host: 'node17', pid: 4711 }, { host: 'node18', pid: 99 }])) {
 *   console.log(`${end.host}:${end.pid} ${end.state}`);
 * }
 * @throws the signal's reason when `opts.signal` aborts; a KeyFileError for a key file that cannot be used
 */
export async function* deaths(targets: readonly WaitTarget[], opts: WaitOptions = {}): AsyncGenerator<PidEnd, void, undefined> {
  // Read once, here, so that a key file that cannot be used throws at once.
  const keys = opts.keys ?? (opts.keyFile === undefined ? undefined : readKeyFile(opts.keyFile));
  const outer = opts.signal;
  outer?.throwIfAborted();
  const unique = [...new Map(targets.map((t) => [`${t.pid} ${t.host}`, { host: t.host, pid: t.pid }])).values()];
  const common = commonOptions(opts, keys);
  // Made first: it checks the options (a port out of range throws here).
  const shared = watchClient(common);
  const stop = new AbortController();
  // Each target's watch listens to it: thousands are no leak.
  setMaxListeners(0, stop.signal);
  const onAbort = () => stop.abort();
  outer?.addEventListener('abort', onAbort);
  const began = monotonicMs();
  const ended: PidEnd[] = [];
  let failure: { error: unknown } | undefined;
  let running = unique.length;
  let wake = () => {};
  const watches = unique.map(async (target) => {
    try {
      const watch: WatchOptions = { ...common, ...target, client: shared };
      const { onReach } = opts;
      if (onReach !== undefined) watch.onReach = (problem) => onReach(target, problem);
      const death = await waitForDeath(watch, stop.signal);
      if (death !== undefined) ended.push({ ...target, state: death.cause === 'dead' ? 'dead' : 'silent', ms: monotonicMs() - began });
    } catch (error) {
      failure ??= { error };
      stop.abort();
    } finally {
      running--;
      wake();
    }
  });
  try {
    for (;;) {
      if (failure !== undefined) throw failure.error;
      outer?.throwIfAborted();
      const next = ended.shift();
      if (next !== undefined) yield next;
      else if (running === 0) return;
      else await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    outer?.removeEventListener('abort', onAbort);
    stop.abort();
    await Promise.allSettled(watches);
    await shared.close();
  }
}

/**
 * Resolves when the pid has ended: `'dead'`, or `'silent'` when its host did
 * not answer for `deadAfterMs` (never without it).
 *
 * @example
 * const state = await waitForExit({ host: 'node17', pid: 4711 }, { signal: AbortSignal.timeout(60_000) });
 * @throws the signal's reason when `opts.signal` aborts first
 */
export async function waitForExit(target: WaitTarget, opts: WaitOptions = {}): Promise<PidEnd['state']> {
  for await (const end of deaths([target], opts)) return end.state;
  // deaths() of one target yields it or throws.
  throw new Error('the watch ended without an end');
}

/** The reason a deathSignal() aborts with when its pid ends. */
export class PidEndedError extends Error {
  override name = 'PidEndedError';
  constructor(readonly end: PidEnd) {
    super(end.state === 'dead' ? `pid ${end.pid} on ${end.host} is dead` : `no answer from ${end.host} about pid ${end.pid}`);
  }
}

/**
 * An AbortSignal that aborts when the pid ends, its reason a PidEndedError
 * (with `end.state` 'dead', or 'silent' past `deadAfterMs`), to hand to
 * anything that takes one: `fetch`, `setTimeout` of node:timers/promises,
 * `spawn`... The watch goes on, and keeps the process alive, until the pid
 * ends or `opts.signal` aborts: abort that to stop watching. A watch that
 * fails for any other reason aborts with that error, which is then no
 * PidEndedError.
 *
 * @example
 * const stop = new AbortController();
 * const signal = deathSignal({ host: 'node17', pid: 4711 }, { signal: stop.signal });
 * spawn('long_job', { signal }); // ended when pid 4711 on node17 dies
 * @throws a KeyFileError, at once, for a key file that cannot be used
 */
export function deathSignal(target: WaitTarget, opts: WaitOptions = {}): AbortSignal {
  const keys = opts.keys ?? (opts.keyFile === undefined ? undefined : readKeyFile(opts.keyFile));
  const died = new AbortController();
  const first = async () => {
    for await (const end of deaths([target], keys === undefined ? opts : { ...opts, keys })) return end;
    return undefined;
  };
  first().then(
    (end) => end !== undefined && died.abort(new PidEndedError(end)),
    (error: unknown) => {
      if (!opts.signal?.aborted) died.abort(error);
    },
  );
  return died.signal;
}

/** What every target's watch is given alike. */
function commonOptions(opts: WaitOptions, keys: KeyRing | undefined): Omit<WatchOptions, 'host' | 'pid'> {
  const watch: Omit<WatchOptions, 'host' | 'pid'> = { intervalMs: opts.intervalMs ?? DEFAULT_INTERVAL_MS };
  if (opts.port !== undefined) watch.port = opts.port;
  if (opts.local !== undefined) watch.local = opts.local;
  if (opts.deadAfterMs !== undefined) watch.deadAfterMs = opts.deadAfterMs;
  if (keys !== undefined) watch.keys = keys;
  if (opts.io !== undefined) watch.io = opts.io;
  if (opts.onDebug !== undefined) watch.onDebug = opts.onDebug;
  return watch;
}
