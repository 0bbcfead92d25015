import type { AddressInfo } from 'node:net';
import { joinHostPort } from '../wire/address.js';
import { localFqdn } from '../net/host.js';
import type { SocketIo } from '../sys/native.js';
import { parseAllow, unmapped, type AllowList } from './allow.js';
import { openTransport, transportEvents, type Handler } from './transport.js';
import { daemonIdentity, readKeyFile, signLine, verify, type KeyRing } from '../wire/keys.js';
import { pidExists, readStartToken } from '../sys/probe.js';
import { RateLimiter } from './ratelimit.js';
import { decodePush, isPushMessage } from '../wire/pushwire.js';
import { startSubscriptions, type Subscriptions } from './subscriptions.js';
import {
  decodeRequest,
  keyedReplyLine,
  refusalLine,
  replyLine,
  FLAG_DEAD,
  FLAG_EXISTS,
  FLAG_START,
  FLAG_UNKNOWN,
  MAX_DATAGRAM_BYTES,
  ProtocolError,
  type Reply,
  type Request,
} from '../wire/protocol.js';

/**
 * The daemon's socket: it hands each datagram to `handle`, which filters,
 * decodes, probes and answers. Nothing here prints; `onDatagram` tells the
 * caller each datagram's fate when it wants to log them.
 *
 * Contract of a handler (as statsd's docs/server_interface.md states its own):
 * a datagram is answered with at most one datagram, to the address and port it
 * came from, or dropped and counted in `stats`. Nothing a datagram holds can
 * throw out of the handler or slow the next one.
 */

export interface ServerOptions {
  /** UDP port; 0 picks a free one. @default 1752 or /etc/services */
  port?: number;
  /** One address to listen on. @default `::` dual-stack, else 0.0.0.0 */
  bind?: string;
  /** An inherited, already bound UDP socket (systemd socket activation). */
  fd?: number;
  /**
   * Answer only clients inside these CIDR ranges (IPv4 and IPv6), each range
   * matching clients of its own family. An empty list is an error.
   * @default everyone
   */
  allow?: string[];
  /** Requests per second answered from one source address; 0 = no limit. @default 10000 */
  rate?: number;
  /** The name echoed to requests that name no host. @default this host's fully qualified name */
  hostname?: string;
  /**
   * Answer only requests authenticated by a key of this file (keys.ts), each
   * reply authenticated with the request's key. Read at start; a
   * KeyFileError rejects startServer. @default no keys: the original protocol
   */
  keyFile?: string;
  /** keyFile's keys, already read (readKeyFile()): not read again at start; SIGHUP reads keyFile. */
  keys?: KeyRing;
  /**
   * Push death notices (doc/protocol.md, Death notices): subscriptions and
   * notices; false answers none of their messages, as an old daemon.
   * @default true
   */
  push?: boolean;
  /** Subscriptions kept at most, in all and from one source (a network: see sourcePrefixV4). @default 100000 and 10000 */
  maxSubscriptions?: number;
  maxSubscriptionsPerSource?: number;
  /**
   * The prefix lengths of the network that counts as one source for
   * maxSubscriptionsPerSource (source.ts): an IPv4 client's /N (all of
   * 127.0.0.0/8 is one source unless N is below 8), an IPv6 client's /N.
   * @default 32 and 64
   */
  sourcePrefixV4?: number;
  sourcePrefixV6?: number;
  /** Called with each datagram's source, text and fate (for --debug). */
  onDatagram?: (from: string, text: string, fate: string) => void;
  /**
   * Called with socket errors after the bind; the server goes on serving.
   * Replies the kernel refuses come at most once per 10 s, with a count.
   */
  onError?: (err: Error) => void;
  /** Called with what the log should tell that is no error: subscriptions refused by a cap, at most once a minute, with a count. */
  onWarning?: (text: string) => void;
  /**
   * How datagrams are read: 'batch', many per system call, through the
   * addon (native/linux.c, UDP batches); 'dgram', one per event, through
   * Node's dgram; 'auto', batch where the addon was built. Both answer the same.
   * @default 'auto'
   */
  io?: SocketIo;
}

