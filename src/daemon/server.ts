import dgram from 'node:dgram';
import { readFileSync, readlinkSync } from 'node:fs';
import { BlockList, isIPv4, isIPv6, type AddressInfo } from 'node:net';
import { joinHostPort, mappedIPv4 } from '../wire/address.js';
import { defaultPort, literalLookup, localFqdn } from '../net/host.js';
import { batchAddon, errnoError, type SocketIo, type LinuxCalls } from '../sys/native.js';
import { daemonIdentity, readKeyFile, signLine, verify } from '../wire/keys.js';
import { pidExists, readStartToken } from '../sys/probe.js';
import { RateLimiter } from './ratelimit.js';
import { dgramStep } from '../net/sockets.js';
import { ThrottledReport } from './throttle.js';
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

/** Replies the kernel refuses are logged at most this often, with a count. */
const REPLY_FAILURE_REPORT_MS = 10_000;

/** Who may be answered: a client address (IPv4 as such, never ::ffff:a.b.c.d) is matched against the ranges of its own family. */
export interface AllowList {
  admits(address: string): boolean;
}

/**
 * Parses `--allow` ranges; throws a RangeError for an empty list or naming a
 * bad range. An IPv4-mapped range (::ffff:10.0.0.0/104) is the IPv4 range it
 * maps.
 */
export function parseAllow(ranges: readonly string[]): AllowList {
  if (ranges.length === 0) {
    throw new RangeError('the list of ranges is empty: name at least one (like 10.0.0.0/8 or fd00::/8), or none at all to answer everyone');
  }
  const ipv4 = new BlockList();
  const ipv6 = new BlockList();
  for (const range of ranges) {
    const [, address = '', prefixText] = /^([^/]*)(?:\/([0-9]{1,3}))?$/.exec(range.trim()) ?? [];
    const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined;
    const max = family === 'ipv4' ? 32 : 128;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (family === undefined || prefix > max) {
      throw new RangeError(`'${range}' is not an address or CIDR range (like 10.0.0.0/8 or fd00::/8)`);
    }
    const mapped = family === 'ipv6' && prefix >= 96 ? mappedIPv4(address) : undefined;
    if (mapped !== undefined) ipv4.addSubnet(mapped, prefix - 96, 'ipv4');
    else (family === 'ipv4' ? ipv4 : ipv6).addSubnet(address, prefix, family);
  }
  // Separate lists: a BlockList matches an IPv4 address against its IPv6
  // rules too (as ::ffff:a.b.c.d), so ::/0 would admit every IPv4 client.
  return { admits: (address) => (address.includes(':') ? ipv6.check(address, 'ipv6') : ipv4.check(address, 'ipv4')) };
}

/**
 * An IPv4 client of a dual-stack socket, which the kernel writes
 * ::ffff:a.b.c.d, as the IPv4 address it is, for --allow and --rate.
 */
function unmapped(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.', 7) ? address.slice(7) : address;
}

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

/**
 * The family of an inherited socket, found by its inode in /proc/net/udp or
 * udp6 (dgram must wrap it with the same type or every send fails with
 * EINVAL). A socket in neither is refused: it is no UDP socket, or one that
 * is bound to no port, where nothing could ever reach it.
 */
function inheritedSocketType(fd: number): 'udp4' | 'udp6' {
  let link: string;
  try {
    link = readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    throw new Error('no such open descriptor');
  }
  const inode = /^socket:\[([0-9]+)\]$/.exec(link)?.[1];
  if (inode === undefined) throw new Error(`not a socket but ${link}`);
  for (const [table, type] of [['/proc/net/udp', 'udp4'], ['/proc/net/udp6', 'udp6']] as const) {
    let text = '';
    try {
      text = readFileSync(table, 'latin1');
    } catch {
      continue;
    }
    if (text.split('\n').some((line) => line.trim().split(/\s+/)[9] === inode)) return type;
  }
  throw new Error('not a bound UDP socket (bind it to an address and port before handing it over)');
}

/** The socket, bound as `options` say; or closed, and the bind's error thrown. */
async function bindOrClose(socket: dgram.Socket, options: dgram.BindOptions): Promise<dgram.Socket> {
  try {
    await dgramStep(socket, (done) => socket.bind(options, done));
    return socket;
  } catch (err) {
    socket.close();
    throw err;
  }
}

