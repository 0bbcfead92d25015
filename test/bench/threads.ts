import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { INSPECT_PORT_OPTION } from '../../src/daemon/inspector.js';
import { readStartToken } from '../../src/sys/probe.js';
import { sleep, startDaemon } from '../support/helpers.js';
import { massSubscriber, subscriptionTo } from '../support/subscriber.js';
import { NOBODY, startManyThreads } from '../support/threads.js';
import { alternate, median, stopChild } from './lib.js';
import { metOrNot, Unavailable, type Row } from './table.js';
import { udpload, type Tools } from './tools.js';

/**
 * The many-thread attack (README, Faults and abuse): a target of THREADS
 * threads, whose /proc/PID/stat costs the kernel a walk over every thread.
 * Rows: how fast the daemon's start-token read is for it against pid 1
 * (each side timed in turn), the same for /proc/PID/stat (what the task
 * file avoids), and a polite client's answers per second (closed loop,
 * window 1) while one local user asks about the target with its start
 * token PER_SECOND times a second, against the same client without the
 * attack, in turn.
 */

const THREADS = 8000;
const PER_SECOND = 2400;
const FLOODER = fileURLToPath(new URL('../support/flooder.js', import.meta.url));

/** Reads per second of `read` over `ms`. */
function readRate(read: () => unknown, ms: number): number {
  const began = performance.now();
  let reads = 0;
  while (performance.now() - began < ms) {
    read();
    reads++;
  }
  return (reads * 1000) / (performance.now() - began);
}

function ratioRow(figure: string, ours: number, reference: number, unit: string, referenceName: string, goal: number | undefined): Row {
  const ratio = ours / reference;
  return {
    figure,
    ours: `${Math.round(ours)}${unit}`,
    reference: `${Math.round(reference)}${unit} (${referenceName}, same run)`,
    ratio,
    goal: goal === undefined ? 'reported' : `>= ${goal}`,
    met: goal === undefined ? 'n/a' : metOrNot(ratio >= goal),
  };
}

export async function manyThreads(tools: Tools): Promise<Row[]> {
  const target = await startManyThreads(THREADS);
  if ('reason' in target) throw new Unavailable(target.reason);
  try {
    const reads = await alternate(
      async () => readRate(() => readStartToken(target.pid), 300),
      async () => readRate(() => readStartToken(1), 300),
      5,
    );
    const whole = await alternate(
      async () => readRate(() => readFileSync(`/proc/${target.pid}/stat`), 300),
      async () => readRate(() => readFileSync('/proc/1/stat'), 300),
      3,
    );
    const daemon = await startDaemon(['--bind', '127.0.0.1']);
    try {
      const start = readStartToken(target.pid);
      const attack = `PIDR ${target.pid} attack/0123456789abcdef 2 ${start}`;
      const asNobody = process.getuid?.() === 0 ? { uid: NOBODY, gid: NOBODY } : {};
      const attacked = async () => {
        const flooder = spawn(process.execPath, [INSPECT_PORT_OPTION, FLOODER, String(daemon.port), String(PER_SECOND), '5', attack], { stdio: 'ignore', ...asNobody });
        try {
          await sleep(1000);
          return (await udpload(tools, daemon.port, 3, 1, '1')).rate;
        } finally {
          await stopChild(flooder, 'SIGKILL');
        }
      };
      const polite = await alternate(attacked, async () => (await udpload(tools, daemon.port, 3, 1, '1')).rate, 2);
      // Every thread id of the target subscribed to, once, as the attack did:
      // each is refused (no pidfd can watch a thread), so nothing is polled
      // after, where each used to be looked at every 100 ms for as long as
      // it was renewed. The polite client's answers once they are in.
      const tids = readdirSync(`/proc/${target.pid}/task`).map(Number).filter((tid) => tid !== target.pid);
      const subscribedTids = async () => {
        const subscriber = await massSubscriber(daemon.port);
        try {
          const subs = tids.flatMap((tid) => {
            const start = readStartToken(tid);
            return start === undefined ? [] : [subscriptionTo(tid, start)];
          });
          refused = (await subscriber.subscribeAll(subs, 30_000)).refused;
          return (await udpload(tools, daemon.port, 3, 1, '1')).rate;
        } finally {
          subscriber.close();
        }
      };
      let refused = 0;
      const threadSubs = await alternate(subscribedTids, async () => (await udpload(tools, daemon.port, 3, 1, '1')).rate, 2);
      return [
        ratioRow(`start-token read rate, ${THREADS}-thread target / pid 1`, median(reads.a), median(reads.b), '/s', 'pid 1', 0.8),
        ratioRow(`/proc/PID/stat read rate, ${THREADS}-thread target / pid 1 (what the task file avoids)`, median(whole.a), median(whole.b), '/s', 'pid 1', undefined),
        ratioRow(`polite PIDR answers under ${PER_SECOND}/s start-token questions about a ${THREADS}-thread target / without`, median(polite.a), median(polite.b), '/s', 'no attack', 0.9),
        ratioRow(`polite PIDR answers after its ${tids.length} thread ids were subscribed to (${refused} refused in the last round) / without`, median(threadSubs.a), median(threadSubs.b), '/s', 'no attack', 0.9),
      ];
    } finally {
      await daemon.stop();
    }
  } finally {
    await target.stop();
  }
}
