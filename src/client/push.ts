import type { Endpoint, EndpointPool } from './endpoints.js';
import type { Failure } from './failures.js';
import type { Question, Target } from './questions.js';
import { joinHostPort } from '../wire/address.js';
import { withCookie } from '../wire/cookie.js';
import { daemonIdentity, signLine, verify, type Key } from '../wire/keys.js';
import { printable } from '../wire/printable.js';
import { decodePush, NO_TICKET, pushLine, type PushMessage } from '../wire/pushwire.js';
import { pidHostKey } from './questions.js';

/**
 * A client's subscriptions to death notices (doc/protocol.md, Death
 * notices), beside its questions (client.ts), as the daemon keeps them
 * beside its answers (daemon/subscriptions.ts): SUBS and its challenge
 * answered, the lease renewed by the caller, a notice believed only if it
 * echoes the subscription's own cookie (and, with keys, is authenticated
 * by our key and names the daemon asked), and acknowledged.
 */

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
  endpoints: Endpoint<Question>[];
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
/**
 * ACKN copies sent at once for each notice copy heard: the subscriber may
 * leave the moment it knows (`pidstat wait` exits), so no later copy of the
 * notice may find it to acknowledge; three copies are all lost on a link
 * losing 30 % in about 3 cases of 100, not 30.
 */
const ACK_COPIES = 3;
/**
 * How long a subscription closed after its death still acknowledges the
 * notice's later copies, while the client lives: the daemon's resends span
 * 2.5 s (doc/protocol.md, Death notices).
 */
const ACK_AFTER_DEATH_MS = 3000;

/** What the subscriptions share with the client that owns them. */
export interface PushContext {
  readonly port: number;
  readonly pool: EndpointPool<Question>;
  readonly signingKey: Key | undefined;
  readonly replyKeys: ReadonlyMap<number, Key> | undefined;
  readonly debug: ((line: string) => void) | undefined;
}

export class PushSubscriptions {
  private readonly subscribers = new Map<string, Subscriber>();
  /** Subscriptions closed after their death, by the same key, still acknowledging its notice for ACK_AFTER_DEATH_MS. */
  private readonly mourned = new Map<string, { subscriber: Subscriber; timer: NodeJS.Timeout }>();
  private readonly port: number;
  private readonly pool: EndpointPool<Question>;
  private readonly signingKey: Key | undefined;
  private readonly replyKeys: ReadonlyMap<number, Key> | undefined;
  private readonly debug: ((line: string) => void) | undefined;
  private closed = false;

  constructor(context: PushContext) {
    ({ port: this.port, pool: this.pool, signingKey: this.signingKey, replyKeys: this.replyKeys, debug: this.debug } = context);
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
    const wireHost = withCookie(target.host);
    const key = pidHostKey(target.pid, wireHost);
    const subscriber: Subscriber = { target, wireHost, ticket: NO_TICKET, endpoints: [], challenges: 0, settle: undefined, dead: false, onDeath };
    this.subscribers.set(key, subscriber);
    return {
      renew: async (timeoutMs) => {
        if (subscriber.endpoints.length === 0) {
          const endpoints = await this.pool.endpointsFor(target.host);
          if ('kind' in endpoints) return { state: 'silent', failure: endpoints };
          subscriber.endpoints = endpoints;
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
        if (this.subscribers.get(key) === subscriber) {
          this.subscribers.delete(key);
          if (subscriber.dead && !this.closed) this.mourn(key, subscriber);
        }
        subscriber.settle?.({ state: 'silent', failure: { kind: 'closed' } });
      },
    };
  }

  /** Keeps a dead subscription's key for its notice's later copies, to acknowledge them. */
  private mourn(key: string, subscriber: Subscriber): void {
    clearTimeout(this.mourned.get(key)?.timer);
    const timer = setTimeout(() => this.mourned.delete(key), ACK_AFTER_DEATH_MS);
    timer.unref();
    this.mourned.set(key, { subscriber, timer });
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
  onPush(msg: Buffer, address: string, port: number): void {
    const message = decodePush(msg);
    const key = message === undefined ? undefined : pidHostKey(message.pid, message.host);
    const subscriber = key === undefined ? undefined : this.subscribers.get(key) ?? (message?.kind === 'NOTE' ? this.mourned.get(key)?.subscriber : undefined);
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
        // Each copy acknowledged, ACK_COPIES times when it came from the daemon asked (one
        // time from elsewhere: never more datagrams to an address than it sent us); an
        // acknowledgement may be lost, and the daemon sends again.
        for (let copy = this.fromDaemon(subscriber, address, port) ? 0 : ACK_COPIES - 1; copy < ACK_COPIES; copy++) {
          this.sendPush(subscriber, { kind: 'ACKN', pid: message.pid, host: message.host, seq: message.seq }, { address, port });
        }
        this.tellDeath(subscriber);
        return;
      default:
        return;
    }
  }

  /** Whether address:port is the daemon port of one of the addresses the subscription asked. */
  private fromDaemon(subscriber: Subscriber, address: string, port: number): boolean {
    return port === this.port && subscriber.endpoints.some((endpoint) => endpoint.address === address);
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

  /** Tells every renewal waiting that the client closed, and forgets every subscription. */
  close(): void {
    this.closed = true;
    for (const subscriber of this.subscribers.values()) subscriber.settle?.({ state: 'silent', failure: { kind: 'closed' } });
    this.subscribers.clear();
    for (const { timer } of this.mourned.values()) clearTimeout(timer);
    this.mourned.clear();
  }
}
