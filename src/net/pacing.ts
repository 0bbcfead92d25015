/**
 * The token bucket, the suite's one way to pace datagrams: a bucket holds up
 * to `burst` tokens, gains `rate` a second, and each datagram takes one. The
 * client paces what it sends with buckets (SendQueue, and one bucket per
 * daemon address in endpoints.ts); the daemon's --rate keeps a fixed table
 * of them in two arrays (ratelimit.ts), through refill().
 */
import { monotonicMs } from '../sys/time.js';

/** The tokens of a bucket that held `tokens` at `filledAt` (ms), at `now`: `rate` a second more, `burst` at most. */
export function refill(tokens: number, filledAt: number, now: number, rate: number, burst: number): number {
  return Math.min(burst, tokens + ((now - filledAt) * rate) / 1000);
}

/** One bucket, full at first. */
export class TokenBucket {
  private tokens: number;
  private filledAt: number;

  constructor(
    private readonly burst: number,
    private readonly rate: number,
    now: number = monotonicMs(),
  ) {
    this.tokens = burst;
    this.filledAt = now;
  }

  /** Fills the bucket up to `now`: the ms until it holds a token, 0 if it holds one. */
  waitMs(now: number): number {
    this.tokens = refill(this.tokens, this.filledAt, now, this.rate, this.burst);
    this.filledAt = now;
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 1000) / this.rate);
  }

  /** Takes `count` tokens; more than it holds leaves a debt, which the refill pays first. */
  take(count = 1): void {
    this.tokens -= count;
  }
}

/**
 * The client's send pace. A burst fits a daemon's default receive queue
 * (net.core.rmem_default, about 200 KB: some 250 small datagrams); the rate
 * stays well under what one daemon answers (over 100 000 a second) while
 * the client shares its cores.
 */
const SEND_BURST = 256;
const SEND_RATE = 25_000;
/**
 * The pace for one daemon address: under a daemon's default --rate (10 000 a
 * second per source, burst 10 000: pidstatd(8), --rate), so that no pidstat
 * run, however many its targets, is ever refused by a daemon with default
 * settings.
 */
const ADDRESS_RATE = 8_000;

/** A bucket for one daemon address: SEND_BURST at ADDRESS_RATE. */
export function addressPace(): TokenBucket {
  return new TokenBucket(SEND_BURST, ADDRESS_RATE);
}

/** What a SendQueue sends: one datagram to each of its endpoints, each paced by its own bucket. */
export interface Paced {
  readonly endpoints: readonly { readonly pace: TokenBucket }[];
}

/**
 * Sends items as the pace allows: a bucket of SEND_BURST datagrams that
 * refills at SEND_RATE a second for all of them, and each endpoint's own
 * bucket. Thousands of targets sent at once would overflow a daemon's
 * receive queue and be lost, every try alike. Items leave in the order they
 * came: one whose endpoint must wait holds back those behind it.
 */
export class SendQueue<T extends Paced> {
  private readonly pace = new TokenBucket(SEND_BURST, SEND_RATE);
  private queue: T[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | undefined;

  /** `wanted`: whether an item is still to be sent (not answered or closed while it waited its turn). */
  constructor(
    private readonly wanted: (item: T) => boolean,
    private readonly send: (item: T) => void,
  ) {}

  /** Sends `item` as soon as the pace allows. */
  push(item: T): void {
    this.queue.push(item);
    this.drain();
  }

  /** Stops sending: what waits is never sent. */
  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.head = 0;
  }

  private drain(): void {
    const now = monotonicMs();
    let wait = 1;
    while (this.head < this.queue.length && this.pace.waitMs(now) === 0) {
      const item = this.queue[this.head]!;
      if (!this.wanted(item)) {
        this.head++;
        continue;
      }
      const short = endpointsWait(item, now);
      if (short > 0) {
        wait = short;
        break;
      }
      this.head++;
      this.pace.take(item.endpoints.length);
      for (const endpoint of item.endpoints) endpoint.pace.take();
      this.send(item);
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else {
      this.timer ??= setTimeout(() => {
        this.timer = undefined;
        this.drain();
      }, wait);
    }
  }
}

/** The ms until every endpoint of `item` may send again at its own pace; 0 if all may now. */
function endpointsWait(item: Paced, now: number): number {
  let wait = 0;
  for (const endpoint of item.endpoints) wait = Math.max(wait, endpoint.pace.waitMs(now));
  return wait;
}
