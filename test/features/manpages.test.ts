import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { IS_ROOT, ROOT, runBin, type RunResult } from '../support/helpers.js';

/**
 * The manual pages against the commands: every option `--help` lists is in
 * the page, every option the page's OPTIONS section documents is one `--help`
 * lists, and the pages are clean roff (mandoc's lint) that man renders.
 */

const PAGES = {
  pidstat: 'man/pidstat.1',
  pidwatch: 'man/pidwatch.1',
  pidstatd: 'man/pidstatd.8',
} as const;
type Command = keyof typeof PAGES;
const COMMANDS = Object.keys(PAGES) as Command[];

const VERSION = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string }).version;

function page(command: Command): string {
  return readFileSync(`${ROOT}${PAGES[command]}`, 'utf8');
}

/** The text of one `.SH` section, up to the next `.SH`. */
function section(roff: string, name: string): string {
  const start = roff.indexOf(`\n.SH ${name}\n`);
  assert.notEqual(start, -1, `no .SH ${name}`);
  const end = roff.indexOf('\n.SH ', start + 1);
  return roff.slice(start, end === -1 ? undefined : end);
}

/** `--no-local` as roff writes it: `\-\-no\-local`. */
function toRoff(option: string): string {
  return option.replaceAll('-', '\\-');
}

/** The `--options` a roff text names, as typed (`\-\-no\-local` is `--no-local`). */
function roffOptions(roff: string): Set<string> {
  return new Set([...roff.matchAll(/\\-\\-[a-z](?:[a-z0-9]|\\-)*/g)].map((m) => m[0].replaceAll('\\-', '-')));
}

interface Help {
  /** Every `--name` token anywhere in the help text (descriptions and epilog too). */
  tokens: Set<string>;
  /** The options of the Options block, long and short (`--nofork`, `-s`). */
  options: Set<string>;
  /** Those of them that are booleans, which also take a `--no-` form. */
  booleans: Set<string>;
  /** The words of a Commands block (yargs lists `completion` there). */
  commands: string[];
  /** The text from "Exit status:" on. */
  exitStatus: string;
}

function parseHelp(command: Command, text: string): Help {
  const tokens = new Set([...text.matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)].map((m) => m[0]));
  const options = new Set<string>();
  const booleans = new Set<string>();
  const commands: string[] = [];
  // yargs's layout: a block title ("Options:") at the margin, then entries
  // indented by two ("  -s, --silent") or six ("      --json"); a wrapped
  // description goes on further right, so it never reads as an entry.
  let block = '';
  let names: string[] = [];
  let entry = '';
  const flush = () => {
    if (/\[boolean\]/.test(entry)) for (const name of names) booleans.add(name);
    names = [];
    entry = '';
  };
  for (const line of text.split('\n')) {
    if (line === '' || /^\S/.test(line)) {
      flush();
      block = /^\S.*:$/.test(line) ? line : '';
    } else if (block === 'Options:') {
      const head = /^ {2}(?:(-[a-zA-Z]), | {4})(--[a-z][a-z0-9-]*(?:, --[a-z][a-z0-9-]*)*)(?= |$)/.exec(line);
      if (head) {
        flush();
        names = [...(head[1] ? [head[1]] : []), ...head[2]!.split(', ')];
        for (const name of names) options.add(name);
      }
      entry += line;
    } else if (block === 'Commands:') {
      const match = new RegExp(`^ {2}${command} ([a-z][a-z-]*)`).exec(line);
      if (match) commands.push(match[1]!);
    }
  }
  flush();
  const at = text.indexOf('Exit status:');
  return { tokens, options, booleans, commands, exitStatus: at === -1 ? '' : text.slice(at) };
}

const helps = new Map<Command, Help>();
async function help(command: Command): Promise<Help> {
  let parsed = helps.get(command);
  if (parsed === undefined) {
    // A wide terminal, so no option is cut by the wrapping of a description.
    const result = await runBin(command, ['--help'], { env: { COLUMNS: '100' } });
    assert.equal(result.code, 0, result.stderr);
    parsed = parseHelp(command, result.stdout);
    assert.ok(parsed.options.has('--help') && parsed.options.has('--version'), `cannot read the options of:\n${result.stdout}`);
    helps.set(command, parsed);
  }
  return parsed;
}