/** Replies go to the literal address a request came from: no look-up for them. */
function createSocket(type: 'udp4' | 'udp6', ipv6Only = false): dgram.Socket {
  return dgram.createSocket({ type, ipv6Only, lookup: literalLookup as unknown as dgram.SocketOptions['lookup'] });
}

/**
 * Binds where the options say: --bind's address alone (`::` dual-stack, as
 * the default), else `::` dual-stack, else 0.0.0.0 on a host without IPv6.
 */
async function bindWhere<T>(opts: ServerOptions, bind: (address: string, ipv6Only: boolean) => T | Promise<T>): Promise<T> {
  if (opts.bind !== undefined) return bind(opts.bind, isIPv6(opts.bind) && !/^[0:]+$/.test(opts.bind));
  try {
    return await bind('::', false);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A host without IPv6 refuses the family itself; any other error, such as
    // a busy port, is the answer for IPv4 too.
    if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL' && code !== 'EPROTONOSUPPORT') throw err;
  }
  return bind('0.0.0.0', false);
}

/**
 * Judges a datagram of `length` bytes (msg may hold fewer) from address:port,
 * `toGroup` when it was sent to a broadcast or multicast address; `asked`
 * tells, where the socket layer can, the address it was sent to (read only
 * by a server with keys). Returns the reply line, if any.
 */
type Handler = (msg: Buffer, length: number, address: string, port: number, toGroup: boolean, asked?: () => string | undefined) => string | undefined;

/** What a transport tells the server besides datagrams. */
interface TransportEvents {
  /** `count` replies the kernel refused to send, the last for `reason`. */
  replyFailed(count: number, reason: string): void;
  socketError(err: Error): void;
}

/** A bound socket feeding a Handler and sending its replies. */
interface Transport {
  readonly io: 'batch' | 'dgram';
  address(): AddressInfo;
  /** Sends a datagram that answers nothing (a death notice); a failure is counted as a reply the kernel refused. */
  send(line: string, address: string, port: number): void;
  close(): Promise<void>;
}

/** A deeper queue rides out bursts; the kernel caps it at net.core.rmem_max. */
const RECV_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Node's dgram: a datagram per 'message' event, a send per reply. It cannot
 * tell where a datagram was sent (no IP_PKTINFO): a broadcast or multicast
 * request is answered, as a unicast one.
 */
