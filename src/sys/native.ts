import { createRequire } from 'node:module';
import { join } from 'node:path';
import { getSystemErrorName } from 'node:util';
import { packageRoot } from './paths.js';

/**
 * The optional addon native/linux.c, built as pidstat_linux.node: the Linux
 * system calls the suite needs and Node does not offer, grouped as in its
 * source. It only moves bytes and makes calls; every decision is taken in
 * the TypeScript that calls it. Shipped prebuilt for linux-x64 and
 * linux-arm64, else built at install time where a C compiler and Node's
 * headers are found (scripts/build-native.mjs). Where it does not load,
 * every command still works: sockets are read through Node's dgram (the
 * same answers, more slowly), MACs computed with node:crypto, a process's
 * end found by polling; pidstatd(8), FILES, says what the daemon then
 * goes without.
 */
export interface LinuxCalls {
  // UDP batches: the daemon reads its socket through them, and so does the
  // client, which then never loads dgram (whose first bind loads Node's
  // cluster module: a twentieth of a pidstat run).

  /** Datagrams a batch holds, and the size of each one's slots. */
  readonly BATCH: number;
  readonly IN_SLOT: number;
  readonly OUT_SLOT: number;
  readonly ADDRESS_SLOT: number;
  readonly META: number;
  /** A bound, non-blocking UDP socket; throws an Error with code, errno and syscall, as dgram's bind. */
  open(address: string, port: number, ipv6Only: boolean, reuseAddr?: boolean): number;
  /** Connects fd to address:port; throws as open(). */
  connect(fd: number, address: string, port: number): void;
  /** Sends a datagram to address:port, or to the connected peer for null: 0, or a negative errno. */
  send(fd: number, datagram: Buffer, address: string | null, port: number): number;
  setSendBufferSize(fd: number, bytes: number): void;
  /** Whether reading keeps the event loop alive. */
  ref(handle: unknown, keep: boolean): void;
  /** [address, family, port] of a UDP socket; throws if fd is not one. */
  address(fd: number): [string, 4 | 6, number];
  setRecvBufferSize(fd: number, bytes: number): void;
  /**
   * Reads fd until stop(); see native/linux.c, UDP batches, for the buffers' layout.
   * onBatch(count, 0, 0): count datagrams are in the buffers; (0, errno, 0):
   * a receive error; (0, errno, unsent): unsent replies of the last batch
   * were refused, errno the last reason. With `destinations`, meta also holds
   * what the kernel says of each datagram's destination address.
   */
  start(
    fd: number,
    onBatch: (count: number, errno: number, unsent: number) => void,
    input: Buffer,
    meta: Int32Array,
    address: Buffer,
    output: Buffer,
    destinations?: boolean,
  ): unknown;
  /** Stops reading and closes fd, then calls closed(). */
  stop(handle: unknown, closed: () => void): void;

  // Unix datagram sockets (src/daemon/syslog.ts, src/daemon/notify.ts).

  /** One datagram to a Unix datagram socket ('@name' abstract): 0, or a negative errno; never blocks. Absent from older builds. */
  unixSend?(path: string, datagram: Buffer): number;

  // pidfd exit watches (src/sys/pidref.ts, watchEnd).

  /**
   * Calls onExit once when process `pid` has ended (a zombie included),
   * through a pidfd the event loop polls: a handle, or a negative errno
   * (-ENOSYS before Linux 5.3). Absent from older builds.
   */
  watchExit?(pid: number, onExit: () => void): unknown;
  /** Stops a watchExit before it has called back; never after. */
  unwatchExit?(handle: unknown): void;

  // pidfd signals (src/sys/pidref.ts).

  /** A pidfd of process `pid` (close-on-exec), or a negative errno (-ENOSYS before Linux 5.3). Absent from older builds. */
  pidfdOpen?(pid: number): number;
  /** pidfd_send_signal(2): 0, or a negative errno (-ESRCH once the process the pidfd names has ended). */
  pidfdSignal?(fd: number, signal: number): number;
  pidfdClose?(fd: number): void;

  // HMAC (src/wire/keys.ts).

  /**
   * An HMAC-SHA256 context keyed with `key`, and the MAC with it of
   * data[0, length), into out[0, 32): the OpenSSL of the Node process, found
   * at load time; both absent where there is none (and from older builds).
   */
  hmacKey?(key: Uint8Array): unknown;
  hmacSha256?(context: unknown, data: Uint8Array, length: number, out: Uint8Array): void;
}

/**
 * Where the addon is looked for, first to last: the one prebuilt for this
 * platform, in the layout of prebuildify and node-gyp-build (whose lookup
 * is these few lines: the package would cost more than it gives); then one
 * built at install from the source where none fits (musl, another arch).
 */
export const ADDON_PATHS = [join('prebuilds', `${process.platform}-${process.arch}`, 'pidstat_linux.node'), join('dist', 'native', 'pidstat_linux.node')];

let loaded: { addon?: LinuxCalls; why?: string } | undefined;

/** The addon, or why it cannot be had (none for this platform, or none that loads). */
export function loadLinuxCalls(): { addon?: LinuxCalls; why?: string } {
  if (loaded !== undefined) return loaded;
  const why: string[] = [];
  for (const path of ADDON_PATHS) {
    const file = join(packageRoot(), path);
    try {
      loaded = { addon: createRequire(import.meta.url)(file) as LinuxCalls };
      return loaded;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      why.push(code !== 'MODULE_NOT_FOUND' ? `${file}: ${(err as Error).message}` : path === ADDON_PATHS[0] ? `no ${file}` : `${file} was not built`);
    }
  }
  loaded = { why: why.join('; ') };
  return loaded;
}

/** How sockets are read: 'batch' (the addon), 'dgram', or 'auto': batch where the addon was built. */
export type SocketIo = 'auto' | 'batch' | 'dgram';

/** The addon when `io` asks for batches and it was built; undefined for dgram; throws for 'batch' where it was not built. */
export function batchAddon(io: SocketIo): LinuxCalls | undefined {
  if (io === 'dgram') return undefined;
  const { addon, why } = loadLinuxCalls();
  if (addon === undefined && io === 'batch') throw new Error(`batched I/O is not available: ${why}`);
  return addon;
}

/** An Error for a negative errno, as Node words its own: "send ECONNREFUSED". */
export function errnoError(errno: number, syscall: string): NodeJS.ErrnoException {
  const code = getSystemErrorName(errno);
  return Object.assign(new Error(`${syscall} ${code}`), { code, errno, syscall });
}
