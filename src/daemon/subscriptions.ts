import { constants } from 'node:os';
import { randomHex64 } from '../sys/random.js';
import { daemonIdentity, keyFromSecret, signLine, type Key } from '../wire/keys.js';
import { startNotices, type Notices, type Outgoing } from './notices.js';
import { startPoller, type Poller } from './poller.js';
import { isThreadGroupLeader, pidExists } from '../sys/probe.js';
import { isSameProcess, watchEnd, type ProcessRef } from '../sys/pidref.js';
import { NO_TICKET, pushLine, TICKET_DIGITS, type PushMessage } from '../wire/pushwire.js';
import { DEFAULT_SOURCE_PREFIX_V4, DEFAULT_SOURCE_PREFIX_V6, sourceOf } from './source.js';
import { ThrottledReport } from './throttle.js';
import { processTimers, type Timers } from '../sys/time.js';

/**
 * The daemon's side of push death notices (doc/protocol.md, Death notices):
 * who subscribed to which process, until when, and the notices of deaths,
 * sent again until acknowledged (notices.ts).
 *
 * Nothing is kept for a subscriber until it has shown that it reads what is
 * sent to its address: its first SUBS gets only a ticket (SUBC), a MAC of
 * its address, port, pid and host under a secret drawn at start and a time
 * slot, no longer than the request; only a SUBS that echoes a valid ticket
 * is stored. So a forged source address gets one datagram no larger than
 * what was sent, and never a notice, and costs no memory.
 *
 * A process is watched once, however many subscribe to it: through a pidfd
 * (the addon's watchExit), which costs nothing while it lives; else by
 * looking at it, within a budget (poller.ts). Only a process is kept, never
 * another thread of one: no pidfd can watch a thread, so it could only be
 * looked at, at a cost its subscriber would choose (doc/protocol.md,
 * Bounded work).
 */

/** How long a subscription holds without a renewal, in seconds; this suite's subscribers renew every 12 s. */
export const LEASE_SECONDS = 30;
/** A ticket is good for the slot it was made in and the next one: 2 to 4 minutes. */
const TICKET_SLOT_MS = 120_000;
/** Expired subscriptions are swept this often. */
const SWEEP_MS = 5000;
/** Refused subscriptions are logged at most this often, with a count. */
const REFUSAL_REPORT_MS = 60_000;
/**
 * What pidfd_open(2) answers for a pid that names no process it will open:
 * a thread that leads no thread group (EINVAL; ENOENT on newer kernels),
 * or a pid gone meanwhile (ESRCH). Such a pid is refused, never polled; any
 * other errno (ENOSYS, EMFILE, a sandbox's EPERM) says no pidfd can be had,
 * and the process is polled.
 */
const NO_PROCESS = new Set([-constants.errno.EINVAL, -constants.errno.ENOENT, -constants.errno.ESRCH]);

export const DEFAULT_MAX_SUBSCRIPTIONS = 100_000;
export const DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE = 10_000;

export interface SubscriptionStats {
  /** Subscriptions stored (renewals not counted). */
  subscribed: number;
  /** Subscriptions refused by a cap, or for a thread (answered `-`: the subscriber polls). */
  subscribeRefused: number;
  /** Deaths told to a subscriber (first sends). */
  notified: number;
  /** Notices given up on: every resend went unacknowledged. */
  notifyUnacknowledged: number;
  /** Looks at a process without a pidfd that the poll's budget put off. */
  pollDeferred: number;
}

/** What the subscriptions ask this host's kernel; a test gives its own. */
export interface SubscriptionProbe {
  /** Whether `pid` is the process of start token `start`: true, false (dead, or another process), undefined (cannot tell). */
  alive(pid: number, start: string): boolean | undefined;
  /** probe.ts's isThreadGroupLeader. */
  isThreadGroupLeader(pid: number): boolean | undefined;
  /** pidref.ts's watchEnd: what stops the watch, a negative errno, or undefined where no pidfd can be had at all. */
  watchEnd(process: ProcessRef, onEnd: () => void): (() => void) | number | undefined;
}

