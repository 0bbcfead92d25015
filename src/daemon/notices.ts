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
  return new NoticeQueues(opts);
}

class NoticeQueues implements Notices {
  private readonly timers: Timers;
  private readonly sliceSends: number;
  private readonly sliceMs: number;
  private readonly deaths = new Queue<Death>();
  /**
   * attempts[i] holds the notices sent i + 1 times: each waits RESEND_MS[i]
   * for its next copy; those of the last queue have had every copy, and
   * wait the last time again before they are given up on.
   */
  private readonly attempts = Array.from({ length: RESEND_MS.length + 1 }, () => new Queue<Notice>());
  private readonly byKey = new Map<string, Notice>();
  private immediate: unknown;
  private timer: unknown;
  private timerAt = Infinity;
  private closed = false;

  constructor(private readonly opts: NoticeOptions) {
    this.timers = opts.timers ?? processTimers;
    this.sliceSends = opts.sliceSends ?? SLICE_SENDS;
    this.sliceMs = opts.sliceMs ?? SLICE_MS;
  }

  add(notices: Iterator<Outgoing | undefined>): void {
    if (this.closed) return;
    this.deaths.push({ due: this.timers.now(), notices });
    this.schedule();
  }

  acknowledge(key: string): void {
    const notice = this.byKey.get(key);
    if (notice === undefined) return;
    notice.acknowledged = true;
    this.byKey.delete(key);
  }

  get waiting(): number {
    return this.byKey.size;
  }

  close(): void {
    this.closed = true;
    this.timers.clearImmediate(this.immediate);
    this.timers.clearTimeout(this.timer);
    this.immediate = this.timer = undefined;
    this.deaths.clear();
    for (const queue of this.attempts) queue.clear();
    this.byKey.clear();
  }

  /** The queue whose head is due first: -1 for the deaths, else an attempt; undefined when every queue is empty. */
  private earliest(): { queue: number; due: number } | undefined {
    let found: { queue: number; due: number } | undefined;
    const death = this.deaths.peek();
    if (death !== undefined) found = { queue: -1, due: death.due };
    this.attempts.forEach((queue, i) => {
      const head = queue.peek();
      if (head !== undefined && (found === undefined || head.due < found.due)) found = { queue: i, due: head.due };
    });
    return found;
  }

  private sendNotice(notice: Notice, attempt: number, now: number): void {
    this.opts.send(notice.line, notice.address, notice.port);
    notice.due = now + RESEND_MS[Math.min(attempt, RESEND_MS.length - 1)]!;
    this.attempts[attempt]!.push(notice);
  }

  /** One slice: what is due, in the order it fell due, up to the slice's bounds. */
  private readonly drain = (): void => {
    this.immediate = undefined;
    const began = this.timers.now();
    let now = began;
    let sends = 0;
    for (let items = 1; ; items++) {
      if (this.closed) return;
      if (items % CLOCK_EVERY === 0) {
        now = this.timers.now();
        if (now - began >= this.sliceMs) break;
      }
      if (sends >= this.sliceSends || items > this.sliceSends * CLOCK_EVERY) break;
      const next = this.earliest();
      if (next === undefined || next.due > now) return this.schedule();
      if (next.queue === -1 ? this.sendFirst(now) : this.sendAgain(next.queue, now)) sends++;
    }
    // Out of this slice's bounds with work due: the next slice comes after the socket is served.
    this.immediate = this.timers.setImmediate(this.drain);
  };

  /** The next notice of the earliest death, made now and sent; whether one was sent. */
  private sendFirst(now: number): boolean {
    const death = this.deaths.peek()!;
    const made = death.notices.next();
    if (made.done === true) {
      this.deaths.shift();
      return false;
    }
    if (made.value === undefined) return false;
    const notice: Notice = { ...made.value, due: now, acknowledged: false };
    this.byKey.set(notice.key, notice);
    this.opts.stats.notified++;
    this.sendNotice(notice, 0, now);
    return true;
  }

  /** The head of attempt queue `queue`: skipped if acknowledged, given up on after the last wait, else sent again; whether it was sent. */
  private sendAgain(queue: number, now: number): boolean {
    const notice = this.attempts[queue]!.shift()!;
    if (notice.acknowledged) return false;
    if (queue === RESEND_MS.length) {
      this.byKey.delete(notice.key);
      this.opts.stats.notifyUnacknowledged++;
      return false;
    }
    this.sendNotice(notice, queue + 1, now);
    return true;
  }

  /** A slice as soon as the event loop has served what waits, where something is due; else one timer, for the earliest. */
  private schedule(): void {
    if (this.closed || this.immediate !== undefined) return;
    const next = this.earliest();
    if (next === undefined) return;
    const wait = next.due - this.timers.now();
    if (wait <= 0) {
      this.immediate = this.timers.setImmediate(this.drain);
      return;
    }
    if (this.timer !== undefined && this.timerAt <= next.due) return;
    this.timers.clearTimeout(this.timer);
    this.timerAt = next.due;
    this.timer = this.timers.setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      if (this.immediate === undefined) this.drain();
    }, wait);
  }
}
