import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import { CommandError } from '../errors.js';
import { localPidExists } from '../probe.js';
import { parsePid } from '../protocol.js';
import { parseSignal, runCommand, signalGroup, waitForDeath, type Ending, type WatchOptions } from '../watch.js';
import { parseArgs, valueOptions, type CommandSpec, type OptionTable } from './args.js';
import { ioFrom, keyFileFrom, keyFileOption, parseDuration, portFrom, portOption } from './options.js';
import { runCli } from './runner.js';
import { checkHost } from './targets.js';
import { writeErr } from './stdio.js';

const USAGE = `Usage:
  $0 [--cd DIR] [--host HOST] --pid PID [--port N] [--signal SIG]
           [--killer PROG] [--interval MS] [--key-file FILE] [--no-local] [--debug]
           COMMAND [ARG ...]
  $0 [--host HOST] --pid PID --foreground FGPID [...]

Runs COMMAND (joined with spaces, by /bin/sh -c) and ends it when process
PID on HOST dies. Options end at the first word that is not one of them.`;

/** Signals pidwatch passes on to its command, as a shell's job would get them. */
const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];

export const SPEC = {
  name: 'pidwatch',
  usage: USAGE,
  epilog: 'Exit status: that of the command (or its death by the same signal); 127 if it cannot be started; 0 with --foreground; 64 usage error.',
  // Everything from the first word that is not an option belongs to the command.
  haltAtNonOption: true,
  options: {
    pid: { type: 'string', description: 'The process to watch' },
    host: { type: 'string', description: 'Host of PID (default: this host)' },
    port: portOption(),
    'key-file': keyFileOption(),
    signal: { type: 'string', description: "Signal for the command's process group: HUP, SIGHUP, -HUP or 1 (default HUP)" },
    killer: { type: 'string', description: 'Run PROG -SIG CMDPID instead of sending the signal' },
    interval: { type: 'string', description: 'Time between two questions: ms, or 500ms, 2s (default 1000)' },
    cd: { type: 'string', description: 'Run the command in DIR (if missing: warn, run here)' },
    foreground: { type: 'string', description: 'Run no command: signal FGPID when PID dies, exit once FGPID is gone' },
    local: { type: 'boolean', default: true, description: 'Probe a PID on this host locally (--no-local asks its daemon)' },
    debug: { type: 'boolean', description: 'Show the datagrams, on stderr' },
  },
} as const satisfies CommandSpec<OptionTable>;

function checkPid(text: string | undefined, option: string): number {
  if (text === undefined) throw new CommandError(`${option} is required: the pid to watch`);
  const pid = parsePid(text);
  if (pid === undefined) throw new CommandError(`${option} '${text}' is not a pid (a decimal number from 1 to 2147483647)`);
  return pid;
}

const VALUE_OPTIONS = valueOptions(SPEC);

/**
 * `--signal -HUP` as one option: the parser would read `-HUP` as options -H -U -P.
 * Only pidwatch's own options are looked at, up to the command's first word.
 */
function joinSignalValue(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--' || !word.startsWith('-')) return out.concat(argv.slice(i));
    if (!VALUE_OPTIONS.has(word) || i + 1 >= argv.length) {
      out.push(word);
    } else if (word === '--signal') {
      out.push(`--signal=${argv[++i]}`);
    } else {
      out.push(word, argv[++i]!);
    }
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  const args = await parseArgs(SPEC, joinSignalValue(argv));
  if (args === undefined) return 0;
  const { words } = args;
  const pid = checkPid(args.pid, '--pid');
  const host = args.host ?? 'localhost';
  checkHost(host, '--host');
  const signal = parseSignal(args.signal ?? 'HUP');
  if (signal === undefined) throw new CommandError(`--signal '${args.signal}' is not a signal name or number (like HUP, SIGTERM, -INT or 15)`);
  const watch: WatchOptions = {
    host,
    pid,
    intervalMs: args.interval === undefined ? 1000 : parseDuration(args.interval, '--interval'),
    local: args.local,
  };
  const port = portFrom(args.port, process.env);
  if (port !== undefined) watch.port = port;
  const io = ioFrom(process.env);
  if (io !== undefined) watch.io = io;
  const keyFile = keyFileFrom(args['key-file'], process.env);
  if (keyFile !== undefined) watch.keyFile = keyFile;
  if (args.debug) watch.onDebug = (line) => writeErr(`pidwatch: ${line}\n`);

  if (args.foreground !== undefined) {
    if (words.length > 0) throw new CommandError(`--foreground runs no command, but '${words.join(' ')}' was given`);
    return watchForeground(watch, checkPid(args.foreground, '--foreground'), signal);
  }
  if (words.length === 0) throw new CommandError('no command given: name the COMMAND to run');
  let cwd: string | undefined;
  if (args.cd !== undefined) {
    if (existsSync(args.cd) && statSync(args.cd).isDirectory()) cwd = args.cd;
    else writeErr(`pidwatch: warning: --cd ${args.cd}: no such directory; running in ${process.cwd()}\n`);
  }
  return watchCommand(watch, words.join(' '), cwd, signal, args.killer);
}

