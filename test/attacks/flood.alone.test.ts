import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PidStatClient } from '../../src/client/client.js';
import { BUCKETS } from '../../src/daemon/ratelimit.js';
import { startDaemon } from '../support/helpers.js';
import { floodUnavailable, forgedFlood } from '../support/forged.js';

/**
 * A flood from forged source addresses, each new (pidstatd(8), --rate):
 * the daemon's memory stays bounded whatever the number of sources (its
 * 65 536 buckets are fixed: the flood is 300 000 sources, and at least
 * twice as many as there are buckets however busy the machine is), and it
 * still answers a polite client. The flood is paced at about half of what
 * the daemon reads on a 2-core machine. Run alone: it keeps a core
 * busy while it lasts. A million sources in ten seconds, and how fast the
 * polite client is answered meanwhile, are the bench's 'forged-source
 * flood' figures.
 */

const SOURCES = 300_000;
const FLOOD_RATE = 100_000;
const FLOOD_SECONDS = 3;
const RSS_BOUND_KB = 80 * 1024;

test(`a flood from ${SOURCES} forged sources: VmRSS stays under ${RSS_BOUND_KB / 1024} MB, and a polite client is still answered`, { timeout: 60_000 }, async (t) => {
  const why = floodUnavailable();
  if (why !== undefined) return t.skip(why);
  const daemon = await startDaemon([]);
  t.after(() => daemon.stop());
  const outcome = await forgedFlood(daemon.port, daemon.pid, SOURCES, FLOOD_RATE, FLOOD_SECONDS);
  const sorted = [...outcome.latencies].sort((a, b) => a - b);
  t.diagnostic(`flood: ${outcome.sent} datagrams from as many sources in ${outcome.seconds} s`);
  t.diagnostic(`daemon VmRSS ${outcome.rssBeforeKb} kB before, at most ${outcome.rssMaxKb} kB during the flood`);
  t.diagnostic(`polite: ${outcome.asked} asked, ${outcome.latencies.length} answered; median ${sorted[sorted.length >> 1]?.toFixed(2)} ms, max ${sorted.at(-1)?.toFixed(1)} ms`);
  // However busy the machine, a flood that outnumbers the buckets: how many it sends in its time is the machine's.
  assert.ok(outcome.sent > 2 * BUCKETS, `a flood of ${outcome.sent} sources, not more than twice the ${BUCKETS} buckets`);
  assert.ok(outcome.rssMaxKb < RSS_BOUND_KB, `VmRSS reached ${outcome.rssMaxKb} kB`);
  // Answered through it (how many and how fast depends on the cores the
  // machine has left for the daemon: the bench's figure), and after it.
  assert.ok(outcome.latencies.length > 0, `none of ${outcome.asked} polite requests answered`);
  const client = new PidStatClient({ port: daemon.port, local: false, timeoutMs: 1000, tries: 5 });
  try {
    assert.equal((await client.query({ host: '127.0.0.1', pid: 1 })).state, 'exists', 'the daemon answers once the flood is over');
  } finally {
    await client.close();
  }
});
