import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, readFileSync, realpathSync, statSync, writeSync } from 'node:fs';
import { resolve } from 'node:path';
import { randomHex64 } from '../sys/random.js';
import { parseDuration, UNIT_NEEDED } from './duration.js';
import { CommandError, ExitCode } from './errors.js';
import { INSPECT_PORT_OPTION } from '../daemon/inspector.js';
import { parsePid } from '../wire/protocol.js';
import { closeInheritedDescriptors, openLineWriter } from '../sys/descriptors.js';
import { describeFailure } from '../client/failures.js';
import { timeOfDay } from '../sys/time.js';
import { joinHostPort } from '../wire/address.js';
import { sleep } from '../sys/sleep.js';
import { readStat, type JobSpec } from '../job/tree.js';
import { watchJob } from '../job/ending.js';
import { parseSignal } from '../sys/signals.js';
import { describeProblem, systemProblem } from '../sys/problems.js';
import type { WatchOptions } from '../deaths/watch.js';
import { parseArgs, type CommandSpec, type OptionTable, type ValueAt } from './args.js';
import { ioFrom, keyFileFrom, keyFileOption, portFrom, portOption } from './options.js';
import { runCli } from './runner.js';
import { checkHost, checkPid, unbracket } from './targets.js';
import { writeErr } from './stdio.js';

const USAGE = `Usage:
  $0 [--cd DIR] [--host HOST] --pid PID [--port N] [--signal SIG]
           [--kill-after DURATION] [--dead-after DURATION] [--killer PROG]
           [--interval DURATION] [--key-file FILE] [--no-local] [--debug]
           COMMAND [ARG ...]
  $0 [--host HOST] --pid PID --foreground FGPID [...]

Runs COMMAND (joined with spaces, by /bin/sh -c) in its own process and
ends it, with everything it started, when process PID on HOST dies. Options
end at the first word that is not one of them.`;

export const SPEC = {
  name: 'pidwatch',
  usage: USAGE,
  epilog: 'Exit status: that of the command (or its death by the same signal); 126 if it cannot be run, 127 if not found; 0 with --foreground; 64 usage error.',
  // Everything from the first word that is not an option belongs to the command.
  haltAtNonOption: true,
  options: {
    pid: { type: 'string', description: 'The process to watch' },
    host: { type: 'string', description: 'Host of PID (default: this host)' },
    port: portOption(),
    'key-file': keyFileOption(),
    signal: { type: 'string', description: 'Signal for the command and all it started: HUP, SIGHUP, -HUP or 1 (default HUP)' },
    'kill-after': { type: 'string', description: 'SIGKILL to what is still alive this long after the signal: 10s, 1m (a unit is needed)' },
    'dead-after': { type: 'string', description: 'Silence from HOST this long counts as death: 90s, 10m (a unit is needed; default: never)' },
    killer: { type: 'string', description: 'Run PROG -SIG CMDPID (no shell) instead of sending the signal' },
    interval: { type: 'string', description: 'Time between two questions: 500ms, 2s (a unit is needed; default 1s)' },
    cd: { type: 'string', description: 'Run the command in DIR (missing, or not to be entered: exit 126, nothing run)' },
    foreground: { type: 'string', description: 'Run no command: leave a watcher that signals FGPID when PID dies; exit 0 at once' },
    local: { type: 'boolean', default: true, description: 'Probe a PID on this host locally (--no-local asks its daemon)', negatedDescription: 'Ask the daemon even when HOST is this host (by default PID is probed locally)' },
    debug: { type: 'boolean', description: 'Show the datagrams, on stderr' },
  },
} as const satisfies CommandSpec<OptionTable>;

/** Set by bin/pidwatch for its launcher: the script's own pid ($$), the process the command is exec'd in. */
const LAUNCH_ENV = 'PIDWATCH_LAUNCH';
/** The descriptor on which the launcher answers bin/pidwatch (writeCode()). */
const CODE_FD = 3;
/** Set for the watcher: what it watches and how, as JSON (WatcherConfig). */
const WATCHER_ENV = 'PIDWATCH_WATCHER';

/** Everything the detached watcher needs, passed to it in WATCHER_ENV. */
interface WatcherConfig {
  watch: Omit<WatchOptions, 'onDebug' | 'onReach'>;
  debug: boolean;
  job: Omit<JobSpec, 'exclude'> & { exclude: number[] };
  signal: NodeJS.Signals;
  killAfterMs?: number;
  killer?: string;
  endLeftovers: boolean;
}

/**
 * The launcher: reads the options, starts the detached watcher, and tells
 * bin/pidwatch how to run the command in the script's own process: which of
 * its arguments are the command's words, the job's marker, the directory
 * (pidwatch(1), DESIGN).
 */
