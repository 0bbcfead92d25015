import { randomFillSync } from 'node:crypto';
import { refill } from '../net/pacing.js';

/**
 * The daemon's `--rate`: a token bucket per source address (`rate` requests a
 * second, in bursts of up to `rate`), in fixed memory. Sources share 2^16
 * buckets, picked by a keyed hash of the address, so a flood from millions of
 * forged addresses costs no allocation, no sweep and no growth. The key is
 * drawn at random for each limiter: nobody can choose addresses that land in
 * a victim's bucket. To starve a client by filling every bucket, a forger
 * must send `rate` x 2^16 requests a second. The arithmetic is the client's
 * bucket's (pacing.ts), on two arrays rather than one object per bucket.
 */

export const BUCKETS = 1 << 16;

export class RateLimiter {
  private readonly tokens = new Float64Array(BUCKETS);
  /** When each bucket was last filled; -Infinity: never, so it is full. */
  private readonly filledAt = new Float64Array(BUCKETS).fill(-Infinity);
  private readonly key = randomFillSync(new Uint32Array(2));

  /** `now` gives milliseconds on a clock that never goes back. */
  constructor(
    private readonly rate: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(rate > 0)) throw new RangeError(`a rate limit must be above 0, not ${rate}`);
  }

  /** Whether `source` may have one more request answered now; takes its token if so. */
  take(source: string): boolean {
    const i = halfSipHash13(source, this.key[0]!, this.key[1]!) & (BUCKETS - 1);
    const now = this.now();
    const tokens = refill(this.tokens[i]!, this.filledAt[i]!, now, this.rate, this.rate);
    this.filledAt[i] = now;
    if (tokens < 1) {
      this.tokens[i] = tokens;
      return false;
    }
    this.tokens[i] = tokens - 1;
    return true;
  }
}

/**
 * HalfSipHash-1-3 of a text's character codes (latin1: addresses are ASCII)
 * under a 64-bit key, as 32 bits: SipHash's variant for 32-bit words, made
 * for hash tables keyed against flooding, and cheap in JavaScript's int32.
 * @see https://github.com/veorq/SipHash (halfsiphash.c)
 */
export function halfSipHash13(text: string, k0: number, k1: number): number {
  let v0 = k0 | 0;
  let v1 = k1 | 0;
  let v2 = 0x6c796765 ^ k0;
  let v3 = 0x74656462 ^ k1;
  const length = text.length;
  const whole = length - (length & 3);
  let i = 0;
  for (; i <= whole; i += 4) {
    let m: number;
    if (i < whole) {
      m = text.charCodeAt(i) | (text.charCodeAt(i + 1) << 8) | (text.charCodeAt(i + 2) << 16) | (text.charCodeAt(i + 3) << 24);
    } else {
      // The last word: the length in its top byte, the 0 to 3 bytes left below.
      m = (length & 0xff) << 24;
      const left = length & 3;
      if (left > 2) m |= text.charCodeAt(i + 2) << 16;
      if (left > 1) m |= text.charCodeAt(i + 1) << 8;
      if (left > 0) m |= text.charCodeAt(i);
    }
    v3 ^= m;
    // One SIPROUND.
    v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16);
    v0 ^= m;
  }
  v2 ^= 0xff;
  for (let round = 0; round < 3; round++) {
    v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16);
  }
  return (v1 ^ v3) >>> 0;
}
