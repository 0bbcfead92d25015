/**
 * Milliseconds on a monotonic clock. process.hrtime is always loaded, while
 * the global `performance` pulls in perf_hooks (some 25 modules) on first
 * use: a cost every pidstat run would pay at start-up.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