export async function main(argv: string[]): Promise<number> {
  const args = await parseArgs(SPEC, argv);
  if (args === undefined) return 0;
  const { words } = args;
  if (args.pid === undefined) throw new CommandError('--pid is required: the pid to watch');
  const pid = checkPid(args.pid, '--pid ');
  // [::1] as for pidstat's targets; an IPv4-mapped address is asked over IPv4 (client.ts).
  const host = checkHost(unbracket(args.host ?? 'localhost'), args.host ?? 'localhost');
  const signal = parseSignal(args.signal ?? 'HUP');
  if (signal === undefined) throw new CommandError(`--signal '${args.signal}' is not a signal name or number (like HUP, SIGTERM, -INT or 15)`);
  if (args.killer === '') throw new CommandError('--killer needs a program: PROG is run as PROG -SIG CMDPID');
  const watch: WatcherConfig['watch'] = {
    host,
    pid,
    intervalMs: args.interval === undefined ? 1000 : parseDuration(args.interval, '--interval', UNIT_NEEDED),
    local: args.local,
  };
  if (args['dead-after'] !== undefined) watch.deadAfterMs = parseDuration(args['dead-after'], '--dead-after', UNIT_NEEDED);
  const killAfterMs = args['kill-after'] === undefined ? undefined : parseDuration(args['kill-after'], '--kill-after', UNIT_NEEDED);
  const port = portFrom(args.port, process.env);
  if (port !== undefined) watch.port = port;
  const io = ioFrom(process.env);
  if (io !== undefined) watch.io = io;
  const keyFile = keyFileFrom(args['key-file'], process.env);
  // The watcher, a process of its own, reads it again.
  if (keyFile !== undefined) watch.keyFile = keyFile.file;
  const common = { watch, debug: args.debug === true, signal, ...(killAfterMs !== undefined && { killAfterMs }) };
  // The watcher runs in /: a PROG with a slash is one of the directory
  // pidwatch started in; a bare name stays a PATH look-up (pidwatch(1), --killer).
  const killer = args.killer === undefined || !args.killer.includes('/') ? args.killer : resolve(args.killer);
  // Found now, not when the watched pid dies: a job must not learn only then that its killer cannot run.
  const unrunnable = killer === undefined ? undefined : whyNotRunnable(killer, process.env['PATH']);
  if (unrunnable !== undefined) throw new CommandError(`--killer ${args.killer}: ${unrunnable}; the command was not run`, ExitCode.CANNOT_RUN);

  if (args.foreground !== undefined) {
    if (words.length > 0) throw new CommandError(`--foreground runs no command, but '${words.join(' ')}' was given`);
    const fgpid = checkPid(args.foreground, '--foreground ');
    const fg = readStat(fgpid);
    // FGPID gone already: there is nothing to watch over.
    if (fg !== undefined && fg.state !== 'Z') {
      // This launcher may be FGPID's descendant (`--foreground $$`): never the job's.
      const job = { root: { pid: fgpid, start: fg.start }, exclude: [process.pid] };
      startWatcher({ ...common, job, ...(killer !== undefined && { killer }), endLeftovers: false }, false);
    }
    if (process.env[LAUNCH_ENV] !== undefined) writeCode('exit');
    return 0;
  }
  if (words.length === 0) throw new CommandError('no command given: name the COMMAND to run');
  const launch = process.env[LAUNCH_ENV];
  const root = launch === undefined ? undefined : parsePid(launch);
  if (root === undefined) {
    throw new CommandError('bin/pidwatch.cjs only reads the options of the pidwatch script: run pidwatch itself, which runs the command in its own process');
  }
  // The command's words are the script's last arguments: bin/pidwatch keeps
  // them in its own "$@" and is told only how many words come before them.
  const skip = argv.length - words.length;
  if (skip < 0 || words.some((word, i) => word !== argv[skip + i])) throw new CommandError('cannot tell where the command begins on the command line', ExitCode.SOFTWARE);
  checkCommandLength(words);
  const cd = args.cd === undefined ? undefined : checkCd(args.cd, givenBytes(args.cd, argv, args.valueAt.cd));
  const marker = randomHex64();
  const stat = readStat(root);
  const watcher = startWatcher(
    {
      ...common,
      job: { root: { pid: root, start: stat?.start }, marker, exclude: [process.pid] },
      ...(killer !== undefined && { killer }),
      endLeftovers: true,
    },
    true,
  );
  if (args.debug) writeErr(`pidwatch: the command runs as pid ${root} (job marker ${marker}); watcher pid ${watcher}\n`);
  writeCode(`run ${skip} ${marker}`, cd);
  return 0;
}

/**
 * Linux's limit on one argument of execve(2) (MAX_ARG_STRLEN: 32 pages of
 * 4 KiB, the final NUL included), which the command joined into one word
 * for /bin/sh -c must fit.
 */
