import type { ParserConfigurationOptions } from 'yargs';
import { CommandError } from './errors.js';
import { importLazily } from './lazy.js';
import { readVersion } from './options.js';
import { stdioStream, writeOut } from './stdio.js';

/**
 * Command lines, read from one table per command (CommandSpec) by one
 * reader, readCommandLine(): every spelling the suite takes, those of
 * Getopt::Long (IPC::Locker's tools read theirs with it) and the usual ones
 * alike, with what is wrong said in the suite's words. yargs prints --help
 * and answers completion from the same table, and reads nothing a command
 * acts on: the two cannot disagree on what a line means. Reading without
 * yargs-parser, which a start would otherwise load, is the bench's figure
 * 'start-up machinery: the command-line reader' (README, Performance).
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

/** Where an option's value was on the command line: its word's index, and whether after the word's `=`. */
export interface ValueAt {
  index: number;
  inline: boolean;
}

/** Parsed values: strings, booleans or string arrays, as the table says; where each string's (last) value was. */
export type Values<O extends OptionTable> = {
  [K in keyof O]?: O[K] extends { type: 'boolean' } ? boolean : O[K] extends { array: true } ? string[] : string;
} & { words: string[]; valueAt: Partial<Record<keyof O, ValueAt>> };

/** The word that prints a bash/zsh completion script, yargs's own. */
const COMPLETION = 'completion';
/** What the completion script runs a command with to learn the completions of a word. */
export const COMPLETION_QUESTION = '--get-yargs-completions';

const COMMON: OptionTable = {
  help: { type: 'boolean', alias: 'h', description: 'Show this help and exit' },
  version: { type: 'boolean', description: 'Show the version and exit' },
};

/**
 * Reads `argv` by `spec`. Prints --help or --version and returns undefined
 * when asked for them; throws a CommandError with `usageExitCode` for bad usage.
 */
export async function parseArgs<O extends OptionTable>(
  spec: CommandSpec<O>,
  argv: string[],
  usageExitCode?: number,
): Promise<Values<O> | undefined> {
  // The completion script's question holds the word being typed, which may be half an option: yargs's to answer.
  if (argv[0] === COMPLETION || argv.includes(COMPLETION_QUESTION)) return explainWithYargs(spec, argv, usageExitCode);
  const read = readCommandLine(spec, argv, { usageExitCode });
  if (read.values['help'] === true) return explainWithYargs(spec, argv, usageExitCode);
  if (read.values['version'] === true) {
    writeOut(`${spec.name} ${readVersion()}\n`);
    return undefined;
  }
  return { ...read.values, words: read.words, valueAt: read.valueAt } as unknown as Values<O>;
}

/** What readCommandLine() makes of a command line. */
export interface CommandLine {
  /** Each option given, or with a default: a string, a boolean, or for an array option every value in order. */
  values: Record<string, string | boolean | string[]>;
  /** The words that are no option and no option's value, in order. */
  words: string[];
  /** Where each string option's value (the last, for one given twice) was in argv. */
  valueAt: Record<string, ValueAt>;
}

/** What a spelling of an option stands for: the option, and whether it is the negated form. */
interface Spelling {
  name: string;
  negated: boolean;
}

/**
 * The command line `argv` as `spec`'s table reads it (pidstat(1), pidwatch(1)
 * and pidstatd(8), OPTIONS):
 *
 * - words: any word that does not begin with a dash, `-` alone, and a
 *   negative number (`-5`); every word after `--`; for pidwatch, every word
 *   from the command's first on (haltAtNonOption).
 * - a long option: `--name` or, as Getopt::Long reads it, `-name`; in any
 *   case (`--PID`), or a unique abbreviation of two letters or more
 *   (`--fore`); an ambiguous one is an error naming the candidates.
 * - a boolean: `--name`, `--no-name` (also `--noname`, `-no-name`), and
 *   `--name=true` or `--name=false`.
 * - a value: `--name=VALUE`, or `--name VALUE`, where VALUE is the next
 *   word unless it begins with `--`; a value may begin with one dash
 *   (`-signal -HUP`), as Getopt::Long takes it. None is an error; an empty
 *   one (`--pidfile=`, `--pidfile ""`) is the command's to refuse, in words
 *   that say what it needs.
 * - a one-letter alias: `-x`, or `--x`; a group of them, `-sv`, whose last
 *   may take a value (`-st 5`, `-st=5`).
 * - an option given twice: an array option keeps every value, any other the last.
 *
 * Anything else is a usage error (a CommandError with `usageExitCode`), at
 * the first word that is wrong. `lenient` reads what it can and skips what
 * it cannot, never throwing: for the first word of a line, before the
 * table it belongs to is known.
 */
