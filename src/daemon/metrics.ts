import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, openSync, renameSync, unlinkSync, writeSync, constants } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { ServerStats } from './server.js';
import { describeProblem, systemProblem } from '../sys/problems.js';
import { ThrottledReport } from './throttle.js';

/**
 * The daemon's counters as a file in the Prometheus text exposition format,
 * for node_exporter's textfile collector, which reads every `*.prom` file of
 * its directory at each scrape. A reader must never see half a file: each
 * version is written to a temporary file in the same directory (whose name
 * does not end in .prom, so the collector skips it) and renamed over the
 * last, which is atomic. The collector takes no timestamps, so none is
 * written; a daemon that died shows in its `node_textfile_mtime_seconds`.
 * @see https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
 * @see https://github.com/prometheus/node_exporter#textfile-collector
 */

/** How often the file is written while the daemon runs (and once more at stop). */
export const METRICS_INTERVAL_MS = 15_000;

/** A file that cannot be written is logged at once, then at most this often, with a count. */
const FAILURE_REPORT_MS = 300_000;

/** What each counter counts, for its `# HELP` line; keyed by ServerStats, so a new counter cannot be left out. */
const HELP: Record<keyof ServerStats, string> = {
  received: 'Datagrams received.',
  answered: 'Requests answered.',
  suppressed: 'Valid requests whose flags asked for no reply to their answer.',
  malformed: 'Datagrams that are no valid request, dropped.',
  oversized: 'Datagrams over 1024 bytes, dropped unread.',
  denied: 'Datagrams from a source outside --allow, dropped.',
  limited: 'Requests over the per-source --rate, dropped.',
  reflected: 'Requests refused so that no reply is aimed at another service (source port below 1024, or sent to a broadcast or multicast address).',
  unauthenticated: 'Requests without a valid authenticator, where the daemon has keys, dropped.',
  replyFailed: 'Replies the kernel refused to send.',
  subscribed: 'Subscriptions to a death notice stored (renewals not counted).',
  subscribeRefused: 'Subscriptions refused by a cap, or for a thread id (the subscriber polls instead).',
  notified: 'Deaths told to a subscriber.',
  notifyUnacknowledged: 'Death notices never acknowledged, after every resend.',
  pollDeferred: 'Looks at a subscribed process without a pidfd that the poll budget put off.',
  errors: 'Other socket errors, and bugs met while handling a datagram.',
};

/** What the file says besides the counters. */
export interface MetricsInfo {
  /** When the counters started counting (the server's start), in ms since the epoch. */
  startedAt: number;
  /** Whether the daemon serves: 0 in the file it leaves when it stops. */
  up: boolean;
  /** Labels of the constant `pidstatd_build_info` gauge (version, io). */
  build: Record<string, string>;
  /** Servers its supervisor has restarted (0 in the foreground). */
  restarts?: number;
}

/** `replyFailed` as `pidstatd_reply_failed_total`. */
export function counterName(stat: keyof ServerStats): string {
  return `pidstatd_${stat.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`)}_total`;
}

/** A label value as the format quotes it: backslash, double quote and newline escaped. */
function labelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function metric(name: string, type: 'counter' | 'gauge', help: string, value: number, labels = ''): string {
  return `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name}${labels} ${value}\n`;
}

/** The exposition text: every counter, the start time, up, build info; ends with a newline, as the collector wants. */
export function formatMetrics(stats: ServerStats, info: MetricsInfo): string {
  const counters = (Object.keys(HELP) as (keyof ServerStats)[]).map((stat) => metric(counterName(stat), 'counter', HELP[stat], stats[stat]));
  const labels = Object.entries(info.build).map(([name, value]) => `${name}="${labelValue(value)}"`).join(',');
  return [
    ...counters,
    metric('pidstatd_restarts_total', 'counter', 'Servers the detached daemon\'s supervisor restarted after one died, before this one (0 in the foreground).', info.restarts ?? 0),
    metric('pidstatd_start_time_seconds', 'gauge', 'Unix time at which the daemon started counting.', info.startedAt / 1000),
    metric('pidstatd_up', 'gauge', '1 while the daemon serves; 0 in the file it writes as it stops.', info.up ? 1 : 0),
    metric('pidstatd_build_info', 'gauge', 'The version of pidstatd and how it reads its socket (batch or dgram); always 1.', 1, labels === '' ? '' : `{${labels}}`),
  ].join('');
}

/** Names tried for one write's temporary file before giving up: each is taken only if someone else made it first. */
const TEMPORARY_TRIES = 10;

/**
 * Replaces `file` with `text` at once: written to a temporary file beside it
 * (same file system, so rename is atomic), made readable by the exporter's
 * user whatever the umask, then renamed over it. Throws what fails.
 * The directory may be one other users can write (pidstatd(8),
 * --metrics-file): the temporary name ends in 64 random bits, so no one can
 * make it first and block every write, and it is created with O_EXCL and
 * O_NOFOLLOW, so nothing planted there is ever opened (open(2)).
 */
export function replaceFile(file: string, text: string): void {
  let temporary = '';
  let fd = -1;
  for (let attempt = 1; fd < 0; attempt++) {
    temporary = join(dirname(file), `.${basename(file)}.${randomBytes(8).toString('hex')}.tmp`);
    try {
      fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt === TEMPORARY_TRIES) throw err;
    }
  }
  try {
    try {
      fchmodSync(fd, 0o644);
      const bytes = Buffer.from(text);
      for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, file);
  } catch (err) {
    try {
      unlinkSync(temporary);
    } catch {
      // Gone already.
    }
    throw err;
  }
}

export interface MetricsFile {
  /** Writes the last version (up 0) and stops the timer; safe to call more than once. */
  stop(): void;
}

export interface MetricsFileOptions {
  file: string;
  /** The counters, read at each write. */
  stats: () => ServerStats;
  startedAt: number;
  build: Record<string, string>;
  /** Servers restarted before this one (MetricsInfo.restarts). */
  restarts?: number;
  /** @default METRICS_INTERVAL_MS */
  intervalMs?: number;
  /** Told when the file cannot be written: at once, then at most every 5 minutes with a count. Never throws out. */
  onError: (message: string) => void;
}

/** Writes the file now, every `intervalMs`, and at stop(); a write that fails is reported and the daemon goes on. */
export function startMetricsFile(options: MetricsFileOptions): MetricsFile {
  const failures = new ThrottledReport(FAILURE_REPORT_MS, (count, reason) =>
    options.onError(reason +
      (count > 1 ? ` (${count} times since the last report, reported at most every ${FAILURE_REPORT_MS / 60_000} minutes)` : '')),
  );
  const write = (up: boolean) => {
    try {
      replaceFile(options.file, formatMetrics(options.stats(), { startedAt: options.startedAt, up, build: options.build, ...(options.restarts !== undefined && { restarts: options.restarts }) }));
    } catch (err) {
      failures.add(1, describeProblem(systemProblem(err, `cannot write the metrics file ${options.file}`)));
    }
  };
  write(true);
  const timer = setInterval(() => write(true), options.intervalMs ?? METRICS_INTERVAL_MS).unref();
  let stopped = false;
  return {
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      write(false);
      failures.flush();
    },
  };
}