async function dgramTransport(opts: ServerOptions, port: number, handle: Handler, events: TransportEvents): Promise<Transport> {
  const socket =
    opts.fd !== undefined
      ? await bindOrClose(createSocket(inheritedSocketType(opts.fd)), { fd: opts.fd })
      : await bindWhere(opts, (address, ipv6Only) => bindOrClose(createSocket(isIPv6(address) ? 'udp6' : 'udp4', ipv6Only), { address, port }));
  // Without a callback, a failed send would vanish: dgram reports it nowhere else.
  const afterReply = (err: Error | null) => {
    if (err) events.replyFailed(1, `send ${(err as NodeJS.ErrnoException).code ?? err.message}`);
  };
  socket.on('message', (msg, rinfo) => {
    const line = handle(msg, msg.length, rinfo.address, rinfo.port, false);
    if (line !== undefined) socket.send(Buffer.from(line, 'latin1'), rinfo.port, rinfo.address, afterReply);
  });
  socket.on('error', events.socketError);
  try {
    socket.setRecvBufferSize(RECV_BUFFER_BYTES);
  } catch {
    // Not allowed here: the default queue still works.
  }
  return {
    io: 'dgram',
    address: () => socket.address(),
    send: (line, address, port) => socket.send(Buffer.from(line, 'latin1'), port, address, afterReply),
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}

/**
 * Whether the kernel's facts about a datagram's destination (meta[4..6],
 * native/linux.c, UDP batches) say it was sent to a broadcast or multicast address.
 * For IPv4 the kernel sets ipi_spec_dst to the destination itself only for
 * a local unicast address, and else to the address it would answer from
 * (fib_compute_spec_dst); 0 where it could not say.
 * @see https://github.com/torvalds/linux/blob/master/net/ipv4/fib_frontend.c
 */
function sentToGroup(family: number, destination: number, specDst: number): boolean {
  if (family === 6) return destination === 0xff; // ff00::/8
  if (family !== 4) return false;
  const address = destination >>> 0;
  if (address >>> 28 === 0xe || address === 0xffffffff) return true; // 224.0.0.0/4, 255.255.255.255
  return specDst !== 0 && specDst !== destination;
}

/** The address a datagram was sent to, from the kernel's facts (meta[4..10], native/linux.c, UDP batches); undefined where it did not say. */
function destinationOf(meta: Int32Array, at: number): string | undefined {
  if (meta[at + 4] === 4) {
    const a = meta[at + 5]! >>> 0;
    return `${a >>> 24}.${(a >>> 16) & 0xff}.${(a >>> 8) & 0xff}.${a & 0xff}`;
  }
  if (meta[at + 4] !== 6) return undefined;
  const bytes = Buffer.from(meta.buffer, meta.byteOffset + (at + 7) * 4, 16);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return groups.join(':');
}

/**
 * The addon: a batch of datagrams per wake-up, read with one recvmmsg, handed
 * over in one call, answered with one sendmmsg (native/linux.c, UDP batches). It reads
 * each datagram's destination too, to refuse broadcast and multicast ones.
 */
async function batchTransport(addon: LinuxCalls, opts: ServerOptions, port: number, handle: Handler, events: TransportEvents): Promise<Transport> {
  if (opts.fd !== undefined) inheritedSocketType(opts.fd);
  const fd = opts.fd ?? (await bindWhere(opts, (address, ipv6Only) => addon.open(address, port, ipv6Only)));
  const [address, family, boundPort] = addon.address(fd);
  addon.setRecvBufferSize(fd, RECV_BUFFER_BYTES);
  const { BATCH, IN_SLOT, OUT_SLOT, ADDRESS_SLOT, META } = addon;
  const input = Buffer.alloc(BATCH * IN_SLOT);
  const meta = new Int32Array(BATCH * META);
  const sources = Buffer.alloc(BATCH * ADDRESS_SLOT);
  const output = Buffer.alloc(BATCH * OUT_SLOT);
  const onBatch = (count: number, errno: number, unsent: number) => {
    if (unsent > 0) {
      events.replyFailed(unsent, errnoError(errno, 'send').message);
      return;
    }
    if (errno !== 0) {
      events.socketError(errnoError(errno, 'recvmmsg'));
      return;
    }
    for (let i = 0; i < count; i++) {
      // meta: [length, source port, source address length, reply length,
      // destination facts: family, address, spec_dst]
      const at = i * META;
      const length = meta[at]!;
      const source = sources.toString('latin1', i * ADDRESS_SLOT, i * ADDRESS_SLOT + meta[at + 2]!);
      const msg = input.subarray(i * IN_SLOT, i * IN_SLOT + Math.min(length, IN_SLOT));
      const toGroup = sentToGroup(meta[at + 4]!, meta[at + 5]!, meta[at + 6]!);
      const line = handle(msg, length, source, meta[at + 1]!, toGroup, () => destinationOf(meta, at));
      if (line !== undefined) meta[at + 3] = output.write(line, i * OUT_SLOT, OUT_SLOT, 'latin1');
    }
  };
  const reading = addon.start(fd, onBatch, input, meta, sources, output, true);
  let closed: Promise<void> | undefined;
  return {
    io: 'batch',
    address: () => ({ address, family: family === 6 ? 'IPv6' : 'IPv4', port: boundPort }),
    send(line, to, toPort) {
      // A dual-stack socket writes an IPv4 peer as ::ffff:a.b.c.d: so must we.
      const peer = family === 6 && !to.includes(':') ? `::ffff:${to}` : to;
      let errno: number;
      try {
        errno = addon.send(fd, Buffer.from(line, 'latin1'), peer, toPort);
      } catch (err) {
        events.replyFailed(1, (err as Error).message);
        return;
      }
      if (errno !== 0) events.replyFailed(1, errnoError(errno, 'send').message);
    },
    close: () => (closed ??= new Promise((resolve) => addon.stop(reading, resolve))),
  };
}

/** The batch transport where the addon is built (or is asked for), else dgram. */
async function openTransport(opts: ServerOptions, handle: Handler, events: TransportEvents): Promise<Transport> {
  const port = opts.port ?? defaultPort();
  const addon = batchAddon(opts.io ?? 'auto');
  return addon !== undefined ? batchTransport(addon, opts, port, handle, events) : dgramTransport(opts, port, handle, events);
}

/** Listens and answers; rejects with the bind error (err.code EADDRINUSE, EACCES, ...). */
export async function startServer(opts: ServerOptions = {}): Promise<Server> {
  for (const [name, value, max] of [['sourcePrefixV4', opts.sourcePrefixV4, 32], ['sourcePrefixV6', opts.sourcePrefixV6, 128]] as const) {
    if (value !== undefined && !(Number.isInteger(value) && value >= 0 && value <= max)) throw new RangeError(`${name} must be a whole number from 0 to ${max}, not ${value}`);
  }
  const allow = opts.allow !== undefined ? parseAllow(opts.allow) : undefined;
  const rate = opts.rate ?? DEFAULT_RATE;
  const ownHost = opts.hostname ?? (await localFqdn());
  const stats: ServerStats = {
    received: 0, answered: 0, suppressed: 0, malformed: 0, oversized: 0, denied: 0, limited: 0, reflected: 0, unauthenticated: 0, replyFailed: 0,
    subscribed: 0, subscribeRefused: 0, notified: 0, notifyUnacknowledged: 0, pollDeferred: 0, errors: 0,
  };
  let subscriptions: Subscriptions | undefined;
  let keys = opts.keyFile === undefined ? undefined : readKeyFile(opts.keyFile);
  const log = opts.onDatagram;
  const limiter = rate > 0 ? new RateLimiter(rate) : undefined;
  const text = (msg: Buffer) => msg.toString('latin1');
  /** The port and, where it is bound to one, the address of the socket: set once it is bound. */
  let ownPort = 0;
  let boundAddress: string | undefined;

  function handle(msg: Buffer, length: number, address: string, port: number, toGroup: boolean, asked?: () => string | undefined): string | undefined {
    stats.received++;
    const source = unmapped(address);
    const refused = reflectionRisk(port, toGroup);
    if (refused !== undefined) {
      stats.reflected++;
      log?.(joinHostPort(source, port), text(msg), `dropped: ${refused}`);
      return undefined;
    }
    if (allow !== undefined && !allow.admits(source)) {
      stats.denied++;
      log?.(joinHostPort(source, port), text(msg), 'dropped: source not allowed');
      return undefined;
    }
    // Buckets per address, not per source network as the subscription cap
    // counts (source.ts): a bucket shared by a network would let one sender
    // empty it for every neighbour, on loopback for every local client, and
    // the limit would become the attack. What a request costs is bounded
    // (doc/protocol.md, Bounded work), so a sender's extra addresses buy it
    // only CPU in proportion to what it sends.
    if (limiter !== undefined && !limiter.take(source)) {
      stats.limited++;
      log?.(joinHostPort(source, port), text(msg), 'dropped: over the rate limit');
      return undefined;
    }
    if (length > MAX_DATAGRAM_BYTES) {
      stats.oversized++;
      log?.(joinHostPort(source, port), text(msg), `dropped: datagram of ${length} bytes is over ${MAX_DATAGRAM_BYTES}`);
      return undefined;
    }
    if (isPushMessage(msg)) return handlePush(msg, length, source, address, port, asked);
    let request: Request;
    try {
      request = decodeRequest(msg);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      stats.malformed++;
      log?.(joinHostPort(source, port), text(msg), `dropped: ${err.message}`);
      return undefined;
    }
    const key = keys === undefined ? undefined : verify(request.auth, keys.byId);
    if (keys !== undefined && key === undefined) {
      stats.unauthenticated++;
      // A refusal the client can match (its <host>, cookie included), never
      // longer than the request, and saying nothing of the process: so a
      // client without our key learns why at once instead of after its tries.
      const refusal = request.host === undefined ? undefined : refusalLine(request.pid, request.host);
      if (refusal !== undefined && refusal.length <= length) {
        log?.(joinHostPort(source, port), text(msg), `refused: not authenticated by a key of the key file; answered ${refusal}`);
        return refusal;
      }
      log?.(joinHostPort(source, port), text(msg), 'dropped: not authenticated by a key of the key file');
      return undefined;
    }
    const reply = answer(request, ownHost);
    if (reply === undefined) {
      stats.suppressed++;
      log?.(joinHostPort(source, port), text(msg), 'no reply: the flags ask for none');
      return undefined;
    }
    let line: string;
    if (key === undefined) {
      line = replyLine(reply);
    } else {
      // The daemon as the client asked it: the address the request was sent to, and our port (keys.ts).
      const to = asked?.() ?? boundAddress;
      if (to === undefined) {
        stats.errors++;
        log?.(joinHostPort(source, port), text(msg), 'dropped: cannot tell which address it was sent to, which a keyed reply must name');
        return undefined;
      }
      line = signLine(key, keyedReplyLine(reply), daemonIdentity(to, ownPort));
    }
    stats.answered++;
    log?.(joinHostPort(source, port), text(msg), `answered ${line}`);
    return line;
  }

  /** A subscription or an acknowledgement (subscriptions.ts); `address` as the socket wrote it, `source` unmapped. */
  function handlePush(msg: Buffer, length: number, source: string, address: string, port: number, asked?: () => string | undefined): string | undefined {
    if (subscriptions === undefined) {
      // Not malformed: a client polls once it hears nothing, and tries again a minute later.
      stats.suppressed++;
      log?.(joinHostPort(source, port), text(msg), 'no reply: push notices are off (--no-push)');
      return undefined;
    }
    const message = decodePush(msg);
    if (message === undefined || (message.kind !== 'SUBS' && message.kind !== 'ACKN')) {
      stats.malformed++;
      log?.(joinHostPort(source, port), text(msg), 'dropped: not a valid subscription or acknowledgement');
      return undefined;
    }
    const key = keys === undefined ? undefined : verify(message.auth, keys.byId);
    if (keys !== undefined && key === undefined) {
      stats.unauthenticated++;
      const refusal = refusalLine(message.pid, message.host);
      log?.(joinHostPort(source, port), text(msg), 'refused: not authenticated by a key of the key file');
      return refusal.length <= length ? refusal : undefined;
    }
    const to = keys === undefined ? undefined : asked?.() ?? boundAddress;
    const line = subscriptions!.handle(message, address, port, key, to, ownPort);
    log?.(joinHostPort(source, port), text(msg), line === undefined ? 'no reply' : `answered ${line}`);
    if (line !== undefined) stats.answered++;
    return line;
  }

  /** handle(), and a bug met there counted and reported: the next datagram is served. */
  const guarded: Handler = (msg, length, address, port, toGroup, asked) => {
    try {
      return handle(msg, length, address, port, toGroup, asked);
    } catch (err) {
      stats.errors++;
      opts.onError?.(err as Error);
      return undefined;
    }
  };

  const replyFailures = new ThrottledReport(REPLY_FAILURE_REPORT_MS, (count, reason) =>
    opts.onError?.(new Error(`replies refused by the kernel: ${count} since the last report, the last with ${reason}; ` +
      `counted, and reported at most every ${REPLY_FAILURE_REPORT_MS / 1000} s`)),
  );
  const events: TransportEvents = {
    replyFailed(count, reason) {
      stats.replyFailed += count;
      replyFailures.add(count, reason);
    },
    socketError(err) {
      stats.errors++;
      opts.onError?.(err);
    },
  };
  const transport = await openTransport(opts, guarded, events);
  const bound = transport.address();
  ownPort = bound.port;
  // Where the socket layer cannot say where a datagram was sent (dgram), a
  // socket bound to one address was sent to that address; a wildcard says nothing.
  boundAddress = /^[0.:]+$/.test(bound.address) ? undefined : bound.address;
  if (keys !== undefined && transport.io === 'dgram' && boundAddress === undefined) {
    await transport.close();
    throw new Error('a daemon with keys signs the address each request was sent to, which Node\'s dgram cannot tell on a wildcard address: give --bind ADDRESS, or let the addon load (see --debug)');
  }
  if (opts.push !== false) {
    subscriptions = startSubscriptions({
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
      keys = readKeyFile(opts.keyFile);
      return keys.byId.size;
    },
    close() {
      closing ??= (async () => {
        subscriptions?.close();
        await transport.close();
        replyFailures.flush();
      })();
      return closing;
    },
  };
}
