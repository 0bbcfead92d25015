import { parseDuration } from './duration.js';
import { CommandError, ExitCode } from './errors.js';

/**
 * What a monitoring plugin prints, as Nagios and Icinga read it: one line on
 * stdout, `SERVICE STATUS - text|perfdata`, and the status as the exit code
 * (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, usage errors included). The
 * performance data is `'label'=value[UOM];[warn];[crit];[min];[max]`: a field
 * with nothing to say (no threshold given) stays empty, and trailing empty
 * ones may be left out. The check itself is pidstat ping's (pidstat.ts).
 * @see https://www.monitoring-plugins.org/doc/guidelines.html#AEN200
 */

export type PluginStatus = 'OK' | 'WARNING' | 'CRITICAL' | 'UNKNOWN';

export const PLUGIN_EXIT: Readonly<Record<PluginStatus, number>> = {
  OK: ExitCode.PLUGIN_OK,
  WARNING: ExitCode.PLUGIN_WARNING,
  CRITICAL: ExitCode.PLUGIN_CRITICAL,
  UNKNOWN: ExitCode.PLUGIN_UNKNOWN,
};

/** Response times over which a check warns or is critical, in seconds. */
export interface Thresholds {
  warning?: number;
  critical?: number;
}

/**
 * A threshold in seconds from `-w`/`-c`, read as every duration is
 * (duration.ts: a bare number is seconds, `500ms` too), 0 included. A
 * number N is the guidelines' range 0..N: the check alerts above it, which
 * is all a response time needs.
 */
function thresholdSeconds(text: string, option: string): number {
  return parseDuration(text, option, { zero: true }) / 1000;
}

/**
 * Both thresholds, checked together: a warning above the critical threshold
 * could never be reported (critical wins), so it is taken for swapped values
 * and refused rather than silently ignored.
 */
export function parseThresholds(warning: string | undefined, critical: string | undefined): Thresholds {
  const thresholds: Thresholds = {};
  if (warning !== undefined) thresholds.warning = thresholdSeconds(warning, '--warning');
  if (critical !== undefined) thresholds.critical = thresholdSeconds(critical, '--critical');
  if (thresholds.warning !== undefined && thresholds.critical !== undefined && thresholds.warning > thresholds.critical) {
    throw new CommandError(`--warning ${warning} is over --critical ${critical}: a warning must come before the critical threshold`, ExitCode.PLUGIN_UNKNOWN);
  }
  return thresholds;
}

/** The status of a response that took `seconds`: critical first, then warning. */
export function statusOf(seconds: number, thresholds: Thresholds): PluginStatus {
  if (thresholds.critical !== undefined && seconds > thresholds.critical) return 'CRITICAL';
  if (thresholds.warning !== undefined && seconds > thresholds.warning) return 'WARNING';
  return 'OK';
}

/** `time=0.002000s;W;C;0.000000`: seconds with six decimals, as the Monitoring Plugins' check_tcp prints them. */
export function timePerfData(seconds: number, thresholds: Thresholds): string {
  const field = (value: number | undefined) => (value === undefined ? '' : value.toFixed(6));
  return `time=${seconds.toFixed(6)}s;${field(thresholds.warning)};${field(thresholds.critical)};${(0).toFixed(6)}`;
}

/** The plugin's one line, perfdata after a `|` when there is some. */
export function pluginLine(service: string, status: PluginStatus, text: string, perfData?: string): string {
  return `${service} ${status} - ${text}${perfData === undefined ? '' : `|${perfData}`}`;
}
