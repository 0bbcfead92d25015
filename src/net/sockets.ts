import type dgram from 'node:dgram';
import { createRequire } from 'node:module';
import { literalLookup } from './host.js';
import { batchAddon, errnoError, type SocketIo, type LinuxCalls } from '../sys/native.js';

/**
 * The client's UDP sockets, in one of two ways that behave alike: through the
 * addon (native/linux.c), which reads a batch of replies per system call
 * and spares loading dgram, whose first bind loads Node's cluster module (a
 * twentieth of a pidstat run); or through Node's dgram, where the addon was
 * not built. Sockets are unref'd: pending questions keep the process alive
 * by their timers, not by their sockets.
 */

export interface SocketEvents {
  message(msg: Buffer, address: string, port: number): void;
  /** A socket error; on a connected socket, an ICMP report about what it sent (ECONNREFUSED). */
  error(err: NodeJS.ErrnoException): void;
}

export interface SocketSpec {
  family: 4 | 6;
  /**
   * The port to bind, 0 for any. Never with SO_REUSEADDR or SO_REUSEPORT:
   * a port that another local user could bind too would let them read every
   * reply, cookie included (pidstat(1), Asking).
   */
  port: number;
  /** The only address it sends to and hears from, if any. */
  peer?: { address: string; port: number };
  receiveQueueBytes: number;
}

export interface ClientSocket {
  readonly port: number;
  /** Sends to address:port, or to the peer when address is undefined; `failed` is called, later, for a datagram not sent. */
  send(datagram: Buffer, address: string | undefined, port: number, failed: (err: NodeJS.ErrnoException) => void): void;
  close(): Promise<void>;
}

export type OpenSocket = (spec: SocketSpec, events: SocketEvents) => Promise<ClientSocket>;

/** The opener for `io`, and which it is; throws for 'batch' where the addon was not built. */
export function socketOpener(io: SocketIo): { open: OpenSocket; io: 'batch' | 'dgram' } {
  const addon = batchAddon(io);
  if (addon === undefined) return { open: openDgram, io: 'dgram' };
  return { open: async (spec, events) => openBatch(addon, spec, events), io: 'batch' };
}

const wildcard = (family: 4 | 6) => (family === 6 ? '::' : '0.0.0.0');

/**
 * A dgram bind() or connect() run to its end: bind() reports failure as an
 * 'error' event, connect() to its callback.
 */
export function dgramStep(socket: dgram.Socket, start: (done: (err?: Error | null) => void) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    start((err) => {
      socket.off('error', reject);
      if (err) reject(err);
      else resolve();
    });
  });
}

async function openDgram(spec: SocketSpec, events: SocketEvents): Promise<ClientSocket> {
  const { createSocket } = createRequire(import.meta.url)('node:dgram') as typeof dgram;
  // Bound and sent to literal addresses only: no look-up.
  const lookup = literalLookup as unknown as dgram.SocketOptions['lookup'];
  const socket = createSocket({ type: spec.family === 6 ? 'udp6' : 'udp4', reuseAddr: false, ipv6Only: spec.family === 6, lookup });
  socket.on('message', (msg, rinfo) => events.message(msg, rinfo.address, rinfo.port));
  try {
    await dgramStep(socket, (done) => socket.bind({ address: wildcard(spec.family), port: spec.port }, done));
    try {
      socket.setRecvBufferSize(spec.receiveQueueBytes);
    } catch {
      // Not allowed here: the default queue still works.
    }
    const { peer } = spec;
    if (peer !== undefined) await dgramStep(socket, (done) => socket.connect(peer.port, peer.address, done));
  } catch (err) {
    socket.close();
    throw err;
  }
  socket.on('error', events.error);
  socket.unref();
  return {
    port: socket.address().port,
    send(datagram, address, port, failed) {
      const sent = (err: Error | null) => err && failed(err);
      if (address === undefined) socket.send(datagram, sent);
      else socket.send(datagram, port, address, sent);
    },
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}

/** One set of batch buffers serves every socket: a batch is handed over whole before another socket is read. */
let batchBuffers: { input: Buffer; meta: Int32Array; sources: Buffer; output: Buffer } | undefined;

function openBatch(addon: LinuxCalls, spec: SocketSpec, events: SocketEvents): ClientSocket {
  const { BATCH, IN_SLOT, OUT_SLOT, ADDRESS_SLOT, META } = addon;
  const buffers = (batchBuffers ??= {
    input: Buffer.alloc(BATCH * IN_SLOT),
    meta: new Int32Array(BATCH * META),
    sources: Buffer.alloc(BATCH * ADDRESS_SLOT),
    output: Buffer.alloc(BATCH * OUT_SLOT),
  });
  const { input, meta, sources } = buffers;
  const fd = addon.open(wildcard(spec.family), spec.port, spec.family === 6, false);
  const onBatch = (count: number, errno: number) => {
    if (errno !== 0) {
      events.error(errnoError(errno, 'recvmmsg'));
      return;
    }
    for (let i = 0; i < count; i++) {
      // meta: [length, source port, source address length, reply length]
      const at = i * META;
      const msg = input.subarray(i * IN_SLOT, i * IN_SLOT + Math.min(meta[at]!, IN_SLOT));
      events.message(msg, sources.toString('latin1', i * ADDRESS_SLOT, i * ADDRESS_SLOT + meta[at + 2]!), meta[at + 1]!);
    }
  };
  // Reading starts first, so that stop() closes fd whatever fails next.
  const reading = addon.start(fd, onBatch, input, meta, sources, buffers.output);
  const close = () => new Promise<void>((resolve) => addon.stop(reading, resolve));
  try {
    addon.setRecvBufferSize(fd, spec.receiveQueueBytes);
    if (spec.peer !== undefined) addon.connect(fd, spec.peer.address, spec.peer.port);
  } catch (err) {
    void close();
    throw err;
  }
  addon.ref(reading, false);
  return {
    port: addon.address(fd)[2],
    send(datagram, address, port, failed) {
      let err: NodeJS.ErrnoException | undefined;
      try {
        const errno = addon.send(fd, datagram, address ?? null, port);
        if (errno !== 0) err = errnoError(errno, 'send');
      } catch (thrown) {
        // An address the addon cannot read: that datagram fails, not the run.
        err = thrown as Error;
      }
      // Later, as dgram's callback: the caller may be mid-way through a send loop.
      if (err !== undefined) process.nextTick(failed, err);
    },
    close,
  };
}