for (const command of COMMANDS) {
  test(`${PAGES[command]}: has the sections a manual page needs, for this version`, () => {
    const roff = page(command);
    const manSection = PAGES[command].slice(-1);
    const th = new RegExp(`^\\.TH ${command.toUpperCase()} ${manSection} \\d{4}-\\d{2}-\\d{2} "pidstat ${VERSION.replaceAll('.', '\\.')}" `, 'm');
    assert.match(roff, th, 'the .TH line names the page, its section, a date and the version of package.json');
    const sections = ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'EXIT STATUS', 'EXAMPLES', 'SEE ALSO'];
    if (command === 'pidstatd') sections.push('PROTOCOL', 'COMPATIBILITY');
    for (const name of sections) assert.match(roff, new RegExp(`^\\.SH ${name}$`, 'm'), `no .SH ${name}`);
  });

  test(`${PAGES[command]}: documents every option of ${command} --help`, async () => {
    const { tokens, options, commands } = await help(command);
    const roff = page(command);
    const documented = section(roff, 'OPTIONS');
    for (const option of options) {
      assert.ok(documented.includes(toRoff(option)), `${option} (in --help) is not in the OPTIONS section of ${PAGES[command]}`);
    }
    for (const token of tokens) {
      assert.ok(roff.includes(toRoff(token)), `${token} (in --help) is nowhere in ${PAGES[command]}`);
    }
    for (const word of commands) {
      assert.match(section(roff, 'SYNOPSIS'), new RegExp(`\\b${word}\\b`), `the command '${command} ${word}' (in --help) is not in the SYNOPSIS of ${PAGES[command]}`);
    }
  });

  test(`${PAGES[command]}: documents no option that ${command} --help does not list`, async () => {
    const { options, booleans } = await help(command);
    for (const option of roffOptions(section(page(command), 'OPTIONS'))) {
      // A boolean's negation, `--no-local`, or as Getopt::Long also spells it, `--nofork`;
      // and --help lists one that is on by default as `--no-local` only: its `--nolocal` and `--local` are known too.
      const negated = /^--no-?(.+)$/.exec(option);
      const known = options.has(option) || (negated !== null && [`--${negated[1]}`, `--no-${negated[1]}`].some((name) => booleans.has(name))) ||
        booleans.has(`--no-${option.slice(2)}`);
      assert.ok(known, `${option} is in the OPTIONS section of ${PAGES[command]} but not in ${command} --help`);
    }
  });

  test(`${PAGES[command]}: has every exit status ${command} --help names`, async () => {
    const { exitStatus } = await help(command);
    assert.notEqual(exitStatus, '', `${command} --help names no exit status`);
    const documented = section(page(command), 'EXIT STATUS');
    for (const [code] of exitStatus.matchAll(/\b\d+\b/g)) {
      assert.match(documented, new RegExp(`(^|[^0-9])${code}([^0-9]|$)`), `exit status ${code} (in --help) is not in the EXIT STATUS section`);
    }
  });
}

/** Whether a program is on PATH. */
function has(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status === 0;
}

/**
 * mandoc, installed with apt-get if missing and allowed: as root, where apt-get
 * exists, unless PIDSTAT_NO_INSTALL is set. Returns why not, or undefined.
 */
function needMandoc(): string | undefined {
  if (has('mandoc')) return undefined;
  if (!IS_ROOT) return 'mandoc is not installed (Debian package mandoc), and installing it needs root';
  if (!has('apt-get')) return 'mandoc is not installed, and there is no apt-get to install it';
  if (process.env['PIDSTAT_NO_INSTALL']) return 'mandoc is not installed, and PIDSTAT_NO_INSTALL forbids installing it';
  const install = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'mandoc'], {
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (install.status === 0 && has('mandoc')) return undefined;
  const why = (install.stderr || install.error?.message || `exit ${install.status}`).trim().split('\n').at(-1);
  return `mandoc is not installed, and apt-get install mandoc failed (no network?): ${why}`;
}

test('the pages pass mandoc -T lint -W warning', (t) => {
  const missing = needMandoc();
  if (missing !== undefined) {
    t.diagnostic(missing);
    t.skip(missing);
    return;
  }
  for (const file of Object.values(PAGES)) {
    const lint = spawnSync('mandoc', ['-T', 'lint', '-W', 'warning', `${ROOT}${file}`], { encoding: 'utf8' });
    assert.equal(`${lint.stdout}${lint.stderr}`, '', `mandoc -T lint ${file}`);
    assert.equal(lint.status, 0, `mandoc -T lint ${file}`);
  }
});

/** man -l, else mandoc -T utf8: the page as a reader sees it. */
function render(file: string): { tool: string; result: RunResult } | undefined {
  const env: NodeJS.ProcessEnv = { ...process.env, MANPAGER: 'cat', PAGER: 'cat', MANWIDTH: '80', LANG: 'C.UTF-8' };
  delete env['MAN_KEEP_FORMATTING'];
  const run = (tool: string, args: string[]) => {
    const started = performance.now();
    const out = spawnSync(tool, args, { encoding: 'utf8', env, timeout: 30_000 });
    const result: RunResult = { code: out.status, signal: out.signal, stdout: out.stdout, stderr: out.stderr, ms: performance.now() - started };
    return { tool, result };
  };
  if (has('man')) return run('man', ['--warnings', '-E', 'UTF-8', '-l', file]);
  if (has('mandoc')) return run('mandoc', ['-T', 'utf8', file]);
  return undefined;
}

test('man -l (or mandoc -T utf8) renders each page cleanly', (t) => {
  if (!has('man') && !has('mandoc')) {
    t.skip('neither man nor mandoc is installed');
    return;
  }
  for (const command of COMMANDS) {
    const { tool, result } = render(`${ROOT}${PAGES[command]}`)!;
    assert.equal(result.code, 0, `${tool} ${PAGES[command]}: ${result.stderr}`);
    // groff's warnings (a line it cannot break, an unknown macro...) go to stderr.
    assert.equal(result.stderr, '', `${tool} ${PAGES[command]} warns`);
    // Drop overstriking (bold, underline) for a plain text to read.
    const text = result.stdout.replace(/.\x08/g, '').replace(/\x1b\[[0-9;]*m/g, '');
    assert.match(text, new RegExp(`^${command.toUpperCase()}\\(${PAGES[command].slice(-1)}\\)`, 'm'));
    for (const heading of ['NAME', 'SYNOPSIS', 'OPTIONS', 'EXIT STATUS', 'SEE ALSO']) assert.match(text, new RegExp(`^${heading}$`, 'm'));
    assert.match(text, new RegExp(`^ +${command} +- `, 'm'), 'the NAME line');
    // No roff escape left raw in the text.
    assert.doesNotMatch(text, /\\f[BIRP]|\\-|\\\(|^\.[A-Z]{1,2}\b/m);
  }
});
