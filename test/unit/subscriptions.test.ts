import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { test } from 'node:test';
import { NO_TICKET, type PushMessage } from '../../src/wire/pushwire.js';
import { startSubscriptions, type SubscriptionProbe, type SubscriptionStats } from '../../src/daemon/subscriptions.js';
import { fakeClock } from '../support/clock.js';

/**
 * The daemon's subscriptions (src/daemon/subscriptions.ts) with a fake kernel and
 * clock: a thread id is refused, counted and logged, and never watched;
 * pidfd_open's refusal of a pid is a refusal, never a poll; a process that
 * no pidfd watches is polled; the cap per source counts networks.
 */

function daemon(probe: Partial<SubscriptionProbe>, options: { maxPerSource?: number } = {}) {
  const clock = fakeClock();
  const stats: SubscriptionStats = { subscribed: 0, subscribeRefused: 0, notified: 0, notifyUnacknowledged: 0, pollDeferred: 0 };
  const sent: string[] = [];
  const logged: string[] = [];
  const subs = startSubscriptions({
    send: (line, address, port) => sent.push(`${address}:${port} ${line}`),
    onLog: (text) => logged.push(text),
    stats,
    timers: clock.timers,
    probe: { alive: () => true, isThreadGroupLeader: () => true, watchEnd: () => () => {}, ...probe },
    ...options,
  });
  /** The SUBR state for `pid` from address:port, after the ticket's round trip. */
  const subscribe = (pid: number, address = '127.0.0.1', port = 40000) => {
    const message = (ticket: string): PushMessage => ({ kind: 'SUBS', pid, host: `h${pid}`, start: '100', ticket });
    const challenge = subs.handle(message(NO_TICKET), address, port, undefined, undefined, 1752)!;
    return subs.handle(message(challenge.split(' ')[3]!), address, port, undefined, undefined, 1752)!.split(' ')[3];
  };
  return { clock, stats, sent, logged, subs, subscribe };
}

test('a thread id is refused (the client polls), counted and logged with why, and never watched', () => {
  const watches: number[] = [];
  const looks: number[] = [];
  const { stats, logged, subs, subscribe, clock } = daemon({
    isThreadGroupLeader: (pid) => pid !== 4243,
    alive: (pid) => (looks.push(pid), true),
    watchEnd: ({ pid }) => (watches.push(pid), () => {}),
  });
  assert.equal(subscribe(4243), '-');
  assert.equal(stats.subscribeRefused, 1);
  assert.equal(subs.size, 0);
  assert.match(logged.join('\n'), /subscriptions refused: 1 since the last report, the last for 4243, a thread and not a process/);
  assert.equal(subscribe(4242), '1', 'the process itself was refused');
  assert.deepEqual(watches, [4242]);
  looks.length = 0;
  clock.advance(10_000);
  assert.deepEqual(looks, [], 'something was polled');
  subs.close();
});

for (const errno of ['EINVAL', 'ENOENT', 'ESRCH'] as const) {
  test(`a pid that pidfd_open refuses with ${errno} (no process: a thread, or gone) is refused, kept nowhere and never polled`, () => {
    const looks: number[] = [];
    const { stats, subs, subscribe, clock } = daemon({
      isThreadGroupLeader: () => undefined, // cannot tell
      alive: (pid) => (looks.push(pid), true),
      watchEnd: () => -constants.errno[errno],
    });
    assert.equal(subscribe(4243), '-');
    assert.equal(stats.subscribeRefused, 1);
    assert.equal(stats.subscribed, 0);
    assert.equal(subs.size, 0);
    looks.length = 0;
    clock.advance(10_000);
    assert.deepEqual(looks, [], 'a refused pid was polled');
    subs.close();
  });
}

test('a pidfd_open that fails for want of descriptors (EMFILE) or of the call (ENOSYS): the process is polled', () => {
  for (const errno of ['EMFILE', 'ENOSYS'] as const) {
    const looks: number[] = [];
    const { subs, subscribe, clock } = daemon({ alive: (pid) => (looks.push(pid), true), watchEnd: () => -constants.errno[errno] });
    assert.equal(subscribe(4242), '1', errno);
    clock.advance(1000);
    assert.ok(looks.length >= 10, `${errno}: looked at ${looks.length} times in 1 s`);
    subs.close();
  }
});

test('where no pidfd can be had, the process is polled, and its death told', () => {
  let dead = false;
  const { stats, sent, subs, subscribe, clock } = daemon({ alive: () => !dead, watchEnd: () => undefined });
  assert.equal(subscribe(4242), '1');
  clock.advance(1000);
  dead = true;
  clock.advance(200);
  assert.match(sent[0] ?? '', /^127\.0\.0\.1:40000 NOTE 4242 h4242 100 1$/);
  assert.equal(stats.notified, 1);
  assert.equal(subs.size, 0);
  subs.close();
  assert.equal(clock.pending, 0, 'close() left a timer');
});

test('the cap per source counts 127.0.0.0/8 as one source, and other IPv4 addresses each as its own', () => {
  const { stats, subs, subscribe } = daemon({}, { maxPerSource: 2 });
  const loopback = Array.from({ length: 4 }, (_, i) => subscribe(4000 + i, `127.0.0.${i + 2}`));
  assert.deepEqual(loopback, ['1', '1', '-', '-']);
  const others = Array.from({ length: 4 }, (_, i) => subscribe(5000 + i, `192.0.2.${i + 1}`));
  assert.deepEqual(others, ['1', '1', '1', '1']);
  assert.equal(stats.subscribeRefused, 2);
  subs.close();
});

test('close() clears every subscription, watch, notice and timer', () => {
  const stops: number[] = [];
  let dead = false;
  const { subs, subscribe, clock, sent } = daemon({ alive: (pid) => !(dead && pid === 1), watchEnd: ({ pid }) => (pid === 1 ? undefined : () => stops.push(pid)) });
  for (let pid = 1; pid <= 3; pid++) subscribe(pid);
  dead = true;
  clock.advance(105);
  assert.equal(sent.length, 1, 'the death of the polled process was not told');
  subs.close();
  subs.close();
  assert.deepEqual(stops.sort(), [2, 3]);
  assert.equal(subs.size, 0);
  assert.equal(clock.pending, 0);
  clock.advance(10_000);
  assert.equal(sent.length, 1, 'a notice was sent again after close()');
});
