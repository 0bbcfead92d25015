import assert from 'node:assert/strict';
import { test } from 'node:test';
import { POLL_BUDGET, POLL_PERIOD_MS, POLL_TICK_MS, startPoller } from '../../src/daemon/poller.js';
import { fakeClock } from '../support/clock.js';

/**
 * The look at processes that no pidfd watches (src/daemon/poller.ts) on a fake
 * clock and a fake probe: each process once per period while they are few;
 * never more than the budget per tick, round robin, when many, and the
 * looks put off counted.
 */

function poller(budget = POLL_BUDGET) {
  const clock = fakeClock();
  const looks = new Map<number, number>();
  const dead = new Set<number>();
  const stats = { pollDeferred: 0 };
  const poll = startPoller({
    alive(pid) {
      looks.set(pid, (looks.get(pid) ?? 0) + 1);
      return !dead.has(pid);
    },
    stats,
    timers: clock.timers,
    budget,
  });
  return { clock, looks, dead, stats, poll, total: () => [...looks.values()].reduce((a, b) => a + b, 0) };
}

test('few processes: each looked at once per period, nothing put off', () => {
  const { clock, looks, stats, poll } = poller();
  for (let pid = 1; pid <= 10; pid++) poll.add(pid, '1', () => assert.fail('no death'));
  clock.advance(10 * POLL_PERIOD_MS);
  assert.deepEqual([...looks.values()], Array(10).fill(10));
  assert.equal(stats.pollDeferred, 0);
  poll.close();
  assert.equal(clock.pending, 0, 'close() left a timer');
});

test('a death is told once, at the next look, and the process is looked at no more', () => {
  const { clock, looks, dead, poll } = poller();
  let deaths = 0;
  poll.add(7, '1', () => deaths++);
  clock.advance(POLL_PERIOD_MS);
  dead.add(7);
  clock.advance(POLL_PERIOD_MS);
  assert.equal(deaths, 1);
  clock.advance(10 * POLL_PERIOD_MS);
  assert.equal(looks.get(7), 2);
  assert.equal(deaths, 1);
  assert.equal(poll.size, 0);
  assert.equal(clock.pending, 0, 'a timer was left with nothing to poll');
});

test('many processes: at most the budget per tick, every one looked at in turn, the looks put off counted', () => {
  const { clock, looks, stats, poll, total } = poller();
  const count = 10 * POLL_BUDGET * (POLL_PERIOD_MS / POLL_TICK_MS);
  for (let pid = 1; pid <= count; pid++) poll.add(pid, '1', () => {});
  let before = 0;
  let worst = 0;
  const turns = clock.advance(20 * POLL_PERIOD_MS, () => {
    worst = Math.max(worst, total() - before);
    before = total();
  });
  assert.ok(worst <= POLL_BUDGET, `one tick looked ${worst} times, over the budget of ${POLL_BUDGET}`);
  const expected = (20 * POLL_PERIOD_MS - POLL_PERIOD_MS) / POLL_TICK_MS + 1;
  assert.ok(turns <= expected + 1, `${turns} ticks in 20 periods`);
  const counts = [...looks.values()];
  assert.equal(looks.size, count, 'a process was never looked at');
  assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `not round robin: ${Math.min(...counts)} to ${Math.max(...counts)} looks each`);
  assert.ok(stats.pollDeferred > total() / 2, `only ${stats.pollDeferred} of ${total()} looks counted as put off`);
  poll.close();
});

test('a watch stopped is looked at no more; stop() twice is harmless', () => {
  const { clock, looks, poll } = poller();
  const watch = poll.add(3, '1', () => assert.fail('no death'));
  poll.add(4, '1', () => {});
  clock.advance(POLL_PERIOD_MS);
  watch.stop();
  watch.stop();
  assert.equal(poll.size, 1);
  clock.advance(5 * POLL_PERIOD_MS);
  assert.equal(looks.get(3), 1);
  assert.equal(looks.get(4), 6);
  poll.close();
});
