import { closeSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * The cookie (pidstatd(8), The cookie): 64 unpredictable bits that every request
 * carries in the one field every daemon version echoes, <host>, written
 * `HOST/<16 hex digits>`. A reply counts only if it echoes that exact text,
 * so whoever cannot read the request cannot forge its answer, and one host's
 * daemon cannot answer for another.
 *
 * The bits come from /dev/urandom, read a pool at a time: node:crypto would
 * cost a pidstat run a tenth of its start-up. Where it cannot be read,
 * node:crypto's generator serves instead.
 */

const COOKIE_BYTES = 8;
/** What a cookie adds to a host word: '/' and 16 hex digits. */
export const COOKIE_LENGTH = 1 + COOKIE_BYTES * 2;
const POOL_BYTES = COOKIE_BYTES * 512;

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

function randomBytes8(): Buffer {
  if (pool === undefined || used + COOKIE_BYTES > POOL_BYTES) {
    pool = Buffer.alloc(POOL_BYTES);
    if (!fillFromUrandom(pool)) {
      (createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto')).randomFillSync(pool);
    }
    used = 0;
  }
  used += COOKIE_BYTES;
  return pool.subarray(used - COOKIE_BYTES, used);
}

/** 64 fresh random bits as 16 hex digits: a cookie, or pidwatch's mark of a job. */
export function randomHex64(): string {
  return randomBytes8().toString('hex');
}

/** `host` with a fresh cookie: the <host> field of one target's requests. */
export function withCookie(host: string): string {
  return `${host}/${randomHex64()}`;
}