const MAX_ARG_BYTES = 128 * 1024;

/** A command too long for /bin/sh -c ends pidwatch with 126, the shell's "cannot run", before anything starts. */
function checkCommandLength(words: readonly string[]): void {
  const bytes = words.reduce((sum, word) => sum + Buffer.byteLength(word) + 1, 0);
  if (bytes > MAX_ARG_BYTES) {
    throw new CommandError(`the command is ${bytes - 1} bytes long, more than the ${MAX_ARG_BYTES - 1} that /bin/sh -c takes in one argument: put it in a script, and run the script`, ExitCode.CANNOT_RUN);
  }
}

/**
 * --cd DIR: the directory's absolute path, every link resolved against the
 * directory pidwatch started in, which the script enters with `cd -P --`:
 * no CDPATH, no `-` for OLDPWD, nothing printed, and the directory entered
 * is the one checked here. A missing DIR, or one the user may not enter,
 * ends pidwatch with 126, the shell's "cannot run", before anything starts:
 * a job is never run elsewhere (pidwatch(1), --cd). `path` is DIR's bytes
 * (givenBytes()); `dir` names it in messages.
 */
function checkCd(dir: string, path: string | Buffer): Buffer {
  let absolute: Buffer;
  try {
    // The native realpath(3): the JavaScript one decodes a Buffer path as UTF-8.
    absolute = realpathSync.native(path, { encoding: 'buffer' });
    if (!statSync(absolute).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'EISFILE' });
    accessSync(absolute, fsConstants.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'EACCES' || code === 'EPERM' ? 'permission denied'
      : code === 'ENOENT' || code === 'ENOTDIR' ? 'no such directory'
      : code === 'EISFILE' ? 'not a directory'
      : (err as Error).message;
    throw new CommandError(`--cd ${dir}: ${why}: the command is not run`, ExitCode.CANNOT_RUN);
  }
  return absolute;
}

/**
 * An option's value as the bytes the user gave. Node reads its arguments as
 * UTF-8 and turns the bytes that are not into U+FFFD, so a Latin-1 `--cd`
 * would name another directory; /proc/self/cmdline still holds the bytes,
 * this launcher's arguments last, and `at` says which word the value was
 * read from (readCommandLine()), whole or after its `=`.
 */
function givenBytes(value: string, argv: readonly string[], at: ValueAt | undefined): string | Buffer {
  if (!value.includes('\uFFFD') || at === undefined) return value;
  let raw: Buffer[];
  try {
    raw = readFileSync('/proc/self/cmdline').subarray(0, -1).toString('latin1').split('\0').slice(-argv.length).map((word) => Buffer.from(word, 'latin1'));
  } catch {
    return value;
  }
  if (raw.length !== argv.length || raw.some((word, i) => word.toString('utf8') !== argv[i])) return value;
  const word = raw[at.index]!;
  return at.inline ? word.subarray(word.indexOf(0x3d) + 1) : word;
}

/**
 * Hands the script its answer, on CODE_FD: data it reads, never shell code
 * it runs. `exit` (nothing to run), or `run SKIP MARKER`: the command is the
 * script's arguments after the first SKIP, joined with spaces, and MARKER
 * joins PIDWATCH_JOBS; with --cd, then a newline and the directory's
 * absolute path, its bytes as they are, followed by a slash (the script's
 * $(...) cuts the newlines that end what it reads, and a name may end in
 * one: `cd -P //` is /). No word of the user's is in it.
 */
function writeCode(code: string, dir?: Buffer): void {
  const answer = Buffer.concat(dir === undefined ? [Buffer.from(`${code}\n`)] : [Buffer.from(`${code}\n`), dir, Buffer.from('/\n')]);
  try {
    writeSync(CODE_FD, answer);
  } catch (err) {
    throw new CommandError(describeProblem(systemProblem(err, `cannot hand the command to the pidwatch script (fd ${CODE_FD})`)), ExitCode.SOFTWARE);
  }
}

/**
 * Why `program` cannot be run as the watcher would run it (a path as it is,
 * a bare name through PATH, as execvp does), or undefined: it is a file
 * this user may execute.
 */
export function whyNotRunnable(program: string, path: string | undefined): string | undefined {
  const candidates = program.includes('/') ? [program] : (path ?? '/usr/bin:/bin').split(':').map((dir) => `${dir || '.'}/${program}`);
  let found: string | undefined;
  for (const file of candidates) {
    let isFile: boolean;
    try {
      isFile = statSync(file).isFile();
    } catch {
      continue;
    }
    found ??= isFile ? undefined : `${file} is not a file`;
    if (!isFile) continue;
    try {
      accessSync(file, fsConstants.X_OK);
      return undefined;
    } catch {
      found = `${file} is not executable`;
    }
  }
  return found ?? (program.includes('/') ? 'no such file' : 'not found in PATH');
}

