import dgram from 'node:dgram';
import { readFileSync, readlinkSync } from 'node:fs';
import { BlockList, isIPv4, isIPv6, type AddressInfo } from 'node:net';
import { defaultPort, joinHostPort, literalLookup, localFqdn } from './host.js';
import { batchAddon, errnoError, type SocketIo, type UdpBatch } from './native.js';
import { pidExists, readStartToken } from './probe.js';
import { dgramStep } from './sockets.js';
import {
  checkDatagramSize,
  decodeRequest,
  replyLine,
  FLAG_DEAD,
  FLAG_EXISTS,
  FLAG_START,
  FLAG_UNKNOWN,
  ProtocolError,
  type Reply,
  type Request,
} from './protocol.js';

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
  /** Answer only clients inside these CIDR ranges (IPv4 and IPv6). @default everyone */
  allow?: string[];
  /** Requests per second answered from one source address; 0 = no limit. @default 10000 */
  rate?: number;
  /** The name echoed to requests that name no host. @default this host's fully qualified name */
  hostname?: string;
  /** Called with each datagram's source, text and fate (for --debug). */
  onDatagram?: (from: string, text: string, fate: string) => void;
  /** Called with socket errors after the bind; the server goes on serving. */
  onError?: (err: Error) => void;
  /**
   * How datagrams are read: 'batch', many per system call, through the addon
   * native/udpbatch.c; 'dgram', one per event, through Node's dgram; 'auto',
   * batch where the addon was built. Both answer the same.
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
  malformed: number;
  /** From a source outside `allow`. */
  denied: number;
  /** Over the per-source `rate`. */
  limited: number;
  /** Socket errors, replies the kernel refused to send among them. */
  errors: number;
}

export interface Server {
  address(): AddressInfo;
  /** How this server reads its socket (see ServerOptions.io). */
  readonly io: 'batch' | 'dgram';
  readonly stats: ServerStats;
  /** Closes the socket and clears timers; safe to call more than once. */
  close(): Promise<void>;
}

export const DEFAULT_RATE = 10000;

/** Parses `--allow` ranges into a matcher; throws a RangeError naming a bad one. */
export function parseAllow(ranges: string[]): BlockList {
  const list = new BlockList();
  for (const range of ranges) {
    const [, address = '', prefixText] = /^([^/]*)(?:\/([0-9]{1,3}))?$/.exec(range.trim()) ?? [];
    const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : undefined;
    const max = family === 'ipv4' ? 32 : 128;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (family === undefined || prefix > max) {
      throw new RangeError(`'${range}' is not an address or CIDR range (like 10.0.0.0/8 or fd00::/8)`);
    }
    list.addSubnet(address, prefix, family);
  }
  return list;
}

/**
 * Per-source token buckets: each address may send `rate` requests a second,
 * in bursts of up to `rate`. Full buckets are forgotten every few seconds, so
 * the map holds only sources that sent recently.
 */
class RateLimiter {
  private buckets = new Map<string, { tokens: number; at: number }>();
  private sweeper: NodeJS.Timeout;

  constructor(private readonly rate: number) {
    this.sweeper = setInterval(() => this.sweep(), 5000).unref();
  }

  take(source: string): boolean {
    const now = Date.now();
    const bucket = this.buckets.get(source);
    if (bucket === undefined) {
      this.buckets.set(source, { tokens: this.rate - 1, at: now });
      return true;
    }
    bucket.tokens = Math.min(this.rate, bucket.tokens + ((now - bucket.at) * this.rate) / 1000);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [source, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) * this.rate) / 1000 >= this.rate) this.buckets.delete(source);
    }
  }

  stop(): void {
    clearInterval(this.sweeper);
  }
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
 * The family of an inherited socket, found by its inode in /proc/net/udp6:
 * dgram must wrap it with the same type or every send fails with EINVAL.
 */
