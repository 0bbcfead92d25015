import { randomHex64 } from './cookie.js';
import { daemonIdentity, keyFromSecret, signLine, type Key } from './keys.js';
import { loadLinuxCalls } from './native.js';
import { pidExists, readStartToken } from './probe.js';
import { NO_TICKET, pushLine, TICKET_DIGITS, type PushMessage } from './pushwire.js';
import { ThrottledReport } from './throttle.js';

/**
 * The daemon's side of push death notices (doc/protocol.md, Death notices):
 * who subscribed to which process, until when, and the notices of deaths,
 * sent again until acknowledged.
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
 * looking every POLL_MS.
 */

/** How long a subscription holds without a renewal, in seconds; this suite's subscribers renew every 12 s. */
export const LEASE_SECONDS = 30;
/** A ticket is good for the slot it was made in and the next one: 2 to 4 minutes. */
const TICKET_SLOT_MS = 120_000;
/** Where no pidfd can watch a process: how often it is looked at. */
const POLL_MS = 100;
/** Waits before each resend of an unacknowledged notice, in ms: about 2.5 s in all. */
const RESEND_MS = [20, 40, 80, 160, 320, 640, 1280];
/** Expired subscriptions are swept this often. */
const SWEEP_MS = 5000;
/** Refused subscriptions are logged at most this often, with a count. */
const REFUSAL_REPORT_MS = 60_000;

export const DEFAULT_MAX_SUBSCRIPTIONS = 100_000;
export const DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE = 10_000;

export interface SubscriptionStats {
  /** Subscriptions stored (renewals not counted). */
  subscribed: number;
  /** Subscriptions refused by a cap (answered `-`: the subscriber polls). */
  subscribeRefused: number;
  /** Deaths told to a subscriber (first sends). */
  notified: number;
  /** Notices given up on: every resend went unacknowledged. */
  notifyUnacknowledged: number;
}

export interface SubscriptionOptions {
  maxTotal?: number;
  maxPerSource?: number;
  /** Sends a datagram; a failure is the caller's to count. */
  send(line: string, address: string, port: number): void;
  onLog?(text: string): void;
  stats: SubscriptionStats;
}

interface Watched {
  pid: number;
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

interface Notice {
  line: string;
  address: string;
  port: number;
  timer: NodeJS.Timeout | undefined;
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
  const maxTotal = opts.maxTotal ?? DEFAULT_MAX_SUBSCRIPTIONS;
  const maxPerSource = opts.maxPerSource ?? DEFAULT_MAX_SUBSCRIPTIONS_PER_SOURCE;
  const { stats } = opts;
  // The tickets' secret: 256 bits from /dev/urandom, drawn anew at each start.
  const secret = keyFromSecret(0, Buffer.from(randomHex64() + randomHex64() + randomHex64() + randomHex64(), 'hex'));
  const subscriptions = new Map<string, Subscription>();
  const perSource = new Map<string, number>();
  const watched = new Map<string, Watched>();
  const notices = new Map<string, Notice>();
  let seq = 0;
  let closed = false;
  const polled = new Set<Watched>();
  let pollTimer: NodeJS.Timeout | undefined;
  const refusals = new ThrottledReport(REFUSAL_REPORT_MS, (count, reason) =>
    opts.onLog?.(`subscriptions refused: ${count} since the last report, the last ${reason}; those subscribers poll instead`));

  function ticketFor(slot: number, address: string, port: number, pid: number, host: string): string {
    return signLine(secret, `ticket ${slot} ${address} ${port} ${pid} ${host}`).slice(-32, -32 + TICKET_DIGITS);
  }

  function validTicket(ticket: string, address: string, port: number, pid: number, host: string): boolean {
    if (ticket === NO_TICKET) return false;
    const slot = Math.floor(Date.now() / TICKET_SLOT_MS);
    return ticket === ticketFor(slot, address, port, pid, host) || ticket === ticketFor(slot - 1, address, port, pid, host);
  }

  /** Whether `pid` is the process of start token `start`: true, false (dead, or another process), undefined (cannot tell). */
  function alive(pid: number, start: string): boolean | undefined {
    const exists = pidExists(pid);
    if (exists !== true) return exists;
    const now = readStartToken(pid);
    return now === undefined ? undefined : now === start;
  }

  function pollAll(): void {
    for (const entry of [...polled]) if (alive(entry.pid, entry.start) === false) died(entry);
    if (polled.size === 0) {
      clearInterval(pollTimer);
      pollTimer = undefined;
    }
  }

  /** The process's watch, shared by its subscribers: a pidfd where the addon can, else the poll. */
  function watch(pid: number, start: string): Watched {
    const id = `${pid} ${start}`;
    const existing = watched.get(id);
    if (existing !== undefined) return existing;
    const entry: Watched = { pid, start, subscribers: new Set(), stop: () => {} };
    watched.set(id, entry);
    const { watchExit, unwatchExit } = loadLinuxCalls().addon ?? {};
    const handle = watchExit?.(pid, () => died(entry));
    if (handle !== undefined && typeof handle !== 'number') {
      entry.stop = () => unwatchExit!(handle);
      // The pidfd names whatever process has the pid now: if that is not the
      // one meant, the one meant is dead already.
      // A token that cannot be read says nothing: never a death on that alone.
      const now = readStartToken(pid);
      if (now !== undefined && now !== start) queueMicrotask(() => died(entry));
    } else {
      polled.add(entry);
      entry.stop = () => polled.delete(entry);
      pollTimer ??= setInterval(pollAll, POLL_MS);
      pollTimer.unref?.();
    }
    return entry;
  }