/**
 * Starts the watcher: this bin again, detached (its own session, so no
 * terminal signal and no hang-up reaches it), working directory /, stdin and
 * stdout on /dev/null, stderr the user's for its one-line notices (with
 * --foreground on /dev/null too, as the original's). Returns its pid.
 */
function startWatcher(config: WatcherConfig, keepStderr: boolean): number {
  const env: NodeJS.ProcessEnv = { ...process.env, [WATCHER_ENV]: JSON.stringify(config) };
  delete env[LAUNCH_ENV];
  const options = [...process.execArgv.filter((option) => option !== INSPECT_PORT_OPTION), INSPECT_PORT_OPTION];
  const child = spawn(process.execPath, [...options, process.argv[1]!], {
    detached: true,
    cwd: '/',
    env,
    stdio: ['ignore', 'ignore', keepStderr ? 'inherit' : 'ignore'],
  });
  if (child.pid === undefined) throw new CommandError('cannot start the watcher: the command is not run unwatched', ExitCode.SOFTWARE);
  child.on('error', () => {});
  child.unref();
  return child.pid;
}

/** The watcher: watches until the pid dies or the job's root ends, acts, and exits 0. */
async function watcher(text: string): Promise<number> {
  // Nothing here may end it but the job's end: these are not for it, and
  // SIGUSR1 must never open Node's inspector (start.ts guards it until now).
  for (const sig of ['SIGUSR1', 'SIGUSR2', 'SIGHUP', 'SIGINT'] as const) process.on(sig, () => {});
  // Whatever the caller left open (`z=$(pidwatch ... --foreground $$ 40>&1)`)
  // would be held for as long as the job runs: closed, as the daemon does
  // (pidwatch(1), The watcher). Node's own descriptors are close-on-exec.
  closeInheritedDescriptors();
  delete process.env[WATCHER_ENV];
  // stderr is the user's, shared with the command: a pipe nobody reads
  // must never stop the watcher, so its lines are dropped (and counted,
  // and the count told with the next line that gets through) rather than
  // waited for (pidwatch(1), The watcher).
  const stderr = openLineWriter(2);
  let unsaid = 0;
  const say = (line: string): void => {
    const lost = unsaid === 0 ? '' : `pidwatch: ${unsaid} earlier ${unsaid === 1 ? 'line' : 'lines'} not written: stderr was full\n`;
    // One write: a pipe takes it whole or not at all.
    unsaid = stderr.write(`${lost}pidwatch: ${line}\n`) ? 0 : unsaid + 1;
  };
  const config = JSON.parse(text) as WatcherConfig;
  const { watch, job } = config;
  // What `ps` shows for it: what it watches, and for which job (Linux fits it into the command line's own room).
  process.title = `pidwatch: ${joinHostPort(watch.host, watch.pid)} for job ${job.root.pid}`;
  /** Whether the host was said to have fallen silent after answering, rather than never to have answered. */
  let fellSilent = false;
  const options: WatchOptions = {
    ...watch,
    onReach: (problem) => {
      if (problem === undefined) {
        say(fellSilent ? `${watch.host} answers again: pid ${watch.pid} is watched` : `${watch.host} answers: pid ${watch.pid} is watched now`);
        return;
      }
      fellSilent = problem.kind === 'silence' && problem.since !== undefined;
      say(problem.kind === 'silence' && problem.since !== undefined
        ? `${watch.host} is not answering since ${timeOfDay(problem.since)}: the job is not protected until it answers again (see --dead-after)`
        : `cannot watch pid ${watch.pid} on ${watch.host}: ${describeFailure(problem)}; trying again every ${watch.intervalMs} ms (the job is not protected meanwhile)`);
    },
  };
  if (config.debug) options.onDebug = say;
  // The launcher, our parent, hands the script its code and exits: only then
  // is the command on its way, and a signal to the job reaches the command
  // (or the script before its exec), never a launcher half way.
  const launcher = process.ppid;
  if (job.exclude.includes(launcher)) for (let i = 0; i < 500 && process.ppid === launcher; i++) await sleep(10);
  await watchJob({
    watch: options,
    job: { ...job, exclude: new Set([process.pid, ...job.exclude]) },
    signal: config.signal,
    ...(config.killAfterMs !== undefined && { killAfterMs: config.killAfterMs }),
    ...(config.killer !== undefined && { killer: config.killer }),
    endLeftovers: config.endLeftovers,
    onNotice: say,
  });
  return 0;
}

export const run = (): void => {
  const config = process.env[WATCHER_ENV];
  runCli('pidwatch', config === undefined ? main : () => watcher(config));
};
