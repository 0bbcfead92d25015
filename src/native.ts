import { createRequire } from 'node:module';
import { join } from 'node:path';
import { packageRoot } from './paths.js';

/**
 * The optional addon native/udpbatch.c: batched datagram I/O (recvmmsg and
 * sendmmsg) for the daemon, built at install time where a C compiler and
 * Node's headers are found (scripts/build-native.mjs). Without it the daemon
 * reads its socket through Node's dgram, answering the same, more slowly.
 */
export interface UdpBatch {
  /** Datagrams a batch holds, and the size of each one's slots. */
  readonly BATCH: number;
  readonly IN_SLOT: number;
  readonly OUT_SLOT: number;
  readonly ADDRESS_SLOT: number;
  readonly META: number;
  /** A bound, non-blocking UDP socket; throws an Error with code, errno and syscall, as dgram's bind. */
  open(address: string, port: number, ipv6Only: boolean): number;
  /** [address, family, port] of a UDP socket; throws if fd is not one. */
  address(fd: number): [string, 4 | 6, number];
  setRecvBufferSize(fd: number, bytes: number): void;
  /** Reads fd until stop(); see native/udpbatch.c for the buffers' layout. */
  start(
    fd: number,
    onBatch: (count: number, errno: number) => void,
    input: Buffer,
    meta: Int32Array,
    address: Buffer,
    output: Buffer,
  ): unknown;
  /** Stops reading and closes fd, then calls closed(). */
  stop(handle: unknown, closed: () => void): void;
}

/** The file the build writes, beside dist/src and dist/bundle. */
export const ADDON_PATH = join('dist', 'native', 'udpbatch.node');

let loaded: { addon?: UdpBatch; why?: string } | undefined;

/** The addon, or why it cannot be had (not built, or built for another Node). */
export function loadUdpBatch(): { addon?: UdpBatch; why?: string } {
  if (loaded !== undefined) return loaded;
  const file = join(packageRoot(), ADDON_PATH);
  try {
    loaded = { addon: createRequire(import.meta.url)(file) as UdpBatch };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    loaded = { why: code === 'MODULE_NOT_FOUND' ? `${file} was not built` : `${file}: ${(err as Error).message}` };
  }
  return loaded;
}
