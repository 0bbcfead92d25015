import { readdirSync, readFileSync } from 'node:fs';
import { defaultPort, dnsModule, ipFamily, isLocalHost, joinHostPort, mappedIPv4 } from './host.js';
import type { SocketIo } from './native.js';
import { COOKIE_LENGTH, withCookie } from './cookie.js';
import type { Failure } from './failures.js';
import { decodePush, isPushMessage, NO_TICKET, pushLine, type PushMessage } from './pushwire.js';
import { daemonIdentity, readKeyFile, signLine, verify, type Key } from './keys.js';
import { printable } from './printable.js';
import { socketOpener, type ClientSocket, type OpenSocket, type SocketEvents } from './sockets.js';
import { monotonicMs } from './time.js';
import { localPidExists, readStartToken } from './probe.js';
import {
  ALL_FLAGS,
  decodeRefusal,
  decodeReply,
  encodeRequest,
  isValidHost,
  keyedRequestLine,
  MAX_HOST_BYTES,
  MAX_PID,
  type Reply,
  type State,
} from './protocol.js';

/**
 * Asks daemons about processes: every target at once, each target retried on
 * its own schedule, replies matched to requests by pid and host. The host
 * field a request carries holds a cookie (cookie.ts), and only a reply that
 * echoes it exactly counts: whoever cannot read a request cannot answer it.
 * With a key file, requests are authenticated and so must replies be (keys.ts).
 *
 * Sockets: one socket per daemon address, on a port of its own and connected
 * to the daemon, plus one unconnected socket per address family. No socket
 * shares its port (no SO_REUSEADDR, no SO_REUSEPORT): another local user
 * could otherwise bind the same port and read every reply, cookie included
 * (pidstat(1), Asking). Only a connected socket hears the host's ICMP
 * "port unreachable", which ends a try at once; it also hears only the
 * address it asked. A daemon bound to a wildcard address may answer from
 * another address than the one asked, which the kernel then drops: so a try
 * that a connected socket heard nothing for moves that address to the
 * unconnected socket for good, where a reply from anywhere is matched like
 * any other. Past the descriptor budget, addresses share the unconnected
 * socket from the start and simply wait for their timeouts.
 */

export interface ClientOptions {
  /** The daemons' UDP port. @default the pidstatd entry of /etc/services, else 1752 */
  port?: number;
  /** Time to wait for a reply before sending again, in ms. @default 1000 */
  timeoutMs?: number;
  /** Requests sent per target, the first included. @default 5 */
  tries?: number;
  /** Answer targets on this host with the local probe, no daemon. @default true */
  local?: boolean;
  /**
   * Authenticate requests with the first key of this file, and accept only
   * replies authenticated with it (keys.ts). Read by the constructor, which
   * throws a KeyFileError when the file cannot be used.
   * @default no keys: the original protocol, plus the cookie
   */
  keyFile?: string;
  /** Called with each datagram sent and received (for --debug); datagram text is escaped (printable.ts). */
  onDebug?: (line: string) => void;
  /**
   * How sockets are read: 'batch' through the addon native/udpbatch.c,
   * 'dgram' through Node's dgram, 'auto': batch where the addon was built.
   * Both answer the same. @default 'auto'
   */
  io?: SocketIo;
}

export interface Target {
  host: string;
  pid: number;
  /** Start token of the process meant: a reused pid then counts as dead. */
  start?: string;
  /** Request flags (protocol FLAG_*): which answers the daemon may send. @default 15 */
  flags?: number;
}

export interface Result {
  host: string;
  pid: number;
  state: State | 'no_reply';
  /** Requests sent; 0 when answered locally. */
  tries: number;
  /** Time from the query to its answer, in ms. */
  ms: number;
  /** Start token of the live process, where known. */
  start?: string;
  /** Why there is no answer, for `no_reply`; describeFailure() says it in words. */
  failure?: Failure;
}

export const DEFAULT_TIMEOUT_MS = 1000;
export const DEFAULT_TRIES = 5;
/**
 * The wait before the next try when the host reported that nothing listens:
 * long enough for a daemon being (re)started to bind, short enough that a
 * host without one is reported in about a second over five tries.
 */