export function readCommandLine(
  spec: CommandSpec<OptionTable>,
  argv: readonly string[],
  { usageExitCode, lenient = false }: { usageExitCode?: number | undefined; lenient?: boolean } = {},
): CommandLine {
  const table: OptionTable = { ...COMMON, ...spec.options };
  const { spellings, shorts } = spellingsOf(table);
  const line: CommandLine = { values: {}, words: [], valueAt: {} };
  for (const [name, option] of Object.entries(table)) if (option.default !== undefined) line.values[name] = option.default;
  const fail = (message: string): never => {
    throw new CommandError(message, usageExitCode);
  };
  /** Sets option `name` from `word` (argv[i]); the index of the last word it used. */
  const take = (name: string, negated: boolean, word: string, inline: string | undefined, i: number): number => {
    const option = table[name]!;
    if (option.type === 'boolean') {
      if (inline === undefined) line.values[name] = !negated;
      else if (!negated && (inline === 'true' || inline === 'false')) line.values[name] = inline === 'true';
      else if (!lenient) fail(`'${word}': ${negated ? `--no-${name}` : `--${name}`} takes no value${negated ? '' : ' (but =true or =false)'}`);
      return i;
    }
    if (negated) return lenient ? i : fail(`unknown option '${word}'`);
    let value = inline;
    let at: ValueAt = { index: i, inline: true };
    if (value === undefined) {
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith('--')) {
        value = next;
        at = { index: i + 1, inline: false };
      }
    }
    if (value === undefined) return lenient ? i : fail(`${word.split('=')[0]} needs a value`);
    if (option.array) line.values[name] = [...((line.values[name] as string[] | undefined) ?? []), value];
    else line.values[name] = value;
    line.valueAt[name] = at;
    return at.inline ? i : i + 1;
  };
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--') {
      line.words.push(...argv.slice(i + 1));
      break;
    }
    if (!word.startsWith('-') || word === '-' || /^-[0-9]/.test(word)) {
      if (spec.haltAtNonOption) {
        line.words.push(...argv.slice(i));
        break;
      }
      line.words.push(word);
      continue;
    }
    const dashes = word.startsWith('--') ? 2 : 1;
    const equals = word.indexOf('=');
    const key = word.slice(dashes, equals < 0 ? undefined : equals);
    const inline = equals < 0 ? undefined : word.slice(equals + 1);
    if (key.length === 1 && shorts.has(key)) {
      i = take(shorts.get(key)!, false, word, inline, i);
      continue;
    }
    const found = key.length < 2 ? [] : findSpellings(spellings, key);
    if (found.length === 1) {
      i = take(found[0]!.name, found[0]!.negated, word, inline, i);
      continue;
    }
    // `-sv`, `-st 5`, `-st=5`: a group of one-letter aliases, the last of which may take a value.
    const letters = [...key];
    const valued = letters.findIndex((letter) => table[shorts.get(letter) ?? '']?.type === 'string');
    if (found.length === 0 && dashes === 1 && letters.length > 1 && letters.every((letter) => shorts.has(letter)) && (valued < 0 || valued === letters.length - 1)) {
      for (const [n, letter] of letters.entries()) i = take(shorts.get(letter)!, false, `-${letter}`, n === letters.length - 1 ? inline : undefined, i);
      continue;
    }
    if (lenient) continue;
    if (found.length > 1) fail(`option '${word}' is ambiguous: ${found.map(spell).join(', ')}`);
    if (dashes === 1 && letters.length > 1 && letters.every((letter) => shorts.has(letter))) fail(`'${word}': -${letters[valued]} takes a value, so it comes last in a group`);
    fail(`unknown option '${word}'`);
  }
  return line;
}

