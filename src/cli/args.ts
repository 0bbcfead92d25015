import type yargsParser from 'yargs-parser';
import { CommandError } from './errors.js';
import { importLazily } from './lazy.js';
import { readVersion } from './options.js';
import { stdioStream, writeOut } from './stdio.js';

/**
 * Command lines, read from one table per command. The common case, words and
 * --options of the table, is read here by readPlainly(), which reads them as
 * yargs-parser does (test/unit/readers.test.ts holds it to that). Anything else is
 * read by yargs-parser, the parser inside yargs; yargs itself loads only to
 * print --help or to word a usage error, from the same table and with the
 * same parser settings, so all three read a command line alike. Reading
 * pidstat's command line plainly rather than with yargs-parser, imported
 * for it, saves about half of its start-to-answer (bench figure 'start-up
 * machinery', test/bench/startup.ts; the figures are in the README,
 * Performance).
 */

export interface OptionSpec {
  type: 'string' | 'boolean';
  description: string;
  alias?: string;
  /** May be given more than once; the values are collected. */
  array?: boolean;
  default?: boolean;
  /**
   * What `--no-NAME` does, for a boolean whose default is true: --help shows
   * that spelling, the only one a user types, with this text.
   * @default description
   */
  negatedDescription?: string;
}

export type OptionTable = Record<string, OptionSpec>;

export interface CommandSpec<O extends OptionTable> {
  name: string;
  usage: string;
  epilog: string;
  options: O;
  /** Options end at the first word that is not one (pidwatch's command). */
  haltAtNonOption?: boolean;
  /** The words a command line may begin with (pidstat's wait, ping...), offered by completion. */
  commands?: readonly string[];
}

/** Parsed values: strings, booleans or string arrays, as the table says. */
export type Values<O extends OptionTable> = {
  [K in keyof O]?: O[K] extends { type: 'boolean' } ? boolean : O[K] extends { array: true } ? string[] : string;
} & { words: string[] };

/** The word that prints a bash/zsh completion script, yargs's own. */
const COMPLETION = 'completion';
/** What the completion script runs a command with to learn the completions of a word. */
export const COMPLETION_QUESTION = '--get-yargs-completions';

const COMMON: OptionTable = {
  help: { type: 'boolean', alias: 'h', description: 'Show this help and exit' },
  version: { type: 'boolean', description: 'Show the version and exit' },
};

/**
 * The yargs-parser settings both parsers share. Words stay strings (`010` is
 * not 10: pids are checked by the protocol's rule), a string option needs its
 * value, and an array option takes one value each time it is given.
 * A repeated option is collected; readWithYargsParser() keeps the last value
 * of those that are not arrays.
 */
export function parserOptions(spec: CommandSpec<OptionTable>): yargsParser.Options {
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
      'duplicate-arguments-array': true,
      'greedy-arrays': false,
      'camel-case-expansion': false,
      'strip-aliased': true,
      'halt-at-non-option': spec.haltAtNonOption === true,
    },
  };
}

/** The options that take a value, as typed on a command line (`--port`, `-t`). */
export function valueOptions(spec: CommandSpec<OptionTable>): Set<string> {
  const spellings = (name: string, alias: string | undefined) => [`--${name}`, ...(alias === undefined ? [] : [alias.length === 1 ? `-${alias}` : `--${alias}`])];
  return new Set(Object.entries(spec.options).filter(([, o]) => o.type === 'string').flatMap(([name, o]) => spellings(name, o.alias)));
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
  // The completion script's question holds the word being typed, which may be half an option.
  if (argv[0] !== COMPLETION && !argv.includes(COMPLETION_QUESTION)) argv = respellGetopt(spec, argv, { usageExitCode });
  const plain = argv[0] === COMPLETION ? undefined : readPlainly(spec, argv);
  const parsed = plain ?? (await readWithYargsParser(spec, argv));
  if (parsed === undefined || parsed['help']) return explainWithYargs(spec, argv, parserOptions(spec), usageExitCode);
  if (parsed['version']) {
    writeOut(`${spec.name} ${readVersion()}\n`);
    return undefined;
  }
  const values: Record<string, unknown> = { words: parsed['_'] };
  for (const name of Object.keys(spec.options)) if (parsed[name] !== undefined) values[name] = parsed[name];
  return values as Values<O>;
}

