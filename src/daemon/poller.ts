import { Queue } from './queue.js';
import { processTimers, type Timers } from '../sys/time.js';

/**
 * The daemon's look at subscribed processes that no pidfd can watch (no
 * addon, a kernel before 5.3, no descriptor left): each is looked at once
 * every PERIOD_MS while they are few, and, since every look costs a kill()
 * and a read of /proc, never more than BUDGET looks per TICK_MS in all, so
 * the CPU that subscriptions can cost the daemon is bounded whatever their
 * number (doc/protocol.md, Bounded work). Past PERIOD_MS / TICK_MS x BUDGET
 * processes, each is looked at less often: round robin, in the order they
 * were last looked at (a queue), so none waits longer than the others.
 * Looks that the budget put off are counted (`pollDeferred`).
 */

export const POLL_PERIOD_MS = 100;
export const POLL_TICK_MS = 20;
/** Some 3200 looks a second at most: a few per cent of a core. */
export const POLL_BUDGET = 64;

export interface PollerOptions {
  /** Whether the process is still the one meant: false ends its watch; undefined (cannot tell) is no death. */
  alive(pid: number, start: string): boolean | undefined;
  stats: { pollDeferred: number };
  /** @default this process's */
  timers?: Timers;
  /** @default POLL_PERIOD_MS */
  periodMs?: number;
  /** @default POLL_TICK_MS */
  tickMs?: number;
  /** Looks per tick at most. @default POLL_BUDGET */
  budget?: number;
}

export interface PollWatch {
  /** Looks no more; safe to call more than once, and after the death was told. */
  stop(): void;
}

export interface Poller {
  /** Looks at process `pid` of start token `start` until it has died (then calls `onDeath` once) or the watch is stopped. */
  add(pid: number, start: string, onDeath: () => void): PollWatch;
  /** Processes being looked at. */
  readonly size: number;
  close(): void;
}

interface Entry {
  pid: number;
  start: string;
  onDeath: () => void;
  /** When it is next to be looked at. */
  due: number;
  stopped: boolean;
}

export function startPoller(opts: PollerOptions): Poller {
  const timers = opts.timers ?? processTimers;
  const periodMs = opts.periodMs ?? POLL_PERIOD_MS;
  const tickMs = opts.tickMs ?? POLL_TICK_MS;
  const budget = opts.budget ?? POLL_BUDGET;
  // Due times are monotonic along the queue: each entry goes in at the end,
  // a period after now. A stopped entry is dropped when it comes up.
  const queue = new Queue<Entry>();
  let size = 0;
  let timer: unknown;
  let closed = false;
  /** When a tick last ran out of budget: an entry due by then was put off by it. */
  let exhaustedAt = -Infinity;

  function tick(): void {
    timer = undefined;
    const now = timers.now();
    let looks = 0;
    for (let head = queue.peek(); head !== undefined; head = queue.peek()) {
      if (head.stopped) {
        queue.shift();
        continue;
      }
      if (head.due > now) break;
      if (looks === budget) {
        exhaustedAt = now;
        break;
      }
      queue.shift();
      looks++;
      if (head.due <= exhaustedAt) opts.stats.pollDeferred++;
      if (opts.alive(head.pid, head.start) === false) {
        head.stopped = true;
        size--;
        head.onDeath();
        if (closed) return;
      } else {
        head.due = now + periodMs;
        queue.push(head);
      }
    }
    schedule(now);
  }

  /** The next tick: a tick away while looks are due, else when the first is, never sooner than a tick. */
  function schedule(now: number): void {
    if (closed || timer !== undefined) return;
    const head = queue.peek();
    if (head === undefined) return;
    timer = timers.setTimeout(tick, Math.max(tickMs, head.due - now));
  }

  return {
    add(pid, start, onDeath) {
      const now = timers.now();
      const entry: Entry = { pid, start, onDeath, due: now + periodMs, stopped: false };
      queue.push(entry);
      size++;
      schedule(now);
      return {
        stop() {
          if (entry.stopped) return;
          entry.stopped = true;
          size--;
        },
      };
    },
    get size() {
      return size;
    },
    close() {
      closed = true;
      timers.clearTimeout(timer);
      timer = undefined;
      queue.clear();
      size = 0;
    },
  };
}
