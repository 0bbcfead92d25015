/**
 * Exit codes, for scripts. pidstat answers like grep: 0 = every target
 * exists, 1 = some target is dead, 2 = some target got no clear answer.
 * A usage error is 64, sysexits' EX_USAGE, so a typo never reads as "dead".
 * Output that cannot be written (a full disk) is 74, sysexits' EX_IOERR, for
 * every command: 1 and 2 would read as an answer, and scripts that know 64
 * know the table it comes from. Monitoring checks (`pidstat ping`) use the
 * plugin codes instead.
 * @see https://man.freebsd.org/cgi/man.cgi?query=sysexits
 * @see https://nagios-plugins.org/doc/guidelines.html#AEN78
 */
export const ExitCode = {
  EXISTS: 0,
  DEAD: 1,
  NO_ANSWER: 2,
  /** Something failed that is no user's mistake: the daemon cannot listen. */
  FAILURE: 1,
  USAGE: 64,
  /** A bug, never a user's mistake: sysexits' EX_SOFTWARE. */
  SOFTWARE: 70,
  OUTPUT_FAILED: 74,
  /** `pidstat wait -t` ran out first, as timeout(1) and pwait(1). */
  TIMED_OUT: 124,
  /** pidwatch's command cannot be run (the shell's 126): --cd refused, too long. */
  CANNOT_RUN: 126,
  PLUGIN_OK: 0,
  PLUGIN_WARNING: 1,
  PLUGIN_CRITICAL: 2,
  PLUGIN_UNKNOWN: 3,
} as const;

/**
 * An expected failure: bad usage, or an environment that does not allow the
 * command (a busy port). The CLI prints only its message, then exits with
 * `exitCode`; for usage errors it adds a pointer to --help.
 */
export class CommandError extends Error {
  override name = 'CommandError';
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.USAGE,
  ) {
    super(message);
  }
}

/** Whether an exit code reports bad usage, for which the CLI points to --help. */
export function isUsageExit(code: number): boolean {
  return code === ExitCode.USAGE || code === ExitCode.PLUGIN_UNKNOWN;
}
