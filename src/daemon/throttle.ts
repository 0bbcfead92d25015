/**
 * A failure that can repeat with every datagram (a reply the kernel refuses
 * to send) is reported at most once per interval, with a count: the first at
 * once, then one report at the end of each interval that saw more. So a
 * flood of failures never floods the log (pidstatd(8), Logs), and
 * none goes uncounted.
 */
export class ThrottledReport {
  private count = 0;
  private last = '';
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly intervalMs: number,
    private readonly report: (count: number, lastReason: string) => void,
  ) {}

  /** `count` more failures, the last of them for `reason`. */
  add(count: number, reason: string): void {
    this.count += count;
    this.last = reason;
    // Quiet until now: say so at once, and open an interval.
    if (this.timer === undefined) this.tick();
  }

  /** Reports what is still untold, and stops the timer. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.tell();
  }

  private tick(): void {
    if (!this.tell()) {
      this.timer = undefined;
      return;
    }
    this.timer = setTimeout(() => this.tick(), this.intervalMs).unref();
  }

  private tell(): boolean {
    if (this.count === 0) return false;
    const count = this.count;
    this.count = 0;
    this.report(count, this.last);
    return true;
  }
}
