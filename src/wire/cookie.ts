import { randomHex64 } from '../sys/random.js';

/**
 * The cookie (pidstatd(8), The cookie): 64 unpredictable bits that every request
 * carries in the one field every daemon version echoes, <host>, written
 * `HOST/<16 hex digits>`. A reply counts only if it echoes that exact text,
 * so whoever cannot read the request cannot forge its answer, and one host's
 * daemon cannot answer for another.
 */

/** What a cookie adds to a host word: '/' and 16 hex digits. */
export const COOKIE_LENGTH = 1 + 16;

/** `host` with a fresh cookie: the <host> field of one target's requests. */
export function withCookie(host: string): string {
  return `${host}/${randomHex64()}`;
}
