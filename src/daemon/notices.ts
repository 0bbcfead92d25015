import { Queue } from './queue.js';
import { processTimers, type Timers } from '../sys/time.js';

/**
 * The daemon's death notices on their way out (doc/protocol.md, Death
 * notices): each sent at once, then again after each wait of RESEND_MS
 * until acknowledged, then given up on.
 *
 * A death may have 100 000 subscribers: its notices are made and sent in
 * slices of SLICE_SENDS sends or SLICE_MS, whichever comes first, and the
 * event loop serves the socket between two slices (setImmediate), so the
 * questions that come meanwhile are answered within a few ms (Bounded
 * work). No timer per notice either: a notice waiting for its next copy is
 * in the queue of its attempt, where everything waits the same time, so due
 * times grow along each queue; one timer is set, for the earliest head. An
 * acknowledged notice is only marked, and dropped when it comes up.
 */

/** Waits before each resend of an unacknowledged notice, in ms: about 2.5 s in all, then the last wait again before giving up. */
export const RESEND_MS = [20, 40, 80, 160, 320, 640, 1280];
/** Sends in one turn of the event loop at most. */
export const SLICE_SENDS = 256;
/** Time in one turn at most, in ms: a slice ends at whichever bound comes first. */
export const SLICE_MS = 2;
/** Items (sends, skips, give-ups) between two looks at the clock. */
const CLOCK_EVERY = 16;

/** One notice to send: `key` is what its acknowledgement names. */
export interface Outgoing {
  key: string;
  line: string;
  address: string;
  port: number;
}

export interface NoticeOptions {
  send(line: string, address: string, port: number): void;
  /** `notified` counts first sends, `notifyUnacknowledged` the notices given up on. */
  stats: { notified: number; notifyUnacknowledged: number };
  /** @default this process's */
  timers?: Timers;
  /** @default SLICE_SENDS */
  sliceSends?: number;
  /** @default SLICE_MS */
  sliceMs?: number;
}

export interface Notices {
  /**
   * A death's notices, made one at a time as the slices come to them (an
   * undefined item: none for that subscriber).
   */
  add(notices: Iterator<Outgoing | undefined>): void;
  /** The notice of this key arrived: it is not sent again. */
  acknowledge(key: string): void;
  /** Notices sent and waiting for their acknowledgement. */
  readonly waiting: number;
  close(): void;
}

interface Notice extends Outgoing {
  /** When its queue may act on it next. */
  due: number;
  acknowledged: boolean;
}

interface Death {
  /** When it was told: its notices go out before resends due later. */
  due: number;
  notices: Iterator<Outgoing | undefined>;
}

export function startNotices(opts: NoticeOptions): Notices {
  const timers = opts.timers ?? processTimers;
  const sliceSends = opts.sliceSends ?? SLICE_SENDS;
  const sliceMs = opts.sliceMs ?? SLICE_MS;
  const { stats } = opts;
  const deaths = new Queue<Death>();
  /**
   * attempts[i] holds the notices sent i + 1 times: each waits RESEND_MS[i]
   * for its next copy; those of the last queue have had every copy, and
   * wait the last time again before they are given up on.
   */
  const attempts = Array.from({ length: RESEND_MS.length + 1 }, () => new Queue<Notice>());
  const waitOf = (attempt: number) => RESEND_MS[Math.min(attempt, RESEND_MS.length - 1)]!;
  const byKey = new Map<string, Notice>();
  let immediate: unknown;
  let timer: unknown;
  let timerAt = Infinity;
  let closed = false;

  /** The queue whose head is due first: -1 for the deaths, else an attempt; undefined when every queue is empty. */
  function earliest(): { queue: number; due: number } | undefined {
    let found: { queue: number; due: number } | undefined;
    const death = deaths.peek();
    if (death !== undefined) found = { queue: -1, due: death.due };
    attempts.forEach((queue, i) => {
      const head = queue.peek();
      if (head !== undefined && (found === undefined || head.due < found.due)) found = { queue: i, due: head.due };
    });
    return found;
  }

  function sendNotice(notice: Notice, attempt: number, now: number): void {
    opts.send(notice.line, notice.address, notice.port);
    notice.due = now + waitOf(attempt);
    attempts[attempt]!.push(notice);
  }

  /** One slice: what is due, in the order it fell due, up to the slice's bounds. */
  function drain(): void {
    immediate = undefined;
    const began = timers.now();
    let now = began;
    let sends = 0;
    for (let items = 1; ; items++) {
      if (closed) return;
      if (items % CLOCK_EVERY === 0) {
        now = timers.now();
        if (now - began >= sliceMs) break;
      }
      if (sends >= sliceSends || items > sliceSends * CLOCK_EVERY) break;
      const next = earliest();
      if (next === undefined || next.due > now) return schedule();
      if (next.queue === -1) {
        const death = deaths.peek()!;
        const made = death.notices.next();
        if (made.done === true) {
          deaths.shift();
          continue;
        }
        if (made.value === undefined) continue;
        const notice: Notice = { ...made.value, due: now, acknowledged: false };
        byKey.set(notice.key, notice);
        stats.notified++;
        sendNotice(notice, 0, now);
        sends++;
        continue;
      }
      const notice = attempts[next.queue]!.shift()!;
      if (notice.acknowledged) continue;
      if (next.queue === RESEND_MS.length) {
        byKey.delete(notice.key);
        stats.notifyUnacknowledged++;
        continue;
      }
      sendNotice(notice, next.queue + 1, now);
      sends++;
    }
    // Out of this slice's bounds with work due: the next slice comes after the socket is served.
    immediate = timers.setImmediate(drain);
  }

  /** A slice as soon as the event loop has served what waits, where something is due; else one timer, for the earliest. */
  function schedule(): void {
    if (closed || immediate !== undefined) return;
    const next = earliest();
    if (next === undefined) return;
    const wait = next.due - timers.now();
    if (wait <= 0) {
      immediate = timers.setImmediate(drain);
      return;
    }
    if (timer !== undefined && timerAt <= next.due) return;
    timers.clearTimeout(timer);
    timerAt = next.due;
    timer = timers.setTimeout(() => {
      timer = undefined;
      timerAt = Infinity;
      if (immediate === undefined) drain();
    }, wait);
  }

  return {
    add(notices) {
      if (closed) return;
      deaths.push({ due: timers.now(), notices });
      schedule();
    },
    acknowledge(key) {
      const notice = byKey.get(key);
      if (notice === undefined) return;
      notice.acknowledged = true;
      byKey.delete(key);
    },
    get waiting() {
      return byKey.size;
    },
    close() {
      closed = true;
      timers.clearImmediate(immediate);
      timers.clearTimeout(timer);
      immediate = timer = undefined;
      deaths.clear();
      for (const queue of attempts) queue.clear();
      byKey.clear();
    },
  };
}