/** Counters of what happened to each datagram received. */
export interface ServerStats {
  received: number;
  answered: number;
  /** Valid requests whose flags asked for no reply to this answer. */
  suppressed: number;
  /** Datagrams that are no valid request (within the size limit). */
  malformed: number;
  /** Datagrams over the size limit (1024 bytes), dropped unread. */
  oversized: number;
  /** From a source outside `allow`. */
  denied: number;
  /** Over the per-source `rate`. */
  limited: number;
  /**
   * Refused so that no reply is aimed at another service: from a source port
   * below 1024 (0 included), or sent to a broadcast or multicast address
   * (where the socket layer tells, with the addon).
   */
  reflected: number;
  /** Requests without a valid authenticator, where the server has keys. */
  unauthenticated: number;
  /** Replies the kernel refused to send (no route, a full send queue, a firewall). */
  replyFailed: number;
  /** Subscriptions to a death notice stored (renewals not counted). */
  subscribed: number;
  /** Subscriptions refused by a cap, or for a thread id (the subscriber polls instead). */
  subscribeRefused: number;
  /** Deaths told to a subscriber. */
  notified: number;
  /** Notices never acknowledged, after every resend. */
  notifyUnacknowledged: number;
  /** Looks at a subscribed process without a pidfd that the poll's budget put off (poller.ts). */
  pollDeferred: number;
  /** Other socket errors, and bugs met while handling a datagram. */
  errors: number;
}

export interface Server {
  address(): AddressInfo;
  /** How this server reads its socket (see ServerOptions.io). */
  readonly io: 'batch' | 'dgram';
  readonly stats: ServerStats;
  /**
   * Reads the key file again (ServerOptions.keyFile), for SIGHUP; throws a
   * KeyFileError and keeps the keys it had when the file cannot be used.
   * Returns how many keys are now accepted, 0 for a server without a key file.
   */
  reloadKeys(): number;
  /** Closes the socket and clears timers; safe to call more than once. */
  close(): Promise<void>;
}

export const DEFAULT_RATE = 10000;

/** Replies to these source ports could be aimed at a service (echo, DNS, NTP...): never sent. */
const SERVICE_PORTS_BELOW = 1024;


/**
 * Why a reply to this request could be aimed at someone who did not ask:
 * its source port is a service's, or it was sent to a group of hosts.
 */
function reflectionRisk(port: number, toGroup: boolean): string | undefined {
  // A reply to port 0 cannot even be sent: such a source is forged.
  if (port === 0) return 'source port 0';
  if (port < SERVICE_PORTS_BELOW) return `source port ${port} is below ${SERVICE_PORTS_BELOW}, a service's`;
  if (toGroup) return 'sent to a broadcast or multicast address';
  return undefined;
}

/** The answer to a request, or undefined when its flags ask for none. */
export function answer(req: Request, ownHost: string): Reply | undefined {
  const host = req.host ?? ownHost;
  let exists = pidExists(req.pid);
  let start: string | undefined;
  // Only a request that carries or asks for a start token costs a read of
  // /proc: the common request costs one kill(), as in the original.
  if (exists === true && (req.start !== undefined || req.flags & FLAG_START)) {
    start = readStartToken(req.pid);
    if (req.start !== undefined && start !== undefined && start !== req.start) exists = false;
  }
  if (exists === true) {
    if (!(req.flags & FLAG_EXISTS)) return undefined;
    return req.flags & FLAG_START && start !== undefined
      ? { pid: req.pid, host, state: 'exists', start }
      : { pid: req.pid, host, state: 'exists' };
  }
  if (exists === false) return req.flags & FLAG_DEAD ? { pid: req.pid, host, state: 'dead' } : undefined;
  return req.flags & FLAG_UNKNOWN ? { pid: req.pid, host, state: 'unknown' } : undefined;
}

/** A datagram as text, for the log. */
const text = (msg: Buffer): string => msg.toString('latin1');

/**
 * What a datagram gets (the contract above): the checks in order (where it
 * came from, --allow, --rate, size), then the request decoded, probed and
 * answered, or the subscription handed to subscriptions.ts; each fate counted
 * in `stats` and told to `log`.
 */
class DatagramHandler {
  /** The port and, where it is bound to one, the address of the socket: set once it is bound. */
  ownPort = 0;
  boundAddress: string | undefined;
  subscriptions: Subscriptions | undefined;

  constructor(
    readonly stats: ServerStats,
    public keys: KeyRing | undefined,
    private readonly ownHost: string,
    private readonly allow: AllowList | undefined,
    private readonly limiter: RateLimiter | undefined,
    private readonly log: ServerOptions['onDatagram'],
  ) {}

