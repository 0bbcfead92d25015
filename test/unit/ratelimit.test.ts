import assert from 'node:assert/strict';
import { test } from 'node:test';
import { halfSipHash13, RateLimiter } from '../../src/daemon/ratelimit.js';

/**
 * The --rate limiter (pidstatd(8)) on a clock of the test's own: a
 * token bucket per source, `rate` a second in bursts of `rate`, in fixed
 * memory whatever the number of sources.
 */

function limiter(rate: number) {
  const clock = { ms: 1000 };
  return { clock, limiter: new RateLimiter(rate, () => clock.ms) };
}

/** How many of `count` requests from `source` are let through now. */
const takes = (l: RateLimiter, source: string, count: number) => Array.from({ length: count }, () => l.take(source)).filter(Boolean).length;

test('a new source gets a burst of `rate`, then `rate` a second', () => {
  const { clock, limiter: l } = limiter(100);
  assert.equal(takes(l, '192.0.2.1', 150), 100, 'the burst');
  clock.ms += 10; // a tenth of a token a millisecond
  assert.equal(takes(l, '192.0.2.1', 5), 1);
  clock.ms += 250;
  assert.equal(takes(l, '192.0.2.1', 50), 25);
  clock.ms += 60_000; // a long pause refills the bucket, no more
  assert.equal(takes(l, '192.0.2.1', 150), 100);
});

test('sources have buckets of their own', () => {
  const { limiter: l } = limiter(10);
  assert.equal(takes(l, '192.0.2.1', 20), 10);
  // Another source is refused only if it shares the first one's bucket (1 in 65536 for each key).
  const others = ['192.0.2.2', '2001:db8::1', '198.51.100.7'].map((source) => takes(l, source, 20));
  assert.ok(others.filter((n) => n === 10).length >= 2, `others still get their burst: ${others}`);
});

test('a million distinct sources cost no memory beyond the buckets', () => {
  const { clock, limiter: l } = limiter(10_000);
  globalThis.gc?.();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 1_000_000; i++) {
    l.take(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    if ((i & 1023) === 0) clock.ms += 1;
  }
  globalThis.gc?.();
  const grown = process.memoryUsage().heapUsed - before;
  // Without gc() exposed, garbage (the source texts) may still count: a loose bound.
  assert.ok(grown < (globalThis.gc ? 1 : 64) * 1024 * 1024, `the heap grew by ${grown} bytes`);
});

test('HalfSipHash-1-3 as the reference C code computes it (halfsiphash.c with cROUNDS 1, dROUNDS 3; key 00..07)', () => {
  const k0 = 0x03020100;
  const k1 = 0x07060504;
  // Every length modulo 4, and addresses as the kernel writes them.
  const cases: [string, number][] = [
    ['', 1477757078],
    ['a', 4217696294],
    ['ab', 657217721],
    ['abc', 3272101945],
    ['abcd', 154581159],
    ['127.0.0.1', 3387835404],
    ['::ffff:127.0.0.1', 1514129587],
    ['fe80::1234:5678', 826659873],
  ];
  for (const [text, hash] of cases) assert.equal(halfSipHash13(text, k0, k1), hash, JSON.stringify(text));
  assert.notEqual(halfSipHash13('127.0.0.1', k0, k1), halfSipHash13('127.0.0.1', k0 ^ 1, k1), 'the key changes the hash');
});