  function forget(sub: Subscription): void {
    if (subscriptions.get(sub.key) !== sub) return;
    subscriptions.delete(sub.key);
    const { address } = keyParts(sub.key);
    const count = (perSource.get(address) ?? 1) - 1;
    if (count > 0) perSource.set(address, count);
    else perSource.delete(address);
    sub.watched.subscribers.delete(sub);
    if (sub.watched.subscribers.size === 0) {
      sub.watched.stop();
      watched.delete(`${sub.watched.pid} ${sub.watched.start}`);
    }
  }

  function signed(line: string, signer: Key | undefined, asked: string | undefined, ownPort: number): string | undefined {
    if (signer === undefined) return line;
    // A keyed answer names the daemon as asked; without that address none can be made (server.ts refuses such a start).
    return asked === undefined ? undefined : signLine(signer, line, daemonIdentity(asked, ownPort));
  }

  /** The process died: each subscriber gets a notice, sent again until acknowledged. */
  function died(entry: Watched): void {
    if (closed || watched.get(`${entry.pid} ${entry.start}`) !== entry) return;
    // A pidfd's watch has called back (and may not be stopped now), or the poll has seen it: done with either.
    polled.delete(entry);
    entry.stop = () => {};
    for (const sub of [...entry.subscribers]) {
      forget(sub);
      const number = ++seq;
      const { address, port, host } = keyParts(sub.key);
      const line = signed(pushLine({ kind: 'NOTE', pid: entry.pid, host, start: entry.start, seq: number }), sub.signer, sub.asked, sub.ownPort);
      if (line === undefined) continue;
      stats.notified++;
      const notice: Notice = { line, address, port, timer: undefined };
      const noticeKey = `${sub.key} ${number}`;
      notices.set(noticeKey, notice);
      let attempt = 0;
      const send = () => {
        opts.send(notice.line, notice.address, notice.port);
        if (attempt >= RESEND_MS.length) {
          notice.timer = setTimeout(() => {
            if (notices.delete(noticeKey)) stats.notifyUnacknowledged++;
          }, RESEND_MS[RESEND_MS.length - 1]);
        } else {
          notice.timer = setTimeout(send, RESEND_MS[attempt++]);
        }
        notice.timer.unref?.();
      };
      send();
    }
  }

  const sweeper = setInterval(() => {
    const now = Date.now();
    for (const sub of [...subscriptions.values()]) if (sub.expiresAt <= now) forget(sub);
  }, SWEEP_MS);
  sweeper.unref?.();

  return {
    get size() {
      return subscriptions.size;
    },
    handle(message, address, port, signer, asked, ownPort) {
      if (closed) return undefined;
      if (message.kind === 'ACKN') {
        const noticeKey = `${subscriptionKey(address, port, message.pid, message.host)} ${message.seq}`;
        const notice = notices.get(noticeKey);
        if (notice !== undefined) {
          clearTimeout(notice.timer);
          notices.delete(noticeKey);
        }
        return undefined;
      }
      if (message.kind !== 'SUBS') return undefined;
      const { pid, host, start } = message;
      if (!validTicket(message.ticket, address, port, pid, host)) {
        // Prove the address first: one datagram, no state, no larger than the request.
        return pushLine({ kind: 'SUBC', pid, host, ticket: ticketFor(Math.floor(Date.now() / TICKET_SLOT_MS), address, port, pid, host) });
      }
      const answer = (state: '1' | '0' | '-') => signed(pushLine({ kind: 'SUBR', pid, host, state, lease: state === '1' ? LEASE_SECONDS : 0 }), signer, asked, ownPort);
      const key = subscriptionKey(address, port, pid, host);
      const known = subscriptions.get(key);
      const state = alive(pid, start);
      if (state === false) {
        if (known !== undefined) forget(known);
        return answer('0');
      }
      if (state === undefined) return answer('-');
      if (known !== undefined && known.watched.start === start) {
        known.expiresAt = Date.now() + LEASE_SECONDS * 1000;
        return answer('1');
      }
      if (known !== undefined) forget(known);
      const fromSource = perSource.get(address) ?? 0;
      if (subscriptions.size >= maxTotal || fromSource >= maxPerSource) {
        stats.subscribeRefused++;
        refusals.add(1, subscriptions.size >= maxTotal ? `at the cap of ${maxTotal} in all` : `from ${address}, at the cap of ${maxPerSource} per source`);
        return answer('-');
      }
      const entry = watch(pid, start);
      const sub: Subscription = { key, asked, signer, ownPort, expiresAt: Date.now() + LEASE_SECONDS * 1000, watched: entry };
      subscriptions.set(key, sub);
      perSource.set(address, fromSource + 1);
      entry.subscribers.add(sub);
      stats.subscribed++;
      return answer('1');
    },
    close() {
      closed = true;
      clearInterval(sweeper);
      clearInterval(pollTimer);
      for (const entry of watched.values()) entry.stop();
      watched.clear();
      subscriptions.clear();
      for (const notice of notices.values()) clearTimeout(notice.timer);
      notices.clear();
      refusals.flush();
    },
  };
}