type Parsed = Record<string, unknown> & { _: string[] };

/** What a spelling of an option stands for: the option, and whether it is the negated form. */
interface Spelling {
  name: string;
  negated: boolean;
}

/**
 * IPC::Locker's tools read their command lines with Perl's Getopt::Long, and
 * every line they accepted means the same here. This rewrites Getopt::Long's
 * spellings of the table's options into the ones the parsers read: one dash
 * (`-pid 12`, `-pid=12`), any case (`--PID`), a unique abbreviation of two
 * letters or more (`--fore`), `--noNAME` and `-no-NAME` for a boolean, and a
 * value that begins with a dash (`-signal -HUP`, kept as `--signal=-HUP`).
 * One-letter words are short options, as yargs reads them. Only options are
 * rewritten: never a value, nothing after `--`, and for pidwatch nothing from
 * the command's first word on. A word of one dash that names no option is a
 * usage error here, in Getopt::Long's words, not yargs's letter by letter
 * (unless `lenient`: then it and an ambiguous word are left as they are).
 * @see https://perldoc.perl.org/Getopt::Long
 */
export function respellGetopt(
  spec: CommandSpec<OptionTable>,
  argv: readonly string[],
  { usageExitCode, lenient = false }: { usageExitCode?: number | undefined; lenient?: boolean } = {},
): string[] {
  const table: OptionTable = { ...COMMON, ...spec.options };
  const spellings = new Map<string, Spelling>();
  const shorts = new Set<string>();
  for (const [name, option] of Object.entries(table)) {
    for (const spelled of option.alias === undefined ? [name] : [name, option.alias]) {
      if (spelled.length === 1) {
        shorts.add(spelled);
        continue;
      }
      spellings.set(spelled, { name, negated: false });
      if (option.type === 'boolean' && !(name in COMMON)) {
        spellings.set(`no${spelled}`, { name, negated: true });
        spellings.set(`no-${spelled}`, { name, negated: true });
      }
    }
  }
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--') return out.concat(argv.slice(i));
    const dashes = word.startsWith('--') ? 2 : word.startsWith('-') ? 1 : 0;
    // A word, `-` alone included, is a positional; for pidwatch it starts the command.
    if (dashes === 0 || word === '-') {
      if (spec.haltAtNonOption) return out.concat(argv.slice(i));
      out.push(word);
      continue;
    }
    const equals = word.indexOf('=');
    const key = word.slice(dashes, equals < 0 ? undefined : equals);
    const inline = equals < 0 ? undefined : word.slice(equals);
    const found = key.length < 2 ? [] : findSpellings(spellings, key);
    if (found.length > 1 && !lenient) {
      throw new CommandError(`option '${word}' is ambiguous: ${found.map(spell).join(', ')}`, usageExitCode);
    }
    const spelling = found.length === 1 ? found[0] : undefined;
    if (spelling === undefined) {
      if (dashes === 1 && !lenient && !isShortGroup(key, shorts) && !/^[0-9]/.test(key)) {
        throw new CommandError(`unknown option '${word}'`, usageExitCode);
      }
      out.push(word);
      continue;
    }
    const option = table[spelling.name]!;
    const spelled = spell(spelling);
    const next = argv[i + 1];
    // The value: the next word, unless it is `--` or another long option, which the parsers then report as missing.
    if (option.type !== 'string' || inline !== undefined || next === undefined || next.startsWith('--')) {
      out.push(spelled + (inline ?? ''));
    } else if (next.startsWith('-') && next !== '-') {
      // Getopt::Long takes `-HUP` as the value; yargs-parser would read it as options -H -U -P.
      out.push(`${spelled}=${next}`);
      i++;
    } else {
      out.push(spelled, next);
      i++;
    }
  }
  return out;
}