export interface SubscriptionOptions {
  maxTotal?: number;
  maxPerSource?: number;
  /** The prefix lengths of a source's network (source.ts). @default 32 and 64 */
  sourcePrefixV4?: number;
  sourcePrefixV6?: number;
  /** Sends a datagram; a failure is the caller's to count. */
  send(line: string, address: string, port: number): void;
  onLog?(text: string): void;
  stats: SubscriptionStats;
  /** @default this host's */
  probe?: Partial<SubscriptionProbe>;
  /** @default this process's */
  timers?: Timers;
}

/** This host's kernel, through probe.ts and pidref.ts. */
const hostProbe: SubscriptionProbe = {
  // A start token that cannot be read leaves it untold: such a pid is not subscribed to.
  alive(pid, start) {
    const exists = pidExists(pid);
    return exists === true ? isSameProcess({ pid, start }) : exists;
  },
  isThreadGroupLeader,
  watchEnd,
};

/** A process watched for its subscribers. */
interface Watched extends ProcessRef {
  start: string;
  subscribers: Set<Subscription>;
  stop(): void;
}

/**
 * One subscription, kept small (100 000 of them fit in some 30 MB): its
 * address, port, pid and host live only in its key, a flat string made by
 * join() (the datagram's text is not kept alive by slices of it), read
 * back when a notice is sent; pid and start token are its watch's.
 */
interface Subscription {
  /** subscriptionKey(address, port, pid, host). */
  key: string;
  /** The daemon as the subscriber asked it, for a keyed notice's MAC (keys.ts). */
  asked: string | undefined;
  /** The subscription's key, where the daemon has keys. */
  signer: Key | undefined;
  /** The daemon's port, for a keyed notice's MAC. */
  ownPort: number;
  expiresAt: number;
  watched: Watched;
}

export interface Subscriptions {
  /**
   * The answer to a SUBS or ACKN from address:port (authenticated with
   * `signer` where there are keys; `asked` is where it was sent, `ownPort`
   * the daemon's port): a line to send back, or undefined.
   */
  handle(message: PushMessage, address: string, port: number, signer: Key | undefined, asked: string | undefined, ownPort: number): string | undefined;
  readonly size: number;
  close(): void;
}

function subscriptionKey(address: string, port: number, pid: number, host: string): string {
  return [address, port, pid, host].join(' ');
}

/** A key's parts again: an address has no space, nor a host field. */
function keyParts(key: string): { address: string; port: number; host: string } {
  const [address, port, , host] = key.split(' ') as [string, string, string, string];
  return { address, port: Number(port), host };
}

export function startSubscriptions(opts: SubscriptionOptions): Subscriptions {
  return new SubscriptionTable(opts);
}

class SubscriptionTable implements Subscriptions {
  private readonly maxTotal: number;
  private readonly maxPerSource: number;
  private readonly prefixV4: number;
  private readonly prefixV6: number;
  private readonly stats: SubscriptionOptions['stats'];
  private readonly probe: SubscriptionProbe;
  private readonly timers: Timers;
  // The tickets' secret: 256 bits from /dev/urandom, drawn anew at each start.
  private readonly secret = keyFromSecret(0, Buffer.from(randomHex64() + randomHex64() + randomHex64() + randomHex64(), 'hex'));
  private readonly subscriptions = new Map<string, Subscription>();
  /** Subscriptions kept per source network (source.ts). */
  private readonly perSource = new Map<string, number>();
  private readonly watched = new Map<string, Watched>();
  private readonly notices: Notices;
  private readonly poller: Poller;
  private seq = 0;
  private closed = false;
  private readonly refusals: ThrottledReport;
  private sweeper: unknown;

