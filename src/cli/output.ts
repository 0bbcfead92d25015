import type { Result } from '../client/client.js';
import { joinHostPort } from '../wire/address.js';
import { importLazily } from './lazy.js';
import { isTerminal, stdioStream, writeErr, writeOut } from './stdio.js';

/**
 * The only module that writes to the terminal for pidstat: results to stdout,
 * warnings and the spinner to stderr.
 */

export interface OutputOptions {
  /** Colour level from colorLevel(). */
  color: 0 | 1 | 2 | 3;
  /** Print nothing at all. */
  silent: boolean;
}

/** A spinner appears only after this long without every answer. */
const SPINNER_DELAY_MS = 200;

type Paint = (text: string) => string;
type Palette = Record<Result['state'], Paint>;

const PLAIN: Palette = { exists: String, dead: String, unknown: String, no_reply: String };

export class Output {
  private constructor(
    private readonly opts: OutputOptions,
    private readonly palette: Palette,
  ) {}

  /** chalk is loaded only when there is colour to paint. */
  static async create(opts: OutputOptions): Promise<Output> {
    if (opts.color === 0 || opts.silent) return new Output(opts, PLAIN);
    const { Chalk } = await importLazily('chalk');
    const chalk = new Chalk({ level: opts.color });
    return new Output(opts, { exists: chalk.green, dead: chalk.red, unknown: chalk.yellow, no_reply: chalk.yellow });
  }

  /** One line per result, `HOST:PID STATE`, coloured by state. */
  results(results: readonly Result[]): void {
    if (this.opts.silent) return;
    const lines = results.map((r) => `${joinHostPort(r.host, r.pid)} ${this.palette[r.state](r.state)}\n`);
    writeOut(lines.join(''));
  }

  json(value: unknown): void {
    if (this.opts.silent) return;
    writeOut(JSON.stringify(value, null, 2) + '\n');
  }

  line(text: string): void {
    if (!this.opts.silent) writeOut(text + '\n');
  }

  warn(text: string): void {
    if (!this.opts.silent) writeErr(text + '\n');
  }

  /**
   * Shows a spinner on stderr while `work` runs longer than 200 ms, only where
   * stderr is a terminal with columns: ora writes escape codes to a pipe when
   * disabled, and hangs on a terminal of zero columns. ora loads only then.
   * @see https://github.com/sindresorhus/is-interactive
   */
  async whileWaiting<T>(work: Promise<T>, describe: () => string): Promise<T> {
    if (this.opts.silent || !isTerminal(2)) return work;
    const stderr = stdioStream(2);
    // ora's own test (is-interactive) also refuses TERM=dumb and CI; then it
    // would print its lines without spinning, so it is not started at all.
    const interactive = stderr.columns > 0 && process.env['TERM'] !== 'dumb' && !('CI' in process.env);
    if (!interactive) return work;
    let done = false;
    let stop = () => {};
    const timer = setTimeout(async () => {
      const { default: ora } = await importLazily('ora');
      if (done) return;
      const spinner = ora({ text: describe(), stream: stderr, discardStdin: false, color: this.opts.color > 0 ? 'yellow' : false }).start();
      const refresh = setInterval(() => (spinner.text = describe()), 100);
      stop = () => {
        clearInterval(refresh);
        spinner.stop();
      };
    }, SPINNER_DELAY_MS);
    try {
      return await work;
    } finally {
      done = true;
      clearTimeout(timer);
      stop();
    }
  }
}