/** The options `key` may spell: the one it spells exactly, case aside, else every one it abbreviates. */
function findSpellings(spellings: Map<string, Spelling>, key: string): Spelling[] {
  const lower = key.toLowerCase();
  const exact = spellings.get(lower);
  if (exact !== undefined) return [exact];
  const found = new Map<string, Spelling>();
  for (const [spelled, spelling] of spellings) if (spelled.startsWith(lower)) found.set(spell(spelling), spelling);
  return [...found.values()];
}

/** A spelling as the parsers read it: `--name` or `--no-name`. */
function spell(spelling: Spelling): string {
  return `--${spelling.negated ? 'no-' : ''}${spelling.name}`;
}

/** `-sj`: every letter a short option of the table, as yargs reads a group. */
function isShortGroup(key: string, shorts: ReadonlySet<string>): boolean {
  return [...key].every((letter) => shorts.has(letter));
}

/**
 * argv as yargs-parser reads it with parserOptions(), for the plain forms
 * only: words, `--`, and the table's options as `--name`, `--no-name`,
 * `--name VALUE`, `--name=VALUE` or a one-letter alias. undefined for any
 * other form (grouped flags, a value that looks like an option or a
 * boolean, an unknown option...), which yargs-parser then reads.
 */
export function readPlainly(spec: CommandSpec<OptionTable>, argv: readonly string[]): Parsed | undefined {
  const table: OptionTable = { ...COMMON, ...spec.options };
  const names = new Map<string, string>();
  for (const [name, option] of Object.entries(table)) {
    names.set(name, name);
    if (option.alias !== undefined) names.set(option.alias, name);
  }
  const parsed: Parsed = { _: [] };
  for (const [name, option] of Object.entries(table)) if (option.default !== undefined) parsed[name] = option.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      parsed._.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-')) {
      if (spec.haltAtNonOption) {
        parsed._.push(...argv.slice(i));
        break;
      }
      parsed._.push(arg);
      continue;
    }
    const long = arg.startsWith('--');
    if (!long && arg.length !== 2) return undefined;
    const equals = long ? arg.indexOf('=') : -1;
    const key = long ? arg.slice(2, equals < 0 ? undefined : equals) : arg.slice(1);
    const inline = equals < 0 ? undefined : arg.slice(equals + 1);
    if (!long && key.length !== 1) return undefined;
    let name = names.get(key);
    let negated = false;
    if (name === undefined && long && key.startsWith('no-')) {
      name = names.get(key.slice(3));
      negated = true;
    }
    const option = name === undefined ? undefined : table[name];
    if (name === undefined || option === undefined) return undefined;
    if (option.type === 'boolean') {
      // yargs-parser reads `--flag true` and `--flag=false` as the flag's value.
      const next = argv[i + 1];
      if (inline !== undefined || next === 'true' || next === 'false') return undefined;
      parsed[name] = !negated;
      continue;
    }
    if (negated) return undefined;
    const value = inline ?? argv[++i];
    // yargs-parser reads `--allow=` as no value at all: leave such forms to it.
    if (value === undefined || value === '' || (inline === undefined && value.startsWith('-'))) return undefined;
    if (option.array) parsed[name] = [...((parsed[name] as string[] | undefined) ?? []), value];
    else parsed[name] = value;
  }
  return parsed;
}

/**
 * yargs-parser's reading, the last value kept of a repeated option that is
 * not an array; undefined for an error or an option the table lacks.
 */
export async function readWithYargsParser(spec: CommandSpec<OptionTable>, argv: string[]): Promise<Parsed | undefined> {
  const { default: yargsParser } = await importLazily('yargs-parser');
  const parsed = yargsParser.detailed(argv, parserOptions(spec));
  const table: OptionTable = { ...COMMON, ...spec.options };
  // --get-yargs-completions, the completion script's question, is unknown too.
  const unknown = Object.keys(parsed.argv).some((key) => key !== '_' && key !== '--' && table[key] === undefined);
  if (parsed.error || unknown || argv[0] === COMPLETION) return undefined;
  const result: Parsed = { _: parsed.argv._.map(String) };
  for (const [name, value] of Object.entries(parsed.argv)) {
    if (name !== '_' && name !== '--') result[name] = Array.isArray(value) && !table[name]!.array ? value.at(-1) : value;
  }
  return result;
}