export const REFUSED_RETRY_MS = 200;
/**
 * The send pace. A burst fits a daemon's default receive queue
 * (net.core.rmem_default, about 200 KB: some 250 small datagrams); the rate
 * stays well under what one daemon answers (over 100 000 a second) while
 * the client shares its cores.
 */
const SEND_BURST = 256;
const SEND_RATE = 25_000;
/**
 * The pace for one daemon address: under a daemon's default --rate (10 000 a
 * second per source, burst 10 000), so that no pidstat run, however many its
 * targets, is ever refused by a daemon with default settings.
 */
const ADDRESS_RATE = 8_000;
/**
 * A deeper receive queue, so replies that arrive while the event loop is busy
 * (thousands of targets) wait instead of being dropped; the kernel caps it at
 * net.core.rmem_max.
 */
const RECEIVE_QUEUE_BYTES = 1024 * 1024;
/** Descriptors left free for everything else the process opens. */
const RESERVED_FDS = 64;
/** Addresses that get connected sockets before the descriptor limit is read. */
const SMALL_RUN = 64;

interface Endpoint {
  address: string;
  socket: ClientSocket;
  connected: boolean;
  /** The address family's unconnected socket, where a connected endpoint moves when it hears nothing. */
  shared: ClientSocket;
  /** Called for a datagram not sent; one per endpoint rather than one per datagram. */
  onSent: (err: NodeJS.ErrnoException) => void;
  /** Targets whose current try went to this address and is unanswered. */
  waiting: Set<Pending>;
  /** This address's send pace: a token bucket of SEND_BURST at ADDRESS_RATE. */
  tokens: number;
  tokensAt: number;
}

interface Pending {
  /**
   * Everything that makes a question distinct (pid, host, flags, start
   * token): a second query for the very same question joins this one.
   */
  key: string;
  /** pid and the <host> field sent, cookie included: what a reply must echo. */
  wireKey: string;
  target: Target;
  wire: Buffer;
  endpoints: Endpoint[];
  tries: number;
  /** Endpoints that refused the current try. */
  refused: number;
  startedAt: number;
  timer?: NodeJS.Timeout;
  settle: ((result: Result) => void)[];
  /** A reply echoed the cookie but was not authenticated by our key: a daemon without keys, or not the one asked. */
  unauthenticated: boolean;
}

/** Whether any of `endpoints`, the daemons asked, authenticated `reply` with one of `keys` (keys.ts: the identity asked is covered). */
function verifiedByOneOf(reply: Reply, keys: ReadonlyMap<number, Key>, endpoints: readonly Endpoint[], port: number): boolean {
  return endpoints.some((endpoint) => verify(reply.auth, keys, daemonIdentity(endpoint.address, port)) !== undefined);
}

/** What a daemon answered a subscription to a death notice (PidStatClient.subscribe). */
export type SubscribeOutcome =
  /** Subscribed: the daemon tells of the death, and the lease holds leaseMs unless renewed. */
  | { state: 'subscribed'; leaseMs: number }
  /** The process is dead already (or its pid is another process's). */
  | { state: 'dead' }
  /** The daemon keeps no subscription for it (a cap, or it cannot tell): poll instead. */
  | { state: 'refused' }
  /** No answer in time: a daemon that does not know subscriptions (IPC::Locker's), or silence. */
  | { state: 'silent'; failure?: Failure };

/** A subscription to the death of one process (PidStatClient.subscribe). */
export interface PushSubscription {
  /** Subscribes, or renews the lease: the daemon's answer, or silence after timeoutMs. */
  renew(timeoutMs: number): Promise<SubscribeOutcome>;
  /** Forgets it: a later notice is ignored. The daemon's lease simply runs out. */
  close(): void;
}

interface Subscriber {
  target: Required<Pick<Target, 'host' | 'pid' | 'start'>>;
  /** The <host> field of its messages, with its own cookie. */
  wireHost: string;
  ticket: string;
  endpoints: Endpoint[];
  /** Challenges answered during the current renew(). */
  challenges: number;
  settle: ((outcome: SubscribeOutcome) => void) | undefined;
  dead: boolean;
  onDeath: () => void;
}

/**
 * SUBS sent in one renew(), spread over its timeout: a lost datagram of the
 * four a first subscription takes (SUBS, SUBC, SUBS, SUBR) is made up within
 * the same renew(), and does not send the watch back to polling.
 */
