import { startDaemon } from '../support/helpers.js';
import { floodUnavailable, forgedFlood } from '../support/forged.js';
import { metOrNot, Unavailable, type Row } from './table.js';

/**
 * A polite client's latency while a million forged sources flood the
 * daemon for ten seconds (test/support/forged.ts): the 95th percentile,
 * against the goal's bound; and the daemon's largest VmRSS meanwhile.
 * test/attacks/flood.alone.test.ts checks, with a shorter flood, that it is
 * answered at all and that the daemon's memory stays bounded.
 */

const GOAL_P95_MS = 50;
const GOAL_RSS_MB = 80;

export async function floodLatency(): Promise<Row[]> {
  const why = floodUnavailable();
  if (why !== undefined) throw new Unavailable(why);
  const daemon = await startDaemon([]);
  try {
    const outcome = await forgedFlood(daemon.port, daemon.pid, 1_000_000, 100_000, 10);
    const sorted = [...outcome.latencies].sort((a, b) => a - b);
    const p95 = sorted[Math.floor(sorted.length * 0.95)] ?? Infinity;
    return [{
      figure: `polite client's p95 latency under a flood from ${outcome.sent} forged sources (${outcome.latencies.length} of ${outcome.asked} answered)`,
      ours: `${p95.toFixed(1)} ms`,
      reference: `${GOAL_P95_MS} ms (goal bound)`,
      ratio: p95 / GOAL_P95_MS,
      goal: `<= ${GOAL_P95_MS} ms`,
      met: metOrNot(p95 <= GOAL_P95_MS),
    }, {
      figure: `daemon's largest VmRSS during that flood (${(outcome.rssBeforeKb / 1024).toFixed(1)} MB before)`,
      ours: `${(outcome.rssMaxKb / 1024).toFixed(1)} MB`,
      reference: `${GOAL_RSS_MB} MB (goal bound)`,
      ratio: outcome.rssMaxKb / 1024 / GOAL_RSS_MB,
      goal: `< ${GOAL_RSS_MB} MB`,
      met: metOrNot(outcome.rssMaxKb / 1024 < GOAL_RSS_MB),
    }];
  } finally {
    await daemon.stop();
  }
}
