import { closeSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * The suite's random numbers: 64 unpredictable bits at a time, for a
 * request's cookie (cookie.ts), pidwatch's mark of a job and a daemon's
 * ticket secret. They come from /dev/urandom, read a pool at a time:
 * node:crypto would cost a pidstat run a tenth of its start-up. Where it
 * cannot be read, node:crypto's generator serves instead.
 */

const BYTES = 8;
const POOL_BYTES = BYTES * 512;

let pool: Buffer | undefined;
let used = POOL_BYTES;

function fillFromUrandom(buf: Buffer): boolean {
  let fd: number | undefined;
  try {
    fd = openSync('/dev/urandom', 'r');
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, null);
      if (n <= 0) return false;
      got += n;
    }
    return true;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function random64(): Buffer {
  if (pool === undefined || used + BYTES > POOL_BYTES) {
    pool = Buffer.alloc(POOL_BYTES);
    if (!fillFromUrandom(pool)) {
      (createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto')).randomFillSync(pool);
    }
    used = 0;
  }
  used += BYTES;
  return pool.subarray(used - BYTES, used);
}

/** 64 fresh random bits as 16 hex digits. */
export function randomHex64(): string {
  return random64().toString('hex');
}
