import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileLimit } from '../../src/sys/filelimit.js';
import { loadLinuxCalls } from '../../src/sys/native.js';
import { readStartToken } from '../../src/sys/probe.js';
import { startDaemon } from '../support/helpers.js';
import { massSubscriber, subscriptionTo } from '../support/subscriber.js';
import { mb, rssKb } from './lib.js';
import { metOrNot, Unavailable, type Row } from './table.js';

/**
 * Push death notices at scale (doc/protocol.md, Death notices): one client
 * holds 100 000 subscriptions in a real daemon over loopback: one to each
 * of 10 000 processes, and 90 000 more (each with its own cookie) to a
 * process that lives on, the bench's. Then the 10 000 processes are killed
 * at once: rows for the daemon's RSS meanwhile, whether every death was
 * told, and how long after the kernel ended the last of them the last
 * notice came.
 *
 * The processes are forked by Perl (fast, and no exec): its parent kills
 * them all on SIGUSR1 (one kill() each, a few ms in all) and reaps them;
 * on SIGTERM too, so that stopping it by its pid stops them all.
 */

const PROCESSES = 10_000;
const SUBSCRIPTIONS = 100_000;
const RSS_BOUND_MB = 150;
const NOTIFIED_WITHIN_MS = 2000;

const FORKER = `
my @kids;
$SIG{TERM} = $SIG{USR1} = sub { kill 'KILL', @kids; 1 while wait() != -1; exit 0 };
for (1 .. $ARGV[0]) {
  my $pid = fork();
  die "fork: $!" unless defined $pid;
  if ($pid == 0) { $SIG{TERM} = $SIG{USR1} = 'DEFAULT'; sleep 1000 while 1; exit 0 }
  push @kids, $pid;
}
$| = 1;
print join(' ', @kids), "\\n";
sleep 1000 while 1;
`;

function skipReason(): string | undefined {
  if (spawnSync('perl', ['-e', '1']).status !== 0) return 'no perl to fork the processes';
  const { addon, why } = loadLinuxCalls();
  if (addon?.watchExit === undefined) return `the addon (pidfd) is not loaded: ${why ?? 'an older build'}`;
  const limit = fileLimit();
  if (limit === undefined || limit.hard < PROCESSES + 1000) return `open files limited to ${limit?.hard ?? 'unknown'}`;
  return undefined;
}

/** Forks `count` sleeping processes; their pids, and the parent that kills them all. */
async function forkProcesses(count: number): Promise<{ parent: ChildProcess; pids: number[] }> {
  const parent = spawn('perl', ['-e', FORKER, String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  parent.stdout!.setEncoding('utf8');
  const line = await new Promise<string>((resolve, reject) => {
    parent.stdout!.on('data', (chunk: string) => {
      out += chunk;
      if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
    });
    parent.once('exit', (code) => reject(new Error(`the forker exited with ${code}`)));
  });
  return { parent, pids: line.split(' ').map(Number) };
}

export async function massDeaths(): Promise<Row[]> {
  const skip = skipReason();
  if (skip !== undefined) throw new Unavailable(skip);
  const forked = await forkProcesses(PROCESSES);
  const daemon = await startDaemon(['--bind', '127.0.0.1', '--rate', '0', '--max-subscriptions-per-source', String(SUBSCRIPTIONS)]);
  const subscriber = await massSubscriber(daemon.port);
  try {
    const tokenOf = (pid: number) => {
      const start = readStartToken(pid);
      if (start === undefined) throw new Error(`no start token for ${pid}`);
      return start;
    };
    const dying = forked.pids.map((pid) => subscriptionTo(pid, tokenOf(pid)));
    const ownStart = tokenOf(process.pid);
    const subs = [...dying, ...Array.from({ length: SUBSCRIPTIONS - dying.length }, () => subscriptionTo(process.pid, ownStart))];
    const { subscribed, seconds } = await subscriber.subscribeAll(subs, 60_000);
    if (subscribed !== SUBSCRIPTIONS) throw new Error(`only ${subscribed} of ${SUBSCRIPTIONS} subscribed in 60 s`);
    const rss = rssKb(daemon.pid);
    // The kernel takes its time to end 10 000 processes: the last of them is
    // dead once their parent has reaped them all and exited. Each death is
    // told within 2 s of the kill, or, where the kernel itself took longer,
    // of that last death.
    const killedAt = performance.now();
    let reapedAt: number | undefined;
    forked.parent.once('exit', () => (reapedAt = performance.now()));
    forked.parent.kill('SIGUSR1');
    const deadline = killedAt + 30_000;
    while ((subscriber.notified.size < dying.length || reapedAt === undefined) && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    const tookMs = subscriber.lastNoticeAt - killedAt;
    const reapMs = (reapedAt ?? deadline) - killedAt;
    const wronglyTold = [...subscriber.notified].filter((key) => key.startsWith(`${process.pid} `)).length;
    // Within 2 s of the kill, or, where the kernel took longer to end them, within a quarter of that after the last.
    const bound = Math.max(NOTIFIED_WITHIN_MS, reapMs + NOTIFIED_WITHIN_MS / 4);
    return [
      {
        figure: `daemon RSS with ${SUBSCRIPTIONS} subscriptions to ${PROCESSES} + 1 processes (made in ${seconds.toFixed(1)} s)`,
        ours: mb(rss),
        reference: `${RSS_BOUND_MB} MB (goal bound)`,
        ratio: rss / 1024 / RSS_BOUND_MB,
        goal: `< ${RSS_BOUND_MB} MB`,
        met: metOrNot(rss < RSS_BOUND_MB * 1024),
      },
      {
        figure: `${PROCESSES} deaths at once: told, and the living one never told dead`,
        ours: `${subscriber.notified.size} told, ${wronglyTold} wrongly`,
        reference: `${dying.length} deaths (goal bound)`,
        ratio: subscriber.notified.size / dying.length,
        goal: 'all, none wrongly',
        met: metOrNot(subscriber.notified.size === dying.length && wronglyTold === 0),
      },
      {
        figure: `${PROCESSES} deaths at once: the last notice after the kill (the kernel ended the last process ${Math.round(reapMs)} ms after it)`,
        ours: `${Math.round(tookMs)} ms`,
        reference: `${Math.round(bound)} ms (goal bound)`,
        ratio: tookMs / bound,
        goal: `<= ${NOTIFIED_WITHIN_MS} ms, or the kernel's time + ${NOTIFIED_WITHIN_MS / 4} ms`,
        met: metOrNot(tookMs <= bound),
      },
    ];
  } finally {
    subscriber.close();
    if (forked.parent.exitCode === null) {
      const exited = new Promise((resolve) => forked.parent.once('exit', resolve));
      forked.parent.kill('SIGTERM');
      await exited;
    }
    await daemon.stop();
  }
}
