import type { Timers } from '../../src/sys/time.js';

/**
 * A fake clock and its timers (src/sys/time.ts, Timers) for the daemon's
 * schedules: nothing runs until the test says, and each callback run is one
 * turn of a pretend event loop, so a test can see what one turn did.
 */
export interface FakeClock {
  timers: Timers;
  /** The clock, in ms. */
  readonly now: number;
  /** Callbacks waiting: immediates and timers. */
  readonly pending: number;
  /**
   * Runs turns until the clock reaches now + `ms`: every immediate first
   * (in order), then the earliest timer due, the clock set to its time;
   * `afterTurn` is called after each. Returns the turns run.
   */
  advance(ms: number, afterTurn?: () => void): number;
}

export function fakeClock(): FakeClock {
  let now = 0;
  let nextId = 1;
  const immediates = new Map<number, () => void>();
  const timeouts = new Map<number, { at: number; callback: () => void }>();
  const timers: Timers = {
    now: () => now,
    setTimeout(callback, ms) {
      const id = nextId++;
      timeouts.set(id, { at: now + Math.max(0, ms), callback });
      return id;
    },
    clearTimeout: (handle) => void timeouts.delete(handle as number),
    setImmediate(callback) {
      const id = nextId++;
      immediates.set(id, callback);
      return id;
    },
    clearImmediate: (handle) => void immediates.delete(handle as number),
  };
  return {
    timers,
    get now() {
      return now;
    },
    get pending() {
      return immediates.size + timeouts.size;
    },
    advance(ms, afterTurn) {
      const until = now + ms;
      let turns = 0;
      for (;;) {
        const [id, callback] = immediates.entries().next().value ?? [];
        if (id !== undefined) {
          immediates.delete(id);
          callback!();
        } else {
          let first: [number, { at: number; callback: () => void }] | undefined;
          for (const entry of timeouts) if (entry[1].at <= until && (first === undefined || entry[1].at < first[1].at)) first = entry;
          if (first === undefined) break;
          timeouts.delete(first[0]);
          now = first[1].at;
          first[1].callback();
        }
        turns++;
        afterTurn?.();
      }
      now = until;
      return turns;
    },
  };
}
