import { readFileSync } from 'node:fs';

/**
 * The daemon's limit on open files. Each process watched for death notices
 * holds a pidfd (subscriptions.ts), so a soft RLIMIT_NOFILE of 1024 would
 * cap them long before --max-subscriptions does. Node raises the soft limit
 * to the hard one as it starts (its PlatformInit), so the daemon has the
 * hard limit, which the service file sets (LimitNOFILE); test/pidstatd/daemon-capacity.test.ts
 * checks that it does. Watches past the limit are made by looking every
 * 100 ms instead: slower, never lost. Read from /proc, as nothing is set.
 */

export interface FileLimit {
  /** Soft and hard limits; Infinity for unlimited. */
  soft: number;
  hard: number;
}

const value = (field: string): number => (field === 'unlimited' ? Infinity : Number(field));

/** This process's RLIMIT_NOFILE, from /proc/self/limits; undefined where it cannot be read. */
export function fileLimit(): FileLimit | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((text) => text.startsWith('Max open files '));
    const [soft, hard] = line?.slice('Max open files '.length).trim().split(/\s+/) ?? [];
    if (soft === undefined || hard === undefined) return undefined;
    return { soft: value(soft), hard: value(hard) };
  } catch {
    return undefined;
  }
}

/** The log line for the limit: how many processes can be watched through a pidfd. */
export function describeFileLimit(limit: FileLimit | undefined): string {
  if (limit === undefined) return 'open files: limit unknown (no /proc/self/limits)';
  const raise = limit.soft < limit.hard ? `; raise it to the hard limit (${limit.hard}) for more` : '';
  return `open files: up to ${limit.soft}, one pidfd per watched process; past that, processes are looked at every 100 ms${raise}`;
}