/** Every spelling of the table's options, in lower case (`port`, `nolocal`, `no-local`), and its one-letter aliases. */
function spellingsOf(table: OptionTable): { spellings: Map<string, Spelling>; shorts: Map<string, string> } {
  const spellings = new Map<string, Spelling>();
  const shorts = new Map<string, string>();
  for (const [name, option] of Object.entries(table)) {
    for (const spelled of option.alias === undefined ? [name] : [name, option.alias]) {
      if (spelled.length === 1) {
        shorts.set(spelled, name);
        continue;
      }
      spellings.set(spelled.toLowerCase(), { name, negated: false });
      if (option.type === 'boolean' && !(name in COMMON)) {
        spellings.set(`no${spelled.toLowerCase()}`, { name, negated: true });
        spellings.set(`no-${spelled.toLowerCase()}`, { name, negated: true });
      }
    }
  }
  return { spellings, shorts };
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

/** A spelling as --help shows it: `--name` or `--no-name`. */
function spell(spelling: Spelling): string {
  return `--${spelling.negated ? 'no-' : ''}${spelling.name}`;
}

/** How yargs reads the table for --help and completion: words stay strings, pidwatch's options end at its command. */
function yargsConfiguration(spec: CommandSpec<OptionTable>, completing: boolean): Partial<ParserConfigurationOptions> {
  return {
    'parse-positional-numbers': false,
    'camel-case-expansion': false,
    'strip-aliased': true,
    // yargs's completion command is not seen under halt-at-non-option (PITFALLS.md).
    'halt-at-non-option': spec.haltAtNonOption === true && !completing,
  };
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
 * yargs, from the same table: the help text (the line was read already:
 * yargs sees only `--help`), or the completion script, or the completions
 * the script asks for (the line being typed, as it is).
 */
async function explainWithYargs<O extends OptionTable>(spec: CommandSpec<O>, argv: string[], usageExitCode: number | undefined): Promise<undefined> {
  const { default: yargs } = await importLazily('yargs');
  const completing = argv[0] === COMPLETION || argv.includes(COMPLETION_QUESTION);
  let parser = yargs(completing ? argv : ['--help'])
    .scriptName(spec.name)
    .locale('en')
    .parserConfiguration(yargsConfiguration(spec, argv[0] === COMPLETION))
    .exitProcess(false)
    .help(false)
    .version(false)
    .usage(spec.usage)
    .epilog(spec.epilog)
    .wrap(Math.min(100, stdioStream(1).columns || 80))
    .completion(COMPLETION, 'Print a bash/zsh completion script (add it to ~/.bashrc or ~/.zshrc)', (current: string, typed: { _: (string | number)[] }, defaults: (onCompleted?: (err: Error | null, found: string[] | undefined) => void) => void, done: (found: string[]) => void) => {
      defaults((_err, found) => done(completions(spec, current, typed._.map(String), found ?? [])));
    })
    // yargs exits 1 on what it cannot read, which would read as "dead": a usage error instead.
    // https://github.com/yargs/yargs/blob/main/docs/api.md#fail
    .fail((msg, err) => {
      throw new CommandError(msg ?? err?.message ?? 'bad arguments', usageExitCode);
    });
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
    // Shown and offered only: readCommandLine() reads --no-NAME for every boolean.
    if (negatable) parser = parser.option(`no-${name}`, { type: 'boolean', description: option.negatedDescription ?? option.description });
  }
  const result = parser.parseSync();
  // yargs printed the script, or the completions the script asked for.
  if (completing) return undefined;
  if (result['help']) writeOut((await parser.getHelp()) + '\n');
  return undefined;
}
