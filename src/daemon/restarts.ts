/**
 * How long a supervisor waits before it starts another server (pidstatd(8),
 * DESCRIPTION): the first wait is well inside the 2 s promised, so that a
 * server that dies once is answering again within 2 s; a server that keeps
 * dying (a port another process took, a broken configuration) waits twice as
 * long each time, up to a minute, so that it does not spin; and one that
 * stayed up `stableMs` had recovered, so its next wait is the first again.
 */
export interface RestartPaceOptions {
  readonly firstMs: number;
  readonly maxMs: number;
  readonly stableMs: number;
}

export const RESTART_PACE: RestartPaceOptions = { firstMs: 500, maxMs: 60_000, stableMs: 60_000 };

export class RestartPace {
  #next: number;

  constructor(private readonly options: RestartPaceOptions = RESTART_PACE) {
    this.#next = options.firstMs;
  }

  /** A server that ran `upMs` has died: how long to wait before the next. */
  afterDeath(upMs: number): number {
    if (upMs >= this.options.stableMs) this.#next = this.options.firstMs;
    const wait = this.#next;
    this.#next = Math.min(wait * 2, this.options.maxMs);
    return wait;
  }
}