/**
 * What completion offers for the word being typed: yargs's options of this
 * command's table, less the one-letter aliases it writes with two dashes
 * (`--h`), and where no word is typed yet, the words a command line may
 * begin with.
 */
function completions(spec: CommandSpec<OptionTable>, current: string, typed: readonly string[], found: readonly string[]): string[] {
  const offered = found.filter((word) => !/^--[^-:](:|$)/.test(word));
  const words = typed.slice(typed[0] === spec.name ? 1 : 0).filter((word) => word !== current);
  if (!current.startsWith('-') && words.length === 0) offered.push(...(spec.commands ?? []).filter((word) => word.startsWith(current)));
  return offered;
}

/**
 * yargs's usage errors in the suite's words: an option named as it is typed
 * (`unknown option --bogus`, `--port needs a value`); others as yargs says them.
 */
function ourWords(message: string): string {
  const unknown = /^Unknown arguments?: (.*)$/.exec(message);
  if (unknown) {
    const words = unknown[1]!.split(', ').map((word) => (word.startsWith('-') ? word : word.length === 1 ? `-${word}` : `--${word}`));
    return `unknown ${words.length === 1 ? 'option' : 'options'} ${words.join(' ')}`;
  }
  const missing = /^Not enough arguments following: (.*)$/.exec(message);
  if (missing) return `${missing[1]!.length === 1 ? '-' : '--'}${missing[1]} needs a value`;
  return message;
}

/** yargs proper: the help text, or the exact wording of a usage error. */
async function explainWithYargs<O extends OptionTable>(
  spec: CommandSpec<O>,
  argv: string[],
  options: yargsParser.Options,
  usageExitCode: number | undefined,
): Promise<undefined> {
  const { default: yargs } = await importLazily('yargs');
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
    .wrap(Math.min(100, stdioStream(1).columns || 80))
    .completion(COMPLETION, 'Print a bash/zsh completion script (add it to ~/.bashrc or ~/.zshrc)', (current: string, typed: { _: (string | number)[] }, defaults: (onCompleted?: (err: Error | null, found: string[] | undefined) => void) => void, done: (found: string[]) => void) => {
      defaults((_err, found) => done(completions(spec, current, typed._.map(String), found ?? [])));
    })
    // yargs exits 1 on bad usage, which would read as "dead": throw instead.
    // https://github.com/yargs/yargs/blob/main/docs/api.md#fail
    .fail((msg, err) => {
      throw new CommandError(ourWords(msg ?? err?.message ?? 'bad arguments'), usageExitCode);
    });
  const completing = argv[0] === COMPLETION || argv.includes(COMPLETION_QUESTION);
  for (const [name, option] of Object.entries({ ...COMMON, ...spec.options })) {
    // A boolean that is on by default is only ever typed as --no-NAME: the help shows that, not `--NAME [default: true]`.
    const onByDefault = option.type === 'boolean' && option.default === true;
    const negatable = onByDefault || (option.type === 'boolean' && option.negatedDescription !== undefined);
    parser = parser.option(name, {
      type: option.type,
      description: option.description,
      ...(option.alias !== undefined && { alias: option.alias }),
      ...(option.array && { array: true }),
      ...(option.type === 'string' && { requiresArg: true }),
      ...(option.default !== undefined && { default: option.default }),
      ...(onByDefault && !completing && { hidden: true }),
    });
    // Shown only: yargs-parser reads --no-NAME as NAME false whatever is declared.
    if (negatable) parser = parser.option(`no-${name}`, { type: 'boolean', description: option.negatedDescription ?? option.description });
  }
  const result = parser.parseSync();
  if (result['help']) {
    writeOut((await parser.getHelp()) + '\n');
    return undefined;
  }
  // yargs printed the script, or the completions the script asked for.
  if (argv[0] === COMPLETION || result['get-yargs-completions'] !== undefined) return undefined;
  // yargs-parser refused what yargs accepts: say so rather than guess.
  throw new CommandError(`cannot read the command line ${JSON.stringify(argv.join(' '))}`, usageExitCode);
}