  constructor(opts: SubscriptionOptions) {
    this.maxTotal = opts.maxTotal ?? DEFAULT_MAX_SUBSCRIPTIONS;
    this.maxPerSource = opts.maxPerSource ?? DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE;
    this.prefixV4 = opts.sourcePrefixV4 ?? DEFAULT_SOURCE_PREFIX_V4;
    this.prefixV6 = opts.sourcePrefixV6 ?? DEFAULT_SOURCE_PREFIX_V6;
    this.stats = opts.stats;
    this.probe = { ...hostProbe, ...opts.probe };
    this.timers = opts.timers ?? processTimers;
    this.notices = startNotices({ send: opts.send, stats: this.stats, timers: this.timers });
    this.poller = startPoller({ alive: this.probe.alive, stats: this.stats, timers: this.timers });
    this.refusals = new ThrottledReport(REFUSAL_REPORT_MS, (count, reason) =>
      opts.onLog?.(`subscriptions refused: ${count} since the last report, the last ${reason}; those subscribers poll instead`));
    this.sweeper = this.timers.setTimeout(this.sweep, SWEEP_MS);
  }

  private ticketFor(slot: number, address: string, port: number, pid: number, host: string): string {
    return signLine(this.secret, `ticket ${slot} ${address} ${port} ${pid} ${host}`).slice(-32, -32 + TICKET_DIGITS);
  }

  private validTicket(ticket: string, address: string, port: number, pid: number, host: string): boolean {
    if (ticket === NO_TICKET) return false;
    const slot = Math.floor(Date.now() / TICKET_SLOT_MS);
    return ticket === this.ticketFor(slot, address, port, pid, host) || ticket === this.ticketFor(slot - 1, address, port, pid, host);
  }

  private idOf(entry: Watched): string {
    return `${entry.pid} ${entry.start}`;
  }

  /**
   * The process's watch, shared by its subscribers: a pidfd where the addon
   * can, else the poll; undefined where pidfd_open refuses the pid as no
   * process (a thread, NO_PROCESS), which is never polled.
   */
  private watch(pid: number, start: string): Watched | undefined {
    const id = `${pid} ${start}`;
    const existing = this.watched.get(id);
    if (existing !== undefined) return existing;
    const entry: Watched = { pid, start, subscribers: new Set(), stop: () => {} };
    // A pid that another process got before the pidfd was opened is told as the death it is (watchEnd).
    const stop = this.probe.watchEnd(entry, () => this.died(entry));
    if (typeof stop === 'number' && NO_PROCESS.has(stop)) return undefined;
    this.watched.set(id, entry);
    if (typeof stop === 'function') {
      entry.stop = stop;
    } else {
      // No addon, an old kernel, or no descriptor left.
      const polled = this.poller.add(pid, start, () => this.died(entry));
      entry.stop = () => polled.stop();
    }
    return entry;
  }

  private forget(sub: Subscription): void {
    if (this.subscriptions.get(sub.key) !== sub) return;
    this.subscriptions.delete(sub.key);
    const source = sourceOf(keyParts(sub.key).address, this.prefixV4, this.prefixV6);
    const count = (this.perSource.get(source) ?? 1) - 1;
    if (count > 0) this.perSource.set(source, count);
    else this.perSource.delete(source);
    const entry = sub.watched;
    entry.subscribers.delete(sub);
    if (entry.subscribers.size === 0 && this.watched.get(this.idOf(entry)) === entry) {
      entry.stop();
      this.watched.delete(this.idOf(entry));
    }
  }

  private signed(line: string, signer: Key | undefined, asked: string | undefined, ownPort: number): string | undefined {
    if (signer === undefined) return line;
    // A keyed answer names the daemon as asked; without that address none can be made (server.ts refuses such a start).
    return asked === undefined ? undefined : signLine(signer, line, daemonIdentity(asked, ownPort));
  }

  /**
   * The process died: its watch ends at once, and its subscribers' notices
   * go to notices.ts, which makes each (forgetting its subscription) only
   * when a slice comes to it.
   */
  private died(entry: Watched): void {
    if (this.closed || this.watched.get(this.idOf(entry)) !== entry) return;
    // A pidfd's watch has called back (and may not be stopped now), or the poll has seen it: done with either.
    entry.stop = () => {};
    this.watched.delete(this.idOf(entry));
    this.notices.add(this.noticesOf(entry));
  }

