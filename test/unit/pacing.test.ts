import assert from 'node:assert/strict';
import { test } from 'node:test';
import { refill, TokenBucket } from '../../src/net/pacing.js';

/** The token bucket (src/net/pacing.ts), on times the test gives. */

test('refill: rate tokens a second, never past the burst', () => {
  assert.equal(refill(0, 0, 500, 10, 100), 5);
  assert.equal(refill(99, 0, 1000, 10, 100), 100);
  assert.equal(refill(-3, 0, 100, 10, 100), -2);
});

test('a bucket is full at first, waits once empty, and pays a debt before it gives again', () => {
  const bucket = new TokenBucket(2, 1000, 0);
  assert.equal(bucket.waitMs(0), 0);
  bucket.take(2);
  assert.equal(bucket.waitMs(0), 1, 'one token every ms');
  assert.equal(bucket.waitMs(1), 0);
  bucket.take(5);
  assert.equal(bucket.waitMs(1), 5, 'a debt of 4 tokens, then one more');
  assert.equal(bucket.waitMs(6), 0);
});