function inheritedSocketType(fd: number): 'udp4' | 'udp6' {
  const link = readlinkSync(`/proc/self/fd/${fd}`);
  const inode = /^socket:\[([0-9]+)\]$/.exec(link)?.[1];
  if (inode === undefined) throw new Error(`descriptor ${fd} is not a socket (${link})`);
  let table = '';
  try {
    table = readFileSync('/proc/net/udp6', 'latin1');
  } catch {
    return 'udp4';
  }
  const inUdp6 = table.split('\n').some((line) => line.trim().split(/\s+/)[9] === inode);
  return inUdp6 ? 'udp6' : 'udp4';
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
 * Binds where the options say: --bind's address alone, else `::` dual-stack,
 * else 0.0.0.0 on a host without IPv6.
 */
async function bindWhere<T>(opts: ServerOptions, bind: (address: string, ipv6Only: boolean) => T | Promise<T>): Promise<T> {
  if (opts.bind !== undefined) return bind(opts.bind, isIPv6(opts.bind));
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

/** Reads a datagram of `length` bytes (msg may hold fewer) from address:port; returns the reply line, if any. */
type Handler = (msg: Buffer, length: number, address: string, port: number) => string | undefined;

/** A bound socket feeding a Handler and sending its replies. */
interface Transport {
  readonly io: 'batch' | 'dgram';
  address(): AddressInfo;
  close(): Promise<void>;
}

/** A deeper queue rides out bursts; the kernel caps it at net.core.rmem_max. */
const RECV_BUFFER_BYTES = 4 * 1024 * 1024;

/** Node's dgram: a datagram per 'message' event, a send per reply. */
async function dgramTransport(opts: ServerOptions, port: number, handle: Handler, onError: (err: Error) => void): Promise<Transport> {
  const socket =
    opts.fd !== undefined
      ? await bindOrClose(createSocket(inheritedSocketType(opts.fd)), { fd: opts.fd })
      : await bindWhere(opts, (address, ipv6Only) => bindOrClose(createSocket(isIPv6(address) ? 'udp6' : 'udp4', ipv6Only), { address, port }));
  socket.on('message', (msg, rinfo) => {
    const line = handle(msg, msg.length, rinfo.address, rinfo.port);
    // No callback: a failed send then comes as an 'error' event, counted
    // there, and the common send costs no callback round.
    if (line !== undefined) socket.send(Buffer.from(line, 'latin1'), rinfo.port, rinfo.address);
  });
  socket.on('error', onError);
  try {
    socket.setRecvBufferSize(RECV_BUFFER_BYTES);
  } catch {
    // Not allowed here: the default queue still works.
  }
  return {
    io: 'dgram',
    address: () => socket.address(),
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}

/**
 * The addon: a batch of datagrams per wake-up, read with one recvmmsg, handed
 * over in one call, answered with one sendmmsg (native/udpbatch.c).
 */
async function batchTransport(addon: UdpBatch, opts: ServerOptions, port: number, handle: Handler, onError: (err: Error) => void): Promise<Transport> {
  const fd = opts.fd ?? (await bindWhere(opts, (address, ipv6Only) => addon.open(address, port, ipv6Only)));
  const [address, family, boundPort] = addon.address(fd);
  addon.setRecvBufferSize(fd, RECV_BUFFER_BYTES);
  const { BATCH, IN_SLOT, OUT_SLOT, ADDRESS_SLOT, META } = addon;
  const input = Buffer.alloc(BATCH * IN_SLOT);
  const meta = new Int32Array(BATCH * META);
  const sources = Buffer.alloc(BATCH * ADDRESS_SLOT);
  const output = Buffer.alloc(BATCH * OUT_SLOT);
  const onBatch = (count: number, errno: number) => {
    if (errno !== 0) {
      onError(errnoError(errno, 'recvmmsg or sendmmsg'));
      return;
    }
    for (let i = 0; i < count; i++) {
      // meta: [length, source port, source address length, reply length]
      const at = i * META;
      const length = meta[at]!;
      const source = sources.toString('latin1', i * ADDRESS_SLOT, i * ADDRESS_SLOT + meta[at + 2]!);
      const msg = input.subarray(i * IN_SLOT, i * IN_SLOT + Math.min(length, IN_SLOT));
      const line = handle(msg, length, source, meta[at + 1]!);
      if (line !== undefined) meta[at + 3] = output.write(line, i * OUT_SLOT, OUT_SLOT, 'latin1');
    }
  };
  const reading = addon.start(fd, onBatch, input, meta, sources, output);
  let closed: Promise<void> | undefined;
  return {
    io: 'batch',
    address: () => ({ address, family: family === 6 ? 'IPv6' : 'IPv4', port: boundPort }),
    close: () => (closed ??= new Promise((resolve) => addon.stop(reading, resolve))),
  };
}

/** The batch transport where the addon is built (or is asked for), else dgram. */
async function openTransport(opts: ServerOptions, handle: Handler, onError: (err: Error) => void): Promise<Transport> {
  const port = opts.port ?? defaultPort();
  const addon = batchAddon(opts.io ?? 'auto');
  return addon !== undefined ? batchTransport(addon, opts, port, handle, onError) : dgramTransport(opts, port, handle, onError);
}

/** Listens and answers; rejects with the bind error (err.code EADDRINUSE, EACCES, ...). */
export async function startServer(opts: ServerOptions = {}): Promise<Server> {
  const allow = opts.allow && opts.allow.length > 0 ? parseAllow(opts.allow) : undefined;
  const rate = opts.rate ?? DEFAULT_RATE;
  const ownHost = opts.hostname ?? (await localFqdn());
  const stats: ServerStats = {
    received: 0, answered: 0, suppressed: 0, malformed: 0, denied: 0, limited: 0, errors: 0,
  };
  const log = opts.onDatagram;
  const limiter = rate > 0 ? new RateLimiter(rate) : undefined;
  const text = (msg: Buffer) => msg.toString('latin1');

  function handle(msg: Buffer, length: number, address: string, port: number): string | undefined {
    stats.received++;
    if (allow !== undefined && !allow.check(address, address.includes(':') ? 'ipv6' : 'ipv4')) {
      stats.denied++;
      log?.(joinHostPort(address, port), text(msg), 'dropped: source not allowed');
      return undefined;
    }
    if (limiter !== undefined && !limiter.take(address)) {
      stats.limited++;
      log?.(joinHostPort(address, port), text(msg), 'dropped: over the rate limit');
      return undefined;
    }
    // A reply to port 0 cannot be sent (dgram throws): such a source is forged.
    if (port === 0) {
      stats.malformed++;
      log?.(joinHostPort(address, port), text(msg), 'dropped: source port 0');
      return undefined;
    }
    let reply: Reply | undefined;
    try {
      checkDatagramSize(length);
      reply = answer(decodeRequest(msg), ownHost);
    } catch (err) {
      if (!(err instanceof ProtocolError)) {
        // A bug, not the datagram's fault: count it and serve the next one.
        stats.errors++;
        opts.onError?.(err as Error);
        return undefined;
      }
      stats.malformed++;
      log?.(joinHostPort(address, port), text(msg), `dropped: ${err.message}`);
      return undefined;
    }
    if (reply === undefined) {
      stats.suppressed++;
      log?.(joinHostPort(address, port), text(msg), 'no reply: the flags ask for none');
      return undefined;
    }
    const line = replyLine(reply);
    stats.answered++;
    log?.(joinHostPort(address, port), text(msg), `answered ${line}`);
    return line;
  }

  const onError = (err: Error) => {
    stats.errors++;
    opts.onError?.(err);
  };
  let transport: Transport;
  try {
    transport = await openTransport(opts, handle, onError);
  } catch (err) {
    limiter?.stop();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    io: transport.io,
    address: () => transport.address(),
    stats,
    close() {
      closing ??= (async () => {
        limiter?.stop();
        await transport.close();
      })();
      return closing;
    },
  };
}
