import { readStartToken } from '../../src/sys/probe.js';
import { sleep, startDaemon } from '../support/helpers.js';
import { massSubscriber, subscriptionTo } from '../support/subscriber.js';
import { mb, rssKb } from './lib.js';
import { metOrNot, type Row } from './table.js';

/**
 * What subscriptions to death notices cost the daemon: its RSS before and
 * after one client subscribes 100 000 times (each with a cookie of its own)
 * to a process that lives on, the bench's own; the growth per subscription.
 */

const SUBSCRIPTIONS = 100_000;
const BOUND_MB = 150;

export async function subscriptionMemory(): Promise<Row[]> {
  const daemon = await startDaemon(['--bind', '127.0.0.1', '--rate', '0', '--max-subscriptions-per-source', String(SUBSCRIPTIONS)]);
  const subscriber = await massSubscriber(daemon.port);
  try {
    await sleep(1000);
    const idleKb = rssKb(daemon.pid);
    const start = readStartToken(process.pid);
    if (start === undefined) throw new Error('cannot read this process\'s start token');
    const subs = Array.from({ length: SUBSCRIPTIONS }, () => subscriptionTo(process.pid, start));
    const { subscribed, seconds } = await subscriber.subscribeAll(subs, 60_000);
    if (subscribed !== SUBSCRIPTIONS) throw new Error(`only ${subscribed} of ${SUBSCRIPTIONS} subscribed in 60 s`);
    const fullKb = rssKb(daemon.pid);
    const perSubscription = ((fullKb - idleKb) * 1024) / SUBSCRIPTIONS;
    return [
      {
        figure: `daemon RSS with ${SUBSCRIPTIONS} subscriptions (made in ${seconds.toFixed(1)} s)`,
        ours: mb(fullKb),
        reference: `${BOUND_MB} MB (goal bound); ${mb(idleKb)} idle`,
        ratio: fullKb / 1024 / BOUND_MB,
        goal: `< ${BOUND_MB} MB`,
        met: metOrNot(fullKb < BOUND_MB * 1024),
      },
      {
        figure: 'daemon memory per subscription (RSS growth / subscriptions)',
        ours: `${Math.round(perSubscription)} bytes`,
        reference: `${mb(idleKb)} idle RSS (baseline)`,
        ratio: undefined,
        goal: 'reported',
        met: 'n/a',
      },
    ];
  } finally {
    subscriber.close();
    await daemon.stop();
  }
}