  handle(msg: Buffer, length: number, address: string, port: number, toGroup: boolean, asked?: () => string | undefined): string | undefined {
    this.stats.received++;
    const source = unmapped(address);
    const refused = reflectionRisk(port, toGroup);
    if (refused !== undefined) {
      this.stats.reflected++;
      this.log?.(joinHostPort(source, port), text(msg), `dropped: ${refused}`);
      return undefined;
    }
    if (this.allow !== undefined && !this.allow.admits(source)) {
      this.stats.denied++;
      this.log?.(joinHostPort(source, port), text(msg), 'dropped: source not allowed');
      return undefined;
    }
    // Buckets per address, not per source network as the subscription cap
    // counts (source.ts): a bucket shared by a network would let one sender
    // empty it for every neighbour, on loopback for every local client, and
    // the limit would become the attack. What a request costs is bounded
    // (doc/protocol.md, Bounded work), so a sender's extra addresses buy it
    // only CPU in proportion to what it sends.
    if (this.limiter !== undefined && !this.limiter.take(source)) {
      this.stats.limited++;
      this.log?.(joinHostPort(source, port), text(msg), 'dropped: over the rate limit');
      return undefined;
    }
    if (length > MAX_DATAGRAM_BYTES) {
      this.stats.oversized++;
      this.log?.(joinHostPort(source, port), text(msg), `dropped: datagram of ${length} bytes is over ${MAX_DATAGRAM_BYTES}`);
      return undefined;
    }
    if (isPushMessage(msg)) return this.handlePush(msg, length, source, address, port, asked);
    let request: Request;
    try {
      request = decodeRequest(msg);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.stats.malformed++;
      this.log?.(joinHostPort(source, port), text(msg), `dropped: ${err.message}`);
      return undefined;
    }
    const key = this.keys === undefined ? undefined : verify(request.auth, this.keys.byId);
    if (this.keys !== undefined && key === undefined) {
      this.stats.unauthenticated++;
      // A refusal the client can match (its <host>, cookie included), never
      // longer than the request, and saying nothing of the process: so a
      // client without our key learns why at once instead of after its tries.
      const refusal = request.host === undefined ? undefined : refusalLine(request.pid, request.host);
      if (refusal !== undefined && refusal.length <= length) {
        this.log?.(joinHostPort(source, port), text(msg), `refused: not authenticated by a key of the key file; answered ${refusal}`);
        return refusal;
      }
      this.log?.(joinHostPort(source, port), text(msg), 'dropped: not authenticated by a key of the key file');
      return undefined;
    }
    const reply = answer(request, this.ownHost);
    if (reply === undefined) {
      this.stats.suppressed++;
      this.log?.(joinHostPort(source, port), text(msg), 'no reply: the flags ask for none');
      return undefined;
    }
    let line: string;
    if (key === undefined) {
      line = replyLine(reply);
    } else {
      // The daemon as the client asked it: the address the request was sent to, and our port (keys.ts).
      const to = asked?.() ?? this.boundAddress;
      if (to === undefined) {
        this.stats.errors++;
        this.log?.(joinHostPort(source, port), text(msg), 'dropped: cannot tell which address it was sent to, which a keyed reply must name');
        return undefined;
      }
      line = signLine(key, keyedReplyLine(reply), daemonIdentity(to, this.ownPort));
    }
    this.stats.answered++;
    this.log?.(joinHostPort(source, port), text(msg), `answered ${line}`);
    return line;
  }

  /** A subscription or an acknowledgement (subscriptions.ts); `address` as the socket wrote it, `source` unmapped. */
  private handlePush(msg: Buffer, length: number, source: string, address: string, port: number, asked?: () => string | undefined): string | undefined {
    if (this.subscriptions === undefined) {
      // Not malformed: a client polls once it hears nothing, and tries again a minute later.
      this.stats.suppressed++;
      this.log?.(joinHostPort(source, port), text(msg), 'no reply: push notices are off (--no-push)');
      return undefined;
    }
    const message = decodePush(msg);
    if (message === undefined || (message.kind !== 'SUBS' && message.kind !== 'ACKN')) {
      this.stats.malformed++;
      this.log?.(joinHostPort(source, port), text(msg), 'dropped: not a valid subscription or acknowledgement');
      return undefined;
    }
    const key = this.keys === undefined ? undefined : verify(message.auth, this.keys.byId);
    if (this.keys !== undefined && key === undefined) {
      this.stats.unauthenticated++;
      const refusal = refusalLine(message.pid, message.host);
      this.log?.(joinHostPort(source, port), text(msg), 'refused: not authenticated by a key of the key file');
      return refusal.length <= length ? refusal : undefined;
    }
    const to = this.keys === undefined ? undefined : asked?.() ?? this.boundAddress;
    const line = this.subscriptions!.handle(message, address, port, key, to, this.ownPort);
    this.log?.(joinHostPort(source, port), text(msg), line === undefined ? 'no reply' : `answered ${line}`);
    if (line !== undefined) this.stats.answered++;
    return line;
  }
}

