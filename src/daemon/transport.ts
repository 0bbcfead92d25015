import { isIPv6, type AddressInfo } from 'node:net';
import dgram from 'node:dgram';
import { readFileSync, readlinkSync } from 'node:fs';
import { defaultPort, literalLookup } from '../net/host.js';
import { dgramStep } from '../net/sockets.js';
import { batchAddon, errnoError, type LinuxCalls } from '../sys/native.js';
import type { ServerOptions, ServerStats } from './server.js';
import { ThrottledReport } from './throttle.js';

/**
 * The daemon's socket, two ways: through the addon, in batches
 * (recvmmsg/sendmmsg, with each datagram's destination), or through Node's
 * dgram; bound as the options say, or inherited (socket activation). Each
 * datagram goes to a Handler, whose answer, if any, goes back to its sender.
 */

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
export type Handler = (msg: Buffer, length: number, address: string, port: number, toGroup: boolean, asked?: () => string | undefined) => string | undefined;

/** What a transport tells the server besides datagrams. */
export interface TransportEvents {
  /** `count` replies the kernel refused to send, the last for `reason`. */
  replyFailed(count: number, reason: string): void;
  socketError(err: Error): void;
}

/** A bound socket feeding a Handler and sending its replies. */
export interface Transport {
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
export async function openTransport(opts: ServerOptions, handle: Handler, events: TransportEvents): Promise<Transport> {
  const port = opts.port ?? defaultPort();
  const addon = batchAddon(opts.io ?? 'auto');
  return addon !== undefined ? batchTransport(addon, opts, port, handle, events) : dgramTransport(opts, port, handle, events);
}

/** Listens and answers; rejects with the bind error (err.code EADDRINUSE, EACCES, ...). */

/** Replies the kernel refuses are logged at most this often, with a count. */
const REPLY_FAILURE_REPORT_MS = 10_000;

/** What the socket layer tells: refused replies counted and reported at most every REPLY_FAILURE_REPORT_MS, socket errors. */
export function transportEvents(stats: ServerStats, onError: ServerOptions['onError']): { events: TransportEvents; replyFailures: ThrottledReport } {
  const replyFailures = new ThrottledReport(REPLY_FAILURE_REPORT_MS, (count, reason) =>
    onError?.(new Error(`replies refused by the kernel: ${count} since the last report, the last with ${reason}; ` +
      `counted, and reported at most every ${REPLY_FAILURE_REPORT_MS / 1000} s`)),
  );
  const events: TransportEvents = {
    replyFailed(count, reason) {
      stats.replyFailed += count;
      replyFailures.add(count, reason);
    },
    socketError(err) {
      stats.errors++;
      onError?.(err);
    },
  };
  return { events, replyFailures };
}