const RENEW_SENDS = 3;
/** Challenges (SUBC) answered in one renew() before it gives up: a fresh ticket needs one per send at most. */
const MAX_CHALLENGES = 2 * RENEW_SENDS;

/** The soft limit of open descriptors, from /proc/self/limits; Node has no getrlimit. */
function descriptorBudget(): number {
  try {
    const limits = readFileSync('/proc/self/limits', 'latin1');
    const soft = /^Max open files\s+(\d+|unlimited)/m.exec(limits)?.[1];
    const open = readdirSync('/proc/self/fd').length;
    const max = soft === undefined || soft === 'unlimited' ? 65536 : Number(soft);
    return Math.max(0, max - open - RESERVED_FDS);
  } catch {
    return 1024 - RESERVED_FDS;
  }
}

/** Why no endpoint of `host` could be had: its name did not resolve, or no socket could be opened toward it. */
function hostFailure(host: string, err: NodeJS.ErrnoException): Failure {
  const why = err.code ?? err.message;
  return err.syscall === 'getaddrinfo' ? { kind: 'unresolvable', host, why } : { kind: 'unreachable', host, why };
}

function keyOf(pid: number, host: string): string {
  return `${pid} ${host}`;
}

/**
 * A question as the caller asked it: two that differ in flags or start token
 * are never joined. pidstat's own question (every answer, no token) keeps
 * the short key: 100 000 pending questions hold 100 000 of them.
 */
function questionOf(target: Target, flags: number): string {
  if (flags === ALL_FLAGS && target.start === undefined) return keyOf(target.pid, target.host);
  return `${target.pid} ${target.host} ${flags} ${target.start ?? '-'}`;
}

export class PidStatClient {
  readonly port: number;
  readonly timeoutMs: number;
  readonly tries: number;
  private readonly local: boolean;
  private readonly ioOption: SocketIo;
  private chosen: { open: OpenSocket; io: 'batch' | 'dgram' } | undefined;
  private readonly debug: ((line: string) => void) | undefined;
  private readonly pending = new Map<string, Pending>();
  private readonly byWireKey = new Map<string, Pending>();
  private readonly subscribers = new Map<string, Subscriber>();
  private readonly signingKey: Key | undefined;
  private readonly replyKeys: ReadonlyMap<number, Key> | undefined;
  private readonly addresses = new Map<string, Promise<string[]>>();
  private readonly hostEndpoints = new Map<string, Promise<Endpoint[]>>();
  private readonly endpoints = new Map<string, Promise<Endpoint>>();
  private readonly shared = new Map<4 | 6, Promise<ClientSocket>>();
  private readonly sockets: ClientSocket[] = [];
  private readonly events: SocketEvents;
  private budget: number | undefined;
  private highestTry = 0;
  private closed = false;
  private sendQueue: Pending[] = [];
  private sendQueueHead = 0;
  private sendTokens = SEND_BURST;
  private sendTokensAt = monotonicMs();
  private sendTimer: NodeJS.Timeout | undefined;