/** Runs the command, ends it when the pid dies, and ends as it did. */
async function watchCommand(watch: WatchOptions, command: string, cwd: string | undefined, signal: NodeJS.Signals, killer: string | undefined): Promise<number> {
  const { child, ended } = runCommand(command, cwd);
  const forward = (sig: NodeJS.Signals) => signalGroup(child.pid!, sig);
  for (const sig of FORWARDED) process.on(sig, forward);
  const stopWatching = new AbortController();
  const watching = waitForDeath(watch, stopWatching.signal).then(() => {
    if (stopWatching.signal.aborted) return;
    const name = signal.replace(/^SIG/, '');
    watch.onDebug?.(`pid ${watch.pid} on ${watch.host} is dead: ${killer ? `running ${killer} -${name} ${child.pid}` : `sending ${signal}`}`);
    if (killer === undefined) signalGroup(child.pid!, signal);
    else spawn('/bin/sh', ['-c', `${killer} -${name} ${child.pid}`], { stdio: 'inherit' });
  }).catch((err: Error) => {
    // Watching failed: the command runs on, as it would on silence.
    writeErr(`pidwatch: cannot watch pid ${watch.pid} on ${watch.host}: ${err.message}\n`);
  });
  const ending = await ended;
  stopWatching.abort();
  await watching;
  for (const sig of FORWARDED) process.off(sig, forward);
  return endLike(ending);
}

/**
 * The exit status of the command becomes ours; a death by a signal is
 * repeated on ourselves, so a shell sees 128+N as if it ran the command.
 */
function endLike(ending: Ending): number {
  if (ending.signal === undefined) return ending.code;
  process.kill(process.pid, ending.signal);
  // A signal whose default is to go on (SIGCHLD, SIGWINCH...): report 128+N.
  return 128 + constants.signals[ending.signal];
}

/** --foreground: signal FGPID when the pid dies; exit 0 once FGPID is gone. */
async function watchForeground(watch: WatchOptions, fgpid: number, signal: NodeJS.Signals): Promise<number> {
  const stopWatching = new AbortController();
  const fgGone = new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (!isAlive(fgpid)) {
        clearInterval(timer);
        resolve();
      }
    }, Math.min(watch.intervalMs, 200));
  });
  const watching = waitForDeath(watch, stopWatching.signal).then(() => {
    if (!stopWatching.signal.aborted) {
      try {
        process.kill(fgpid, signal);
      } catch {
        // Gone already: nothing left to stop.
      }
    }
  }, (err: Error) => writeErr(`pidwatch: cannot watch pid ${watch.pid} on ${watch.host}: ${err.message}\n`));
  await fgGone;
  stopWatching.abort();
  await watching;
  return 0;
}

/** Whether FGPID still runs: a zombie has finished, whether or not it is reaped. */
function isAlive(pid: number): boolean {
  if (localPidExists(pid) !== true) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return true; // No /proc to tell a zombie by: kill() said it exists.
  }
}

export const run = (): void => runCli('pidwatch', main);
