import { COOKIE_LENGTH, withCookie } from '../wire/cookie.js';
import { EndpointPool, type Endpoint } from './endpoints.js';
import type { Failure } from './failures.js';
import { joinHostPort } from '../wire/address.js';
import { defaultPort, isLocalHost } from '../net/host.js';
import { daemonIdentity, readKeyFile, signLine, verify, type Key, type KeyRing } from '../wire/keys.js';
import type { SocketIo } from '../sys/native.js';
import { SendQueue } from '../net/pacing.js';
import { processExists } from '../sys/pidref.js';
import { readStartToken } from '../sys/probe.js';
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
} from '../wire/protocol.js';
import { printable } from '../wire/printable.js';
import { isPushMessage } from '../wire/pushwire.js';
import { PushSubscriptions, type PushSubscription } from './push.js';
import { pidHostKey, questionOf, Questions, type Question, type Result, type Target } from './questions.js';
import { monotonicMs } from '../sys/time.js';

export type { Result, Target } from './questions.js';
export type { PushSubscription, SubscribeOutcome } from './push.js';

/**
 * Asks daemons about processes: every target at once, each target retried on
 * its own schedule, replies matched to questions by pid and host
 * (questions.ts). The host field a request carries holds a cookie
 * (cookie.ts), and only a reply that echoes it exactly counts: whoever
 * cannot read a request cannot answer it. With a key file, requests are
 * authenticated and so must replies be (keys.ts). The sockets and the names
 * behind them are endpoints.ts's, the send pace pacing.ts's. A question
 * without an answer ends with a Failure (failures.ts).
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
  /** The keys of a key file already read (readKeyFile()), in place of keyFile: a file is read once, by whoever takes it first. */
  keys?: KeyRing;
  /** Called with each datagram sent and received (for --debug); datagram text is escaped (printable.ts). */
  onDebug?: (line: string) => void;
  /**
   * How sockets are read: 'batch' through the addon native/linux.c,
   * 'dgram' through Node's dgram, 'auto': batch where the addon was built.
   * Both answer the same. @default 'auto'
   */
  io?: SocketIo;
}

export const DEFAULT_TIMEOUT_MS = 1000;
export const DEFAULT_TRIES = 5;
/**
 * The wait before the next try when the host reported that nothing listens:
 * long enough for a daemon being (re)started to bind, short enough that a
 * host without one is reported in about a second over five tries.
 */
export const REFUSED_RETRY_MS = 200;

/** Whether any of `endpoints`, the daemons asked, authenticated `reply` with one of `keys` (keys.ts: the identity asked is covered). */
function verifiedByOneOf(reply: Reply, keys: ReadonlyMap<number, Key>, endpoints: readonly Endpoint<Question>[], port: number): boolean {
  return endpoints.some((endpoint) => verify(reply.auth, keys, daemonIdentity(endpoint.address, port)) !== undefined);
}


