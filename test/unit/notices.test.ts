import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RESEND_MS, SLICE_SENDS, startNotices, type Outgoing } from '../../src/daemon/notices.js';
import { fakeClock } from '../support/clock.js';

/**
 * The fan-out of death notices (src/daemon/notices.ts) on a fake clock: a death
 * with 100 000 subscribers goes out in slices, never more than SLICE_SENDS
 * sends in one turn of the event loop; every subscriber gets its first
 * notice; an acknowledged one is sent no more; an unacknowledged one gets
 * exactly the schedule's copies, at the schedule's times, and is counted
 * as given up on.
 */

const SUBSCRIBERS = 100_000;

function* subscribers(count: number, prefix = 's'): Generator<Outgoing | undefined> {
  for (let i = 0; i < count; i++) yield { key: `${prefix}${i}`, line: `NOTE ${i}`, address: '127.0.0.1', port: 1024 + (i % 60_000) };
}

function fanOut() {
  const clock = fakeClock();
  const sent: { line: string; at: number }[] = [];
  const stats = { notified: 0, notifyUnacknowledged: 0 };
  const notices = startNotices({ send: (line) => sent.push({ line, at: clock.now }), stats, timers: clock.timers });
  return { clock, sent, stats, notices };
}

test(`a death with ${SUBSCRIBERS} subscribers: slices of ${SLICE_SENDS} sends at most; first notices to all; the acknowledged sent no more, the others the schedule's copies, then counted`, () => {
  const { clock, sent, stats, notices } = fanOut();
  notices.add(subscribers(SUBSCRIBERS));
  assert.equal(sent.length, 0, 'notices were sent in the turn that told of the death');
  // Every other subscriber acknowledges its first copy at once.
  const acknowledged = (line: string) => Number(line.slice(5)) % 2 === 0;
  let seen = 0;
  let largest = 0;
  clock.advance(60_000, () => {
    largest = Math.max(largest, sent.length - seen);
    for (const { line } of sent.slice(seen)) if (acknowledged(line)) notices.acknowledge(`s${line.slice(5)}`);
    seen = sent.length;
  });
  assert.ok(largest <= SLICE_SENDS, `one turn sent ${largest} notices`);
  const copies = new Map<string, number[]>();
  for (const { line, at } of sent) copies.set(line, [...(copies.get(line) ?? []), at]);
  assert.equal(copies.size, SUBSCRIBERS, 'a subscriber got no notice');
  assert.equal(stats.notified, SUBSCRIBERS);
  for (const [line, times] of copies) {
    if (acknowledged(line)) {
      assert.equal(times.length, 1, `${line} was sent again after its acknowledgement`);
      continue;
    }
    assert.equal(times.length, RESEND_MS.length + 1, `${line}: ${times.length} copies`);
    // Each wait at least the schedule's (a slice can only come later).
    times.slice(1).forEach((at, i) => assert.ok(at - times[i]! >= RESEND_MS[i]!, `${line}: copy ${i + 2} after ${at - times[i]!} ms`));
  }
  assert.equal(stats.notifyUnacknowledged, SUBSCRIBERS / 2);
  assert.equal(notices.waiting, 0);
  assert.equal(clock.pending, 0, 'a timer or an immediate was left with nothing to send');
});

test('one subscriber, never acknowledging: the copies at 0, 20, 60, 140, 300, 620, 1260 and 2540 ms, given up on at 3820 ms', () => {
  const { clock, sent, stats, notices } = fanOut();
  notices.add(subscribers(1));
  clock.advance(3819);
  assert.deepEqual(sent.map(({ at }) => at), [0, 20, 60, 140, 300, 620, 1260, 2540]);
  assert.equal(stats.notifyUnacknowledged, 0);
  clock.advance(1);
  assert.equal(stats.notifyUnacknowledged, 1);
});

test('a later death goes out before resends due after it; a notice with no line is skipped', () => {
  const { clock, sent, notices } = fanOut();
  notices.add(subscribers(1, 'a'));
  clock.advance(10);
  notices.add([undefined, { key: 'b', line: 'later', address: '127.0.0.1', port: 2000 }][Symbol.iterator]());
  clock.advance(15);
  assert.deepEqual(sent.map(({ line, at }) => `${line}@${at}`), ['NOTE 0@0', 'later@10', 'NOTE 0@20']);
});

test('close() drops every notice and timer', () => {
  const { clock, sent, notices } = fanOut();
  notices.add(subscribers(1000));
  clock.advance(0);
  const count = sent.length;
  notices.close();
  notices.close();
  notices.add(subscribers(10));
  assert.equal(clock.pending, 0);
  clock.advance(10_000);
  assert.equal(sent.length, count);
  assert.equal(notices.waiting, 0);
});
