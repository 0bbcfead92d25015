import { CommandError, isUsageExit } from '../errors.js';
import { writeErr } from './stdio.js';

/** Internal software error (sysexits' EX_SOFTWARE): a bug, never a user mistake. */
const EX_SOFTWARE = 70;

/**
 * Runs a command's main and sets the exit code, letting the event loop drain
 * rather than calling process.exit(), so no output is cut short. A CommandError
 * prints its message only; anything else is a bug and prints its stack.
 */
export function runCli(name: string, main: (argv: string[]) => Promise<number>): void {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof CommandError) {
        const hint = isUsageExit(err.exitCode) ? ` (see '${name} --help')` : '';
        writeErr(`${name}: ${err.message}${hint}\n`);
        process.exitCode = err.exitCode;
      } else {
        writeErr(`${name}: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
        process.exitCode = EX_SOFTWARE;
      }
    },
  );
}