  constructor(opts: ClientOptions = {}) {
    this.port = opts.port ?? defaultPort();
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.tries = opts.tries ?? DEFAULT_TRIES;
    this.local = opts.local ?? true;
    this.debug = opts.onDebug;
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) {
      throw new RangeError(`port ${this.port} is not from 1 to 65535`);
    }
    if (!(this.timeoutMs > 0)) throw new RangeError(`timeout ${this.timeoutMs} ms is not positive`);
    if (!Number.isInteger(this.tries) || this.tries < 1) throw new RangeError(`tries ${this.tries} is not 1 or more`);
    if (opts.keyFile !== undefined) {
      this.signingKey = readKeyFile(opts.keyFile).first;
      this.replyKeys = new Map([[this.signingKey.id, this.signingKey]]);
    }
    this.ioOption = opts.io ?? 'auto';
    // Asked for by name, the addon must be there; else it loads (a dlopen)
    // only when a first socket is opened, not for targets answered locally.
    if (this.ioOption === 'batch') this.opener();
    this.events = {
      message: (msg, address, port) => this.onMessage(msg, address, port),
      error: (err) => this.debug?.(`socket error: ${err.message}`),
    };
  }

  /** How its sockets are read (ClientOptions.io), 'auto' resolved. */
  get io(): 'batch' | 'dgram' {
    return this.opener().io;
  }

  /** The way sockets are opened, chosen at the first need. */
  private opener(): { open: OpenSocket; io: 'batch' | 'dgram' } {
    return (this.chosen ??= socketOpener(this.ioOption));
  }

  /** How many answers are still awaited, and the highest try sent so far. */
  progress(): { missing: number; tryNo: number } {
    return { missing: this.pending.size, tryNo: this.highestTry };
  }

  /** Asks about every target at once; the results come in the same order. */
  queryMany(targets: readonly Target[]): Promise<Result[]> {
    return Promise.all(targets.map((target) => this.query(target)));
  }

  async query(target: Target): Promise<Result> {
    const { host, pid } = target;
    if (!Number.isInteger(pid) || pid < 1 || pid > MAX_PID) {
      throw new RangeError(`pid ${pid} is not from 1 to ${MAX_PID}`);
    }
    if (!isValidHost(host)) throw new RangeError(`host '${host}' is not a name or address`);
    if (host.length + COOKIE_LENGTH > MAX_HOST_BYTES) {
      throw new RangeError(`host '${host.slice(0, 40)}...' is over ${MAX_HOST_BYTES - COOKIE_LENGTH} bytes: no room for the cookie`);
    }
    if (this.closed) throw new Error('the client is closed');
    const startedAt = monotonicMs();
    if (this.local && (await isLocalHost(host))) {
      const exists = localPidExists(pid, target.start);
      if (exists !== undefined) {
        const result: Result = { host, pid, state: exists ? 'exists' : 'dead', tries: 0, ms: monotonicMs() - startedAt };
        const start = exists ? readStartToken(pid) : undefined;
        if (start !== undefined) result.start = start;
        return result;
      }
    }
    const flags = target.flags ?? ALL_FLAGS;
    const key = questionOf(target, flags);
    const joined = this.pending.get(key);
    if (joined !== undefined) return new Promise((resolve) => joined.settle.push(resolve));
    const wireHost = withCookie(host);
    const request = target.start === undefined ? { pid, host: wireHost, flags } : { pid, host: wireHost, flags, start: target.start };
    const wire = this.signingKey === undefined
      ? encodeRequest(request)
      : Buffer.from(`${signLine(this.signingKey, keyedRequestLine(request))}\n`, 'latin1');
    const wireKey = keyOf(pid, wireHost);
    const pending: Pending = { key, wireKey, target, wire, endpoints: [], tries: 0, refused: 0, startedAt, settle: [], unauthenticated: false };
    this.pending.set(key, pending);
    this.byWireKey.set(wireKey, pending);
    const answered = new Promise<Result>((resolve) => pending.settle.push(resolve));
    try {
      pending.endpoints = await this.endpointsFor(host);
    } catch (err) {
      this.finish(pending, { state: 'no_reply', failure: hostFailure(host, err as NodeJS.ErrnoException) });
      return answered;
    }
    if (this.pending.get(key) === pending) this.sendTry(pending);
    return answered;
  }

  /**
   * Subscribes to the death of process `pid` of start token `start` on
   * `host`, through its daemon (doc/protocol.md, Death notices): `onDeath`
   * is called once the daemon tells of it. Nothing is sent before renew(),
   * which a caller repeats within each lease. A notice counts only if it
   * echoes this subscription's own cookie (and, with keys, is authenticated
   * by our key and names the daemon asked), and names the same start token.
   */
  subscribe(target: { host: string; pid: number; start: string }, onDeath: () => void): PushSubscription {
    if (this.closed) throw new Error('the client is closed');
    const wireHost = withCookie(target.host);
    const key = keyOf(target.pid, wireHost);
    const subscriber: Subscriber = { target, wireHost, ticket: NO_TICKET, endpoints: [], challenges: 0, settle: undefined, dead: false, onDeath };
    this.subscribers.set(key, subscriber);
    return {
      renew: async (timeoutMs) => {
        if (subscriber.endpoints.length === 0) {
          try {
            subscriber.endpoints = await this.endpointsFor(target.host);
          } catch (err) {
            return { state: 'silent', failure: hostFailure(target.host, err as NodeJS.ErrnoException) };
          }
        }
        if (this.subscribers.get(key) !== subscriber) return { state: 'silent', failure: { kind: 'closed' } };
        subscriber.settle?.({ state: 'silent' });
        return new Promise<SubscribeOutcome>((resolve) => {
          const timer = setTimeout(() => settle({ state: 'silent' }), timeoutMs);
          // The same SUBS again, with the ticket last heard, a renewal as any.
          const resend = setInterval(() => this.sendSubscribe(subscriber), timeoutMs / RENEW_SENDS);
          const settle = (outcome: SubscribeOutcome) => {
            clearTimeout(timer);
            clearInterval(resend);
            if (subscriber.settle === settle) subscriber.settle = undefined;
            resolve(outcome);
          };
          subscriber.settle = settle;
          subscriber.challenges = 0;
          this.sendSubscribe(subscriber);
        });
      },
      close: () => {
        if (this.subscribers.get(key) === subscriber) this.subscribers.delete(key);
        subscriber.settle?.({ state: 'silent', failure: { kind: 'closed' } });
      },
    };
  }

  /** A SUBS to each of the host's addresses, from the unconnected socket, which hears a notice from any address. */
  private sendSubscribe(subscriber: Subscriber): void {
    const { pid, start } = subscriber.target;
    this.sendPush(subscriber, { kind: 'SUBS', pid, host: subscriber.wireHost, start, ticket: subscriber.ticket });
  }

  private sendPush(subscriber: Subscriber, message: PushMessage, to?: { address: string; port: number }): void {
    const line = pushLine(message);
    const wire = Buffer.from(`${this.signingKey === undefined ? line : signLine(this.signingKey, line)}\n`, 'latin1');
    const endpoints = to === undefined ? subscriber.endpoints : subscriber.endpoints.filter((e) => e.address.includes(':') === to.address.includes(':')).slice(0, 1);
    for (const endpoint of endpoints) {
      this.debug?.(`> ${joinHostPort(to?.address ?? endpoint.address, to?.port ?? this.port)} ${printable(wire.toString('latin1').trimEnd())}`);
      endpoint.shared.send(wire, to?.address ?? endpoint.address, to?.port ?? this.port, endpoint.onSent);
    }
  }

  /** A daemon's answer about a subscription, or a notice. */
  private onPush(msg: Buffer, address: string, port: number): void {
    const message = decodePush(msg);
    const subscriber = message === undefined ? undefined : this.subscribers.get(keyOf(message.pid, message.host));
    const authentic = subscriber !== undefined && message !== undefined && (message.kind === 'SUBC' || this.pushAuthentic(message, subscriber));
    this.debug?.(`< ${joinHostPort(address, port)} ${printable(msg.toString('latin1'))}${
      message === undefined ? ' ignored: not a valid message' : subscriber === undefined ? ' ignored: no such subscription' : authentic ? '' : ' ignored: not authenticated by our key'}`);
    if (subscriber === undefined || message === undefined || !authentic) return;
    switch (message.kind) {
      case 'SUBC':
        // The daemon wants its ticket echoed before it keeps anything: once or twice per renew().
        if (subscriber.settle === undefined || subscriber.challenges++ >= MAX_CHALLENGES) return;
        subscriber.ticket = message.ticket;
        this.sendSubscribe(subscriber);
        return;
      case 'SUBR':
        subscriber.settle?.(message.state === '1' ? { state: 'subscribed', leaseMs: message.lease * 1000 } : message.state === '0' ? { state: 'dead' } : { state: 'refused' });
        if (message.state === '0') this.tellDeath(subscriber);
        return;
      case 'NOTE':
        if (message.start !== subscriber.target.start) return;
        // Acknowledged each time: an acknowledgement may be lost, and the daemon sends again.
        this.sendPush(subscriber, { kind: 'ACKN', pid: message.pid, host: message.host, seq: message.seq }, { address, port });
        this.tellDeath(subscriber);
        return;
      default:
        return;
    }
  }

  private tellDeath(subscriber: Subscriber): void {
    if (subscriber.dead) return;
    subscriber.dead = true;
    subscriber.onDeath();
  }

  /** Whether a keyed daemon's message verifies with our key, naming one of the daemon's addresses asked; true without keys. */
  private pushAuthentic(message: PushMessage, subscriber: Subscriber): boolean {
    if (this.replyKeys === undefined) return true;
    if (!('auth' in message) || message.auth === undefined) return false;
    const { auth } = message;
    return subscriber.endpoints.some((endpoint) => verify(auth, this.replyKeys!, daemonIdentity(endpoint.address, this.port)) !== undefined);
  }

  /** Ends every query still waiting (as no_reply) and closes the sockets. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.sendTimer);
    for (const pending of [...this.pending.values()]) this.finish(pending, { state: 'no_reply', failure: { kind: 'closed' } });
    for (const subscriber of this.subscribers.values()) subscriber.settle?.({ state: 'silent', failure: { kind: 'closed' } });
    this.subscribers.clear();
    await Promise.allSettled([...this.endpoints.values(), ...this.shared.values()]);
    await Promise.all(this.sockets.map((socket) => socket.close()));
  }

  private resolve(host: string): Promise<string[]> {
    let addresses = this.addresses.get(host);
    if (addresses === undefined) {
      // An IPv4-mapped address (::ffff:127.0.0.1) is asked over IPv4, as the IPv4 address it is.
      addresses = ipFamily(host) !== 0
        ? Promise.resolve([mappedIPv4(host) ?? host])
        : new Promise<string[]>((resolve, reject) =>
            // The callback form: dns/promises is one more module to load.
            dnsModule().lookup(host, { all: true, verbatim: true }, (err, found) => (err ? reject(err) : resolve([...new Set(found.map((a) => a.address))]))),
          );
      this.addresses.set(host, addresses);
    }
    return addresses;
  }

  /** The endpoints of a host's addresses, once per host. */
  private endpointsFor(host: string): Promise<Endpoint[]> {
    let endpoints = this.hostEndpoints.get(host);
    if (endpoints === undefined) {
      endpoints = this.openHost(host);
      this.hostEndpoints.set(host, endpoints);
    }
    return endpoints;
  }

  /** An address this host cannot reach (IPv6 where it has none) is left out. */
  private async openHost(host: string): Promise<Endpoint[]> {
    const addresses = await this.resolve(host);
    const opened = await Promise.allSettled(addresses.map((address) => this.endpoint(address)));
    const endpoints = opened.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    if (endpoints.length === 0) throw (opened[0] as PromiseRejectedResult).reason;
    return endpoints;
  }

  private endpoint(address: string): Promise<Endpoint> {
    let endpoint = this.endpoints.get(address);
    if (endpoint === undefined) {
      endpoint = this.openEndpoint(address);
      this.endpoints.set(address, endpoint);
    }
    return endpoint;
  }

  private sharedSocket(family: 4 | 6): Promise<ClientSocket> {
    let socket = this.shared.get(family);
    if (socket === undefined) {
      socket = this.opener().open({ family, port: 0, receiveQueueBytes: RECEIVE_QUEUE_BYTES }, this.events).then((opened) => {
        this.sockets.push(opened);
        return opened;
      });
      this.shared.set(family, socket);
    }
    return socket;
  }

  private makeEndpoint(address: string, shared: ClientSocket, connected: boolean): Endpoint {
    const endpoint: Endpoint = {
      address,
      socket: shared,
      connected,
      shared,
      waiting: new Set(),
      tokens: SEND_BURST,
      tokensAt: monotonicMs(),
      onSent: (err) => {
        if (err.code === 'ECONNREFUSED') this.onRefused(endpoint);
        else this.debug?.(`send to ${address} failed: ${err.message}`);
      },
    };
    return endpoint;
  }

  private async openEndpoint(address: string): Promise<Endpoint> {
    // A looked-up address is a literal: a colon means IPv6.
    const family = address.includes(':') ? 6 : 4;
    const shared = await this.sharedSocket(family);
    const fallback = this.makeEndpoint(address, shared, false);
    // Reading the limit costs a look at /proc: only runs with many hosts need it.
    if (this.endpoints.size > SMALL_RUN) this.budget ??= descriptorBudget();
    if (this.budget !== undefined && this.budget-- <= 0) return fallback;
    const endpoint = this.makeEndpoint(address, shared, true);
    try {
      // A port of its own: never shared with another socket (see above).
      const spec = { family, port: 0, peer: { address, port: this.port }, receiveQueueBytes: RECEIVE_QUEUE_BYTES } as const;
      // Errors of a connected socket are ICMP reports about what it sent.
      endpoint.socket = await this.opener().open(spec, { ...this.events, error: (err) => this.onSocketError(endpoint, err) });
    } catch (err) {
      this.debug?.(`cannot connect a socket to ${joinHostPort(address, this.port)} (${(err as Error).message}); sharing one`);
      return fallback;
    }
    this.sockets.push(endpoint.socket);
    return endpoint;
  }

  /** Starts the next try of `pending` as soon as the send pace allows. */
  private sendTry(pending: Pending): void {
    this.sendQueue.push(pending);
    this.drainSendQueue();
  }

  /**
   * Sends what the pace allows: a token bucket of SEND_BURST datagrams that
   * refills at SEND_RATE a second. Thousands of targets sent at once would
   * overflow a daemon's receive queue and be lost, every try alike.
   */
  private drainSendQueue(): void {
    const now = monotonicMs();
    this.sendTokens = Math.min(SEND_BURST, this.sendTokens + ((now - this.sendTokensAt) * SEND_RATE) / 1000);
    this.sendTokensAt = now;
    let wait = 1;
    while (this.sendQueueHead < this.sendQueue.length && this.sendTokens >= 1) {
      const pending = this.sendQueue[this.sendQueueHead]!;
      // Answered, or closed, while it waited its turn.
      if (this.pending.get(pending.key) !== pending) {
        this.sendQueueHead++;
        continue;
      }
      const short = this.addressWait(pending.endpoints, now);
      if (short > 0) {
        wait = short;
        break;
      }
      this.sendQueueHead++;
      this.sendTokens -= pending.endpoints.length;
      for (const endpoint of pending.endpoints) endpoint.tokens -= 1;
      this.transmit(pending);
    }
    if (this.sendQueueHead === this.sendQueue.length) {
      this.sendQueue = [];
      this.sendQueueHead = 0;
    } else {
      this.sendTimer ??= setTimeout(() => {
        this.sendTimer = undefined;
        this.drainSendQueue();
      }, wait);
    }
  }

  /** The ms until every one of `endpoints` may send again at its own pace; 0 if all may now. */
  private addressWait(endpoints: readonly Endpoint[], now: number): number {
    let wait = 0;
    for (const endpoint of endpoints) {
      endpoint.tokens = Math.min(SEND_BURST, endpoint.tokens + ((now - endpoint.tokensAt) * ADDRESS_RATE) / 1000);
      endpoint.tokensAt = now;
      if (endpoint.tokens < 1) wait = Math.max(wait, Math.ceil(((1 - endpoint.tokens) * 1000) / ADDRESS_RATE));
    }
    return wait;
  }

  private transmit(pending: Pending): void {
    pending.tries++;
    pending.refused = 0;
    if (pending.tries > this.highestTry) this.highestTry = pending.tries;
    for (const endpoint of pending.endpoints) {
      endpoint.waiting.add(pending);
      this.debug?.(`> ${joinHostPort(endpoint.address, this.port)} ${printable(pending.wire.toString('latin1').trimEnd())}`);
      endpoint.socket.send(pending.wire, endpoint.connected ? undefined : endpoint.address, this.port, endpoint.onSent);
    }
    pending.timer = setTimeout(() => this.onTimeout(pending), this.timeoutMs);
  }

  private onTimeout(pending: Pending): void {
    for (const endpoint of pending.endpoints) if (endpoint.connected) this.useShared(endpoint);
    this.leaveEndpoints(pending);
    if (pending.tries >= this.tries) {
      this.finish(pending, { state: 'no_reply', failure: pending.unauthenticated ? { kind: 'unauthenticated' } : { kind: 'timeout', tries: pending.tries } });
    } else {
      this.sendTry(pending);
    }
  }

  /**
   * A try sent on `endpoint`'s connected socket timed out: its daemon may
   * answer from another address, which only the unconnected socket hears.
   * The connected socket stays open (a reply to an earlier try may still
   * come), but later tries go from the unconnected one.
   */
  private useShared(endpoint: Endpoint): void {
    endpoint.connected = false;
    endpoint.socket = endpoint.shared;
    this.debug?.(`no reply from ${joinHostPort(endpoint.address, this.port)} on its connected socket: asking it from the unconnected one from now on`);
  }

  private onSocketError(endpoint: Endpoint, err: NodeJS.ErrnoException): void {
    this.debug?.(`< ${joinHostPort(endpoint.address, this.port)} ${err.code ?? err.message}`);
    if (err.code === 'ECONNREFUSED') this.onRefused(endpoint);
  }

  /** The host said nothing listens on the port: every try waiting there failed. */
  private onRefused(endpoint: Endpoint): void {
    for (const pending of endpoint.waiting) {
      pending.refused++;
      if (pending.refused < pending.endpoints.length) continue;
      clearTimeout(pending.timer);
      this.leaveEndpoints(pending);
      if (pending.tries >= this.tries) {
        this.finish(pending, { state: 'no_reply', failure: { kind: 'no-daemon' } });
      } else {
        pending.timer = setTimeout(() => this.sendTry(pending), REFUSED_RETRY_MS);
      }
    }
    endpoint.waiting.clear();
  }

  private onMessage(msg: Buffer, address: string, port: number): void {
    if (isPushMessage(msg)) return this.onPush(msg, address, port);
    // Debug lines are built only with a listener: `this.debug?.(...)` skips its argument.
    let reply: Reply;
    try {
      reply = decodeReply(msg);
    } catch (err) {
      const refusal = decodeRefusal(msg);
      if (refusal !== undefined) return this.onRefusal(refusal, msg, address, port);
      this.debug?.(`< ${joinHostPort(address, port)} ${printable(msg.toString('latin1'))} ignored: ${(err as Error).message}`);
      return;
    }
    // The exact <host> sent, cookie included: anything else is late, crossed or forged.
    const pending = this.byWireKey.get(keyOf(reply.pid, reply.host));
    const authentic = pending !== undefined && (this.replyKeys === undefined || verifiedByOneOf(reply, this.replyKeys, pending.endpoints, this.port));
    this.debug?.(`< ${joinHostPort(address, port)} ${printable(msg.toString('latin1'))}${
      pending === undefined ? ' ignored: no such question' : authentic ? '' : ' ignored: not authenticated by our key'}`);
    if (pending === undefined) return;
    if (!authentic) {
      pending.unauthenticated = true;
      return;
    }
    const { start } = pending.target;
    // An old daemon ignores the start token it was sent: compare it here.
    if (reply.state === 'exists' && start !== undefined && reply.start !== undefined && reply.start !== start) {
      this.finish(pending, { state: 'dead' });
    } else {
      this.finish(pending, reply.start === undefined ? { state: reply.state } : { state: reply.state, start: reply.start });
    }
  }

  /**
   * A keyed daemon refused the request (protocol.ts, refusalLine): it wants
   * a key we have not. It echoes the cookie, so it answers our question; it
   * ends the target at once as no_reply, since every later try would be
   * refused alike. Its worst forgery, by someone who can read the request,
   * is a no_reply, which never kills.
   */
  private onRefusal(refusal: { pid: number; host: string }, msg: Buffer, address: string, port: number): void {
    const pending = this.byWireKey.get(keyOf(refusal.pid, refusal.host));
    this.debug?.(`< ${joinHostPort(address, port)} ${printable(msg.toString('latin1'))}${pending === undefined ? ' ignored: no such question' : ''}`);
    if (pending === undefined) return;
    const { host } = pending.target;
    const failure: Failure = this.signingKey === undefined ? { kind: 'key-required', host } : { kind: 'key-refused', host, keyId: this.signingKey.id };
    this.finish(pending, { state: 'no_reply', failure });
  }

  private leaveEndpoints(pending: Pending): void {
    for (const endpoint of pending.endpoints) endpoint.waiting.delete(pending);
  }

  private finish(pending: Pending, outcome: Pick<Result, 'state' | 'start' | 'failure'>): void {
    clearTimeout(pending.timer);
    this.leaveEndpoints(pending);
    this.pending.delete(pending.key);
    this.byWireKey.delete(pending.wireKey);
    const { host, pid } = pending.target;
    const result: Result = { host, pid, state: outcome.state, tries: pending.tries, ms: monotonicMs() - pending.startedAt };
    if (outcome.start !== undefined) result.start = outcome.start;
    if (outcome.failure !== undefined) result.failure = outcome.failure;
    for (const settle of pending.settle) settle(result);
  }
}
