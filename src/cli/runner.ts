import { CommandError, ExitCode, isUsageExit } from './errors.js';
import { whenOutputFails, writeErr } from './stdio.js';

/**
 * Runs a command's main and sets the exit code, letting the event loop drain
 * rather than calling process.exit(), so no output is cut short. A CommandError
 * prints its message only; anything else is a bug and prints its stack. Output
 * that could not be written, reported as soon as it is known, wins over the
 * command's own answer: that answer never reached anyone.
 */
export function runCli(name: string, main: (argv: string[]) => Promise<number>): void {
  let reported: CommandError | undefined;
  const report = (err: CommandError): void => {
    if (reported !== undefined) return;
    reported = err;
    const hint = isUsageExit(err.exitCode) ? ` (see '${name} --help')` : '';
    writeErr(`${name}: ${err.message}${hint}\n`);
    process.exitCode = err.exitCode;
  };
  whenOutputFails(report);
  main(process.argv.slice(2)).then(
    (code) => {
      if (reported === undefined) process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof CommandError) {
        report(err);
      } else {
        writeErr(`${name}: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
        process.exitCode = ExitCode.SOFTWARE;
      }
    },
  );
}