export class PidStatClient {
  readonly port: number;
  readonly timeoutMs: number;
  readonly tries: number;
  private readonly local: boolean;
  private readonly debug: ((line: string) => void) | undefined;
  private readonly questions = new Questions();
  private readonly push: PushSubscriptions;
  private readonly signingKey: Key | undefined;
  private readonly replyKeys: ReadonlyMap<number, Key> | undefined;
  private readonly pool: EndpointPool<Question>;
  private readonly sendQueue: SendQueue<Question>;
  private highestTry = 0;
  private closed = false;

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
    const keys = opts.keys ?? (opts.keyFile === undefined ? undefined : readKeyFile(opts.keyFile));
    if (keys !== undefined) {
      this.signingKey = keys.first;
      this.replyKeys = new Map([[this.signingKey.id, this.signingKey]]);
    }
    this.pool = new EndpointPool(this.port, opts.io ?? 'auto', {
      message: (msg, address, port) => this.onMessage(msg, address, port),
      refused: (endpoint) => this.onRefused(endpoint),
      debug: this.debug,
    });
    this.sendQueue = new SendQueue((question) => this.questions.waits(question), (question) => this.transmit(question));
    this.push = new PushSubscriptions({ port: this.port, pool: this.pool, signingKey: this.signingKey, replyKeys: this.replyKeys, debug: this.debug });
  }

  /** How its sockets are read (ClientOptions.io), 'auto' resolved. */
  get io(): 'batch' | 'dgram' {
    return this.pool.io;
  }

  /** How many answers are still awaited, and the highest try sent so far. */
  progress(): { missing: number; tryNo: number } {
    return { missing: this.questions.size, tryNo: this.highestTry };
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
      const exists = processExists(target);
      if (exists !== undefined) {
        const result: Result = { host, pid, state: exists ? 'exists' : 'dead', tries: 0, ms: monotonicMs() - startedAt };
        const start = exists ? readStartToken(pid) : undefined;
        if (start !== undefined) result.start = start;
        this.debug?.(`${joinHostPort(host, pid)} is on this host: answered by kill(${pid}, 0) here, no question sent (--no-local asks its daemon)`);
        return result;
      }
    }
    const flags = target.flags ?? ALL_FLAGS;
    const key = questionOf(target, flags);
    const joined = this.questions.asked(key);
    if (joined !== undefined) return new Promise((resolve) => joined.settle.push(resolve));
    const wireHost = withCookie(host);
    const request = target.start === undefined ? { pid, host: wireHost, flags } : { pid, host: wireHost, flags, start: target.start };
    const wire = this.signingKey === undefined
      ? encodeRequest(request)
      : Buffer.from(`${signLine(this.signingKey, keyedRequestLine(request))}\n`, 'latin1');
    const question: Question = {
      key, wireKey: pidHostKey(pid, wireHost), target, wire, endpoints: [], tries: 0, refused: 0, startedAt, settle: [], unauthenticated: false,
    };
    this.questions.add(question);
    const answered = new Promise<Result>((resolve) => question.settle.push(resolve));
    const endpoints = await this.pool.endpointsFor(host);
    // Closed while the host was looked up: already ended.
    if (!this.questions.waits(question)) return answered;
    if ('kind' in endpoints) {
      this.finish(question, { state: 'no_reply', failure: endpoints });
      return answered;
    }
    question.endpoints = endpoints;
    this.sendQueue.push(question);
    return answered;
  }

  /**
   * Subscribes to the death of process `pid` of start token `start` on
   * `host`, through its daemon (push.ts): `onDeath` is called once the
   * daemon tells of it. Nothing is sent before renew(), which a caller
   * repeats within each lease.
   */
  subscribe(target: { host: string; pid: number; start: string }, onDeath: () => void): PushSubscription {
    if (this.closed) throw new Error('the client is closed');
    return this.push.subscribe(target, onDeath);
  }

  /** Ends every query still waiting (as no_reply) and closes the sockets. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.sendQueue.close();
    for (const question of this.questions.all()) this.finish(question, { state: 'no_reply', failure: { kind: 'closed' } });
    this.push.close();
    await this.pool.close();
  }

  /**
   * Ends every question still waiting as its last unanswered try would
   * (pidstat's --timeout, the whole run's limit): `no_reply`, after the
   * tries sent so far.
   */
  giveUp(): void {
    for (const question of this.questions.all()) {
      this.finish(question, { state: 'no_reply', failure: question.unauthenticated ? { kind: 'unauthenticated' } : { kind: 'timeout', tries: question.tries } });
    }
  }

  /** Sends the next try of `question`, to every address of its host. */
  private transmit(question: Question): void {
    question.tries++;
    question.refused = 0;
    if (question.tries > this.highestTry) this.highestTry = question.tries;
    for (const endpoint of question.endpoints) {
      endpoint.waiting.add(question);
      this.pool.send(endpoint, question.wire);
    }
    question.timer = setTimeout(() => this.onTimeout(question), this.timeoutMs);
  }

  private onTimeout(question: Question): void {
    for (const endpoint of question.endpoints) this.pool.useShared(endpoint);
    this.leaveEndpoints(question);
    if (question.unauthenticated) {
      this.finish(question, { state: 'no_reply', failure: { kind: 'unauthenticated' } });
    } else if (question.tries >= this.tries) {
      this.finish(question, { state: 'no_reply', failure: { kind: 'timeout', tries: question.tries } });
    } else {
      this.sendQueue.push(question);
    }
  }

  /** The host said nothing listens on the port: every try waiting there failed. */
  private onRefused(endpoint: Endpoint<Question>): void {
    for (const question of endpoint.waiting) {
      question.refused++;
      if (question.refused < question.endpoints.length) continue;
      clearTimeout(question.timer);
      this.leaveEndpoints(question);
      if (question.tries >= this.tries) {
        this.finish(question, { state: 'no_reply', failure: { kind: 'no-daemon' } });
      } else {
        question.timer = setTimeout(() => this.sendQueue.push(question), REFUSED_RETRY_MS);
      }
    }
    endpoint.waiting.clear();
  }

  private onMessage(msg: Buffer, address: string, port: number): void {
    if (isPushMessage(msg)) return this.push.onPush(msg, address, port);
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
    const question = this.questions.answeredBy(reply.pid, reply.host);
    const authentic = question !== undefined && (this.replyKeys === undefined || verifiedByOneOf(reply, this.replyKeys, question.endpoints, this.port));
    this.debug?.(`< ${joinHostPort(address, port)} ${printable(msg.toString('latin1'))}${
      question === undefined ? ' ignored: no such question' : authentic ? '' : ' ignored: not authenticated by our key'}`);
    if (question === undefined) return;
    if (!authentic) {
      // It echoed our cookie, so it read our request: a daemon without our
      // key (an old host, one without keys), which every later try would
      // meet alike. The question ends with this try, not after every try
      // (onTimeout); until then an authenticated reply still answers it, so
      // one who can read the request and forges such a reply cannot end a
      // question that the daemon asked answers.
      question.unauthenticated = true;
      return;
    }
    const { start } = question.target;
    // An old daemon ignores the start token it was sent: compare it here.
    if (reply.state === 'exists' && start !== undefined && reply.start !== undefined && reply.start !== start) {
      this.finish(question, { state: 'dead' });
    } else {
      this.finish(question, reply.start === undefined ? { state: reply.state } : { state: reply.state, start: reply.start });
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
    const question = this.questions.answeredBy(refusal.pid, refusal.host);
    this.debug?.(`< ${joinHostPort(address, port)} ${printable(msg.toString('latin1'))}${question === undefined ? ' ignored: no such question' : ''}`);
    if (question === undefined) return;
    const { host } = question.target;
    const failure: Failure = this.signingKey === undefined ? { kind: 'key-required', host } : { kind: 'key-refused', host, keyId: this.signingKey.id };
    this.finish(question, { state: 'no_reply', failure });
  }

  private leaveEndpoints(question: Question): void {
    for (const endpoint of question.endpoints) endpoint.waiting.delete(question);
  }

  private finish(question: Question, outcome: Pick<Result, 'state' | 'start' | 'failure'>): void {
    clearTimeout(question.timer);
    this.leaveEndpoints(question);
    this.questions.remove(question);
    const { host, pid } = question.target;
    const result: Result = { host, pid, state: outcome.state, tries: question.tries, ms: monotonicMs() - question.startedAt };
    if (outcome.start !== undefined) result.start = outcome.start;
    if (outcome.failure !== undefined) result.failure = outcome.failure;
    for (const settle of question.settle) settle(result);
  }
}
