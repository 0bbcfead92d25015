import yargsParser from 'yargs-parser';
import { CommandError } from '../errors.js';
import { readVersion } from './options.js';

/**
 * Command lines, read from one table per command. The common case, a valid
 * command line, is read by yargs-parser alone, the parser inside yargs; yargs
 * itself, whose import costs more than the rest of a pidstat run, loads only
 * to print --help or to word a usage error, from the same table and with the
 * same parser settings, so both read a command line alike.
 */

export interface OptionSpec {
  type: 'string' | 'boolean';
  description: string;
  alias?: string;
  /** May be given more than once; the values are collected. */
  array?: boolean;
  default?: boolean;
}

export type OptionTable = Record<string, OptionSpec>;

export interface CommandSpec<O extends OptionTable> {
  name: string;
  usage: string;
  epilog: string;
  options: O;
  /** Options end at the first word that is not one (pidwatch's command). */
  haltAtNonOption?: boolean;
}

/** Parsed values: strings, booleans or string arrays, as the table says. */
export type Values<O extends OptionTable> = {
  [K in keyof O]?: O[K] extends { type: 'boolean' } ? boolean : O[K] extends { array: true } ? string[] : string;
} & { words: string[] };

/** The word that prints a bash/zsh completion script, yargs's own. */
const COMPLETION = 'completion';

const COMMON: OptionTable = {
  help: { type: 'boolean', alias: 'h', description: 'Show this help and exit' },
  version: { type: 'boolean', description: 'Show the version and exit' },
};

/**
 * The yargs-parser settings both parsers share. Words stay strings (`010` is
 * not 10: pids are checked by the protocol's rule), a repeated option keeps
 * its last value, and a string option needs its value.
 */
function parserOptions(spec: CommandSpec<OptionTable>): yargsParser.Options {
  const table = { ...COMMON, ...spec.options };
  const names = Object.keys(table);
  const strings = names.filter((name) => table[name]!.type === 'string');
  return {
    alias: Object.fromEntries(names.filter((name) => table[name]!.alias).map((name) => [name, [table[name]!.alias!]])),
    boolean: names.filter((name) => table[name]!.type === 'boolean'),
    string: strings,
    array: names.filter((name) => table[name]!.array),
    narg: Object.fromEntries(strings.filter((name) => !table[name]!.array).map((name) => [name, 1])),
    default: Object.fromEntries(names.filter((name) => table[name]!.default !== undefined).map((name) => [name, table[name]!.default])),
    configuration: {
      'parse-positional-numbers': false,
      'duplicate-arguments-array': false,
      'camel-case-expansion': false,
      'strip-aliased': true,
      'halt-at-non-option': spec.haltAtNonOption === true,
    },
  };
}

/** The options that take a value, as typed on a command line (`--port`). */
export function valueOptions(spec: CommandSpec<OptionTable>): Set<string> {
  return new Set(Object.entries(spec.options).filter(([, o]) => o.type === 'string').map(([name]) => `--${name}`));
}

/**
 * Reads `argv` by `spec`. Prints --help or --version and returns undefined
 * when asked for them; throws a CommandError with `usageExitCode` for bad usage.
 */
export async function parseArgs<O extends OptionTable>(
  spec: CommandSpec<O>,
  argv: string[],
  usageExitCode?: number,
): Promise<Values<O> | undefined> {
  const options = parserOptions(spec);
  const parsed = yargsParser.detailed(argv, options);
  const known = new Set(['_', '--', ...Object.keys(COMMON), ...Object.keys(spec.options)]);
  const unknown = Object.keys(parsed.argv).some((key) => !known.has(key));
  // --get-yargs-completions, the script's question, is an unknown option too.
  const completion = argv[0] === COMPLETION;
  if (parsed.error || unknown || parsed.argv['help'] || completion) return explainWithYargs(spec, argv, options, usageExitCode);
  if (parsed.argv['version']) {
    process.stdout.write(`${spec.name} ${readVersion()}\n`);
    return undefined;
  }
  const values: Record<string, unknown> = { words: parsed.argv._.map(String) };
  for (const name of Object.keys(spec.options)) if (parsed.argv[name] !== undefined) values[name] = parsed.argv[name];
  return values as Values<O>;
}

/** yargs proper: the help text, or the exact wording of a usage error. */
async function explainWithYargs<O extends OptionTable>(
  spec: CommandSpec<O>,
  argv: string[],
  options: yargsParser.Options,
  usageExitCode: number | undefined,
): Promise<undefined> {
  const { default: yargs } = await import('yargs');
  // yargs's completion command is not seen under halt-at-non-option (PITFALLS.md).
  const configuration = argv[0] === COMPLETION ? { ...options.configuration, 'halt-at-non-option': false } : options.configuration!;
  let parser = yargs(argv)
    .scriptName(spec.name)
    .locale('en')
    .parserConfiguration(configuration)
    .strictOptions()
    .exitProcess(false)
    .help(false)
    .version(false)
    .usage(spec.usage)
    .epilog(spec.epilog)
    .wrap(Math.min(100, process.stdout.columns || 80))
    .completion(COMPLETION, 'Print a bash/zsh completion script (add it to ~/.bashrc or ~/.zshrc)')
    // yargs exits 1 on bad usage, which would read as "dead": throw instead.
    // https://github.com/yargs/yargs/blob/main/docs/api.md#fail
    .fail((msg, err) => {
      throw new CommandError(msg ?? err?.message ?? 'bad arguments', usageExitCode);
    });
  for (const [name, option] of Object.entries({ ...COMMON, ...spec.options })) {
    parser = parser.option(name, {
      type: option.type,
      description: option.description,
      ...(option.alias !== undefined && { alias: option.alias }),
      ...(option.array && { array: true }),
      ...(option.type === 'string' && { requiresArg: true }),
      ...(option.default !== undefined && { default: option.default }),
    });
  }
  const result = parser.parseSync();
  if (result['help']) {
    process.stdout.write((await parser.getHelp()) + '\n');
    return undefined;
  }
  // yargs printed the script, or the completions the script asked for.
  if (argv[0] === COMPLETION || result['get-yargs-completions'] !== undefined) return undefined;
  // yargs-parser refused what yargs accepts: say so rather than guess.
  throw new CommandError(`cannot read the command line ${JSON.stringify(argv.join(' '))}`, usageExitCode);
}
