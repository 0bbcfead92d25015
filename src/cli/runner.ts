import { CommandError, isUsageExit } from '../errors.js';

/** Internal software error (sysexits' EX_SOFTWARE): a bug, never a user mistake. */
const EX_SOFTWARE = 70;

/**
 * Runs a command's main and sets the exit code, letting the event loop drain
 * rather than calling process.exit(), so no output is cut short. A CommandError
 * prints its message only; anything else is a bug and prints its stack.
 */
export function runCli(name: string, main: (argv: string[]) => Promise<number>): void {
  // A reader that went away (`pidstat ... | head -1`) is no error of ours:
  // what it did not read is dropped, and the exit status stays the answer.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof CommandError) {
        const hint = isUsageExit(err.exitCode) ? ` (see '${name} --help')` : '';
        process.stderr.write(`${name}: ${err.message}${hint}\n`);
        process.exitCode = err.exitCode;
      } else {
        process.stderr.write(`${name}: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
        process.exitCode = EX_SOFTWARE;
      }
    },
  );
}
