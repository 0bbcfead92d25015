/**
 * Milliseconds on a monotonic clock. process.hrtime is always loaded, while
 * the global `performance` pulls in perf_hooks (some 25 modules) on first
 * use: a cost every pidstat run would pay at start-up.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/**
 * The clock and timers that the daemon's schedules run on (subscriptions.ts,
 * poller.ts, notices.ts): this process's by default, a fake one in their
 * unit tests, which then run a schedule step by step.
 */
export interface Timers {
  /** Milliseconds on a clock that never goes back. */
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Runs `callback` once the event loop has served what is waiting (I/O included). */
  setImmediate(callback: () => void): unknown;
  clearImmediate(handle: unknown): void;
}

/**
 * This process's timers. A timeout keeps no process alive (a daemon lives
 * by its socket); an immediate does, since one that does not is run only
 * when something else wakes the event loop: the next datagram, the next
 * timer, seconds later.
 */
export const processTimers: Timers = {
  now: monotonicMs,
  setTimeout: (callback, ms) => setTimeout(callback, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout | undefined),
  setImmediate: (callback) => setImmediate(callback),
  clearImmediate: (handle) => clearImmediate(handle as NodeJS.Immediate | undefined),
};

/** An instant (epoch ms) as this host's wall-clock time of day, HH:MM:SS, as the watchers print when a host was last heard. */
export function timeOfDay(epochMs: number): string {
  const at = new Date(epochMs);
  return [at.getHours(), at.getMinutes(), at.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}