  /** The notice to each subscriber of `entry` still subscribed when its turn comes (a renewal meanwhile was told `0`). */
  private *noticesOf(entry: Watched): Generator<Outgoing | undefined> {
    for (const sub of entry.subscribers) {
      this.forget(sub);
      const number = ++this.seq;
      const { address, port, host } = keyParts(sub.key);
      const line = this.signed(pushLine({ kind: 'NOTE', pid: entry.pid, host, start: entry.start, seq: number }), sub.signer, sub.asked, sub.ownPort);
      yield line === undefined ? undefined : { key: `${sub.key} ${number}`, line, address, port };
    }
  }

  private readonly sweep = (): void => {
    const now = this.timers.now();
    // A Map's iteration survives the deletion of its entries: no copy of 100 000 needed.
    for (const sub of this.subscriptions.values()) if (sub.expiresAt <= now) this.forget(sub);
    this.sweeper = this.timers.setTimeout(this.sweep, SWEEP_MS);
  };

  get size(): number {
    return this.subscriptions.size;
  }

  handle(message: PushMessage, address: string, port: number, signer: Key | undefined, asked: string | undefined, ownPort: number): string | undefined {
    if (this.closed) return undefined;
    if (message.kind === 'ACKN') {
      this.notices.acknowledge(`${subscriptionKey(address, port, message.pid, message.host)} ${message.seq}`);
      return undefined;
    }
    if (message.kind !== 'SUBS') return undefined;
    const { pid, host, start } = message;
    if (!this.validTicket(message.ticket, address, port, pid, host)) {
      // Prove the address first: one datagram, no state, no larger than the request.
      return pushLine({ kind: 'SUBC', pid, host, ticket: this.ticketFor(Math.floor(Date.now() / TICKET_SLOT_MS), address, port, pid, host) });
    }
    const answer = (state: '1' | '0' | '-') => this.signed(pushLine({ kind: 'SUBR', pid, host, state, lease: state === '1' ? LEASE_SECONDS : 0 }), signer, asked, ownPort);
    const refuse = (reason: string) => {
      this.stats.subscribeRefused++;
      this.refusals.add(1, reason);
      return answer('-');
    };
    const key = subscriptionKey(address, port, pid, host);
    const known = this.subscriptions.get(key);
    const state = this.probe.alive(pid, start);
    if (state === false) {
      if (known !== undefined) this.forget(known);
      return answer('0');
    }
    if (state === undefined) return answer('-');
    if (known !== undefined && known.watched.start === start) {
      known.expiresAt = this.timers.now() + LEASE_SECONDS * 1000;
      return answer('1');
    }
    if (known !== undefined) this.forget(known);
    // kill() and /proc answer for any thread: only /proc/PID/status tells a thread from a process.
    if (this.probe.isThreadGroupLeader(pid) === false) return refuse(`for ${pid}, a thread and not a process (no pidfd can watch it)`);
    const source = sourceOf(address, this.prefixV4, this.prefixV6);
    const fromSource = this.perSource.get(source) ?? 0;
    if (this.subscriptions.size >= this.maxTotal) return refuse(`at the cap of ${this.maxTotal} in all`);
    if (fromSource >= this.maxPerSource) return refuse(`from ${source}, at the cap of ${this.maxPerSource} per source`);
    const entry = this.watch(pid, start);
    if (entry === undefined) return refuse(`for ${pid}, which pidfd_open refuses as no process (a thread, or gone)`);
    const sub: Subscription = { key, asked, signer, ownPort, expiresAt: this.timers.now() + LEASE_SECONDS * 1000, watched: entry };
    this.subscriptions.set(key, sub);
    this.perSource.set(source, fromSource + 1);
    entry.subscribers.add(sub);
    this.stats.subscribed++;
    return answer('1');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.timers.clearTimeout(this.sweeper);
    for (const entry of this.watched.values()) entry.stop();
    this.watched.clear();
    this.subscriptions.clear();
    this.perSource.clear();
    this.poller.close();
    this.notices.close();
    this.refusals.flush();
  }
}
