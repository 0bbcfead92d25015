import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDuration, UNIT_NEEDED } from '../../src/cli/duration.js';
import { CommandError } from '../../src/cli/errors.js';

/** The one duration reader (src/cli/duration.ts): a bare number is seconds, wherever one is taken. */

test('a bare number is seconds; a unit says otherwise', () => {
  assert.equal(parseDuration('30', '-t'), 30_000);
  assert.equal(parseDuration('0.5', '-t'), 500);
  assert.equal(parseDuration('.25', '-t'), 250);
  assert.equal(parseDuration('500ms', '-t'), 500);
  assert.equal(parseDuration('2s', '-t'), 2000);
  assert.equal(parseDuration('1.5m', '-t'), 90_000);
  assert.equal(parseDuration('2h', '-t'), 7_200_000);
  assert.equal(parseDuration('1d', '-t'), 86_400_000);
  assert.equal(parseDuration('0.0001', '-t'), 1, 'more than 0 is at least 1 ms');
});

test('0, words, signs and more than a timer can wait are refused, naming the option and the value', () => {
  for (const bad of ['0', '0ms', '', 'soon', '-5', '5x', '1e3', '25d']) {
    assert.throws(() => parseDuration(bad, '--try-timeout'), (err: unknown) => err instanceof CommandError && err.message.startsWith('--try-timeout must be a duration') && err.message.includes(`'${bad}'`), bad);
  }
  assert.equal(parseDuration('0', '--warning', { zero: true }), 0, 'a threshold may be 0');
});

test('an option that took bare ms before needs a unit, and the message gives both spellings', () => {
  assert.throws(() => parseDuration('200', '--interval', UNIT_NEEDED), (err: unknown) => err instanceof CommandError && /^--interval 200 needs a unit: 200ms or 200s/.test(err.message));
  assert.equal(parseDuration('200ms', '--interval', UNIT_NEEDED), 200);
  assert.equal(parseDuration('2s', '--interval', UNIT_NEEDED), 2000);
});
