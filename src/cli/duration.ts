import { CommandError } from './errors.js';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** The longest a timer can wait. */
const MAX_DURATION_MS = 2_147_483_647;

export interface DurationRules {
  /** 0 is a duration (a threshold): otherwise a duration is more than 0. */
  zero?: boolean;
  /**
   * The option took a bare number as ms before 0.2.0: a bare number now
   * would be read 1000 times longer, so one is refused, with the spellings
   * that say either.
   */
  unitRequired?: boolean;
}

/**
 * A duration in ms, the one way the suite reads one (pidstat(1), DURATIONS):
 * a number with a unit, `500ms`, `2s`, `1.5m`, `10m`, `2h`, `1d`, or a bare
 * number of seconds (`30`, `0.5`), as coreutils' timeout, pwait's -t and the
 * monitoring plugins' -t, -w and -c read one.
 */
export function parseDuration(text: string, what: string, rules: DurationRules = {}): number {
  const match = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h|d)?$/.exec(text);
  if (match && match[2] === undefined && rules.unitRequired) {
    throw new CommandError(`${what} ${text} needs a unit: ${text}ms or ${text}s (a bare number was ms before 0.2.0, and would be seconds now)`);
  }
  const ms = match ? Number(match[1]) * DURATION_UNITS[match[2] ?? 's']! : NaN;
  if (!(ms > 0 || (rules.zero && ms === 0)) || ms > MAX_DURATION_MS) {
    throw new CommandError(`${what} must be a duration${rules.zero ? '' : ' of more than 0'} and at most 24 days, like 30 (seconds), 0.5, 500ms, 10m or 2h, not '${text}'`);
  }
  return ms === 0 ? 0 : Math.max(1, Math.round(ms));
}

/** For the options that took a bare number as ms before 0.2.0: --interval, --dead-after, --kill-after. */
export const UNIT_NEEDED: DurationRules = { unitRequired: true };