export async function startServer(opts: ServerOptions = {}): Promise<Server> {
  for (const [name, value, max] of [['sourcePrefixV4', opts.sourcePrefixV4, 32], ['sourcePrefixV6', opts.sourcePrefixV6, 128]] as const) {
    if (value !== undefined && !(Number.isInteger(value) && value >= 0 && value <= max)) throw new RangeError(`${name} must be a whole number from 0 to ${max}, not ${value}`);
  }
  const rate = opts.rate ?? DEFAULT_RATE;
  const stats: ServerStats = {
    received: 0, answered: 0, suppressed: 0, malformed: 0, oversized: 0, denied: 0, limited: 0, reflected: 0, unauthenticated: 0, replyFailed: 0,
    subscribed: 0, subscribeRefused: 0, notified: 0, notifyUnacknowledged: 0, pollDeferred: 0, errors: 0,
  };
  const handler = new DatagramHandler(
    stats,
    opts.keys ?? (opts.keyFile === undefined ? undefined : readKeyFile(opts.keyFile)),
    opts.hostname ?? (await localFqdn()),
    opts.allow !== undefined ? parseAllow(opts.allow) : undefined,
    rate > 0 ? new RateLimiter(rate) : undefined,
    opts.onDatagram,
  );

  /** handle(), and a bug met there counted and reported: the next datagram is served. */
  const guarded: Handler = (msg, length, address, port, toGroup, asked) => {
    try {
      return handler.handle(msg, length, address, port, toGroup, asked);
    } catch (err) {
      stats.errors++;
      opts.onError?.(err as Error);
      return undefined;
    }
  };

  const { events, replyFailures } = transportEvents(stats, opts.onError);
  const transport = await openTransport(opts, guarded, events);
  const bound = transport.address();
  handler.ownPort = bound.port;
  // Where the socket layer cannot say where a datagram was sent (dgram), a
  // socket bound to one address was sent to that address; a wildcard says nothing.
  handler.boundAddress = /^[0.:]+$/.test(bound.address) ? undefined : bound.address;
  if (handler.keys !== undefined && transport.io === 'dgram' && handler.boundAddress === undefined) {
    await transport.close();
    throw new Error('a daemon with keys signs the address each request was sent to, which Node\'s dgram cannot tell on a wildcard address: give --bind ADDRESS, or let the addon load (see --debug)');
  }
  if (opts.push !== false) {
    handler.subscriptions = startSubscriptions({
      ...(opts.maxSubscriptions !== undefined && { maxTotal: opts.maxSubscriptions }),
      ...(opts.maxSubscriptionsPerSource !== undefined && { maxPerSource: opts.maxSubscriptionsPerSource }),
      ...(opts.sourcePrefixV4 !== undefined && { sourcePrefixV4: opts.sourcePrefixV4 }),
      ...(opts.sourcePrefixV6 !== undefined && { sourcePrefixV6: opts.sourcePrefixV6 }),
      stats,
      send: (line, address, port) => transport.send(line, address, port),
      ...(opts.onWarning !== undefined && { onLog: opts.onWarning }),
    });
  }

  let closing: Promise<void> | undefined;
  return {
    io: transport.io,
    address: () => transport.address(),
    stats,
    reloadKeys() {
      if (opts.keyFile === undefined) return 0;
      handler.keys = readKeyFile(opts.keyFile);
      return handler.keys.byId.size;
    },
    close() {
      closing ??= (async () => {
        handler.subscriptions?.close();
        await transport.close();
        replyFailures.flush();
      })();
      return closing;
    },
  };
}
